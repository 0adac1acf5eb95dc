/*!
 * \file single_op.h
 * \brief The single-op fast path: a subgraph that is one ATen op skips the interpreter.
 *
 * Place in the data flow: when a subgraph is compiled (subgraph.cc), FindSingleOpPath inspects
 * its optimized TorchScript graph (inlined, tuples lowered, constants propagated). If the graph
 * is a single ATen op, each call (RunSingleOp) pushes the inputs and the op's constant arguments
 * onto a stack and calls the op's Operation through the dispatcher, without the TorchScript
 * interpreter. A module can turn the path off per instance, for measurements.
 */
#ifndef BYOC_TORCH_RUNTIME_SINGLE_OP_H_
#define BYOC_TORCH_RUNTIME_SINGLE_OP_H_

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/jit/api/module.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace byoc_torch {

/*! \brief How to call a single-op subgraph straight through the dispatcher. */
struct SingleOpPath {
  mutable std::optional<torch::jit::Operation> op;  // Operation has no default constructor
  /*! \brief Qualified op name, e.g. aten::linalg_cholesky (quoted in error messages). */
  std::string op_name;
  /*! \brief Per op argument: the subgraph input it takes (>= 0), or -1 for the next constant. */
  std::vector<int> arg_source;
  std::vector<c10::IValue> constants;
  /*! \brief Per subgraph output: which output of the op it is. */
  std::vector<size_t> output_index;
};

/*! \brief The fast path of a compiled subgraph's `forward`, if its graph is one ATen op. */
std::optional<SingleOpPath> FindSingleOpPath(torch::jit::Module& module, int64_t num_inputs,
                                             int64_t num_outputs, bool returns_tuple);

/*! \brief Run the op on `inputs`; returns the subgraph's outputs. Throws what the op throws. */
std::vector<at::Tensor> RunSingleOp(const SingleOpPath& path,
                                    const std::vector<at::Tensor>& inputs);

}  // namespace byoc_torch

#endif  // BYOC_TORCH_RUNTIME_SINGLE_OP_H_
