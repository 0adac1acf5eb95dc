/*!
 * \file single_op.cc
 * \brief Detection and execution of the single-op fast path (see single_op.h).
 */
#include "single_op.h"

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/lower_tuples.h>

#include <algorithm>
#include <memory>
#include <utility>

namespace byoc_torch {

std::optional<SingleOpPath> FindSingleOpPath(torch::jit::Module& module, int64_t num_inputs,
                                             int64_t num_outputs, bool returns_tuple) {
  using torch::jit::Node;
  using torch::jit::Value;
  std::shared_ptr<torch::jit::Graph> g = module.get_method("forward").graph()->copy();
  torch::jit::Inline(*g);
  torch::jit::LowerSimpleTuples(g);
  torch::jit::ConstantPropagation(g);
  torch::jit::EliminateDeadCode(g);
  Node* op_node = nullptr;
  Node* tuple_node = nullptr;
  for (Node* n : g->nodes()) {
    if (n->kind() == c10::prim::Constant) continue;
    if (n->kind() == c10::prim::TupleConstruct && tuple_node == nullptr) {
      tuple_node = n;
      continue;
    }
    if (op_node != nullptr || !n->kind().is_aten() || n->maybeOperator() == nullptr) {
      return std::nullopt;
    }
    op_node = n;
  }
  if (op_node == nullptr || g->outputs().size() != 1) return std::nullopt;
  // The graph must return outputs of the op: one, or a tuple of them.
  Value* ret = g->outputs()[0];
  std::vector<Value*> returned;
  if (returns_tuple) {
    if (tuple_node == nullptr || ret != tuple_node->output()) return std::nullopt;
    returned.assign(tuple_node->inputs().begin(), tuple_node->inputs().end());
  } else {
    if (tuple_node != nullptr) return std::nullopt;
    returned.push_back(ret);
  }
  if (static_cast<int64_t>(returned.size()) != num_outputs) return std::nullopt;
  std::vector<size_t> output_index;
  for (Value* r : returned) {
    auto outs = op_node->outputs();
    auto it = std::find(outs.begin(), outs.end(), r);
    if (it == outs.end()) return std::nullopt;
    output_index.push_back(static_cast<size_t>(it - outs.begin()));
  }
  for (Value* out : op_node->outputs()) {
    if (!out->type()->isSubtypeOf(*c10::TensorType::get())) return std::nullopt;
  }
  SingleOpPath path;
  path.output_index = std::move(output_index);
  // Graph input 0 is `self`; inputs 1..n are the subgraph's tensors.
  if (static_cast<int64_t>(g->inputs().size()) != num_inputs + 1) return std::nullopt;
  for (Value* v : op_node->inputs()) {
    int source = -1;
    for (size_t i = 1; i < g->inputs().size(); ++i) {
      if (g->inputs()[i] == v) source = static_cast<int>(i) - 1;
    }
    if (source < 0) {
      std::optional<c10::IValue> c = torch::jit::toIValue(v);
      if (!c.has_value()) return std::nullopt;
      path.constants.push_back(*c);
    }
    path.arg_source.push_back(source);
  }
  path.op = op_node->getOperation();
  path.op_name = op_node->kind().toQualString();
  return path;
}

std::vector<at::Tensor> RunSingleOp(const SingleOpPath& path,
                                    const std::vector<at::Tensor>& inputs) {
  torch::jit::Stack stack;
  stack.reserve(path.arg_source.size());
  size_t next_constant = 0;
  for (int source : path.arg_source) {
    if (source >= 0) {
      stack.emplace_back(inputs[source]);
    } else {
      stack.push_back(path.constants[next_constant++]);
    }
  }
  (*path.op)(stack);
  std::vector<at::Tensor> results;
  results.reserve(path.output_index.size());
  for (size_t k : path.output_index) results.push_back(stack.at(k).toTensor());
  return results;
}

}  // namespace byoc_torch
