/*!
 * \file torch_runtime_module.cc
 * \brief The `torch` module object, its measurement state and its global registrations (see
 * torch_runtime_module.h for its place in the data flow and its functions).
 */
#include "torch_runtime_module.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <tvm/ffi/cast.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "aoti_executor.h"
#include "serialization.h"
#include "subgraph.h"
#include "tensor_bridge.h"

namespace byoc_torch {
namespace {

/*! \brief Measurement mode of one module instance; never anything but kNormal in production. */
enum class Mode : int { kNormal = 0, kRecord = 1, kReplay = 2 };

const char* ModeName(Mode mode) {
  switch (mode) {
    case Mode::kRecord:
      return "record";
    case Mode::kReplay:
      return "replay";
    default:
      return "normal";
  }
}

Mode ParseMode(const std::string& name) {
  if (name == "normal") return Mode::kNormal;
  if (name == "record") return Mode::kRecord;
  if (name == "replay") return Mode::kReplay;
  TVM_FFI_THROW(ValueError) << "byoc_torch: measurement mode must be 'normal', 'record' or "
                               "'replay', got '"
                            << name << "'";
  TVM_FFI_UNREACHABLE();
}

/*! \brief Counters and recording of one subgraph in one module instance. */
struct Measurements {
  std::atomic<int64_t> calls{0};
  /*! \brief Nanoseconds spent in LibTorch (the work itself, not the crossing). */
  std::atomic<int64_t> torch_ns{0};
  std::mutex mu;  // guards everything below
  bool has_recording = false;
  std::vector<at::Tensor> outputs;
  std::vector<std::vector<int64_t>> input_shapes;  // of the recorded call
  std::vector<at::ScalarType> input_dtypes;
};

class TorchRuntimeModuleObj : public ffi::ModuleObj {
 public:
  TorchRuntimeModuleObj(std::string metadata, ffi::Array<SubgraphSpec> specs)
      : metadata_(std::move(metadata)), specs_(std::move(specs)) {
    for (const SubgraphSpec& spec : specs_) {
      std::string symbol(spec->symbol);
      TVM_FFI_CHECK(index_.count(symbol) == 0, ValueError)
          << "byoc_torch: duplicate subgraph symbol '" << symbol << "'";
      index_.emplace(symbol, subgraphs_.size());
      subgraphs_.push_back(std::make_unique<CompiledSubgraph>(spec));
      measurements_.push_back(std::make_unique<Measurements>());
      aoti_.emplace_back(spec->aoti_package.size() > 0
                             ? std::make_shared<const AotiExecutor>(symbol, spec->aoti_package,
                                                                    spec->aoti_inputs)
                             : nullptr);
    }
  }

  const char* kind() const final { return "torch"; }

  int GetPropertyMask() const final {
    return ffi::Module::kBinarySerializable | ffi::Module::kRunnable;
  }

