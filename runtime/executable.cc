/*!
 * \file executable.cc
 * \brief ArtifactExecutable (see executable.h): an artifact verified, loaded and run in C++,
 *        and the process's executables by payload SHA-256 (`byoc_torch.RememberExecutable`).
 */
#include "executable.h"

#include <ATen/DLConvertor.h>
#include <c10/core/GradMode.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <list>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "cpu_features.h"
#include "sealed_artifact.h"

namespace byoc_torch {
namespace {

namespace json = ffi::json;

constexpr const char* kSource = "the artifact a byoc_torch.Executable holds";
constexpr const char* kVmLoader = "ffi.Module.load_from_bytes.relax.VMExecutable";
constexpr const char* kMetadataFunc = "__byoc_torch_metadata__";
constexpr int64_t kPooledAllocator = 2;  // tvm.runtime.vm.VirtualMachine.POOLED_ALLOCATOR
constexpr uintptr_t kAlignment = 64;     // what TVM's compiled kernels assume of their inputs
constexpr size_t kExecutablesKept = 8;   // _defaults.LOADED_ARTIFACTS_KEPT

// -- the process's executables, by payload SHA-256 ------------------------------------------
// Never destroyed: at process exit the executables must not be torn down after the
// libraries they came from (LibTorch, TVM's runtime, the artifacts).
struct Cache {
  std::mutex mu;
  std::list<std::pair<std::string, ffi::Module>> entries;  // most recent first
};
Cache& TheCache() {
  static Cache* cache = new Cache();
  return *cache;
}

std::optional<ffi::Module> Cached(const std::string& digest) {
  auto& [cache_mu, cache] = TheCache();
  std::lock_guard<std::mutex> lock(cache_mu);
  for (auto it = cache.begin(); it != cache.end(); ++it) {
    if (it->first == digest) {
      cache.splice(cache.begin(), cache, it);
      return cache.front().second;
    }
  }
  return std::nullopt;
}

void Remember(const std::string& digest, ffi::Module module) {
  auto& [cache_mu, cache] = TheCache();
  std::lock_guard<std::mutex> lock(cache_mu);
  for (auto it = cache.begin(); it != cache.end(); ++it) {
    if (it->first == digest) {
      cache.erase(it);
      break;
    }
  }
  cache.emplace_front(digest, std::move(module));
  while (cache.size() > kExecutablesKept) cache.pop_back();
}

// -- loading -----------------------------------------------------------------------------------
/*! \brief A new 0700 directory with one file in it, both removed when this goes. */
class PrivateCopy {
 public:
  PrivateCopy(const uint8_t* data, size_t size) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") +
                          "/byoc_torch_load_XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    if (mkdtemp(buffer.data()) == nullptr) {
      TVM_FFI_THROW(RuntimeError) << "byoc_torch: cannot make a private directory for the "
                                     "artifact (" << std::strerror(errno) << ")";
    }
    directory_ = buffer.data();
    path_ = directory_ + "/artifact.so";
    int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0500);
    if (fd < 0) {
      TVM_FFI_THROW(RuntimeError) << "byoc_torch: cannot write " << path_ << " ("
                                  << std::strerror(errno) << ")";
    }
    size_t written = 0;
    while (written < size) {
      ssize_t n = write(fd, data + written, size - written);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        int err = errno;
        close(fd);
        TVM_FFI_THROW(RuntimeError) << "byoc_torch: cannot write " << path_ << " ("
                                    << std::strerror(err) << ")";
      }
      written += static_cast<size_t>(n);
    }
    close(fd);
  }
  ~PrivateCopy() {
    if (!path_.empty()) unlink(path_.c_str());
    if (!directory_.empty()) rmdir(directory_.c_str());
  }
  PrivateCopy(const PrivateCopy&) = delete;
  PrivateCopy& operator=(const PrivateCopy&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string directory_, path_;
};

