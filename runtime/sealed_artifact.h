/*!
 * \file sealed_artifact.h
 * \brief The sealed-artifact check of byoc_torch/artifact_file.py, in C++: an artifact's
 *        bytes are verified (length and SHA-256 in its trailer) before the dynamic loader
 *        sees them.
 *
 * Place in the data flow: the op's kernel (torch_class.cc, executable.h) holds an artifact's
 * bytes and loads them on first use; it calls VerifySealedArtifact first and hands only the
 * verified payload to the loader. The trailer (version 1, 64 bytes, little-endian) is
 *
 *     MAGIC (8) | u64 payload length | SHA-256 of the payload (32) | u32 format version |
 *     u32 trailer length (64) | MAGIC (8)
 *
 * The checks and their messages are those of artifact_file.verify_bytes (a test compares the
 * two on damaged copies); an unsealed artifact is always refused here (the op only ever
 * holds sealed ones). Errors are tvm-ffi errors of kind ArtifactError (byoc_torch.errors).
 */
#ifndef BYOC_TORCH_RUNTIME_SEALED_ARTIFACT_H_
#define BYOC_TORCH_RUNTIME_SEALED_ARTIFACT_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "sha256.h"

namespace byoc_torch {

constexpr size_t kSealTrailerSize = 64;

/*! \brief What a verified artifact holds: its payload is the first `payload_size` bytes. */
struct SealedPayload {
  size_t payload_size;
  Sha256Digest digest;  // of the payload, as the seal records it (and as computed)
};

/*!
 * \brief Verify the seal of the `size` bytes at `data`; `source` names them in errors.
 * \throws ffi::Error of kind ArtifactError saying what is wrong.
 */
SealedPayload VerifySealedArtifact(const uint8_t* data, size_t size, const std::string& source);

}  // namespace byoc_torch

#endif  // BYOC_TORCH_RUNTIME_SEALED_ARTIFACT_H_