  ffi::Optional<ffi::Function> GetFunction(const ffi::String& name) final {
    ffi::ObjectPtr<ffi::Object> self = ffi::GetObjectPtr<ffi::Object>(this);
    std::string key(name);
    if (key == "__byoc_torch_metadata__") {
      return ffi::Function::FromTyped([self, this]() {
        std::lock_guard<std::mutex> lock(metadata_mutex_);
        return ffi::String(metadata_);
      });
    }
    if (key == "__byoc_torch_set_metadata__") {
      return ffi::Function::FromTyped([self, this](const ffi::String& text) {
        std::lock_guard<std::mutex> lock(metadata_mutex_);
        metadata_ = std::string(text);
      });
    }
    if (key == "__byoc_torch_symbols__") {
      return ffi::Function::FromTyped([self, this]() {
        ffi::Array<ffi::String> names;
        for (const auto& sg : subgraphs_) names.push_back(sg->symbol());
        return names;
      });
    }
    if (key == "__byoc_torch_stats__") {
      return ffi::Function::FromTyped([self, this]() { return Stats(); });
    }
    if (key == "__byoc_torch_reset_stats__") {
      return ffi::Function::FromTyped([self, this]() { ResetStats(); });
    }
    if (key == "__byoc_torch_set_mode__") {
      return ffi::Function::FromTyped([self, this](const ffi::String& mode) {
        Mode next = ParseMode(std::string(mode));
        return ffi::String(ModeName(static_cast<Mode>(mode_.exchange(static_cast<int>(next)))));
      });
    }
    if (key == "__byoc_torch_set_fast_path__") {
      return ffi::Function::FromTyped(
          [self, this](bool enabled) { return fast_path_.exchange(enabled); });
    }
    if (key == "__byoc_torch_set_aoti__") {
      return ffi::Function::FromTyped(
          [self, this](const ffi::String& symbol, const ffi::Bytes& package,
                       const ffi::Array<int64_t>& inputs) { SetAoti(symbol, package, inputs); });
    }
    if (key == "__byoc_torch_suspend_aoti__") {
      // Measurement only: with true, subgraphs holding a package run their TorchScript until
      // false again (packages stay loaded), so the two executors can be timed in turns.
      return ffi::Function::FromTyped(
          [self, this](bool suspended) { return aoti_suspended_.exchange(suspended); });
    }
    if (key == "__byoc_torch_specs__") {
      return ffi::Function::FromTyped([self, this]() {
        std::lock_guard<std::mutex> lock(metadata_mutex_);
        return specs_;  // the specs as they would be saved (packages installed included)
      });
    }
    if (key == "__byoc_torch_executors__") {
      return ffi::Function::FromTyped([self, this]() { return Executors(); });
    }
    auto it = index_.find(key);
    if (it == index_.end()) return std::nullopt;
    size_t idx = it->second;
    return ffi::Function(
        [self, this, idx](ffi::PackedArgs args, ffi::Any* rv) { Invoke(idx, args, rv); });
  }

  ffi::String InspectSource(const ffi::String& format) const final {
    std::ostringstream os;
    std::lock_guard<std::mutex> lock(metadata_mutex_);
    for (const SubgraphSpec& spec : specs_) {
      os << "# subgraph " << spec->symbol << " (" << spec->num_inputs << " inputs, "
         << spec->num_outputs << " outputs"
         << (spec->package_only            ? ", runs only as its AOTInductor package"
             : spec->aoti_package.size() > 0 ? ", runs its AOTInductor package"
                                              : "")
         << ")\n"
         << spec->script << "\n";
    }
    return os.str();
  }

  ffi::Bytes SaveToBytes() const final {
    std::lock_guard<std::mutex> lock(metadata_mutex_);
    return SerializeArtifact(metadata_, specs_);
  }

 private:
  /*! \brief Make `package` subgraph `symbol`'s executor (empty: its TorchScript again). The
   * spec changes with it, so the artifact carries what runs. */
  void SetAoti(const ffi::String& symbol, const ffi::Bytes& package,
               const ffi::Array<int64_t>& inputs) {
    auto it = index_.find(std::string(symbol));
    TVM_FFI_CHECK(it != index_.end(), ValueError)
        << "byoc_torch: no subgraph '" << symbol << "' in this module";
    size_t idx = it->second;
    std::lock_guard<std::mutex> lock(metadata_mutex_);
    SubgraphSpec spec = specs_[idx].WithAotiPackage(package, inputs);  // validates the indices
    std::shared_ptr<const AotiExecutor> executor;
    if (package.size() > 0) {
      executor = std::make_shared<const AotiExecutor>(std::string(symbol), package, inputs);
    }
    specs_.Set(idx, spec);
    std::atomic_store(&aoti_[idx], std::move(executor));
  }

  ffi::Map<ffi::String, ffi::String> Executors() const {
    ffi::Map<ffi::String, ffi::String> out;
    for (size_t i = 0; i < subgraphs_.size(); ++i) {
      bool aoti = std::atomic_load(&aoti_[i]) != nullptr;
      out.Set(subgraphs_[i]->symbol(), aoti ? "aot_inductor" : "torchscript");
    }
    return out;
  }

  ffi::Map<ffi::String, ffi::Array<int64_t>> Stats() const {
    ffi::Map<ffi::String, ffi::Array<int64_t>> stats;
    for (size_t i = 0; i < subgraphs_.size(); ++i) {
      const Measurements& m = *measurements_[i];
      stats.Set(subgraphs_[i]->symbol(),
                ffi::Array<int64_t>{m.calls.load(), m.torch_ns.load(),
                                    subgraphs_[i]->has_single_op() ? 1 : 0});
    }
    return stats;
  }

