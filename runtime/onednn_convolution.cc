/*!
 * \file onednn_convolution.cc
 * \brief ``torch.ops.byoc_torch.conv2d_onednn``: a float32 2-d convolution run by oneDNN
 * directly, without ATen's oneDNN ops in between.
 *
 * Place in the data flow: AOTInductor packages whose convolutions byoc_torch hands to this op
 * (byoc_torch/onednn_convolutions.py rewrites them before the package is compiled) call it
 * through AOTInductor's proxy executor, from Python or from a LibTorch app alike.
 *
 * Why: ATen's ``mkldnn._convolution_pointwise`` builds oneDNN's primitive descriptor, its
 * attributes and memory descriptors again on every call and allocates on the way: about 25 us a
 * call on the Zen 4 host, whatever the convolution's size (docs/performance.md). Here the
 * primitive and the weights reordered to the layout it wants are built once per (weight, input
 * sizes, threads) and kept; a call wraps its input and output in memory objects and executes.
 *
 * The weight is recognized by its storage, which the kept entry holds a reference to, so no
 * other tensor can take that storage's address while the entry lives: a frozen constant of a
 * package is one tensor for the package's life. Memory descriptors are given by strides, not
 * format tags, so the headers torch ships (a newer oneDNN) and the library the op links (the
 * ``onednn-cpu-gomp`` wheel, oneDNN 3.2, GNU OpenMP: it shares torch's OpenMP threads) agree on
 * what they mean. Built only when CMake finds that library (BYOC_TORCH_WITH_ONEDNN).
 */
#ifdef BYOC_TORCH_WITH_ONEDNN

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace byoc_torch {
namespace {

using dnnl::memory;

// A kept entry per (weight storage, sizes, parameters, threads); cleared whole past this many.
constexpr size_t kMaxEntries = 4096;

struct Key {
  const c10::StorageImpl* storage;
  std::vector<int64_t> values;  // offset, sizes, strides, parameters, bias?, threads
  bool operator==(const Key& other) const {
    return storage == other.storage && values == other.values;
  }
};

struct KeyHash {
  size_t operator()(const Key& key) const {
    size_t h = std::hash<const void*>()(key.storage);
    for (int64_t v : key.values) h = h * 1000003u ^ std::hash<int64_t>()(v);
    return h;
  }
};

struct Entry {
  dnnl::convolution_forward primitive;
  memory::desc src, dst, bias;
  memory weights;     // in the layout the primitive chose
  at::Tensor holder;  // the weight as given: keeps its storage, and so the key, unique
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::dims Dims(c10::IntArrayRef values) { return memory::dims(values.begin(), values.end()); }

// NHWC strides of an (n, c, h, w) tensor.
memory::dims ChannelsLast(const memory::dims& d) {
  return {d[1] * d[2] * d[3], 1, d[3] * d[1], d[1]};
}

void Check(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
           c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
           int64_t groups) {
  TORCH_CHECK(input.device().is_cpu() && weight.device().is_cpu(),
              "byoc_torch.conv2d_onednn: input and weight must be on the CPU");
  TORCH_CHECK(input.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat,
              "byoc_torch.conv2d_onednn: input and weight must be float32, got ",
              input.scalar_type(), " and ", weight.scalar_type());
  TORCH_CHECK(input.dim() == 4 && weight.dim() == 4,
              "byoc_torch.conv2d_onednn: input (N, C, H, W) and weight (O, C, kH, kW) must be "
              "4-d, got ",
              input.dim(), "-d and ", weight.dim(), "-d");
  TORCH_CHECK(groups == 1, "byoc_torch.conv2d_onednn: only groups=1, got ", groups);
  TORCH_CHECK(input.size(1) == weight.size(1), "byoc_torch.conv2d_onednn: input has ",
              input.size(1), " channels, the weight expects ", weight.size(1));
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "byoc_torch.conv2d_onednn: stride, padding and dilation take 2 values each");
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->dim() == 1 &&
                    bias->size(0) == weight.size(0),
                "byoc_torch.conv2d_onednn: bias must be float32 of ", weight.size(0),
                " values");
  }
}

// The weight reordered to ``layout``, from ``kept`` (one weight's reorders so far) or made and
// added to it: entries for other input sizes of one weight share it (the layout oneDNN picks
// rarely depends on the batch), so a dynamic batch keeps one packed copy, not one per size.
struct Reorders {
  at::Tensor holder;  // as Entry::holder: the key's storage stays this weight's
  std::vector<memory> layouts;
};

memory PackedWeights(const at::Tensor& weight, const memory::desc& layout, Reorders* kept) {
  kept->holder = weight;
  for (const memory& m : kept->layouts) {
    if (m.get_desc() == layout) return m;
  }
  at::Tensor dense = weight.contiguous();
  memory given(memory::desc(Dims(dense.sizes()), memory::data_type::f32, Dims(dense.strides())),
               Engine(), dense.data_ptr());
  memory packed(layout, Engine());
  dnnl::stream stream(Engine());
  dnnl::reorder(given, packed).execute(stream, given, packed);
  stream.wait();
  kept->layouts.push_back(packed);
  return packed;
}

