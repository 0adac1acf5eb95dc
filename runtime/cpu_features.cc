/*!
 * \file cpu_features.cc
 * \brief MissingCpuFeatures (see cpu_features.h) and its test entry point
 *        `byoc_torch.HostCpuFeatures() -> {name: has}` (every feature the check knows).
 */
#include "cpu_features.h"

#include <tvm/ffi/container/map.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>

#include <cstdint>
#include <string_view>
#include <unordered_map>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define BYOC_TORCH_X86 1
#endif

namespace byoc_torch {
namespace {

namespace ffi = tvm::ffi;

#ifdef BYOC_TORCH_X86

/*! \brief Where CPUID reports a feature: leaf, subleaf, register (0..3 = EAX..EDX), bit. */
struct Bit {
  uint32_t leaf, subleaf;
  int reg, bit;
};

constexpr int kEax = 0, kEbx = 1, kEcx = 2, kEdx = 3;

/*! \brief LLVM's x86 feature names and their CPUID bits (Intel SDM vol. 2A, AMD APM vol. 3). */
const std::unordered_map<std::string_view, Bit>& Table() {
  static const std::unordered_map<std::string_view, Bit> table = {
      {"cx8", {1, 0, kEdx, 8}},           {"cmov", {1, 0, kEdx, 15}},
      {"mmx", {1, 0, kEdx, 23}},          {"fxsr", {1, 0, kEdx, 24}},
      {"sse", {1, 0, kEdx, 25}},          {"sse2", {1, 0, kEdx, 26}},
      {"sse3", {1, 0, kEcx, 0}},          {"pclmul", {1, 0, kEcx, 1}},
      {"ssse3", {1, 0, kEcx, 9}},         {"fma", {1, 0, kEcx, 12}},
      {"cx16", {1, 0, kEcx, 13}},         {"sse4.1", {1, 0, kEcx, 19}},
      {"sse4.2", {1, 0, kEcx, 20}},       {"crc32", {1, 0, kEcx, 20}},
      {"movbe", {1, 0, kEcx, 22}},        {"popcnt", {1, 0, kEcx, 23}},
      {"aes", {1, 0, kEcx, 25}},          {"xsave", {1, 0, kEcx, 26}},
      {"avx", {1, 0, kEcx, 28}},          {"f16c", {1, 0, kEcx, 29}},
      {"rdrnd", {1, 0, kEcx, 30}},        {"fsgsbase", {7, 0, kEbx, 0}},
      {"bmi", {7, 0, kEbx, 3}},           {"avx2", {7, 0, kEbx, 5}},
      {"bmi2", {7, 0, kEbx, 8}},          {"invpcid", {7, 0, kEbx, 10}},
      {"avx512f", {7, 0, kEbx, 16}},      {"avx512dq", {7, 0, kEbx, 17}},
      {"rdseed", {7, 0, kEbx, 18}},       {"adx", {7, 0, kEbx, 19}},
      {"avx512ifma", {7, 0, kEbx, 21}},   {"clflushopt", {7, 0, kEbx, 23}},
      {"clwb", {7, 0, kEbx, 24}},         {"avx512cd", {7, 0, kEbx, 28}},
      {"sha", {7, 0, kEbx, 29}},          {"avx512bw", {7, 0, kEbx, 30}},
      {"avx512vl", {7, 0, kEbx, 31}},     {"avx512vbmi", {7, 0, kEcx, 1}},
      {"pku", {7, 0, kEcx, 3}},           {"avx512vbmi2", {7, 0, kEcx, 6}},
      {"gfni", {7, 0, kEcx, 8}},          {"vaes", {7, 0, kEcx, 9}},
      {"vpclmulqdq", {7, 0, kEcx, 10}},   {"avx512vnni", {7, 0, kEcx, 11}},
      {"avx512bitalg", {7, 0, kEcx, 12}}, {"avx512vpopcntdq", {7, 0, kEcx, 14}},
      {"rdpid", {7, 0, kEcx, 22}},        {"avx512vp2intersect", {7, 0, kEdx, 8}},
      {"serialize", {7, 0, kEdx, 14}},    {"amx-bf16", {7, 0, kEdx, 22}},
      {"avx512fp16", {7, 0, kEdx, 23}},   {"amx-tile", {7, 0, kEdx, 24}},
      {"amx-int8", {7, 0, kEdx, 25}},     {"avxvnni", {7, 1, kEax, 4}},
      {"avx512bf16", {7, 1, kEax, 5}},    {"xsaveopt", {0xd, 1, kEax, 0}},
      {"xsavec", {0xd, 1, kEax, 1}},      {"xsaves", {0xd, 1, kEax, 3}},
      {"sahf", {0x80000001, 0, kEcx, 0}}, {"lzcnt", {0x80000001, 0, kEcx, 5}},
      {"sse4a", {0x80000001, 0, kEcx, 6}}, {"prfchw", {0x80000001, 0, kEcx, 8}},
      {"xop", {0x80000001, 0, kEcx, 11}}, {"fma4", {0x80000001, 0, kEcx, 16}},
      {"64bit", {0x80000001, 0, kEdx, 29}}, {"clzero", {0x80000008, 0, kEbx, 0}},
      {"wbnoinvd", {0x80000008, 0, kEbx, 9}}, {"waitpkg", {7, 0, kEcx, 5}},
      {"cldemote", {7, 0, kEcx, 25}},     {"movdiri", {7, 0, kEcx, 27}},
      {"movdir64b", {7, 0, kEcx, 28}},    {"enqcmd", {7, 0, kEcx, 29}},
      {"uintr", {7, 0, kEdx, 5}},         {"tsxldtrk", {7, 0, kEdx, 16}},
      {"pconfig", {7, 0, kEdx, 18}},      {"ptwrite", {0x14, 0, kEbx, 4}},
  };
  return table;
}

bool CpuidBit(const Bit& where) {
  uint32_t max_leaf = __get_cpuid_max(where.leaf & 0x80000000u, nullptr);
  if (max_leaf < where.leaf) return false;
  uint32_t regs[4] = {0, 0, 0, 0};
  __cpuid_count(where.leaf, where.subleaf, regs[0], regs[1], regs[2], regs[3]);
  return (regs[where.reg] >> where.bit) & 1u;
}

/*! \brief The register state the OS saves on a context switch (XCR0), 0 without OSXSAVE. */
uint64_t SavedState() {
  if (!CpuidBit({1, 0, kEcx, 27})) return 0;
  uint32_t low = 0, high = 0;
  __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
  return (static_cast<uint64_t>(high) << 32) | low;
}

bool Has(std::string_view name, const Bit& where) {
  if (!CpuidBit(where)) return false;
  uint64_t state = SavedState();
  constexpr uint64_t kYmm = 0x6, kZmm = 0xe6, kTiles = 0x60000;
  if (name.substr(0, 6) == "avx512") return (state & kZmm) == kZmm;
  if (name.substr(0, 3) == "amx") return (state & kTiles) == kTiles;
  bool needs_ymm = name == "avx" || name == "avx2" || name == "fma" || name == "f16c" ||
                   name == "vaes" || name == "vpclmulqdq" || name == "avxvnni" ||
                   name == "fma4" || name == "xop";
  return !needs_ymm || (state & kYmm) == kYmm;
}

#endif  // BYOC_TORCH_X86

}  // namespace

std::vector<std::string> MissingCpuFeatures(const std::vector<std::string>& required) {
  std::vector<std::string> missing;
#ifdef BYOC_TORCH_X86
  const auto& table = Table();
  for (const std::string& name : required) {
    auto it = table.find(name);
    if (it != table.end() && !Has(name, it->second)) missing.push_back(name);
  }
#endif
  return missing;
}

TVM_FFI_STATIC_INIT_BLOCK() {
  ffi::reflection::GlobalDef().def("byoc_torch.HostCpuFeatures", []() {
    ffi::Map<ffi::String, bool> out;
#ifdef BYOC_TORCH_X86
    for (const auto& [name, where] : Table()) out.Set(std::string(name), Has(name, where));
#endif
    return out;
  });
}

}  // namespace byoc_torch
