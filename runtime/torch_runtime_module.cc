/*!
 * \file torch_runtime_module.cc
 * \brief The `torch` runtime module: runs byoc_torch subgraphs with LibTorch.
 *
 * Place in the data flow: the codegen `relax.ext.torch` (byoc_torch/codegen.py) hands this
 * module one TorchScript source per external function. The module compiles each source once,
 * when it is created or loaded, and exposes one callable per subgraph symbol. The Relax VM
 * calls it with TVM tensors; they reach LibTorch zero-copy (at::from_blob over the DLPack
 * view, keeping the TVM tensor alive), and the results go back zero-copy as TVM tensors that
 * own the ATen storage.
 *
 * The module also carries a metadata string (byoc_torch stores the compiled model's input and
 * output signature there as JSON), returned by the function `__byoc_torch_metadata__`.
 *
 * Calling conventions of the function named by a subgraph symbol:
 *   - value-returning (what byoc_torch's own lowering emits): f(in_0..in_{n-1}) -> tensor or
 *     Array of tensors;
 *   - destination-passing (what Relax's stock RunCodegen emits): f(in_0.., out_0..) -> None,
 *     the results are copied into the given outputs.
 *
 * Serialized form (SaveToBytes / ffi.Module.load_from_bytes.torch), all integers little endian:
 *   magic "BYOCTRCH" | u32 version | u64 checksum (FNV-1a of the rest) |
 *   str metadata | u32 function count | per function:
 *   str symbol | u32 num_inputs | u32 num_outputs | u8 returns_tuple | str torchscript_source |
 *   u32 submodule count | per submodule: str name | str torch.jit.save bytes
 * where `str` is a u64 length followed by that many bytes.
 *
 * Each subgraph is a TorchScript module: its source defines methods (`forward` and helpers,
 * all taking `self`), and its submodules (scripted nn.Modules the user forced to LibTorch with
 * torch_executed_modules) are attributes those methods call as `self.<name>(...)`.
 */
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/lower_tuples.h>
#include <torch/csrc/jit/serialization/import.h>
#include <tvm/ffi/cast.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace byoc_torch {
namespace ffi = tvm::ffi;

namespace {

constexpr char kMagic[8] = {'B', 'Y', 'O', 'C', 'T', 'R', 'C', 'H'};
constexpr uint32_t kFormatVersion = 1;
// Upper bounds that a well-formed artifact never reaches; they stop a corrupt length field from
// turning into a huge allocation.
constexpr uint64_t kMaxFunctions = 1u << 20;
constexpr uint64_t kMaxArity = 1u << 16;

// ---------------------------------------------------------------------------------------------
// dtype and device mapping between DLPack and ATen
// ---------------------------------------------------------------------------------------------

std::string DTypeName(DLDataType t) {
  std::ostringstream os;
  switch (t.code) {
    case kDLInt: os << "int"; break;
    case kDLUInt: os << "uint"; break;
    case kDLFloat: os << "float"; break;
    case kDLBfloat: os << "bfloat"; break;
    case kDLBool: os << "bool"; break;
    case kDLComplex: os << "complex"; break;
    default: os << "dtype_code" << static_cast<int>(t.code); break;
  }
  os << static_cast<int>(t.bits);
  if (t.lanes != 1) os << "x" << t.lanes;
  return os.str();
}

/*! \return the ATen scalar type for a DLPack dtype, or nullopt when ATen and DLPack share none. */
std::optional<at::ScalarType> ToScalarType(DLDataType t) {
  if (t.lanes != 1) return std::nullopt;
  switch (t.code) {
    case kDLFloat:
      if (t.bits == 16) return at::kHalf;
      if (t.bits == 32) return at::kFloat;
      if (t.bits == 64) return at::kDouble;
      break;
    case kDLBfloat:
      if (t.bits == 16) return at::kBFloat16;
      break;
    case kDLInt:
      if (t.bits == 8) return at::kChar;
      if (t.bits == 16) return at::kShort;
      if (t.bits == 32) return at::kInt;
      if (t.bits == 64) return at::kLong;
      break;
    case kDLUInt:
      if (t.bits == 8) return at::kByte;
      break;
    case kDLBool:
      if (t.bits == 8) return at::kBool;
      break;
    default:
      break;
  }
  return std::nullopt;
}

std::optional<DLDataType> ToDLDataType(at::ScalarType t) {
  auto make = [](uint8_t code, uint8_t bits) { return DLDataType{code, bits, 1}; };
  switch (t) {
    case at::kHalf: return make(kDLFloat, 16);
    case at::kFloat: return make(kDLFloat, 32);
    case at::kDouble: return make(kDLFloat, 64);
    case at::kBFloat16: return make(kDLBfloat, 16);
    case at::kChar: return make(kDLInt, 8);
    case at::kShort: return make(kDLInt, 16);
    case at::kInt: return make(kDLInt, 32);
    case at::kLong: return make(kDLInt, 64);
    case at::kByte: return make(kDLUInt, 8);
    case at::kBool: return make(kDLBool, 8);
    default: return std::nullopt;
  }
}

std::optional<at::Device> ToATenDevice(DLDevice d) {
  switch (d.device_type) {
    case kDLCPU:
    case kDLCUDAHost:
      return at::Device(at::kCPU);
    case kDLCUDA:
      return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(d.device_id));
    default:
      return std::nullopt;
  }
}

