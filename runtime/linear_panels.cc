/*!
 * \file linear_panels.cc
 * \brief ``torch.ops.byoc_torch.linear_panels``: a float32 matrix multiply by a frozen weight
 * stored in 16-column panels, the layout its kernel reads, so no call copies the weight.
 *
 * Place in the data flow: AOTInductor packages whose frozen matrices byoc_torch stores this way
 * (byoc_torch/frozen_weights.py's ``panels`` rewrites ``mm`` / ``addmm`` by a frozen weight,
 * transposed or as it lies, before the package is compiled, the ``PANELS`` of
 * ``matmul_weights``) call it through
 * AOTInductor's proxy executor, from Python or from a LibTorch app alike.
 * ``torch.ops.byoc_torch.pack_linear_panels`` makes the panels of an (out, in) weight at compile
 * time.
 *
 * Why: MKL's sgemm copies the weight into its own panel layout on every call (about 13 % of a
 * BERT package's time on a Zen 3 host, perf) and, on the small row counts of one sequence, splits
 * the work poorly over two threads. The panels are that copy made once: for each group of 16
 * output columns, the whole inner dimension, 16 floats a row ((ceil(out / 16), in, 16),
 * contiguous; the last panel padded with zeros). The kernel (after the BLIS / MLAS scheme) keeps
 * a 6 x 16 block of the output in twelve AVX2 registers and, for each inner index, multiplies
 * two vectors of a panel by six broadcast input values: the input is read where it lies, rows
 * strided. The inner dimension is cut in blocks of kInnerBlock so a panel's slice stays in the
 * level-1/2 cache while six rows go by; the work is split over LibTorch's OpenMP threads by
 * (groups of kPanelsPerTask panels, blocks of 6 rows).
 *
 * The AVX2 + FMA kernel runs where the CPU has both (checked once); elsewhere a plain C++ loop
 * of the same shape computes the same (correct, not fast: byoc_torch measures before it stores
 * panels, so it does not choose them there).
 */
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define BYOC_TORCH_X86 1
#endif

