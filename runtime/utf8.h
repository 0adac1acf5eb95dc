/*!
 * \file utf8.h
 * \brief Strict UTF-8 checks for the text that crosses into Python.
 *
 * Place in the data flow: used on the way in (serialization.cc checks that every text field of
 * an artifact is UTF-8 before it becomes an ffi::String) and on the way out (error messages that
 * quote LibTorch's text or user TorchScript are made decodable by Python).
 */
#ifndef BYOC_TORCH_RUNTIME_UTF8_H_
#define BYOC_TORCH_RUNTIME_UTF8_H_

#include <string>

namespace byoc_torch {

/*! \brief True when `s` is well-formed UTF-8 (strict, as Python decodes it). */
bool IsUtf8(const std::string& s);

/*! \brief `s` with every byte that is not part of well-formed UTF-8 replaced by '?'. */
std::string ValidUtf8(const std::string& s);

}  // namespace byoc_torch

#endif  // BYOC_TORCH_RUNTIME_UTF8_H_
