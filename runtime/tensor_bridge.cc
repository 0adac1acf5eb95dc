/*!
 * \file tensor_bridge.cc
 * \brief DLPack <-> ATen conversion of subgraph arguments and results (see tensor_bridge.h).
 */
#include "tensor_bridge.h"

#include <ATen/DLConvertor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>

#include <cstdint>
#include <optional>

#include "utf8.h"

namespace byoc_torch {
namespace {

bool IsHandledDevice(DLDeviceType type) {
  return type == kDLCPU || type == kDLCUDA || type == kDLCUDAHost;
}

/*! \brief A DLPack view of memory the caller keeps alive (a raw DLTensor* argument). */
DLManagedTensorVersioned* BorrowedView(const DLTensor* dl) {
  auto* managed = new DLManagedTensorVersioned();
  managed->version.major = DLPACK_MAJOR_VERSION;
  managed->version.minor = DLPACK_MINOR_VERSION;
  managed->dl_tensor = *dl;
  managed->manager_ctx = nullptr;
  managed->deleter = [](DLManagedTensorVersioned* self) { delete self; };
  return managed;
}

bool AliasesAny(const at::Tensor& t, const std::vector<at::Tensor>& inputs) {
  if (!t.has_storage()) return false;
  for (const at::Tensor& in : inputs) {
    if (in.has_storage() && t.storage().is_alias_of(in.storage())) return true;
  }
  return false;
}

}  // namespace

at::Tensor ToATen(const std::string& symbol, int index, const ffi::AnyView& arg) {
  std::optional<ffi::Tensor> owned = arg.try_cast<ffi::Tensor>();
  const DLTensor* dl = nullptr;
  if (owned.has_value()) {
    dl = owned.value().GetDLTensorPtr();
  } else if (auto ptr = arg.try_cast<DLTensor*>()) {
    dl = ptr.value();
  } else {
    TVM_FFI_THROW(TypeError) << "byoc_torch subgraph '" << symbol << "': argument " << index
                             << " is " << arg.GetTypeKey() << ", expected a tensor";
  }
  TVM_FFI_CHECK(IsHandledDevice(dl->device.device_type), ValueError)
      << "byoc_torch subgraph '" << symbol << "': argument " << index
      << " lives on DLPack device type " << static_cast<int>(dl->device.device_type)
      << ", which the torch runtime does not handle";
  try {
    (void)at::toScalarType(dl->dtype);  // ATen's own table; throws for dtypes it lacks
  } catch (const c10::Error&) {
    TVM_FFI_THROW(TypeError) << "byoc_torch subgraph '" << symbol << "': argument " << index
                             << " has dtype " << ffi::DLDataTypeToString(dl->dtype)
                             << ", which LibTorch does not support";
  }
  // From here on ATen owns `managed`: its deleter runs when the ATen storage dies.
  DLManagedTensorVersioned* managed =
      owned.has_value() ? owned.value().ToDLPackVersioned() : BorrowedView(dl);
  DLTensor& view = managed->dl_tensor;  // our own copy of the header: safe to normalize
  // Fold the byte offset into the pointer (both handled device kinds address memory directly).
  view.data = static_cast<char*>(view.data) + view.byte_offset;
  view.byte_offset = 0;
  // Pinned host memory is CPU memory to ATen.
  if (view.device.device_type == kDLCUDAHost) view.device = DLDevice{kDLCPU, 0};
  try {
    return at::fromDLPackVersioned(managed);
  } catch (const c10::Error& e) {
    // Unreachable for the dtypes and devices checked above. Whether ATen already released
    // `managed` is not specified, so it is not released again here (no double free).
    TVM_FFI_THROW(TypeError) << "byoc_torch subgraph '" << symbol << "': argument " << index
                             << " cannot be viewed by LibTorch: "
                             << ValidUtf8(e.what_without_backtrace());
  }
  TVM_FFI_UNREACHABLE();
}

ffi::Tensor ToTVM(const std::string& symbol, size_t index, at::Tensor t,
                  const std::vector<at::Tensor>& inputs) {
  TVM_FFI_CHECK(t.device().is_cpu() || t.device().is_cuda(), ValueError)
      << "byoc_torch subgraph '" << symbol << "': output " << index << " is on device "
      << t.device() << ", which the torch runtime does not hand back";
  const bool misaligned = reinterpret_cast<uintptr_t>(t.data_ptr()) % kTVMAlignment != 0;
  if (misaligned || !t.is_contiguous() || t.storage_offset() != 0 || AliasesAny(t, inputs)) {
    t = t.clone(at::MemoryFormat::Contiguous);
  }
  DLManagedTensorVersioned* managed = nullptr;
  try {
    managed = at::toDLPackVersioned(t);
  } catch (const c10::Error&) {
    TVM_FFI_THROW(TypeError) << "byoc_torch subgraph '" << symbol << "': output " << index
                             << " has dtype " << t.scalar_type()
                             << ", which has no DLPack equivalent";
  }
  // The tensor is compact row-major: say so with null strides, so that TVM sees the canonical
  // strides (ATen normalizes the stride of size-1 dimensions differently).
  managed->dl_tensor.strides = nullptr;
  try {
    return ffi::Tensor::FromDLPackVersioned(managed, kTVMAlignment, /*require_contiguous=*/true);
  } catch (...) {
    managed->deleter(managed);
    throw;
  }
}

}  // namespace byoc_torch
