/*!
 * \file cpu_features.h
 * \brief The instruction-set features of the CPU this process runs on, for the artifact's CPU
 *        check in C++ (byoc_torch/cpu.py's check_host, without Python or LLVM).
 *
 * Place in the data flow: the op's kernel (executable.cc) loads an artifact whose signature
 * records what its TVM kernels need of a CPU ({"mcpu": name, "features": [LLVM feature
 * names]}); before the kernels can run, MissingCpuFeatures says which of those this CPU lacks,
 * so an artifact compiled for AVX-512 refuses with a CPUFeatureError instead of dying of SIGILL.
 *
 * Detection is CPUID (and XGETBV for the register state the OS saves: AVX needs the YMM state,
 * AVX-512 the opmask and ZMM state, AMX the tile state), on x86-64. A feature name this check
 * does not know — LLVM reports more than the vector and bit-manipulation sets listed in
 * cpu_features.cc — and every feature on other architectures is not checked.
 */
#ifndef BYOC_TORCH_RUNTIME_CPU_FEATURES_H_
#define BYOC_TORCH_RUNTIME_CPU_FEATURES_H_

#include <string>
#include <vector>

namespace byoc_torch {

/*! \brief The features of `required` (LLVM names) this CPU is known to lack, in order. */
std::vector<std::string> MissingCpuFeatures(const std::vector<std::string>& required);

}  // namespace byoc_torch

#endif  // BYOC_TORCH_RUNTIME_CPU_FEATURES_H_