template <typename Packed>
std::shared_ptr<const Entry> Build(const at::Tensor& input, const at::Tensor& weight,
                                   bool has_bias, const memory::dims& out_dims,
                                   c10::IntArrayRef stride, c10::IntArrayRef padding,
                                   c10::IntArrayRef dilation, Packed packed) {
  using dt = memory::data_type;
  memory::dims in_dims = Dims(input.sizes());
  memory::desc src(in_dims, dt::f32, ChannelsLast(in_dims));
  memory::desc dst(out_dims, dt::f32, ChannelsLast(out_dims));
  memory::desc weights_any(Dims(weight.sizes()), dt::f32, memory::format_tag::any);
  memory::desc bias(memory::dims{weight.size(0)}, dt::f32, memory::dims{1});
  // oneDNN counts dilation from 0 (no gap), PyTorch from 1.
  memory::dims gaps = {dilation[0] - 1, dilation[1] - 1};
  auto kind = dnnl::prop_kind::forward_inference;
  auto algorithm = dnnl::algorithm::convolution_direct;
  auto pd = has_bias ? dnnl::convolution_forward::primitive_desc(
                           Engine(), kind, algorithm, src, weights_any, bias, dst, Dims(stride),
                           gaps, Dims(padding), Dims(padding))
                     : dnnl::convolution_forward::primitive_desc(
                           Engine(), kind, algorithm, src, weights_any, dst, Dims(stride), gaps,
                           Dims(padding), Dims(padding));
  auto entry = std::make_shared<Entry>();
  entry->primitive = dnnl::convolution_forward(pd);
  entry->src = src;
  entry->dst = dst;
  entry->bias = bias;
  entry->holder = weight;
  entry->weights = packed(pd.weights_desc());
  return entry;
}

at::Tensor Conv2dOnednn(const at::Tensor& input, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                        c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  Check(input, weight, bias, stride, padding, dilation, groups);
  int64_t out_h =
      (input.size(2) + 2 * padding[0] - dilation[0] * (weight.size(2) - 1) - 1) / stride[0] + 1;
  int64_t out_w =
      (input.size(3) + 2 * padding[1] - dilation[1] * (weight.size(3) - 1) - 1) / stride[1] + 1;
  TORCH_CHECK(out_h > 0 && out_w > 0, "byoc_torch.conv2d_onednn: the input (", input.sizes(),
              ") is smaller than the kernel");
  memory::dims out_dims = {input.size(0), weight.size(0), out_h, out_w};

  Key weight_key{weight.storage().unsafeGetStorageImpl(), {weight.storage_offset()}};
  for (int64_t v : weight.sizes()) weight_key.values.push_back(v);
  for (int64_t v : weight.strides()) weight_key.values.push_back(v);
  Key key = weight_key;
  for (int64_t v : input.sizes()) key.values.push_back(v);
  for (c10::IntArrayRef list : {stride, padding, dilation}) {
    for (int64_t v : list) key.values.push_back(v);
  }
  key.values.push_back(bias.has_value());
  key.values.push_back(at::get_num_threads());  // the primitive's kernels are made for it

  static std::mutex mutex;
  static std::unordered_map<Key, std::shared_ptr<const Entry>, KeyHash> entries;
  static std::unordered_map<Key, Reorders, KeyHash> packed;  // per weight
  std::shared_ptr<const Entry> entry;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto found = entries.find(key);
    if (found != entries.end()) entry = found->second;
  }
  if (entry == nullptr) {
    auto pack = [&](const memory::desc& layout) {
      std::lock_guard<std::mutex> lock(mutex);
      return PackedWeights(weight, layout, &packed[weight_key]);
    };
    entry = Build(input, weight, bias.has_value(), out_dims, stride, padding, dilation, pack);
    std::lock_guard<std::mutex> lock(mutex);
    if (entries.size() >= kMaxEntries) {
      entries.clear();
      packed.clear();
    }
    entries.emplace(std::move(key), entry);
  }

  at::Tensor src = input.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty(out_dims, input.options().memory_format(at::MemoryFormat::ChannelsLast));
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(entry->src, Engine(), src.data_ptr())},
      {DNNL_ARG_WEIGHTS, entry->weights},
      {DNNL_ARG_DST, memory(entry->dst, Engine(), out.data_ptr())}};
  at::Tensor dense_bias;
  if (bias.has_value()) {
    dense_bias = bias->contiguous();
    args.emplace(DNNL_ARG_BIAS, memory(entry->bias, Engine(), dense_bias.data_ptr()));
  }
  thread_local dnnl::stream stream(Engine());
  entry->primitive.execute(stream, args);
  stream.wait();
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(byoc_torch, m) {
  m.set_python_module("byoc_torch.torch_library");
  m.def(
      "conv2d_onednn(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups) -> Tensor");
}

TORCH_LIBRARY_IMPL(byoc_torch, CPU, m) { m.impl("conv2d_onednn", Conv2dOnednn); }

}  // namespace byoc_torch

#endif  // BYOC_TORCH_WITH_ONEDNN