std::optional<DLDevice> ToDLDevice(const at::Device& d) {
  if (d.is_cpu()) return DLDevice{kDLCPU, 0};
  if (d.is_cuda()) return DLDevice{kDLCUDA, static_cast<int32_t>(d.index() < 0 ? 0 : d.index())};
  return std::nullopt;
}

/*!
 * \brief Keeps an ATen tensor alive for as long as the TVM tensor that views its storage.
 * Used with ffi::Tensor::FromNDAllocStrided: "allocation" only points at the existing data.
 */
struct ATenStorageHolder {
  at::Tensor tensor;
  void AllocData(DLTensor* out) { out->data = tensor.data_ptr(); }
  void FreeData(DLTensor*) {}
};

// ---------------------------------------------------------------------------------------------
// A bounds-checked reader for the serialized form.
// ---------------------------------------------------------------------------------------------

class Reader {
 public:
  Reader(const char* data, size_t size) : data_(data), size_(size) {}

  void Read(void* out, size_t n, const char* what) {
    TVM_FFI_CHECK(n <= size_ - pos_, ValueError)
        << "corrupt byoc_torch artifact: truncated while reading " << what << " (need " << n
        << " bytes at offset " << pos_ << ", " << (size_ - pos_) << " left)";
    std::memcpy(out, data_ + pos_, n);
    pos_ += n;
  }
  uint8_t U8(const char* what) {
    uint8_t v;
    Read(&v, 1, what);
    return v;
  }
  uint32_t U32(const char* what) {
    unsigned char b[4];
    Read(b, 4, what);
    return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
  }
  uint64_t U64(const char* what) {
    uint64_t lo = U32(what);
    uint64_t hi = U32(what);
    return lo | hi << 32;
  }
  std::string Str(const char* what) {
    uint64_t n = U64(what);
    TVM_FFI_CHECK(n <= size_ - pos_, ValueError)
        << "corrupt byoc_torch artifact: " << what << " claims " << n << " bytes but only "
        << (size_ - pos_) << " remain";
    std::string s(data_ + pos_, static_cast<size_t>(n));
    pos_ += n;
    return s;
  }
  size_t remaining() const { return size_ - pos_; }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

/*!
 * \brief Length of the well-formed UTF-8 sequence starting at s[i] (strict: no overlong
 * forms, surrogates or code points above U+10FFFF, as Python decodes), or 0 if there is none.
 */
size_t Utf8SequenceLength(const std::string& s, size_t i) {
  const size_t n = s.size();
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + len > n) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  }
  return len;
}

/*! \brief True when `s` is well-formed UTF-8 (text fields cross into Python as str). */
bool IsUtf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    size_t len = Utf8SequenceLength(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

/*! \brief `s` with every byte that is not part of well-formed UTF-8 replaced by '?'; error
 * messages quote user data (TorchScript source), and Python must be able to decode them. */
std::string ValidUtf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t len = Utf8SequenceLength(s, i);
    if (len == 0) {
      out.push_back('?');
      ++i;
    } else {
      out.append(s, i, len);
      i += len;
    }
  }
  return out;
}

/*! \brief Read a text field and check it is UTF-8. */
std::string TextField(Reader* r, const char* what) {
  std::string s = r->Str(what);
  TVM_FFI_CHECK(IsUtf8(s), ValueError)
      << "corrupt byoc_torch artifact: " << what << " is not valid UTF-8 text";
  return s;
}

/*! \brief FNV-1a (64 bit) of the serialized body: catches damaged artifacts before parsing.
 * Not a signature: a crafted artifact can carry a matching checksum (see docs/security.md). */