ffi::Module LoadPayload(const uint8_t* data, size_t size) {
  if (!ffi::Function::GetGlobal(kVmLoader).has_value()) {
    TVM_FFI_THROW(RuntimeError)
        << "byoc_torch: TVM's runtime (libtvm_runtime.so) is not loaded in this process, so "
           "a compiled model cannot run; load it before the model (e.g. LD_PRELOAD; "
           "`byoc-torch lib-path` prints the libraries a C++ process needs)";
  }
  PrivateCopy copy(data, size);
  try {
    return ffi::Module::LoadFromFile(copy.path());
  } catch (const ffi::Error& err) {
    if (err.kind() == "UnregisteredOpError") throw;  // the artifact is fine; an op is missing
    TVM_FFI_THROW(ArtifactError) << "byoc_torch.load: " << kSource
                                 << " is not a loadable artifact: " << err.kind() << ": "
                                 << err.message();
  }
  TVM_FFI_UNREACHABLE();
}

/*! \brief The signature stored in the artifact's torch runtime module, if it has one. */
std::optional<std::string> StoredSignature(const ffi::Module& module) {
  if (std::string(module->kind()) == "torch") {
    if (auto get = module->GetFunction(kMetadataFunc, false)) {
      std::string text((*get)().cast<ffi::String>());
      if (!text.empty()) return text;
    }
  }
  for (const ffi::Any& sub : module->imports()) {
    if (auto text = StoredSignature(sub.cast<ffi::Module>())) return text;
  }
  return std::nullopt;
}

// -- the signature -----------------------------------------------------------------------------
json::Value Parse(const std::string& text) {
  ffi::String error;
  json::Value value = json::Parse(text, &error);
  if (!error.empty()) {
    TVM_FFI_THROW(ArtifactError) << "byoc_torch: a byoc_torch.Executable's signature is not "
                                    "JSON: " << error;
  }
  return value;
}

json::Value Field(const json::Object& object, const char* key) {
  ffi::String name(key);
  if (object.count(name) == 0) {
    TVM_FFI_THROW(ArtifactError) << "byoc_torch: a byoc_torch.Executable's signature has no '"
                                 << key << "'";
  }
  return object.at(name);
}

size_t CountLeaves(const json::Object& node) {
  std::string kind(Field(node, "t").cast<ffi::String>());
  if (kind == "leaf") return 1;
  if (kind == "const") return 0;
  TVM_FFI_CHECK(kind == "tuple" || kind == "list" || kind == "dict", ArtifactError)
      << "byoc_torch: unknown output kind '" << kind << "' in a byoc_torch.Executable";
  size_t n = 0;
  for (const ffi::Any& child : Field(node, "c").cast<json::Array>()) {
    n += CountLeaves(child.cast<json::Object>());
  }
  return n;
}

DLDevice ParseDevice(const std::string& text) {
  std::string kind = text.substr(0, text.find(':'));
  int index = text.find(':') == std::string::npos ? 0 : std::atoi(text.c_str() + kind.size() + 1);
  if (kind == "cpu") return DLDevice{kDLCPU, index};
  if (kind == "cuda") return DLDevice{kDLCUDA, index};
  TVM_FFI_THROW(ArtifactError) << "byoc_torch: a byoc_torch.Executable is for device '" << text
                               << "', which the C++ kernel does not know";
  TVM_FFI_UNREACHABLE();
}

// TVM's dtype names (byoc_torch.names.dtype_name) of the dtypes a compiled model takes.
const std::vector<std::pair<at::ScalarType, const char*>>& DtypeNames() {
  static const std::vector<std::pair<at::ScalarType, const char*>> names = {
      {at::kFloat, "float32"},    {at::kDouble, "float64"},     {at::kHalf, "float16"},
      {at::kBFloat16, "bfloat16"}, {at::kChar, "int8"},         {at::kShort, "int16"},
      {at::kInt, "int32"},        {at::kLong, "int64"},         {at::kByte, "uint8"},
      {at::kUInt16, "uint16"},    {at::kUInt32, "uint32"},      {at::kUInt64, "uint64"},
      {at::kBool, "bool"},        {at::kComplexFloat, "complex64"},
      {at::kComplexDouble, "complex128"}, {at::kFloat8_e4m3fn, "float8_e4m3fn"},
      {at::kFloat8_e5m2, "float8_e5m2"}};
  return names;
}

