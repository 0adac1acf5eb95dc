/*!
 * \file linear_panels.cc
 * \brief ``torch.ops.byoc_torch.linear_panels``: a float32 matrix multiply by a frozen weight
 * stored in 16-column panels, the layout its kernel reads, so no call copies the weight.
 *
 * Place in the data flow: AOTInductor packages whose frozen matrices byoc_torch stores this way
 * (byoc_torch/frozen_weights.py's ``panels`` rewrites ``mm`` / ``addmm`` by a transposed frozen
 * weight before the package is compiled, the ``PANELS`` of ``matmul_weights``) call it through
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

// One kernel call: tile (kRows x kPanel, row-major, 32-byte aligned) += A[rows, k0:k0+kc] times
// the panel slice B (kc x kPanel), for the first `rows` rows.
using TileKernel = void (*)(const float* a, int64_t lda, const float* b, int64_t kc, float* tile,
                            int rows);

void GenericTile(const float* a, int64_t lda, const float* b, int64_t kc, float* tile, int rows) {
  for (int r = 0; r < rows; ++r) {
    float* out = tile + r * kPanel;
    const float* row = a + r * lda;
    for (int64_t k = 0; k < kc; ++k) {
      const float v = row[k];
      const float* bk = b + k * kPanel;
      for (int64_t j = 0; j < kPanel; ++j) out[j] += v * bk[j];
    }
  }
}

#ifdef BYOC_TORCH_X86
// ROWS accumulator pairs held in registers through the whole inner loop (named, not an array:
// GCC kept an array of them on the stack, 2.5x slower). The panels are read unaligned: a
// package's constants need not start on a 32-byte boundary.
template <int ROWS>
__attribute__((target("avx2,fma"))) void Avx2Tile(const float* a, int64_t lda, const float* b,
                                                  int64_t kc, float* tile) {
  __m256 c00 = _mm256_load_ps(tile), c01 = _mm256_load_ps(tile + 8);
  __m256 c10 = _mm256_setzero_ps(), c11 = c10, c20 = c10, c21 = c10, c30 = c10, c31 = c10;
  __m256 c40 = c10, c41 = c10, c50 = c10, c51 = c10;
  if (ROWS > 1) c10 = _mm256_load_ps(tile + 16), c11 = _mm256_load_ps(tile + 24);
  if (ROWS > 2) c20 = _mm256_load_ps(tile + 32), c21 = _mm256_load_ps(tile + 40);
  if (ROWS > 3) c30 = _mm256_load_ps(tile + 48), c31 = _mm256_load_ps(tile + 56);
  if (ROWS > 4) c40 = _mm256_load_ps(tile + 64), c41 = _mm256_load_ps(tile + 72);
  if (ROWS > 5) c50 = _mm256_load_ps(tile + 80), c51 = _mm256_load_ps(tile + 88);
// One row's two multiply-adds of an inner index k, when the tile has that row.
#define BYOC_TORCH_ROW(R, C0, C1)                                          \
  if (ROWS > R) {                                                          \
    const __m256 v = _mm256_broadcast_ss(a + R * lda + k);                 \
    C0 = _mm256_fmadd_ps(v, b0, C0), C1 = _mm256_fmadd_ps(v, b1, C1);      \
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * kPanel), b1 = _mm256_loadu_ps(b + k * kPanel + 8);
    BYOC_TORCH_ROW(0, c00, c01)
    BYOC_TORCH_ROW(1, c10, c11)
    BYOC_TORCH_ROW(2, c20, c21)
    BYOC_TORCH_ROW(3, c30, c31)
    BYOC_TORCH_ROW(4, c40, c41)
    BYOC_TORCH_ROW(5, c50, c51)
  }
#undef BYOC_TORCH_ROW
  _mm256_store_ps(tile, c00), _mm256_store_ps(tile + 8, c01);
  if (ROWS > 1) _mm256_store_ps(tile + 16, c10), _mm256_store_ps(tile + 24, c11);
  if (ROWS > 2) _mm256_store_ps(tile + 32, c20), _mm256_store_ps(tile + 40, c21);
  if (ROWS > 3) _mm256_store_ps(tile + 48, c30), _mm256_store_ps(tile + 56, c31);
  if (ROWS > 4) _mm256_store_ps(tile + 64, c40), _mm256_store_ps(tile + 72, c41);
  if (ROWS > 5) _mm256_store_ps(tile + 80, c50), _mm256_store_ps(tile + 88, c51);
}

void Avx2AnyRows(const float* a, int64_t lda, const float* b, int64_t kc, float* tile,
                 int rows) {
  switch (rows) {
    case 6: return Avx2Tile<6>(a, lda, b, kc, tile);
    case 5: return Avx2Tile<5>(a, lda, b, kc, tile);
    case 4: return Avx2Tile<4>(a, lda, b, kc, tile);
    case 3: return Avx2Tile<3>(a, lda, b, kc, tile);
    case 2: return Avx2Tile<2>(a, lda, b, kc, tile);
    default: return Avx2Tile<1>(a, lda, b, kc, tile);
  }
}
#endif

TileKernel ChosenKernel() {
#ifdef BYOC_TORCH_X86
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) return Avx2AnyRows;
#endif
  return GenericTile;
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
  const TileKernel kernel = ChosenKernel();

  at::parallel_for(0, panel_groups * row_blocks, 1, [&](int64_t begin, int64_t end) {
    alignas(32) float tile[kRows * kPanel];
    for (int64_t k0 = 0; k0 < inner; k0 += kInnerBlock) {
      const int64_t kc = std::min(kInnerBlock, inner - k0);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t group = task / row_blocks, r0 = (task % row_blocks) * kRows;
        const int n_rows = static_cast<int>(std::min(kRows, rows - r0));
        const int64_t last = std::min(count, (group + 1) * kPanelsPerTask);
        for (int64_t p = group * kPanelsPerTask; p < last; ++p) {
          const int64_t c0 = p * kPanel, cols = std::min(kPanel, out_features - c0);
          float* c = c_data + r0 * out_features + c0;
          for (int r = 0; r < n_rows; ++r) {  // the tile starts from the bias or the partial sum
            const float* from = k0 ? c + r * out_features : bias_data ? bias_data + c0 : nullptr;
            float* to = tile + r * kPanel;
            std::fill(to, to + kPanel, 0.0f);
            if (from != nullptr) std::copy(from, from + cols, to);
          }
          kernel(a_data + r0 * lda + k0, lda, b_data + (p * inner + k0) * kPanel, kc, tile,
                 n_rows);
          for (int r = 0; r < n_rows; ++r)
            std::copy(tile + r * kPanel, tile + r * kPanel + cols, c + r * out_features);
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