uint64_t Checksum(const std::string& data) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU64(std::string* out, uint64_t v) {
  PutU32(out, static_cast<uint32_t>(v & 0xffffffffu));
  PutU32(out, static_cast<uint32_t>(v >> 32));
}
void PutStr(std::string* out, const std::string& s) {
  PutU64(out, s.size());
  out->append(s);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The module
// ---------------------------------------------------------------------------------------------

/*!
 * \brief A subgraph whose optimized TorchScript graph is one ATen op: called straight through
 * the dispatcher, without the TorchScript interpreter.
 */
struct SingleOpPath {
  mutable std::optional<torch::jit::Operation> op;  // Operation has no default constructor
  std::string op_name;
  /*! \brief Per op argument: the subgraph input it takes (>= 0), or -1 for the next constant. */
  std::vector<int> arg_source;
  std::vector<c10::IValue> constants;
  /*! \brief Per subgraph output: which output of the op it is. */
  std::vector<size_t> output_index;
};

/*! \brief Whether single-op subgraphs take the dispatcher fast path (for measurements). */
std::atomic<bool> g_single_op_fast_path{true};

/*!
 * \brief Measurement mode: 0 = normal; 1 = record (run, and keep each subgraph's outputs);
 * 2 = replay (return the recorded outputs without running LibTorch). Replay lets a benchmark
 * time the TVM part of a hybrid model alone. Never set outside measurements.
 */
std::atomic<int> g_replay_mode{0};

/*! \brief Find the single-op fast path of a compiled subgraph, if its graph allows one. */
std::optional<SingleOpPath> FindSingleOpPath(torch::jit::Module& module, uint32_t num_inputs,
                                              uint32_t num_outputs, bool returns_tuple) {
  using torch::jit::Node;
  using torch::jit::Value;
  std::shared_ptr<torch::jit::Graph> g = module.get_method("forward").graph()->copy();
  torch::jit::Inline(*g);
  torch::jit::LowerSimpleTuples(g);
  torch::jit::ConstantPropagation(g);
  torch::jit::EliminateDeadCode(g);
  Node* op_node = nullptr;
  Node* tuple_node = nullptr;
  for (Node* n : g->nodes()) {
    if (n->kind() == c10::prim::Constant) continue;
    if (n->kind() == c10::prim::TupleConstruct && tuple_node == nullptr) {
      tuple_node = n;
      continue;
    }
    if (op_node != nullptr || !n->kind().is_aten() || n->maybeOperator() == nullptr) {
      return std::nullopt;
    }
    op_node = n;
  }
  if (op_node == nullptr || g->outputs().size() != 1) return std::nullopt;
  // The graph must return outputs of the op: one, or a tuple of them.
  Value* ret = g->outputs()[0];
  std::vector<Value*> returned;
  if (returns_tuple) {
    if (tuple_node == nullptr || ret != tuple_node->output()) return std::nullopt;
    returned.assign(tuple_node->inputs().begin(), tuple_node->inputs().end());
  } else {
    if (tuple_node != nullptr) return std::nullopt;
    returned.push_back(ret);
  }
  if (returned.size() != num_outputs) return std::nullopt;
  std::vector<size_t> output_index;
  for (Value* r : returned) {
    auto outs = op_node->outputs();
    auto it = std::find(outs.begin(), outs.end(), r);
    if (it == outs.end()) return std::nullopt;
    output_index.push_back(static_cast<size_t>(it - outs.begin()));
  }
  for (Value* out : op_node->outputs()) {
    if (!out->type()->isSubtypeOf(*c10::TensorType::get())) return std::nullopt;
  }
  SingleOpPath path;
  path.output_index = std::move(output_index);
  // Graph input 0 is `self`; inputs 1..n are the subgraph's tensors.
  if (g->inputs().size() != num_inputs + 1) return std::nullopt;
  for (Value* v : op_node->inputs()) {
    int source = -1;
    for (size_t i = 1; i < g->inputs().size(); ++i) {
      if (g->inputs()[i] == v) source = static_cast<int>(i) - 1;
    }
    if (source < 0) {
      std::optional<c10::IValue> c = torch::jit::toIValue(v);
      if (!c.has_value()) return std::nullopt;
      path.constants.push_back(*c);
    }
    path.arg_source.push_back(source);
  }
  path.op = op_node->getOperation();
  path.op_name = op_node->kind().toQualString();
  return path;
}

/*! \brief One lifted subgraph: its TorchScript, compiled once. */
struct TorchSubgraph {
  std::string symbol;
  std::string source;
  uint32_t num_inputs = 0;
  uint32_t num_outputs = 0;
  bool returns_tuple = false;
  /*! \brief (attribute name, torch.jit.save bytes) of each submodule. */
  std::vector<std::pair<std::string, std::string>> submodules;
  std::optional<torch::jit::Module> module;
  std::optional<SingleOpPath> single_op;
  /*! \brief Calls, and nanoseconds spent in LibTorch (the work itself, not the crossing). */
  std::shared_ptr<std::atomic<int64_t>> calls = std::make_shared<std::atomic<int64_t>>(0);
  std::shared_ptr<std::atomic<int64_t>> torch_ns = std::make_shared<std::atomic<int64_t>>(0);
  /*! \brief Outputs kept in record mode, returned in replay mode. */
  std::shared_ptr<std::vector<at::Tensor>> recorded = std::make_shared<std::vector<at::Tensor>>();
};

class TorchRuntimeModuleObj : public ffi::ModuleObj {
 public:
  const char* kind() const final { return "torch"; }

  int GetPropertyMask() const final {
    return ffi::Module::kBinarySerializable | ffi::Module::kRunnable;
  }

  /*! \brief Add a subgraph and compile its TorchScript. Throws ValueError on bad input. */
  void AddSubgraph(std::string symbol, std::string source, uint32_t num_inputs,
                   uint32_t num_outputs, bool returns_tuple,
                   std::vector<std::pair<std::string, std::string>> submodules) {
    TVM_FFI_CHECK(!symbol.empty(), ValueError) << "byoc_torch: empty subgraph symbol";
    TVM_FFI_CHECK(index_.count(symbol) == 0, ValueError)
        << "byoc_torch: duplicate subgraph symbol '" << symbol << "'";
    TVM_FFI_CHECK(num_inputs <= kMaxArity && num_outputs <= kMaxArity, ValueError)
        << "byoc_torch: subgraph '" << symbol << "' has an implausible arity (" << num_inputs
        << " inputs, " << num_outputs << " outputs)";
    TVM_FFI_CHECK(num_outputs >= 1, ValueError)
        << "byoc_torch: subgraph '" << symbol << "' has no outputs";
    TVM_FFI_CHECK(returns_tuple || num_outputs == 1, ValueError)
        << "byoc_torch: subgraph '" << symbol << "' returns " << num_outputs
        << " outputs but is not marked as returning a tuple";
    TorchSubgraph sg;
    sg.symbol = std::move(symbol);
    sg.source = std::move(source);
    sg.num_inputs = num_inputs;
    sg.num_outputs = num_outputs;
    sg.returns_tuple = returns_tuple;
    sg.submodules = std::move(submodules);
    try {
      torch::jit::Module module("byoc_torch_subgraph");
      for (const auto& [name, payload] : sg.submodules) {
        std::istringstream in(payload);
        module.register_module(name, torch::jit::load(in));
      }
      module.define(sg.source);
      TVM_FFI_CHECK(module.find_method("forward").has_value(), ValueError)
          << "byoc_torch: TorchScript of subgraph '" << sg.symbol << "' defines no forward";
      size_t arity = module.get_method("forward").function().getSchema().arguments().size() - 1;
      TVM_FFI_CHECK(arity == sg.num_inputs, ValueError)
          << "byoc_torch: subgraph '" << sg.symbol << "' is declared with " << sg.num_inputs
          << " inputs but its TorchScript forward takes " << arity;
      module.eval();
      sg.single_op = FindSingleOpPath(module, sg.num_inputs, sg.num_outputs, sg.returns_tuple);
      sg.module = std::move(module);
    } catch (const ffi::Error&) {
      throw;
    } catch (const c10::Error& e) {
      TVM_FFI_THROW(ValueError) << "byoc_torch: TorchScript of subgraph '" << sg.symbol
                                << "' does not compile: "
                                << ValidUtf8(e.what_without_backtrace());
    } catch (const std::exception& e) {
      TVM_FFI_THROW(ValueError) << "byoc_torch: TorchScript of subgraph '" << sg.symbol
                                << "' does not compile: " << ValidUtf8(e.what());
    }
    index_.emplace(sg.symbol, subgraphs_.size());
    subgraphs_.push_back(std::move(sg));
  }

  void set_metadata(std::string metadata) { metadata_ = std::move(metadata); }

  ffi::Optional<ffi::Function> GetFunction(const ffi::String& name) final {
    ffi::ObjectPtr<ffi::Object> self = ffi::GetObjectPtr<ffi::Object>(this);
    std::string key(name);
    if (key == "__byoc_torch_metadata__") {
      return ffi::Function([self, this](ffi::PackedArgs, ffi::Any* rv) { *rv = metadata_; });
    }
    if (key == "__byoc_torch_stats__") {
      // {symbol: [calls, nanoseconds in LibTorch, uses single-op fast path (0/1)]}
      return ffi::Function([self, this](ffi::PackedArgs, ffi::Any* rv) {
        ffi::Map<ffi::String, ffi::Array<int64_t>> stats;
        for (const auto& sg : subgraphs_) {
          stats.Set(sg.symbol, ffi::Array<int64_t>{sg.calls->load(), sg.torch_ns->load(),
                                                   sg.single_op.has_value() ? 1 : 0});
        }
        *rv = stats;
      });
    }
    if (key == "__byoc_torch_reset_stats__") {
      return ffi::Function([self, this](ffi::PackedArgs, ffi::Any*) {
        for (const auto& sg : subgraphs_) {
          sg.calls->store(0);
          sg.torch_ns->store(0);
          sg.recorded->clear();
        }
      });
    }
    if (key == "__byoc_torch_symbols__") {
      return ffi::Function([self, this](ffi::PackedArgs, ffi::Any* rv) {
        ffi::Array<ffi::String> names;
        for (const auto& sg : subgraphs_) names.push_back(sg.symbol);
        *rv = names;
      });
    }
    auto it = index_.find(key);
    if (it == index_.end()) return std::nullopt;
    size_t idx = it->second;
    return ffi::Function([self, this, idx](ffi::PackedArgs args, ffi::Any* rv) {
      Invoke(subgraphs_[idx], args, rv);
    });
  }

  ffi::String InspectSource(const ffi::String& format) const final {
    std::ostringstream os;
    for (const auto& sg : subgraphs_) {
      os << "# subgraph " << sg.symbol << " (" << sg.num_inputs << " inputs, " << sg.num_outputs
         << " outputs)\n"
         << sg.source << "\n";
    }
    return os.str();
  }

  ffi::Bytes SaveToBytes() const final {
    std::string body;
    PutStr(&body, metadata_);
    PutU32(&body, static_cast<uint32_t>(subgraphs_.size()));
    for (const auto& sg : subgraphs_) {
      PutStr(&body, sg.symbol);
      PutU32(&body, sg.num_inputs);
      PutU32(&body, sg.num_outputs);
      body.push_back(sg.returns_tuple ? 1 : 0);
      PutStr(&body, sg.source);
      PutU32(&body, static_cast<uint32_t>(sg.submodules.size()));
      for (const auto& [name, payload] : sg.submodules) {
        PutStr(&body, name);
        PutStr(&body, payload);
      }
    }
    std::string out(kMagic, sizeof(kMagic));
    PutU32(&out, kFormatVersion);
    PutU64(&out, Checksum(body));
    out += body;
    return ffi::Bytes(out);
  }

  static ffi::Module LoadFromBytes(const ffi::Bytes& bytes) {
    Reader r(bytes.data(), bytes.size());
    char magic[sizeof(kMagic)];
    r.Read(magic, sizeof(magic), "magic");
    TVM_FFI_CHECK(std::memcmp(magic, kMagic, sizeof(kMagic)) == 0, ValueError)
        << "corrupt byoc_torch artifact: bad magic (not a serialized torch runtime module)";
    uint32_t version = r.U32("format version");
    TVM_FFI_CHECK(version == kFormatVersion, ValueError)
        << "byoc_torch artifact has format version " << version << ", this runtime reads version "
        << kFormatVersion;
    uint64_t checksum = r.U64("checksum");
    std::string body(bytes.data() + (bytes.size() - r.remaining()), r.remaining());
    TVM_FFI_CHECK(Checksum(body) == checksum, ValueError)
        << "corrupt byoc_torch artifact: checksum mismatch (the serialized module was damaged)";
    std::string metadata = TextField(&r, "metadata");
    uint64_t count = r.U32("function count");
    TVM_FFI_CHECK(count <= kMaxFunctions, ValueError)
        << "corrupt byoc_torch artifact: implausible function count " << count;
    auto n = ffi::make_object<TorchRuntimeModuleObj>();
    n->set_metadata(std::move(metadata));
    for (uint64_t i = 0; i < count; ++i) {
      std::string symbol = TextField(&r, "subgraph symbol");
      uint32_t num_inputs = r.U32("input count");
      uint32_t num_outputs = r.U32("output count");
      uint8_t returns_tuple = r.U8("tuple flag");
      TVM_FFI_CHECK(returns_tuple <= 1, ValueError)
          << "corrupt byoc_torch artifact: bad tuple flag " << int(returns_tuple);
      std::string source = TextField(&r, "TorchScript source");
      uint32_t num_submodules = r.U32("submodule count");
      TVM_FFI_CHECK(num_submodules <= kMaxArity, ValueError)
          << "corrupt byoc_torch artifact: implausible submodule count " << num_submodules;
      std::vector<std::pair<std::string, std::string>> submodules;
      for (uint32_t k = 0; k < num_submodules; ++k) {
        std::string name = TextField(&r, "submodule name");
        std::string payload = r.Str("submodule payload");
        submodules.emplace_back(std::move(name), std::move(payload));
      }
      n->AddSubgraph(std::move(symbol), std::move(source), num_inputs, num_outputs,
                     returns_tuple == 1, std::move(submodules));
    }
    TVM_FFI_CHECK(r.remaining() == 0, ValueError)
        << "corrupt byoc_torch artifact: " << r.remaining() << " trailing bytes";
    return ffi::Module(n);
  }

 private:
  /*! \brief Wrap one TVM argument as an ATen tensor over the same memory. */
  static at::Tensor ToATen(const TorchSubgraph& sg, int i, const ffi::AnyView& arg) {
    const DLTensor* dl = nullptr;
    std::optional<ffi::Tensor> holder = arg.try_cast<ffi::Tensor>();
    if (holder.has_value()) {
      dl = holder.value().GetDLTensorPtr();
    } else if (auto ptr = arg.try_cast<DLTensor*>()) {
      dl = ptr.value();
    } else {
      TVM_FFI_THROW(TypeError) << "byoc_torch subgraph '" << sg.symbol << "': argument " << i
                               << " is " << arg.GetTypeKey() << ", expected a tensor";
    }
    std::optional<at::ScalarType> st = ToScalarType(dl->dtype);
    TVM_FFI_CHECK(st.has_value(), TypeError)
        << "byoc_torch subgraph '" << sg.symbol << "': argument " << i << " has dtype "
        << DTypeName(dl->dtype) << ", which LibTorch does not support";
    std::optional<at::Device> dev = ToATenDevice(dl->device);
    TVM_FFI_CHECK(dev.has_value(), ValueError)
        << "byoc_torch subgraph '" << sg.symbol << "': argument " << i
        << " lives on DLPack device type " << static_cast<int>(dl->device.device_type)
        << ", which the torch runtime does not handle";
    std::vector<int64_t> sizes(dl->shape, dl->shape + dl->ndim);
    std::vector<int64_t> strides;
    if (dl->strides != nullptr) {
      strides.assign(dl->strides, dl->strides + dl->ndim);
    } else {
      strides.resize(dl->ndim);
      int64_t s = 1;
      for (int d = dl->ndim - 1; d >= 0; --d) {
        strides[d] = s;
        s *= sizes[d];
      }
    }
    void* data = static_cast<char*>(dl->data) + dl->byte_offset;
    auto options = at::TensorOptions().dtype(*st).device(*dev);
    if (holder.has_value()) {
      // The deleter keeps the TVM tensor (and so its memory) alive as long as ATen needs it.
      ffi::Tensor keep = std::move(holder.value());
      return at::from_blob(
          data, sizes, strides, [keep](void*) mutable { keep = ffi::Tensor(nullptr); }, options);
    }
    return at::from_blob(data, sizes, strides, options);
  }

  /*! \brief Hand an ATen result to TVM without copying, unless TVM cannot use it as it is. */
  static ffi::Tensor ToTVM(const TorchSubgraph& sg, size_t k, at::Tensor t,
                           const std::vector<at::Tensor>& inputs) {
    std::optional<DLDataType> dt = ToDLDataType(t.scalar_type());
    TVM_FFI_CHECK(dt.has_value(), TypeError)
        << "byoc_torch subgraph '" << sg.symbol << "': output " << k << " has dtype "
        << t.scalar_type() << ", which has no DLPack equivalent";
    std::optional<DLDevice> dev = ToDLDevice(t.device());
    TVM_FFI_CHECK(dev.has_value(), ValueError)
        << "byoc_torch subgraph '" << sg.symbol << "': output " << k << " is on device "
        << t.device() << ", which the torch runtime does not hand back";
    // TVM kernels expect compact row-major tensors. A result that is a view of an input is
    // copied as well: TVM's memory planner may reuse that input's storage once the input is dead.
    bool aliases_input = false;
    if (t.has_storage()) {
      for (const at::Tensor& in : inputs) {
        if (in.has_storage() && t.storage().is_alias_of(in.storage())) {
          aliases_input = true;
          break;
        }
      }
    }
    if (aliases_input || !t.is_contiguous() || t.storage_offset() != 0) {
      t = t.clone(at::MemoryFormat::Contiguous);
    }
    std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
    return ffi::Tensor::FromNDAlloc(ATenStorageHolder{t}, ffi::ShapeView(shape.data(), shape.size()), *dt, *dev);
  }

  void Invoke(const TorchSubgraph& sg, ffi::PackedArgs args, ffi::Any* rv) {
    const int n_in = static_cast<int>(sg.num_inputs);
    const int n_out = static_cast<int>(sg.num_outputs);
    const bool dps = args.size() == n_in + n_out && n_out > 0;
    TVM_FFI_CHECK(args.size() == n_in || dps, ValueError)
        << "byoc_torch subgraph '" << sg.symbol << "' expects " << n_in << " input tensors (or "
        << n_in + n_out << " with destination outputs), got " << args.size();

    c10::InferenceMode guard;
    std::vector<at::Tensor> inputs;
    inputs.reserve(n_in);
    for (int i = 0; i < n_in; ++i) {
      inputs.push_back(ToATen(sg, i, args[i]));
    }
    std::vector<at::Tensor> results;
    const int replay = g_replay_mode.load(std::memory_order_relaxed);
    if (replay == 2) {
      TVM_FFI_CHECK(static_cast<int>(sg.recorded->size()) == n_out, RuntimeError)
          << "byoc_torch subgraph '" << sg.symbol << "': replay mode without a recorded call";
      results = *sg.recorded;
    }
    auto t0 = std::chrono::steady_clock::now();
    try {
      if (replay == 2) {
        // Measurement only: the recorded outputs stand in for LibTorch's work.
      } else if (sg.single_op.has_value() && g_single_op_fast_path.load(std::memory_order_relaxed)) {
        const SingleOpPath& path = *sg.single_op;
        torch::jit::Stack stack;
        stack.reserve(path.arg_source.size());
        size_t next_constant = 0;
        for (int source : path.arg_source) {
          if (source >= 0) {
            stack.emplace_back(inputs[source]);
          } else {
            stack.push_back(path.constants[next_constant++]);
          }
        }
        (*path.op)(stack);
        for (size_t k : path.output_index) results.push_back(stack.at(k).toTensor());
      } else {
        std::vector<c10::IValue> stack(inputs.begin(), inputs.end());
        // Module::forward is const-callable on a copy of the handle; the handle shares state.
        torch::jit::Module module = *sg.module;
        c10::IValue out = module.forward(std::move(stack));
        if (sg.returns_tuple) {
          TVM_FFI_CHECK(out.isTuple(), RuntimeError)
              << "byoc_torch subgraph '" << sg.symbol << "' returned " << out.tagKind()
              << " instead of a tuple";
          for (const c10::IValue& v : out.toTupleRef().elements()) {
            results.push_back(v.toTensor());
          }
        } else {
          TVM_FFI_CHECK(out.isTensor(), RuntimeError)
              << "byoc_torch subgraph '" << sg.symbol << "' returned " << out.tagKind()
              << " instead of a tensor";
          results.push_back(out.toTensor());
        }
      }
    } catch (const c10::Error& e) {
      std::string op = sg.single_op.has_value() ? " (" + sg.single_op->op_name + ")" : "";
      TVM_FFI_THROW(RuntimeError) << "byoc_torch subgraph '" << sg.symbol << "'" << op
                                  << " raised inside LibTorch: "
                                  << ValidUtf8(e.what_without_backtrace());
    } catch (const ffi::Error&) {
      throw;
    } catch (const std::exception& e) {
      TVM_FFI_THROW(RuntimeError) << "byoc_torch subgraph '" << sg.symbol
                                  << "' raised inside LibTorch: " << ValidUtf8(e.what());
    }
    int64_t elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now() - t0)
                          .count();
    sg.torch_ns->fetch_add(elapsed, std::memory_order_relaxed);
    sg.calls->fetch_add(1, std::memory_order_relaxed);
    if (replay == 1) *sg.recorded = results;
    TVM_FFI_CHECK(static_cast<int>(results.size()) == n_out, RuntimeError)
        << "byoc_torch subgraph '" << sg.symbol << "' produced " << results.size()
        << " outputs, expected " << n_out;

    if (dps) {
      for (int k = 0; k < n_out; ++k) {
        at::Tensor dst = ToATen(sg, n_in + k, args[n_in + k]);
        TVM_FFI_CHECK(dst.sizes() == results[k].sizes(), ValueError)
            << "byoc_torch subgraph '" << sg.symbol << "': output " << k << " has shape "
            << results[k].sizes() << " but the destination has shape " << dst.sizes();
        dst.copy_(results[k]);
      }
      return;
    }
    if (!sg.returns_tuple) {
      *rv = ToTVM(sg, 0, results[0], inputs);
      return;
    }
    ffi::Array<ffi::Any> outs;
    for (int k = 0; k < n_out; ++k) outs.push_back(ToTVM(sg, k, results[k], inputs));
    *rv = outs;
  }

  std::string metadata_;
  std::vector<TorchSubgraph> subgraphs_;
  std::unordered_map<std::string, size_t> index_;
};