namespace byoc_torch {
namespace {

constexpr int64_t kPanel = 16;          // output columns per panel (two AVX2 vectors)
constexpr int64_t kRows = 6;            // output rows per kernel call (twelve accumulators)
constexpr int64_t kInnerBlock = 512;    // inner indices per pass over a panel
constexpr int64_t kPanelsPerTask = 4;   // panels one parallel task covers

// One kernel call computes a block of up to kRows x kPanel outputs over inner indices [k0, k0+kc):
// out[r, :] = from[r, :] + A[r, k0:k0+kc] times the panel slice B (kc x kPanel). `from` is the
// row the block starts from: the partial sums in `out` itself (from_ld = ldc), the bias (from_ld
// = 0, every row reads it), or null (zeros). Only the first `cols` columns are read from `from`
// and written to `out` (cols < kPanel only at the last panel).
struct Block {
  const float* a;
  int64_t lda;
  const float* b;
  int64_t kc;
  const float* from;
  int64_t from_ld;
  float* out;
  int64_t ldc;
  int rows;
  int64_t cols;
};
using BlockKernel = void (*)(const Block& block);

void GenericBlock(const Block& k) {
  for (int r = 0; r < k.rows; ++r) {
    float acc[kPanel] = {};
    for (int64_t j = 0; j < k.cols && k.from != nullptr; ++j) acc[j] = k.from[r * k.from_ld + j];
    const float* row = k.a + r * k.lda;
    for (int64_t i = 0; i < k.kc; ++i) {
      const float* bi = k.b + i * kPanel;
      for (int64_t j = 0; j < kPanel; ++j) acc[j] += row[i] * bi[j];
    }
    std::copy(acc, acc + k.cols, k.out + r * k.ldc);
  }
}

#ifdef BYOC_TORCH_X86
// ROWS accumulator pairs held in registers through the whole inner loop (named, not an array:
// GCC kept an array of them on the stack, 2.5x slower), loaded from and stored to whole rows of
// 16 (`from` null: zeros). The panels and rows are read unaligned: a package's constants and a
// row of the output need not start on a 32-byte boundary.
template <int ROWS>
__attribute__((target("avx2,fma"))) void Avx2Rows(const float* a, int64_t lda, const float* b,
                                                  int64_t kc, const float* from,
                                                  int64_t from_ld, float* out, int64_t ldc) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
// M applied to each row's number and accumulator pair.
#define BYOC_TORCH_EACH_ROW(M) \
  M(0, c00, c01) M(1, c10, c11) M(2, c20, c21) M(3, c30, c31) M(4, c40, c41) M(5, c50, c51)
// The accumulators of row R from `from`, when the block has that row.
#define BYOC_TORCH_LOAD(R, C0, C1)                                                       \
  if (ROWS > R && from != nullptr)                                                       \
    C0 = _mm256_loadu_ps(from + R * from_ld), C1 = _mm256_loadu_ps(from + R * from_ld + 8);
  BYOC_TORCH_EACH_ROW(BYOC_TORCH_LOAD)
#undef BYOC_TORCH_LOAD
// Row R's two multiply-adds of inner index k, when the block has that row.
#define BYOC_TORCH_ROW(R, C0, C1)                                     \
  if (ROWS > R) {                                                     \
    const __m256 v = _mm256_broadcast_ss(a + R * lda + k);            \
    C0 = _mm256_fmadd_ps(v, b0, C0), C1 = _mm256_fmadd_ps(v, b1, C1); \
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * kPanel), b1 = _mm256_loadu_ps(b + k * kPanel + 8);
    BYOC_TORCH_EACH_ROW(BYOC_TORCH_ROW)
  }
#undef BYOC_TORCH_ROW
// Row R's accumulators to `out`, when the block has that row.
#define BYOC_TORCH_STORE(R, C0, C1) \
  if (ROWS > R) _mm256_storeu_ps(out + R * ldc, C0), _mm256_storeu_ps(out + R * ldc + 8, C1);
  BYOC_TORCH_EACH_ROW(BYOC_TORCH_STORE)
#undef BYOC_TORCH_STORE
#undef BYOC_TORCH_EACH_ROW
}

__attribute__((target("avx2,fma"))) void Avx2Block(const Block& k) {
  using Rows = void (*)(const float*, int64_t, const float*, int64_t, const float*, int64_t,
                        float*, int64_t);
  static constexpr Rows kByRows[kRows + 1] = {nullptr,     Avx2Rows<1>, Avx2Rows<2>, Avx2Rows<3>,
                                              Avx2Rows<4>, Avx2Rows<5>, Avx2Rows<6>};
  if (k.cols == kPanel) return kByRows[k.rows](k.a, k.lda, k.b, k.kc, k.from, k.from_ld, k.out, k.ldc);
  // The last panel, narrower: through a whole-width tile (padding columns start at zero).
  alignas(32) float tile[kRows * kPanel] = {};
  for (int r = 0; r < k.rows && k.from != nullptr; ++r)
    std::copy(k.from + r * k.from_ld, k.from + r * k.from_ld + k.cols, tile + r * kPanel);
  kByRows[k.rows](k.a, k.lda, k.b, k.kc, tile, kPanel, tile, kPanel);
  for (int r = 0; r < k.rows; ++r)
    std::copy(tile + r * kPanel, tile + r * kPanel + k.cols, k.out + r * k.ldc);
}
#endif

BlockKernel ChosenKernel() {
#ifdef BYOC_TORCH_X86
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) return Avx2Block;
#endif
  return GenericBlock;
}

at::Tensor PackLinearPanels(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kFloat && weight.device().is_cpu(),
              "pack_linear_panels: the weight must be a 2-d float32 CPU tensor (out, in), got ",
              weight.sizes(), " ", weight.scalar_type(), " on ", weight.device());
  const int64_t out = weight.size(0), in = weight.size(1);
  const int64_t panels = (out + kPanel - 1) / kPanel;
  at::Tensor padded = at::zeros({panels * kPanel, in}, weight.options());
  padded.narrow(0, 0, out).copy_(weight);
  // (panels, 16, in) -> (panels, in, 16): each panel's rows are the inner index
  return padded.view({panels, kPanel, in}).transpose(1, 2).contiguous();
}