  void ResetStats() {
    for (auto& m : measurements_) {
      m->calls.store(0);
      m->torch_ns.store(0);
      std::lock_guard<std::mutex> lock(m->mu);
      m->has_recording = false;
      m->outputs.clear();
      m->input_shapes.clear();
      m->input_dtypes.clear();
    }
  }

  /*! \brief The recorded outputs, if `inputs` match the recorded call's shapes and dtypes. */
  static std::vector<at::Tensor> Replay(const CompiledSubgraph& sg, Measurements* m,
                                        const std::vector<at::Tensor>& inputs) {
    std::lock_guard<std::mutex> lock(m->mu);
    TVM_FFI_CHECK(m->has_recording, RuntimeError)
        << "byoc_torch subgraph '" << sg.symbol() << "': replay mode without a recorded call";
    for (size_t i = 0; i < inputs.size(); ++i) {
      at::IntArrayRef want(m->input_shapes[i]);
      TVM_FFI_CHECK(inputs[i].sizes() == want && inputs[i].scalar_type() == m->input_dtypes[i],
                    ValueError)
          << "byoc_torch subgraph '" << sg.symbol() << "': replay mode, but input " << i << " is "
          << inputs[i].scalar_type() << inputs[i].sizes() << " and the recorded call's was "
          << m->input_dtypes[i] << want << "; record again with these inputs";
    }
    return m->outputs;
  }

  static void Record(Measurements* m, const std::vector<at::Tensor>& inputs,
                     const std::vector<at::Tensor>& outputs) {
    std::vector<std::vector<int64_t>> shapes;
    std::vector<at::ScalarType> dtypes;
    for (const at::Tensor& in : inputs) {
      shapes.emplace_back(in.sizes().begin(), in.sizes().end());
      dtypes.push_back(in.scalar_type());
    }
    std::lock_guard<std::mutex> lock(m->mu);
    m->has_recording = true;
    m->outputs = outputs;
    m->input_shapes = std::move(shapes);
    m->input_dtypes = std::move(dtypes);
  }

  void Invoke(size_t idx, ffi::PackedArgs all_args, ffi::Any* rv) {
    // TVM's RunCodegen passes every parameter of the function, including a shape that only
    // defines symbolic variables for TVM (the partition pass adds one when a variable appears
    // only inside compound dims); LibTorch takes the tensors.
    bool has_shape = false;
    for (int i = 0; i < all_args.size(); ++i) {
      has_shape |= all_args[i].type_index() == ffi::TypeIndex::kTVMFFIShape;
    }
    std::vector<ffi::AnyView> kept;  // allocated only when a shape is passed
    if (has_shape) {
      for (int i = 0; i < all_args.size(); ++i) {
        if (all_args[i].type_index() != ffi::TypeIndex::kTVMFFIShape) kept.push_back(all_args[i]);
      }
    }
    ffi::PackedArgs args = has_shape ? ffi::PackedArgs(kept.data(), static_cast<int>(kept.size()))
                                     : all_args;
    const CompiledSubgraph& sg = *subgraphs_[idx];
    Measurements* m = measurements_[idx].get();
    const std::string& symbol = sg.symbol();
    const int n_in = static_cast<int>(sg.spec()->num_inputs);
    const int n_out = static_cast<int>(sg.spec()->num_outputs);
    const bool dps = args.size() == n_in + n_out && n_out > 0;
    TVM_FFI_CHECK(args.size() == n_in || dps, ValueError)
        << "byoc_torch subgraph '" << symbol << "' expects " << n_in << " input tensors (or "
        << n_in + n_out << " with destination outputs), got " << args.size();

    c10::InferenceMode guard;
    std::vector<at::Tensor> inputs;
    inputs.reserve(n_in);
    for (int i = 0; i < n_in; ++i) inputs.push_back(ToATen(symbol, i, args[i]));

    const Mode mode = static_cast<Mode>(mode_.load(std::memory_order_acquire));
    std::vector<at::Tensor> results;
    if (mode == Mode::kReplay) {
      // Measurement only: the recorded outputs stand in for LibTorch's work.
      results = Replay(sg, m, inputs);
    } else {
      auto t0 = std::chrono::steady_clock::now();
      std::shared_ptr<const AotiExecutor> aoti =
          aoti_suspended_.load(std::memory_order_acquire) ? nullptr : std::atomic_load(&aoti_[idx]);
      TVM_FFI_CHECK(aoti != nullptr || !sg.spec()->package_only, RuntimeError)
          << "byoc_torch subgraph '" << symbol
          << "' runs only as its AOTInductor package (the weights it froze in are kept nowhere "
             "else), and the package is not running";
      results = aoti != nullptr ? aoti->Run(inputs)
                                : sg.Run(inputs, fast_path_.load(std::memory_order_acquire));
      auto elapsed = std::chrono::steady_clock::now() - t0;
      m->torch_ns.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count(),
                            std::memory_order_relaxed);
    }
    m->calls.fetch_add(1, std::memory_order_relaxed);
    TVM_FFI_CHECK(static_cast<int>(results.size()) == n_out, RuntimeError)
        << "byoc_torch subgraph '" << symbol << "' produced " << results.size()
        << " outputs, expected " << n_out;
    if (mode == Mode::kRecord) Record(m, inputs, results);