/*!
 * \brief Create a torch runtime module.
 * \param symbols, sources, num_inputs, num_outputs, returns_tuple, submodule_names,
 *        submodule_payloads parallel arrays, one entry per external function.
 * \param metadata an opaque string stored with the module.
 */
ffi::Module CreateTorchRuntimeModule(const ffi::Array<ffi::String>& symbols,
                                     const ffi::Array<ffi::String>& sources,
                                     const ffi::Array<int64_t>& num_inputs,
                                     const ffi::Array<int64_t>& num_outputs,
                                     const ffi::Array<bool>& returns_tuple,
                                     const ffi::Array<ffi::Array<ffi::String>>& submodule_names,
                                     const ffi::Array<ffi::Array<ffi::Bytes>>& submodule_payloads,
                                     const ffi::String& metadata) {
  const size_t n = symbols.size();
  TVM_FFI_CHECK(sources.size() == n && num_inputs.size() == n && num_outputs.size() == n &&
                    returns_tuple.size() == n && submodule_names.size() == n &&
                    submodule_payloads.size() == n,
                ValueError)
      << "byoc_torch.CreateTorchRuntimeModule: the seven per-function arrays must have equal "
         "length";
  auto obj = ffi::make_object<TorchRuntimeModuleObj>();
  obj->set_metadata(std::string(metadata));
  for (size_t i = 0; i < n; ++i) {
    TVM_FFI_CHECK(num_inputs[i] >= 0 && num_outputs[i] >= 0, ValueError)
        << "byoc_torch: negative arity for subgraph '" << symbols[i] << "'";
    TVM_FFI_CHECK(submodule_names[i].size() == submodule_payloads[i].size(), ValueError)
        << "byoc_torch: subgraph '" << symbols[i] << "' has " << submodule_names[i].size()
        << " submodule names but " << submodule_payloads[i].size() << " payloads";
    std::vector<std::pair<std::string, std::string>> submodules;
    for (size_t k = 0; k < submodule_names[i].size(); ++k) {
      const ffi::Bytes& blob = submodule_payloads[i][k];
      submodules.emplace_back(std::string(submodule_names[i][k]),
                              std::string(blob.data(), blob.size()));
    }
    obj->AddSubgraph(std::string(symbols[i]), std::string(sources[i]),
                     static_cast<uint32_t>(num_inputs[i]), static_cast<uint32_t>(num_outputs[i]),
                     returns_tuple[i], std::move(submodules));
  }
  return ffi::Module(obj);
}

