/*!
 * \file tensor_bridge.h
 * \brief TVM tensors <-> ATen tensors across one subgraph call, zero-copy where possible.
 *
 * Place in the data flow: the module (torch_runtime_module.cc) turns every argument the Relax
 * VM passes into an ATen tensor with ToATen before LibTorch runs, and every LibTorch result into
 * a TVM tensor with ToTVM. Both directions use ATen's own DLPack conversion
 * (at::fromDLPackVersioned / at::toDLPackVersioned), which also owns the dtype and device tables.
 *
 * Ownership: an input ATen tensor views the TVM tensor's memory and holds a reference to the TVM
 * tensor until ATen releases it; an output TVM tensor views ATen's memory and holds the ATen
 * tensor. A result is copied only when TVM cannot take it as it is: non-contiguous, offset into
 * its storage, not 64-byte aligned, or aliasing an input (TVM's memory planner may reuse a dead
 * input's memory).
 */
#ifndef BYOC_TORCH_RUNTIME_TENSOR_BRIDGE_H_
#define BYOC_TORCH_RUNTIME_TENSOR_BRIDGE_H_

#include <ATen/ATen.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/tensor.h>

#include <string>
#include <vector>

namespace byoc_torch {
namespace ffi = tvm::ffi;

/*! \brief Data alignment TVM's kernels expect of every tensor they receive. */
constexpr size_t kTVMAlignment = 64;

/*!
 * \brief Wrap argument `index` of subgraph `symbol` as an ATen tensor over the same memory.
 * Throws TypeError for a non-tensor or a dtype ATen lacks, ValueError for a device the runtime
 * does not handle (CPU, CUDA and CUDA host memory are handled).
 */
at::Tensor ToATen(const std::string& symbol, int index, const ffi::AnyView& arg);

/*!
 * \brief Hand result `index` of subgraph `symbol` to TVM, copying only when TVM cannot use it
 * as it is (see the file comment). `inputs` are the subgraph's ATen inputs, for the alias check.
 */
ffi::Tensor ToTVM(const std::string& symbol, size_t index, at::Tensor t,
                  const std::vector<at::Tensor>& inputs);

}  // namespace byoc_torch

#endif  // BYOC_TORCH_RUNTIME_TENSOR_BRIDGE_H_
