/*!
 * \file checked_call.cc
 * \brief The compiled model's call path: the input checks of a CompiledModule, done in C++ in
 *        front of the VM's main function.
 *
 * Place in the data flow: byoc_torch/compiled.py wraps each thread's VM ``main`` with
 * ``byoc_torch.MakeCheckedCall`` once; every call of the compiled model then is one FFI call.
 * The checks are those of the Python slow path (count, dtype, rank, static dims, consistent
 * symbolic dims, device) plus what TVM's kernels assume (compact row-major, 64-byte aligned).
 * When any check fails the function returns None without running anything, and Python's slow
 * path raises the precise error (or prepares an input it accepts, e.g. a strided view). So
 * this file decides nothing about errors; it only makes the accepting case cheap.
 *
 * An input spec is an array of int64: [dtype code, dtype bits, dtype lanes, rank, dim 0, ...],
 * a dim >= 0 static, a dim < 0 the symbol -(dim + 1). Each symbol has a range [min, max]
 * (max -1: unbounded) that torch.export allowed; a size outside it is refused. A symbol that
 * is a derived dim (torch.export's `Dim("n") + 2`, the symbol "s0 + 2") has the range
 * [min, max, base, a, b]: its size must be a * (the size of symbol base) + b.
 */
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace byoc_torch {
namespace ffi = tvm::ffi;

namespace {

constexpr int64_t kAlignment = 64;  // what TVM's compiled kernels assume of their inputs
constexpr size_t kHeader = 4;       // dtype code, bits, lanes, rank
constexpr int64_t kStackSymbols = 16;  // symbols bound without a heap allocation

struct InputCheck {
  DLDataType dtype;
  std::vector<int64_t> dims;  // >= 0 static, < 0 symbol -(d + 1)
};

bool IsCompact(const DLTensor* t) {
  if (t->strides == nullptr) return true;
  int64_t expected = 1;
  for (int d = t->ndim - 1; d >= 0; --d) {
    if (t->shape[d] != 1 && t->strides[d] != expected) return false;
    expected *= t->shape[d];
  }
  return true;
}

bool Passes(const DLTensor* t, const InputCheck& check, DLDeviceType device,
            int64_t* symbols) {
  if (t->dtype.code != check.dtype.code || t->dtype.bits != check.dtype.bits ||
      t->dtype.lanes != check.dtype.lanes) {
    return false;
  }
  if (t->device.device_type != device) return false;
  if (t->ndim != static_cast<int32_t>(check.dims.size())) return false;
  for (int d = 0; d < t->ndim; ++d) {
    int64_t want = check.dims[d];
    if (want >= 0) {
      if (t->shape[d] != want) return false;
      continue;
    }
    int64_t& bound = symbols[-(want + 1)];
    if (bound < 0) {
      bound = t->shape[d];
    } else if (bound != t->shape[d]) {
      return false;
    }
  }
  if (!IsCompact(t)) return false;
  auto address = reinterpret_cast<uintptr_t>(t->data) + t->byte_offset;
  return address % kAlignment == 0;
}

const DLTensor* AsDLTensor(const ffi::AnyView& arg) {
  if (auto tensor = arg.try_cast<ffi::Tensor>()) return tensor.value().GetDLTensorPtr();
  if (auto ptr = arg.try_cast<DLTensor*>()) return ptr.value();
  return nullptr;
}

/*! \brief A derived dim: symbol `symbol` is a * (symbol `base`) + b. */
struct Derived {
  int64_t symbol, base, a, b;
};

/*!
 * \brief ``main`` behind the checks of ``specs``.
 * \param main the VM function (one per thread: a VM is not shareable).
 * \param specs one spec per input (see the file comment).
 * \param num_symbols how many distinct symbols the specs use.
 * \param device_type the DLPack device type every input must be on.
 * \param unwrap_single return the one element of a one-element result array instead of it.
 */
ffi::Function MakeCheckedCall(ffi::Function main, ffi::Array<ffi::Array<int64_t>> specs,
                              ffi::Array<ffi::Array<int64_t>> symbol_ranges, int64_t device_type,
                              bool unwrap_single) {
  const auto num_symbols = static_cast<int64_t>(symbol_ranges.size());
  std::vector<std::pair<int64_t, int64_t>> ranges;
  std::vector<Derived> derived;
  for (const ffi::Array<int64_t>& range : symbol_ranges) {
    TVM_FFI_CHECK(range.size() == 2 || range.size() == 5, ValueError)
        << "byoc_torch.MakeCheckedCall: a symbol range is [min, max] or [min, max, base, a, b]";
    if (range.size() == 5) {
      TVM_FFI_CHECK(range[2] >= 0 && range[2] < num_symbols, ValueError)
          << "byoc_torch.MakeCheckedCall: symbol " << range[2] << " is out of range";
      derived.push_back({static_cast<int64_t>(ranges.size()), range[2], range[3], range[4]});
    }
    ranges.emplace_back(range[0], range[1]);
  }
  std::vector<InputCheck> checks;
  for (const ffi::Array<int64_t>& spec : specs) {
    TVM_FFI_CHECK(spec.size() >= kHeader, ValueError)
        << "byoc_torch.MakeCheckedCall: an input spec needs at least " << kHeader << " fields";
    InputCheck check;
    check.dtype.code = static_cast<uint8_t>(spec[0]);
    check.dtype.bits = static_cast<uint8_t>(spec[1]);
    check.dtype.lanes = static_cast<uint16_t>(spec[2]);
    TVM_FFI_CHECK(static_cast<size_t>(spec[3]) == spec.size() - kHeader, ValueError)
        << "byoc_torch.MakeCheckedCall: an input spec's rank " << spec[3] << " does not match its "
        << spec.size() - kHeader << " dims";
    for (size_t d = kHeader; d < spec.size(); ++d) {
      int64_t dim = spec[d];
      TVM_FFI_CHECK(dim >= 0 || -(dim + 1) < num_symbols, ValueError)
          << "byoc_torch.MakeCheckedCall: symbol " << -(dim + 1) << " is out of range";
      check.dims.push_back(dim);
    }
    checks.push_back(std::move(check));
  }
  auto device = static_cast<DLDeviceType>(device_type);
  return ffi::Function::FromPacked([main, checks = std::move(checks),
                                    ranges = std::move(ranges), derived = std::move(derived),
                                    num_symbols, device,
                                    unwrap_single](ffi::PackedArgs args, ffi::Any* rv) {
    if (args.size() != static_cast<int32_t>(checks.size())) {
      *rv = nullptr;
      return;
    }
    int64_t stack[kStackSymbols];
    std::vector<int64_t> heap;
    int64_t* symbols = stack;
    if (num_symbols > kStackSymbols) {
      heap.resize(static_cast<size_t>(num_symbols));
      symbols = heap.data();
    }
    std::fill(symbols, symbols + num_symbols, -1);
    for (int32_t i = 0; i < args.size(); ++i) {
      const DLTensor* t = AsDLTensor(args[i]);
      if (t == nullptr || !Passes(t, checks[static_cast<size_t>(i)], device, symbols)) {
        *rv = nullptr;
        return;
      }
    }
    for (int64_t k = 0; k < num_symbols; ++k) {
      const auto& [lower, upper] = ranges[static_cast<size_t>(k)];
      if (symbols[k] < lower || (upper >= 0 && symbols[k] > upper)) {
        *rv = nullptr;
        return;
      }
    }
    for (const Derived& dim : derived) {
      if (symbols[dim.symbol] != dim.a * symbols[dim.base] + dim.b) {
        *rv = nullptr;
        return;
      }
    }
    main.CallPacked(args, rv);
    if (unwrap_single) {
      if (auto array = rv->try_cast<ffi::Array<ffi::Any>>()) {
        if (array.value().size() == 1) {
          ffi::Any only = array.value()[0];
          *rv = std::move(only);
        }
      }
    }
  });
}

}  // namespace

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef().def("byoc_torch.MakeCheckedCall", MakeCheckedCall);
}

}  // namespace byoc_torch