std::string DtypeName(at::ScalarType type) {
  for (const auto& [t, name] : DtypeNames()) {
    if (t == type) return name;
  }
  return c10::toString(type);
}

std::string ShapeText(const std::vector<int64_t>& dims, const std::vector<std::string>& symbols) {
  std::ostringstream os;
  os << "(";
  for (size_t d = 0; d < dims.size(); ++d) {
    if (d) os << ", ";
    if (dims[d] >= 0) {
      os << dims[d];
    } else {
      os << symbols[static_cast<size_t>(-(dims[d] + 1))];
    }
  }
  os << ")";
  return os.str();
}

std::string SizesText(at::IntArrayRef sizes) {
  std::ostringstream os;
  os << "(";
  for (size_t d = 0; d < sizes.size(); ++d) os << (d ? ", " : "") << sizes[d];
  os << (sizes.size() == 1 ? ",)" : ")");
  return os.str();
}

void Flatten(const ffi::Any& value, std::vector<ffi::Tensor>* out) {
  if (auto tensor = value.try_cast<ffi::Tensor>()) {
    out->push_back(*tensor);
    return;
  }
  if (auto array = value.try_cast<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& v : *array) Flatten(v, out);
    return;
  }
  TVM_FFI_THROW(RuntimeError) << "byoc_torch: unexpected VM result " << value.GetTypeKey();
}

/*! \brief The bytes [first, last) a tensor's elements span in memory. */
std::pair<uintptr_t, uintptr_t> Span(const at::Tensor& t) {
  uintptr_t first = reinterpret_cast<uintptr_t>(t.data_ptr());
  int64_t last_element = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last_element += (t.size(d) - 1) * t.stride(d);
  return {first, first + static_cast<uintptr_t>((last_element + 1) * t.element_size())};
}

/*! \brief Do two tensors share memory? (DLPack crossings make new storages over the same
 * memory, so storages are not compared: addresses are.) */
bool SharesMemory(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || a.device() != b.device()) return false;
  auto [a0, a1] = Span(a);
  auto [b0, b1] = Span(b);
  return a0 < b1 && b0 < a1;
}

}  // namespace

namespace {

/*! \brief Refuse, with a CPUFeatureError, to run kernels built for instruction-set features
 * this CPU lacks (the signature's "cpu": {"mcpu", "features"}; absent for non-CPU targets). */
void CheckCpu(const json::Object& signature) {
  if (!signature.count(ffi::String("cpu")) || signature.at(ffi::String("cpu")) == nullptr) return;
  json::Object cpu = signature.at(ffi::String("cpu")).cast<json::Object>();
  std::vector<std::string> required;
  for (const ffi::Any& name : Field(cpu, "features").cast<json::Array>()) {
    required.emplace_back(name.cast<ffi::String>());
  }
  std::vector<std::string> missing = MissingCpuFeatures(required);
  if (missing.empty()) return;
  std::string names;
  for (const std::string& name : missing) names += (names.empty() ? "" : ", ") + name;
  // The message of byoc_torch/cpu.py's check_host.
  TVM_FFI_THROW(CPUFeatureError)
      << "byoc_torch: this artifact was compiled for CPU '"
      << std::string(Field(cpu, "mcpu").cast<ffi::String>())
      << "' and uses instruction-set features this CPU lacks: " << names
      << ". Compile it on this machine, or with a target for a CPU it has (e.g. "
         "target={'kind': 'llvm'} for any x86-64).";
}

}  // namespace

