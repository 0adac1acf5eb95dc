/*!
 * \file executable.h
 * \brief An artifact run from C++ alone: the kernel of the op `torch.ops.byoc_torch.execute`.
 *
 * Place in the data flow: the TorchScript object torch_class.cc defines holds an artifact's
 * bytes; when it is first called or asked its signature it makes an ArtifactExecutable, which
 *   1. verifies the seal (length and SHA-256, sealed_artifact.h) of the bytes;
 *   2. loads the verified payload the way byoc_torch.load does in Python: written to a fresh
 *      file in a new 0700 directory, loaded with tvm-ffi's Module::LoadFromFile (the Relax VM
 *      executable with its kernels and the `torch` runtime module), the copy removed again;
 *      an executable this process already holds (the same payload SHA-256: a model compiled or
 *      loaded in Python, which hands its executable over with `byoc_torch.RememberExecutable`,
 *      or another object of the same artifact) is reused instead;
 *   3. reads the signature (JSON) stored in the artifact's `torch` runtime module: the one home
 *      of a compiled model's signature (inputs, outputs, symbol ranges, device, CPU features);
 *   4. runs calls: the input checks of CompiledModule (count, dtype, shape, symbolic dims and
 *      their ranges, device, grad), inputs made compact and 64-byte aligned, the Relax VM's
 *      `main` (one VM per concurrent caller, from a pool), the results as fresh tensors.
 * No Python is on this path: a C++ process (a LibTorch application, Triton's PyTorch backend)
 * that loads libbyoc_torch_runtime.so and TVM's libtvm_runtime.so runs TorchScript archives
 * holding compiled parts (docs/deployment.md).
 *
 * Errors: load failures are tvm-ffi errors (ArtifactError for the bytes or the signature,
 * CPUFeatureError when the signature's CPU features are not all on this CPU, cpu_features.h,
 * RuntimeError when TVM's runtime is not loaded); input errors are c10 errors whose Python
 * types are those of byoc_torch's InputError (ValueError) and InputTypeError (TypeError).
 */
#ifndef BYOC_TORCH_RUNTIME_EXECUTABLE_H_
#define BYOC_TORCH_RUNTIME_EXECUTABLE_H_

#include <ATen/ATen.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace byoc_torch {
namespace ffi = tvm::ffi;

/*! \brief One input of the signature, as the checks use it. */
struct CheckedInput {
  std::string name;
  std::string dtype;           // TVM's name (float32), as the signature stores it
  std::vector<int64_t> dims;   // >= 0 static; < 0 the symbol -(dim + 1)
};

/*! \brief A derived dim of the signature: symbol `symbol` is a * (symbol `base`) + b. */
struct DerivedDim {
  size_t symbol, base;
  int64_t a, b;
};

class ArtifactExecutable {
 public:
  /*! \brief Verify, load (or reuse) and check the artifact held in `size` bytes at `data`. */
  static std::shared_ptr<ArtifactExecutable> Load(const uint8_t* data, size_t size);

  /*! \brief The flat outputs for the flat inputs (checked; see the file comment). */
  std::vector<at::Tensor> Run(const std::vector<at::Tensor>& inputs);

  /*! \brief The signature the artifact stores, as JSON text. */
  const std::string& signature() const { return signature_json_; }

  ArtifactExecutable(ffi::Module executable, std::string signature_json);

 private:
  struct Vm {
    ffi::Module vm;
    ffi::Function main;
  };
  Vm AcquireVm();
  void ReleaseVm(Vm vm);
  std::vector<at::Tensor> CheckInputs(const std::vector<at::Tensor>& inputs) const;

  ffi::Module executable_;
  std::string signature_json_;
  std::vector<CheckedInput> inputs_;
  std::vector<std::string> symbols_;                   // symbol k's name
  std::vector<std::pair<int64_t, int64_t>> ranges_;    // symbol k's [min, max]; max -1: none
  std::vector<DerivedDim> derived_;                    // checked after the symbols are bound
  std::optional<ffi::Error> cpu_error_;  // CPUFeatureError: thrown by Run, not by the load
  size_t num_outputs_ = 0;
  std::string device_text_ = "cpu";  // as the signature names it
  DLDevice device_{kDLCPU, 0};
  std::mutex mu_;  // guards idle_
  std::vector<Vm> idle_;
};

}  // namespace byoc_torch

#endif  // BYOC_TORCH_RUNTIME_EXECUTABLE_H_
