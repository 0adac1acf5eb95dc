/*!
 * \file op_resolver.h
 * \brief How a subgraph's TorchScript names operators: `torch.X` and `torch.ops.<ns>.<op>`.
 *
 * Place in the data flow: subgraph.cc compiles every spec's TorchScript with this resolver.
 * LibTorch's own native resolver knows `torch.X` (ATen builtins) only; scripts written by
 * byoc_torch.call_torch also call `torch.ops.<ns>.<op>` (ATen or a custom op registered with
 * torch.library or in C++, found in this process's dispatcher). An op that is not registered
 * raises UnregisteredOp, which the subgraph turns into a typed error naming the op.
 */
#ifndef BYOC_TORCH_RUNTIME_OP_RESOLVER_H_
#define BYOC_TORCH_RUNTIME_OP_RESOLVER_H_

#include <torch/csrc/jit/frontend/resolver.h>

#include <memory>
#include <stdexcept>
#include <string>

namespace byoc_torch {

/*! \brief A script names an operator (`ns::op`) this process has not registered. */
class UnregisteredOp : public std::runtime_error {
 public:
  explicit UnregisteredOp(std::string qualified_name)
      : std::runtime_error("operator " + qualified_name + " is not registered"),
        qualified_name_(std::move(qualified_name)) {}
  const std::string& qualified_name() const { return qualified_name_; }

 private:
  std::string qualified_name_;
};

/*! \brief `torch` (ATen builtins and `torch.ops`) and `ops` (as serialized TorchScript writes). */
std::shared_ptr<torch::jit::Resolver> MakeOpResolver();

}  // namespace byoc_torch

#endif  // BYOC_TORCH_RUNTIME_OP_RESOLVER_H_