std::shared_ptr<ArtifactExecutable> ArtifactExecutable::Load(const uint8_t* data, size_t size) {
  SealedPayload sealed = VerifySealedArtifact(data, size, kSource);
  std::string digest(sealed.digest.begin(), sealed.digest.end());
  std::optional<ffi::Module> module = Cached(digest);
  if (!module.has_value()) {
    module = LoadPayload(data, sealed.payload_size);
    Remember(digest, *module);
  }
  std::optional<std::string> stored = StoredSignature(*module);
  if (!stored.has_value()) {
    TVM_FFI_THROW(ArtifactError) << "byoc_torch.load: " << kSource
                                 << " was not written by byoc_torch (no signature)";
  }
  return std::make_shared<ArtifactExecutable>(*module, *std::move(stored));
}

ArtifactExecutable::ArtifactExecutable(ffi::Module executable, std::string signature_json)
    : executable_(std::move(executable)), signature_json_(std::move(signature_json)) {
  json::Object signature = Parse(signature_json_).cast<json::Object>();
  std::unordered_map<std::string, size_t> numbers;
  for (const ffi::Any& item : Field(signature, "inputs").cast<json::Array>()) {
    json::Object spec = item.cast<json::Object>();
    CheckedInput input{std::string(Field(spec, "name").cast<ffi::String>()),
                       std::string(Field(spec, "dtype").cast<ffi::String>()),
                       {}};
    for (const ffi::Any& dim : Field(spec, "shape").cast<json::Array>()) {
      if (auto size = dim.try_cast<int64_t>()) {
        input.dims.push_back(*size);
        continue;
      }
      std::string name(dim.cast<ffi::String>());
      auto [it, added] = numbers.emplace(name, symbols_.size());
      if (added) symbols_.push_back(name);
      input.dims.push_back(-static_cast<int64_t>(it->second) - 1);
    }
    inputs_.push_back(std::move(input));
  }
  ranges_.assign(symbols_.size(), {0, -1});
  if (signature.count(ffi::String("ranges"))) {
    json::Object ranges = signature.at(ffi::String("ranges")).cast<json::Object>();
    for (size_t k = 0; k < symbols_.size(); ++k) {
      ffi::String name(symbols_[k]);
      if (!ranges.count(name)) continue;
      json::Array range = ranges.at(name).cast<json::Array>();
      ranges_[k].first = range[0].cast<int64_t>();
      ranges_[k].second = range[1] == nullptr ? -1 : range[1].cast<int64_t>();
    }
  }
  if (signature.count(ffi::String("derived"))) {  // dim text -> [base symbol, a, b]
    for (const auto& [key, value] : signature.at(ffi::String("derived")).cast<json::Object>()) {
      auto dim = numbers.find(std::string(key.cast<ffi::String>()));
      json::Array form = value.cast<json::Array>();
      auto base = numbers.find(std::string(form[0].cast<ffi::String>()));
      if (dim == numbers.end() || base == numbers.end()) {
        TVM_FFI_THROW(ArtifactError) << "byoc_torch: a byoc_torch.Executable's signature "
                                        "derives a dim from a symbol no input has";
      }
      derived_.push_back({dim->second, base->second, form[1].cast<int64_t>(),
                          form[2].cast<int64_t>()});
    }
  }
  num_outputs_ = CountLeaves(Field(signature, "outputs").cast<json::Object>());
  if (signature.count(ffi::String("device"))) {
    device_text_ = std::string(signature.at(ffi::String("device")).cast<ffi::String>());
  }
  device_ = ParseDevice(device_text_);
  try {  // refused at the first run, not here: reading the signature runs no kernel
    CheckCpu(signature);
  } catch (const ffi::Error& err) {
    if (err.kind() != "CPUFeatureError") throw;
    cpu_error_ = err;
  }
}



