/*!
 * \file deploy_ops.cc
 * \brief A user's custom-op library with a C++ kernel: `byoc_deploy_test::scaled_gelu(x, s)`,
 *        gelu(x) * s + x.
 *
 * Place in the data flow: tests/test_deploy_cpp.py loads it in Python
 * (torch.ops.load_library) to compile a model calling the op (TVM cannot import it, so it
 * runs in a LibTorch subgraph inside the artifact) and preloads it into the C++ program, as
 * Triton's PyTorch backend is given custom-op libraries (LD_PRELOAD).
 */
#include <ATen/ATen.h>
#include <torch/library.h>

namespace {

at::Tensor ScaledGelu(const at::Tensor& x, double s) { return at::gelu(x) * s + x; }

// Output shape for torch.export's tracing (no Python fake kernel: the library is C++ only).
at::Tensor ScaledGeluMeta(const at::Tensor& x, double s) { return at::empty_like(x); }

}  // namespace

TORCH_LIBRARY(byoc_deploy_test, m) { m.def("scaled_gelu(Tensor x, float s) -> Tensor"); }

TORCH_LIBRARY_IMPL(byoc_deploy_test, CPU, m) { m.impl("scaled_gelu", ScaledGelu); }
TORCH_LIBRARY_IMPL(byoc_deploy_test, Meta, m) { m.impl("scaled_gelu", ScaledGeluMeta); }