/*! \brief The serialized form of a torch runtime module (what export_library embeds). */
ffi::Bytes SaveTorchRuntimeModule(const ffi::Module& mod) {
  TVM_FFI_CHECK(std::string(mod->kind()) == "torch", ValueError)
      << "byoc_torch.SaveTorchRuntimeModule: expected a 'torch' module, got '" << mod->kind()
      << "'";
  return mod->SaveToBytes();
}

/*! \brief Set the measurement mode (0 normal, 1 record, 2 replay); returns the previous one. */
int64_t SetReplayMode(int64_t mode) {
  TVM_FFI_CHECK(mode >= 0 && mode <= 2, ValueError)
      << "byoc_torch.SetReplayMode: mode must be 0, 1 or 2, got " << mode;
  return g_replay_mode.exchange(static_cast<int>(mode));
}

/*! \brief Turn the single-op dispatcher fast path on or off; returns the previous setting. */
bool SetSingleOpFastPath(bool enabled) { return g_single_op_fast_path.exchange(enabled); }

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("byoc_torch.SetSingleOpFastPath", SetSingleOpFastPath)
      .def("byoc_torch.SetReplayMode", SetReplayMode)
      .def("byoc_torch.CreateTorchRuntimeModule", CreateTorchRuntimeModule)
      .def("byoc_torch.SaveTorchRuntimeModule", SaveTorchRuntimeModule)
      .def("ffi.Module.load_from_bytes.torch", TorchRuntimeModuleObj::LoadFromBytes);
}

}  // namespace byoc_torch
