/*!
 * \file aoti_executor.h
 * \brief A subgraph's AOTInductor package, loaded and run from C++.
 *
 * Place in the data flow: at compile time byoc_torch/aot_inductor.py compiles a subgraph into an
 * AOTInductor package (torch._inductor.aoti_compile_and_package, its parameters frozen in as
 * constants); the package bytes travel in the subgraph's spec (subgraph_spec.h) and so inside
 * the artifact (serialization.h). The module (torch_runtime_module.cc) builds one AotiExecutor
 * per spec with a package: the package's files are extracted from its bytes (LibTorch's own
 * archive reader, reading them where they lie) into a private directory (mkdtemp, mode 0700),
 * loaded from there by torch::inductor::AOTIModelPackageLoader, and removed again at once (a
 * loader given the package file extracts it into a directory of its own, removed only when the
 * loader is destroyed, so a module kept until the process ends left a copy behind). A call runs
 * the package on the ATen tensors the bridge made (tensor_bridge.h), without copies.
 *
 * Thread safety: Run may be called from several threads at once; AOTInductor's model container
 * hands each call a free model instance and makes the others wait for one.
 */
#ifndef BYOC_TORCH_RUNTIME_AOTI_EXECUTOR_H_
#define BYOC_TORCH_RUNTIME_AOTI_EXECUTOR_H_

#include <ATen/ATen.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/string.h>

#include <memory>
#include <string>
#include <vector>

namespace torch::inductor {
class AOTIModelPackageLoader;
}  // namespace torch::inductor

namespace byoc_torch {
namespace ffi = tvm::ffi;

class AotiExecutor {
 public:
  /*!
   * \brief Load `package` for subgraph `symbol`; `inputs` are the subgraph inputs it takes, in
   * its order. Throws ValueError naming the subgraph when the package does not load.
   */
  AotiExecutor(const std::string& symbol, const ffi::Bytes& package,
               const ffi::Array<int64_t>& inputs);
  ~AotiExecutor();

  /*! \brief Run on the subgraph's inputs (all of them; the package takes its own subset). */
  std::vector<at::Tensor> Run(const std::vector<at::Tensor>& inputs) const;

 private:
  std::string symbol_;
  std::vector<int64_t> inputs_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
};

}  // namespace byoc_torch

#endif  // BYOC_TORCH_RUNTIME_AOTI_EXECUTOR_H_
