/*!
 * \file sealed_artifact.cc
 * \brief VerifySealedArtifact (see sealed_artifact.h) and its test entry points
 *        `byoc_torch.Sha256(bytes) -> bytes` and
 *        `byoc_torch.VerifySealedArtifact(bytes, source) -> payload length`.
 */
#include "sealed_artifact.h"

#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>

#include <cstring>
#include <optional>

namespace byoc_torch {
namespace ffi = tvm::ffi;

namespace {

constexpr uint8_t kMagic[8] = {0xb7, 'B', 'Y', 'O', 'C', 'S', 'L', '\n'};
constexpr uint32_t kFormatVersion = 1;
// Trailer layout: offsets from the trailer's first byte.
constexpr size_t kLengthAt = 8, kDigestAt = 16, kVersionAt = 48, kTrailerSizeAt = 52;

uint64_t ReadLE(const uint8_t* at, int bytes) {
  uint64_t value = 0;
  for (int k = bytes - 1; k >= 0; --k) value = (value << 8) | at[k];
  return value;
}

bool IsMagic(const uint8_t* at) { return std::memcmp(at, kMagic, sizeof(kMagic)) == 0; }

/*! \brief Where the last MAGIC starting before `end` starts, if any. */
std::optional<size_t> LastMagic(const uint8_t* data, size_t end) {
  if (end < sizeof(kMagic)) return std::nullopt;
  for (size_t at = end - sizeof(kMagic) + 1; at-- > 0;) {
    if (IsMagic(data + at)) return at;
  }
  return std::nullopt;
}

/*! \brief Where the last complete version-1 trailer ends, if one does (the seal of a file
 * that has bytes appended after it). */
std::optional<size_t> CompleteTrailerEnd(const uint8_t* data, size_t size) {
  std::optional<size_t> at = LastMagic(data, size);
  while (at.has_value()) {
    size_t end = *at + sizeof(kMagic);
    if (end >= kSealTrailerSize) {
      const uint8_t* trailer = data + end - kSealTrailerSize;
      size_t start = end - kSealTrailerSize;
      if (IsMagic(trailer) && ReadLE(trailer + kVersionAt, 4) == kFormatVersion &&
          ReadLE(trailer + kTrailerSizeAt, 4) == kSealTrailerSize &&
          ReadLE(trailer + kLengthAt, 8) == start) {
        return end;
      }
    }
    at = LastMagic(data, *at);  // a MAGIC wholly before this one
  }
  return std::nullopt;
}

}  // namespace

SealedPayload VerifySealedArtifact(const uint8_t* data, size_t size, const std::string& source) {
  const std::string where = "byoc_torch.load: " + source;
  if (size >= 16 && IsMagic(data + size - sizeof(kMagic))) {
    uint64_t version = ReadLE(data + size - 16, 4);
    uint64_t trailer_size = ReadLE(data + size - 12, 4);
    if (version != kFormatVersion) {
      TVM_FFI_THROW(ArtifactError) << where << ": unknown artifact format version " << version
                                   << " (this byoc_torch reads version " << kFormatVersion
                                   << ")";
    }
    if (trailer_size != kSealTrailerSize || size < kSealTrailerSize) {
      TVM_FFI_THROW(ArtifactError) << where << ": damaged seal (trailer length " << trailer_size
                                   << ")";
    }
    const uint8_t* trailer = data + size - kSealTrailerSize;
    if (!IsMagic(trailer)) {
      TVM_FFI_THROW(ArtifactError) << where << ": damaged seal (its first magic is wrong)";
    }
    uint64_t length = ReadLE(trailer + kLengthAt, 8);
    size_t have = size - kSealTrailerSize;
    if (length > have) {
      TVM_FFI_THROW(ArtifactError) << where << ": truncated: the seal records " << length
                                   << " bytes, " << have << " are present";
    }
    if (length < have) {
      TVM_FFI_THROW(ArtifactError) << where << ": " << have - length
                                   << " unexpected byte(s) before the seal (it records "
                                   << length << " bytes)";
    }
    SealedPayload payload{have, Sha256(data, have)};
    if (std::memcmp(payload.digest.data(), trailer + kDigestAt, payload.digest.size()) != 0) {
      TVM_FFI_THROW(ArtifactError) << where
                                   << ": checksum mismatch (SHA-256): the file is damaged";
    }
    return payload;
  }
  if (std::optional<size_t> at = LastMagic(data, size)) {
    if (std::optional<size_t> end = CompleteTrailerEnd(data, size)) {
      TVM_FFI_THROW(ArtifactError) << where << ": trailing garbage: " << size - *end
                                   << " byte(s) after the seal (it ends at byte " << *end << ")";
    }
    TVM_FFI_THROW(ArtifactError) << where << ": damaged or truncated seal (a byoc_torch seal "
                                 << "marker at byte " << *at
                                 << ", but no complete seal ends the file)";
  }
  TVM_FFI_THROW(ArtifactError) << where
                               << ": no byoc_torch seal: the bytes are truncated, or were not "
                                  "written by CompiledModule.export; the op byoc_torch::execute "
                                  "runs sealed artifacts only";
  TVM_FFI_UNREACHABLE();
}

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("byoc_torch.Sha256",
           [](ffi::Bytes data) {
             Sha256Digest digest =
                 Sha256(reinterpret_cast<const uint8_t*>(data.data()), data.size());
             return ffi::Bytes(reinterpret_cast<const char*>(digest.data()), digest.size());
           })
      .def("byoc_torch.VerifySealedArtifact", [](ffi::Bytes data, ffi::String source) {
        return static_cast<int64_t>(
            VerifySealedArtifact(reinterpret_cast<const uint8_t*>(data.data()), data.size(),
                                 std::string(source))
                .payload_size);
      });
}

}  // namespace byoc_torch