ArtifactExecutable::Vm ArtifactExecutable::AcquireVm() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      Vm vm = std::move(idle_.back());
      idle_.pop_back();
      return vm;
    }
  }
  // As tvm.relax.VirtualMachine(executable, device) does: a VM over the shared executable,
  // its devices (CPU always, for shape functions) with pooled allocators.
  ffi::Module vm =
      executable_->GetFunction("vm_load_executable", false).value()().cast<ffi::Module>();
  ffi::Function init = vm->GetFunction("vm_initialization", false).value();
  if (device_.device_type == kDLCPU) {
    init(static_cast<int64_t>(kDLCPU), int64_t{device_.device_id}, kPooledAllocator);
  } else {
    init(static_cast<int64_t>(device_.device_type), int64_t{device_.device_id}, kPooledAllocator,
         static_cast<int64_t>(kDLCPU), int64_t{0}, kPooledAllocator);
  }
  ffi::Function main = vm->GetFunction("main", false).value();
  return Vm{std::move(vm), std::move(main)};
}

void ArtifactExecutable::ReleaseVm(Vm vm) {
  std::lock_guard<std::mutex> lock(mu_);
  idle_.push_back(std::move(vm));
}

std::vector<at::Tensor> ArtifactExecutable::CheckInputs(
    const std::vector<at::Tensor>& inputs) const {
  if (inputs.size() != inputs_.size()) {
    std::ostringstream names;
    for (size_t k = 0; k < inputs_.size(); ++k) names << (k ? ", " : "") << inputs_[k].name;
    TORCH_CHECK_TYPE(false, "byoc_torch: the compiled model takes ", inputs_.size(),
                     " input(s) (", names.str(), "), got ", inputs.size());
  }
  std::vector<int64_t> bound(symbols_.size(), -1);
  std::vector<at::Tensor> ready;
  ready.reserve(inputs.size());
  for (size_t k = 0; k < inputs.size(); ++k) {
    const at::Tensor& x = inputs[k];
    const CheckedInput& spec = inputs_[k];
    std::string where = "input " + std::to_string(k) + " ('" + spec.name + "')";
    std::string dtype = DtypeName(x.scalar_type());
    TORCH_CHECK_TYPE(dtype == spec.dtype, "byoc_torch: ", where, " has dtype ", dtype,
                     ", expected ", spec.dtype);
    std::string want = ShapeText(spec.dims, symbols_);
    TORCH_CHECK_VALUE(x.dim() == static_cast<int64_t>(spec.dims.size()), "byoc_torch: ", where,
                      " has shape ", SizesText(x.sizes()), ", expected rank ", spec.dims.size(),
                      " ", want);
    for (size_t d = 0; d < spec.dims.size(); ++d) {
      int64_t got = x.size(static_cast<int64_t>(d));
      if (spec.dims[d] >= 0) {
        TORCH_CHECK_VALUE(got == spec.dims[d], "byoc_torch: ", where, " has shape ",
                          SizesText(x.sizes()), ", expected ", want, " (dim ", d, " must be ",
                          spec.dims[d], ")");
        continue;
      }
      auto s = static_cast<size_t>(-(spec.dims[d] + 1));
      if (bound[s] < 0) bound[s] = got;
      TORCH_CHECK_VALUE(bound[s] == got, "byoc_torch: ", where, " dim ", d, " is ", got,
                        " but symbol ", symbols_[s], " is already ", bound[s]);
      auto [lower, upper] = ranges_[s];
      if (got < lower || (upper >= 0 && got > upper)) {
        std::string allowed = upper >= 0 ? std::to_string(lower) + ".." + std::to_string(upper)
                                         : ">= " + std::to_string(lower);
        TORCH_CHECK_VALUE(false, "byoc_torch: ", where, " dim ", d, " (", symbols_[s], ") is ",
                          got, ", outside the range the model was exported for (", allowed,
                          ")");
      }
    }
    bool device_ok = device_.device_type == kDLCPU ? x.device().is_cpu() : x.device().is_cuda();
    TORCH_CHECK_VALUE(device_ok, "byoc_torch: ", where, " is on ", x.device(),
                      ", the model was compiled for ", device_text_);
    // The error type Python's tests and users have always seen from the op (RuntimeError).
    TORCH_CHECK(!(x.requires_grad() && at::GradMode::is_enabled()), "byoc_torch: input ", k,
                " requires grad, but a compiled model is inference-only (its outputs carry no "
                "gradient); call it under torch.no_grad() or torch.inference_mode()");
    at::Tensor t = x.detach();
    if (!t.is_contiguous() || reinterpret_cast<uintptr_t>(t.data_ptr()) % kAlignment != 0) {
      t = t.clone(at::MemoryFormat::Contiguous);  // a fresh allocation: 64-byte aligned
    }
    ready.push_back(std::move(t));
  }
  for (const DerivedDim& dim : derived_) {  // the Python check's message (compiled.py)
    int64_t want = dim.a * bound[dim.base] + dim.b;
    if (bound[dim.symbol] == want) continue;
    auto code = -static_cast<int64_t>(dim.symbol) - 1;
    for (size_t k = 0; k < inputs_.size(); ++k) {
      auto at = std::find(inputs_[k].dims.begin(), inputs_[k].dims.end(), code);
      if (at == inputs_[k].dims.end()) continue;
      TORCH_CHECK_VALUE(false, "byoc_torch: input ", k, " ('", inputs_[k].name, "') dim ",
                        at - inputs_[k].dims.begin(), " (", symbols_[dim.symbol], ") is ",
                        bound[dim.symbol], ", but ", symbols_[dim.base], " is ",
                        bound[dim.base], ", which makes it ", want);
    }
  }
  return ready;
}

