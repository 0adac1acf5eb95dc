/*!
 * \file aoti_executor.cc
 * \brief Loading and running a subgraph's AOTInductor package (see aoti_executor.h).
 */
#include "aoti_executor.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <tvm/ffi/error.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <string>
#include <utility>

#include "utf8.h"

namespace byoc_torch {
namespace {

/*! \brief A private directory holding one file of bytes; both are removed on destruction. */
class PrivateFile {
 public:
  PrivateFile(const std::string& symbol, const ffi::Bytes& bytes) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                          "/byoc_torch_aoti_XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    // mkdtemp creates the directory with mode 0700: no other user can read or replace the file.
    TVM_FFI_CHECK(mkdtemp(buf.data()) != nullptr, RuntimeError)
        << "byoc_torch subgraph '" << symbol << "': cannot create a private directory for its "
        << "AOTInductor package in " << pattern << ": " << std::strerror(errno);
    dir_ = buf.data();
    path_ = dir_ + "/package.pt2";
    int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, S_IRUSR | S_IWUSR);
    bool ok = fd >= 0;
    size_t written = 0;
    while (ok && written < bytes.size()) {
      ssize_t n = write(fd, bytes.data() + written, bytes.size() - written);
      if (n < 0 && errno == EINTR) continue;
      ok = n > 0;
      if (ok) written += static_cast<size_t>(n);
    }
    int saved = errno;
    if (fd >= 0) ok = (close(fd) == 0) && ok;
    if (!ok) {
      Remove();
      TVM_FFI_THROW(RuntimeError) << "byoc_torch subgraph '" << symbol
                                  << "': cannot write its AOTInductor package to a private "
                                  << "directory: " << std::strerror(saved);
    }
  }
  ~PrivateFile() { Remove(); }
  PrivateFile(const PrivateFile&) = delete;
  PrivateFile& operator=(const PrivateFile&) = delete;

  const std::string& path() const { return path_; }

 private:
  void Remove() {
    if (!path_.empty()) unlink(path_.c_str());
    if (!dir_.empty()) rmdir(dir_.c_str());
    path_.clear();
    dir_.clear();
  }

  std::string dir_;
  std::string path_;
};

}  // namespace

AotiExecutor::AotiExecutor(const std::string& symbol, const ffi::Bytes& package,
                           const ffi::Array<int64_t>& inputs)
    : symbol_(symbol), inputs_(inputs.begin(), inputs.end()) {
  PrivateFile file(symbol, package);
  try {
    // The package's own name for its model is "model" (aoti_compile_and_package's default).
    loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(file.path(), "model");
  } catch (const c10::Error& e) {
    TVM_FFI_THROW(ValueError) << "byoc_torch subgraph '" << symbol_
                              << "': its AOTInductor package does not load: "
                              << ValidUtf8(e.what_without_backtrace());
  } catch (const std::exception& e) {
    TVM_FFI_THROW(ValueError) << "byoc_torch subgraph '" << symbol_
                              << "': its AOTInductor package does not load: "
                              << ValidUtf8(e.what());
  }
}

AotiExecutor::~AotiExecutor() = default;

std::vector<at::Tensor> AotiExecutor::Run(const std::vector<at::Tensor>& inputs) const {
  std::vector<at::Tensor> taken;
  taken.reserve(inputs_.size());
  for (int64_t index : inputs_) taken.push_back(inputs[static_cast<size_t>(index)]);
  try {
    return loader_->boxed_run(std::move(taken));
  } catch (const c10::Error& e) {
    TVM_FFI_THROW(RuntimeError) << "byoc_torch subgraph '" << symbol_
                                << "' raised inside its AOTInductor package: "
                                << ValidUtf8(e.what_without_backtrace());
  } catch (const ffi::Error&) {
    throw;
  } catch (const std::exception& e) {
    // A c10::Error thrown inside the package's own library arrives as a std::exception whose
    // text carries LibTorch's C++ backtrace after the message: keep the message.
    std::string text = e.what();
    size_t backtrace = text.find("\nException raised from ");
    TVM_FFI_THROW(RuntimeError) << "byoc_torch subgraph '" << symbol_
                                << "' raised inside its AOTInductor package: "
                                << ValidUtf8(text.substr(0, backtrace));
  }
}

}  // namespace byoc_torch