    if (dps) {
      for (int k = 0; k < n_out; ++k) {
        at::Tensor dst = ToATen(symbol, n_in + k, args[n_in + k]);
        TVM_FFI_CHECK(dst.sizes() == results[k].sizes(), ValueError)
            << "byoc_torch subgraph '" << symbol << "': output " << k << " has shape "
            << results[k].sizes() << " but the destination has shape " << dst.sizes();
        dst.copy_(results[k]);
      }
      return;
    }
    if (!sg.spec()->returns_tuple) {
      *rv = ToTVM(symbol, 0, results[0], inputs);
      return;
    }
    ffi::Array<ffi::Any> outs;
    for (int k = 0; k < n_out; ++k) outs.push_back(ToTVM(symbol, k, results[k], inputs));
    *rv = outs;
  }

  std::string metadata_;  // set at creation; replaced once by the driver after the build
  mutable std::mutex metadata_mutex_;  // guards metadata_ and specs_
  ffi::Array<SubgraphSpec> specs_;
  // Per subgraph, its AOTInductor executor or null (the TorchScript runs); read and replaced
  // with std::atomic_load / std::atomic_store, so a call runs one executor whole.
  std::vector<std::shared_ptr<const AotiExecutor>> aoti_;
  std::vector<std::unique_ptr<CompiledSubgraph>> subgraphs_;  // immutable after construction
  std::vector<std::unique_ptr<Measurements>> measurements_;
  std::unordered_map<std::string, size_t> index_;
  std::atomic<int> mode_{static_cast<int>(Mode::kNormal)};
  std::atomic<bool> fast_path_{true};
  std::atomic<bool> aoti_suspended_{false};  // measurement: run TorchScript despite packages
};

ffi::Module LoadTorchRuntimeModule(const ffi::Bytes& bytes) {
  Artifact artifact = DeserializeArtifact(bytes);
  return CreateTorchRuntimeModule(artifact.specs, artifact.metadata);
}

/*! \brief The serialized form of a torch runtime module (what export_library embeds). */
ffi::Bytes SaveTorchRuntimeModule(const ffi::Module& mod) {
  TVM_FFI_CHECK(std::string(mod->kind()) == "torch", ValueError)
      << "byoc_torch.SaveTorchRuntimeModule: expected a 'torch' module, got '" << mod->kind()
      << "'";
  return mod->SaveToBytes();
}

}  // namespace

ffi::Module CreateTorchRuntimeModule(const ffi::Array<SubgraphSpec>& specs,
                                     const ffi::String& metadata) {
  return ffi::Module(ffi::make_object<TorchRuntimeModuleObj>(std::string(metadata), specs));
}

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("byoc_torch.CreateTorchRuntimeModule", CreateTorchRuntimeModule)
      .def("byoc_torch.SaveTorchRuntimeModule", SaveTorchRuntimeModule)
      .def("ffi.Module.load_from_bytes.torch", LoadTorchRuntimeModule);
}

}  // namespace byoc_torch
