/*!
 * \file serialization.cc
 * \brief Writer and bounds-checked reader of the artifact format (see serialization.h).
 */
#include "serialization.h"

#include <tvm/ffi/error.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "utf8.h"

namespace byoc_torch {
namespace {

constexpr char kMagic[8] = {'B', 'Y', 'O', 'C', 'T', 'R', 'C', 'H'};
constexpr uint32_t kFormatVersion = 3;
// Version 1 (before AOTInductor packages) is still read: its subgraphs run their TorchScript.
// Version 2 has packages but no package-only flag (every subgraph could run its TorchScript).
constexpr uint32_t kOldestReadableVersion = 1;
// A well-formed artifact never reaches this; it stops a corrupt count from looping for long.
constexpr uint64_t kMaxFunctions = 1u << 20;

/*! \brief A bounds-checked little-endian reader over the serialized bytes. */
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
  /*! \brief Read a text field and check it is UTF-8 (text crosses into Python as str). */
  std::string Text(const char* what) {
    std::string s = Str(what);
    TVM_FFI_CHECK(IsUtf8(s), ValueError)
        << "corrupt byoc_torch artifact: " << what << " is not valid UTF-8 text";
    return s;
  }
  size_t remaining() const { return size_ - pos_; }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

/*! \brief FNV-1a (64 bit) of the serialized body: catches damaged artifacts before parsing.
 * Not a signature: a crafted artifact can carry a matching checksum (see docs/security.md). */
uint64_t Checksum(const char* data, size_t size) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
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
void PutStr(std::string* out, const char* data, size_t size) {
  PutU64(out, size);
  out->append(data, size);
}
void PutStr(std::string* out, const ffi::String& s) { PutStr(out, s.data(), s.size()); }

}  // namespace

ffi::Bytes SerializeArtifact(const std::string& metadata, const ffi::Array<SubgraphSpec>& specs) {
  std::string body;
  PutStr(&body, metadata.data(), metadata.size());
  PutU32(&body, static_cast<uint32_t>(specs.size()));
  for (const SubgraphSpec& spec : specs) {
    PutStr(&body, spec->symbol);
    PutU32(&body, static_cast<uint32_t>(spec->num_inputs));
    PutU32(&body, static_cast<uint32_t>(spec->num_outputs));
    body.push_back(spec->returns_tuple ? 1 : 0);
    PutStr(&body, spec->script);
    PutU32(&body, static_cast<uint32_t>(spec->module_names.size()));
    for (size_t k = 0; k < spec->module_names.size(); ++k) {
      PutStr(&body, spec->module_names[k]);
      const ffi::Bytes& payload = spec->module_payloads[k];
      PutStr(&body, payload.data(), payload.size());
    }
    PutStr(&body, spec->aoti_package.data(), spec->aoti_package.size());
    PutU32(&body, static_cast<uint32_t>(spec->aoti_inputs.size()));
    for (int64_t index : spec->aoti_inputs) PutU32(&body, static_cast<uint32_t>(index));
    body.push_back(spec->package_only ? 1 : 0);
  }
  std::string out(kMagic, sizeof(kMagic));
  PutU32(&out, kFormatVersion);
  PutU64(&out, Checksum(body.data(), body.size()));
  out += body;
  return ffi::Bytes(out);
}

Artifact DeserializeArtifact(const ffi::Bytes& bytes) {
  Reader r(bytes.data(), bytes.size());
  char magic[sizeof(kMagic)];
  r.Read(magic, sizeof(magic), "magic");
  TVM_FFI_CHECK(std::memcmp(magic, kMagic, sizeof(kMagic)) == 0, ValueError)
      << "corrupt byoc_torch artifact: bad magic (not a serialized torch runtime module)";
  uint32_t version = r.U32("format version");
  TVM_FFI_CHECK(version >= kOldestReadableVersion && version <= kFormatVersion, ValueError)
      << "byoc_torch artifact has format version " << version << ", this runtime reads versions "
      << kOldestReadableVersion << " to " << kFormatVersion;
  uint64_t checksum = r.U64("checksum");
  const size_t body_start = bytes.size() - r.remaining();
  TVM_FFI_CHECK(Checksum(bytes.data() + body_start, r.remaining()) == checksum, ValueError)
      << "corrupt byoc_torch artifact: checksum mismatch (the serialized module was damaged)";
  Artifact artifact;
  artifact.metadata = r.Text("metadata");
  uint64_t count = r.U32("function count");
  TVM_FFI_CHECK(count <= kMaxFunctions, ValueError)
      << "corrupt byoc_torch artifact: implausible function count " << count;
  for (uint64_t i = 0; i < count; ++i) {
    std::string symbol = r.Text("subgraph symbol");
    uint32_t num_inputs = r.U32("input count");
    uint32_t num_outputs = r.U32("output count");
    uint8_t returns_tuple = r.U8("tuple flag");
    TVM_FFI_CHECK(returns_tuple <= 1, ValueError)
        << "corrupt byoc_torch artifact: bad tuple flag " << int(returns_tuple);
    std::string script = r.Text("TorchScript source");
    uint32_t num_submodules = r.U32("submodule count");
    TVM_FFI_CHECK(num_submodules <= kMaxArity, ValueError)
        << "corrupt byoc_torch artifact: implausible submodule count " << num_submodules;
    ffi::Array<ffi::String> names;
    ffi::Array<ffi::Bytes> payloads;
    for (uint32_t k = 0; k < num_submodules; ++k) {
      names.push_back(r.Text("submodule name"));
      payloads.push_back(ffi::Bytes(r.Str("submodule payload")));
    }
    ffi::Bytes package;
    ffi::Array<int64_t> package_inputs;
    if (version >= 2) {
      package = ffi::Bytes(r.Str("AOTInductor package"));
      uint32_t num_package_inputs = r.U32("AOTInductor input count");
      TVM_FFI_CHECK(num_package_inputs <= num_inputs, ValueError)
          << "corrupt byoc_torch artifact: AOTInductor input count " << num_package_inputs
          << " exceeds the subgraph's " << num_inputs << " inputs";
      for (uint32_t k = 0; k < num_package_inputs; ++k) {
        package_inputs.push_back(r.U32("AOTInductor input index"));
      }
    }
    uint8_t package_only = version >= 3 ? r.U8("package-only flag") : 0;
    TVM_FFI_CHECK(package_only <= 1, ValueError)
        << "corrupt byoc_torch artifact: bad package-only flag " << int(package_only);
    // The spec validates arity, the tuple flag against the output count, and the package's
    // input indices (all of them, in order, when it runs only as its package).
    artifact.specs.push_back(SubgraphSpec(std::move(symbol), std::move(script), num_inputs,
                                          num_outputs, returns_tuple == 1, std::move(names),
                                          std::move(payloads), std::move(package),
                                          std::move(package_inputs), package_only == 1));
  }
  TVM_FFI_CHECK(r.remaining() == 0, ValueError)
      << "corrupt byoc_torch artifact: " << r.remaining() << " trailing bytes";
  return artifact;
}

}  // namespace byoc_torch
