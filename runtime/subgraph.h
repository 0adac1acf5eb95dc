/*!
 * \file subgraph.h
 * \brief A SubgraphSpec compiled with LibTorch: the unit one subgraph call runs.
 *
 * Place in the data flow: the module (torch_runtime_module.cc) compiles every spec once, when
 * it is created or loaded. A call hands the subgraph ATen tensors (already converted by
 * tensor_bridge.h) and gets ATen results back, from the single-op fast path (single_op.h) or
 * from the TorchScript interpreter. A CompiledSubgraph is immutable after construction and may
 * be run from several threads at once.
 */
#ifndef BYOC_TORCH_RUNTIME_SUBGRAPH_H_
#define BYOC_TORCH_RUNTIME_SUBGRAPH_H_

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/module.h>

#include <optional>
#include <string>
#include <vector>

#include "single_op.h"
#include "subgraph_spec.h"

namespace byoc_torch {

class CompiledSubgraph {
 public:
  /*! \brief Compile the spec's TorchScript (and its submodules); ValueError if it fails. */
  explicit CompiledSubgraph(SubgraphSpec spec);

  const SubgraphSpec& spec() const { return spec_; }
  const std::string& symbol() const { return symbol_; }
  bool has_single_op() const { return single_op_.has_value(); }

  /*!
   * \brief Run the subgraph. Uses the single-op fast path when there is one and `fast_path` is
   * set. Every exception from LibTorch becomes a RuntimeError naming the subgraph (and op).
   */
  std::vector<at::Tensor> Run(const std::vector<at::Tensor>& inputs, bool fast_path) const;

 private:
  /*! \brief UnregisteredOpError naming `ns::op` and how to register it. */
  [[noreturn]] void ThrowUnregistered(const std::string& qualified_name) const;
  std::vector<at::Tensor> RunInterpreter(const std::vector<at::Tensor>& inputs) const;

  SubgraphSpec spec_;
  std::string symbol_;
  std::optional<torch::jit::Module> module_;
  std::optional<SingleOpPath> single_op_;
};

}  // namespace byoc_torch

#endif  // BYOC_TORCH_RUNTIME_SUBGRAPH_H_
