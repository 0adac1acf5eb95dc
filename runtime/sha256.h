/*!
 * \file sha256.h
 * \brief SHA-256 (FIPS 180-4), for the sealed-artifact check in C++ (sealed_artifact.h).
 *
 * Place in the data flow: the op's kernel verifies an artifact's seal (its length and SHA-256,
 * byoc_torch/artifact_file.py) before the dynamic loader sees the bytes. Neither LibTorch nor
 * tvm-ffi exports a SHA-256, so the runtime carries its own; tests/test_cpp_kernel.py checks
 * it against Python's hashlib on lengths around every block boundary.
 */
#ifndef BYOC_TORCH_RUNTIME_SHA256_H_
#define BYOC_TORCH_RUNTIME_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>

namespace byoc_torch {

using Sha256Digest = std::array<uint8_t, 32>;

/*! \brief The SHA-256 of the `size` bytes at `data`. */
Sha256Digest Sha256(const uint8_t* data, size_t size);

}  // namespace byoc_torch

#endif  // BYOC_TORCH_RUNTIME_SHA256_H_