std::vector<at::Tensor> ArtifactExecutable::Run(const std::vector<at::Tensor>& inputs) {
  if (cpu_error_.has_value()) throw *cpu_error_;
  std::vector<at::Tensor> ready = CheckInputs(inputs);
  std::vector<ffi::Tensor> args;
  args.reserve(ready.size());
  for (const at::Tensor& t : ready) {
    args.push_back(ffi::Tensor::FromDLPackVersioned(at::toDLPackVersioned(t)));
  }
  std::vector<ffi::AnyView> views(args.begin(), args.end());
  Vm vm = AcquireVm();
  ffi::Any result;
  try {
    vm.main.CallPacked(ffi::PackedArgs(views.data(), static_cast<int32_t>(views.size())),
                       &result);
  } catch (...) {
    ReleaseVm(std::move(vm));
    throw;
  }
  ReleaseVm(std::move(vm));
  std::vector<ffi::Tensor> flat;
  Flatten(result, &flat);
  TORCH_CHECK(flat.size() == num_outputs_, "byoc_torch: the compiled model returned ",
              flat.size(), " tensors, its signature expects ", num_outputs_);
  std::vector<at::Tensor> outputs;
  outputs.reserve(flat.size());
  for (const ffi::Tensor& r : flat) {
    at::Tensor out = at::fromDLPackVersioned(r.ToDLPackVersioned());
    // The op's schema promises fresh outputs: a result sharing memory with an input (a model
    // that returns its input) is copied.
    for (const at::Tensor& in : inputs) {
      if (SharesMemory(out, in)) {
        out = out.clone();
        break;
      }
    }
    outputs.push_back(std::move(out));
  }
  return outputs;
}

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  // byoc_torch's Python side hands over each executable it compiles or loads, keyed by the
  // SHA-256 its seal records, so the op runs it without loading the artifact again.
  refl::GlobalDef().def("byoc_torch.RememberExecutable", [](ffi::Bytes digest, ffi::Module m) {
    TVM_FFI_CHECK(digest.size() == 32, ValueError)
        << "byoc_torch.RememberExecutable: a SHA-256 digest has 32 bytes, got " << digest.size();
    Remember(std::string(digest.data(), digest.size()), std::move(m));
  });
}

}  // namespace byoc_torch
