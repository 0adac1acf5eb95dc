/*!
 * \file subgraph_spec.h
 * \brief `byoc_torch.SubgraphSpec`: the description of one LibTorch subgraph.
 *
 * Place in the data flow: the codegen (byoc_torch/codegen.py) builds one spec per external
 * function and passes them, with the model's metadata, to `byoc_torch.CreateTorchRuntimeModule`;
 * the artifact loader (serialization.cc) rebuilds the same specs from bytes. The module
 * (torch_runtime_module.cc) compiles each spec into a CompiledSubgraph (subgraph.h) and
 * serializes the specs back unchanged. Every spec is validated when it is constructed, so a spec
 * that exists is well-formed (the TorchScript itself is checked when it is compiled).
 */
#ifndef BYOC_TORCH_RUNTIME_SUBGRAPH_SPEC_H_
#define BYOC_TORCH_RUNTIME_SUBGRAPH_SPEC_H_

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/object.h>
#include <tvm/ffi/string.h>

#include <cstdint>

namespace byoc_torch {
namespace ffi = tvm::ffi;

/*! \brief Upper bound of inputs, outputs and submodules of one subgraph (also a loader cap). */
constexpr int64_t kMaxArity = int64_t{1} << 16;

/*! \brief One subgraph: its symbol, TorchScript, arity and scripted submodules. */
class SubgraphSpecObj : public ffi::Object {
 public:
  /*! \brief The function name the Relax VM calls. */
  ffi::String symbol;
  /*! \brief TorchScript source of the module's methods (`forward` and helpers, all with self). */
  ffi::String script;
  int64_t num_inputs = 0;
  int64_t num_outputs = 0;
  /*! \brief Whether `forward` returns a tuple (required when num_outputs > 1). */
  bool returns_tuple = false;
  /*! \brief Attribute names of the scripted submodules `forward` calls as self.<name>(...). */
  ffi::Array<ffi::String> module_names;
  /*! \brief torch.jit.save bytes of each submodule, parallel to module_names. */
  ffi::Array<ffi::Bytes> module_payloads;
  /*!
   * \brief An AOTInductor package (.pt2 bytes) of the same subgraph, or empty. When present it
   * is the subgraph's executor (aoti_executor.h); the TorchScript stays the one every subgraph
   * carries, and runs when there is no package.
   */
  ffi::Bytes aoti_package;
  /*! \brief Which of the subgraph's inputs the package takes, in its order (its parameters
   * are frozen into the package, so the constants TVM passes are not among them). */
  ffi::Array<int64_t> aoti_inputs;
  /*!
   * \brief The subgraph runs only as its package: the constants the package froze in are kept
   * nowhere else (a weight lives once), so the call passes the package's inputs alone and the
   * TorchScript, which takes them all, cannot run. Requires a package taking every input, in
   * order.
   */
  bool package_only = false;

  /*! \brief Construct and validate; throws ValueError naming the subgraph on bad input. */
  SubgraphSpecObj(ffi::String symbol, ffi::String script, int64_t num_inputs, int64_t num_outputs,
                  bool returns_tuple, ffi::Array<ffi::String> module_names,
                  ffi::Array<ffi::Bytes> module_payloads, ffi::Bytes aoti_package = ffi::Bytes(),
                  ffi::Array<int64_t> aoti_inputs = {}, bool package_only = false);

  TVM_FFI_DECLARE_OBJECT_INFO_FINAL("byoc_torch.SubgraphSpec", SubgraphSpecObj, ffi::Object);
};

/*! \brief Reference to a SubgraphSpecObj (never null). */
class SubgraphSpec : public ffi::ObjectRef {
 public:
  SubgraphSpec(ffi::String symbol, ffi::String script, int64_t num_inputs, int64_t num_outputs,
               bool returns_tuple, ffi::Array<ffi::String> module_names,
               ffi::Array<ffi::Bytes> module_payloads, ffi::Bytes aoti_package = ffi::Bytes(),
               ffi::Array<int64_t> aoti_inputs = {}, bool package_only = false);

  /*! \brief This spec with `package` (and the inputs it takes) as its AOTInductor package. */
  SubgraphSpec WithAotiPackage(ffi::Bytes package, ffi::Array<int64_t> inputs) const;

  /*!
   * \brief This spec called with its package's inputs alone, the package the only executor
   * (the constants it froze kept nowhere else). Throws ValueError if it has no package.
   */
  SubgraphSpec PackageOnly() const;

  TVM_FFI_DEFINE_OBJECT_REF_METHODS_NOTNULLABLE(SubgraphSpec, ffi::ObjectRef, SubgraphSpecObj);
};

}  // namespace byoc_torch

#endif  // BYOC_TORCH_RUNTIME_SUBGRAPH_SPEC_H_
