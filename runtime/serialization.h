/*!
 * \file serialization.h
 * \brief The versioned byte format of a torch runtime module.
 *
 * Place in the data flow: `export_library` asks the module for its bytes (SaveToBytes ->
 * SerializeArtifact) and embeds them in the shared object; `tvm.runtime.load_module` hands them
 * back to the loader `ffi.Module.load_from_bytes.torch` (DeserializeArtifact), which rebuilds
 * the subgraph specs that the module then compiles.
 *
 * Format, all integers little endian:
 *   magic "BYOCTRCH" | u32 version | u64 checksum (FNV-1a of the rest) |
 *   str metadata | u32 function count | per function:
 *   str symbol | u32 num_inputs | u32 num_outputs | u8 returns_tuple | str torchscript_source |
 *   u32 submodule count | per submodule: str name | str torch.jit.save bytes |
 *   str AOTInductor package (.pt2 bytes, empty when none) | u32 count | per: u32 input index |
 *   u8 package_only
 * where `str` is a u64 length followed by that many bytes. Version 2 added the AOTInductor
 * fields, version 3 the package-only flag; versions 1 and 2 (without them) are still read.
 *
 * The reader checks every length and count before use and refuses damaged input with a
 * ValueError naming byoc_torch (docs/security.md).
 */
#ifndef BYOC_TORCH_RUNTIME_SERIALIZATION_H_
#define BYOC_TORCH_RUNTIME_SERIALIZATION_H_

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/string.h>

#include <string>

#include "subgraph_spec.h"

namespace byoc_torch {

/*! \brief What an artifact holds: the metadata string and one spec per subgraph. */
struct Artifact {
  std::string metadata;
  ffi::Array<SubgraphSpec> specs;
};

/*! \brief The serialized form of `metadata` and `specs`. */
ffi::Bytes SerializeArtifact(const std::string& metadata, const ffi::Array<SubgraphSpec>& specs);

/*! \brief Parse and validate serialized bytes; throws ValueError on any damage. */
Artifact DeserializeArtifact(const ffi::Bytes& bytes);

}  // namespace byoc_torch

#endif  // BYOC_TORCH_RUNTIME_SERIALIZATION_H_
