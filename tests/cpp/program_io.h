/*!
 * \file program_io.h
 * \brief What the programs of tests/cpp share: inputs read from a torch.save file (a list of
 *        tensors), outputs written as a tuple torch.load reads back, and whether a libpython
 *        is mapped into the process (it never is: these programs run without Python).
 */
#ifndef BYOC_TORCH_TESTS_CPP_PROGRAM_IO_H_
#define BYOC_TORCH_TESTS_CPP_PROGRAM_IO_H_

#include <torch/script.h>
#include <torch/serialize.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace program_io {

inline std::vector<at::Tensor> ReadInputs(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<at::Tensor> inputs;
  for (const c10::IValue& x : torch::pickle_load(data).toList()) inputs.push_back(x.toTensor());
  return inputs;
}

inline std::string Describe(const at::Tensor& t) {
  std::string text = "tensor " + std::string(c10::toString(t.scalar_type())) + " [";
  for (int64_t d = 0; d < t.dim(); ++d) text += (d ? ", " : "") + std::to_string(t.size(d));
  return text + "]";
}

/*! \brief Is a libpython mapped into this process? */
inline bool PythonMapped() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("libpython") != std::string::npos) return true;
  }
  return false;
}

/*! \brief Print and write the outputs (a tuple: torch.load's weights-only reader takes it). */
inline void WriteOutputs(const std::vector<at::Tensor>& outputs, const std::string& path) {
  std::vector<c10::IValue> written;
  for (const at::Tensor& t : outputs) {
    std::cout << "output: " << Describe(t) << ", sum " << t.sum().item<double>() << "\n";
    written.push_back(t);
  }
  std::vector<char> bytes = torch::pickle_save(c10::ivalue::Tuple::create(std::move(written)));
  std::ofstream(path, std::ios::binary).write(bytes.data(),
                                              static_cast<std::streamsize>(bytes.size()));
  std::cout << "wrote " << path << "\n";
  std::cout << "libpython mapped: " << (PythonMapped() ? "yes" : "no") << "\n";
}

}  // namespace program_io

#endif  // BYOC_TORCH_TESTS_CPP_PROGRAM_IO_H_