at::Tensor LinearPanels(const at::Tensor& input, const at::Tensor& panels,
                        const std::optional<at::Tensor>& bias, int64_t out_features) {
  TORCH_CHECK(input.dim() == 2 && input.scalar_type() == at::kFloat && input.device().is_cpu(),
              "linear_panels: the input must be a 2-d float32 CPU tensor, got ", input.sizes(),
              " ", input.scalar_type(), " on ", input.device());
  const int64_t rows = input.size(0), inner = input.size(1);
  const int64_t count = (out_features + kPanel - 1) / kPanel;
  TORCH_CHECK(out_features > 0 && panels.dim() == 3 && panels.scalar_type() == at::kFloat &&
                  panels.size(0) == count && panels.size(1) == inner &&
                  panels.size(2) == kPanel && panels.is_contiguous(),
              "linear_panels: panels of sizes ", panels.sizes(), " do not hold an (",
              out_features, ", ", inner, ") weight");
  at::Tensor dense_bias;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out_features &&
                    bias->scalar_type() == at::kFloat,
                "linear_panels: the bias must be float32 of ", out_features, " values, got ",
                bias->sizes(), " ", bias->scalar_type());
    dense_bias = bias->contiguous();
  }
  at::Tensor a = input.stride(1) == 1 && input.stride(0) >= inner ? input : input.contiguous();
  at::Tensor result = at::empty({rows, out_features}, input.options());
  if (rows == 0) return result;
  if (inner == 0) return dense_bias.defined() ? result.copy_(dense_bias.expand_as(result))
                                              : result.zero_();
  const float* a_data = a.data_ptr<float>();
  const int64_t lda = a.stride(0);
  const float* b_data = panels.data_ptr<float>();
  const float* bias_data = dense_bias.defined() ? dense_bias.data_ptr<float>() : nullptr;
  float* c_data = result.data_ptr<float>();
  const int64_t row_blocks = (rows + kRows - 1) / kRows;
  const int64_t panel_groups = (count + kPanelsPerTask - 1) / kPanelsPerTask;
  const BlockKernel kernel = ChosenKernel();

  at::parallel_for(0, panel_groups * row_blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k0 = 0; k0 < inner; k0 += kInnerBlock) {
      const int64_t kc = std::min(kInnerBlock, inner - k0);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t group = task / row_blocks, r0 = (task % row_blocks) * kRows;
        const int n_rows = static_cast<int>(std::min(kRows, rows - r0));
        const int64_t last = std::min(count, (group + 1) * kPanelsPerTask);
        for (int64_t p = group * kPanelsPerTask; p < last; ++p) {
          const int64_t c0 = p * kPanel;
          float* out = c_data + r0 * out_features + c0;
          // the first inner block starts from the bias, the others from the partial sums
          const float* from = k0 ? out : bias_data ? bias_data + c0 : nullptr;
          kernel({a_data + r0 * lda + k0, lda, b_data + (p * inner + k0) * kPanel, kc, from,
                  k0 ? out_features : 0, out, out_features, n_rows,
                  std::min(kPanel, out_features - c0)});
        }
      }
    }
  });
  return result;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(byoc_torch, m) {
  m.set_python_module("byoc_torch.torch_library");
  m.def("pack_linear_panels(Tensor weight) -> Tensor");
  m.def("linear_panels(Tensor input, Tensor panels, Tensor? bias, int out_features) -> Tensor");
}

TORCH_LIBRARY_IMPL(byoc_torch, CPU, m) {
  m.impl("pack_linear_panels", PackLinearPanels);
  m.impl("linear_panels", LinearPanels);
}

}  // namespace byoc_torch
