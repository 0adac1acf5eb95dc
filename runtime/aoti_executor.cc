/*!
 * \file aoti_executor.cc
 * \brief Loading and running a subgraph's AOTInductor package (see aoti_executor.h).
 */
#include "aoti_executor.h"

#include <caffe2/serialize/in_memory_adapter.h>
#include <caffe2/serialize/inline_container.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <tvm/ffi/error.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include "utf8.h"

namespace byoc_torch {
namespace {

/*!
 * \brief A package's files, extracted from its bytes into a private directory, which is removed
 * with everything in it on destruction.
 *
 * AOTIModelPackageLoader given a package file extracts it into a directory of its own and
 * removes that only in its destructor, which never runs for a module kept until the process
 * ends: every such process left a copy of the package in /tmp. Given a directory, the loader
 * loads from it and leaves it alone; once loaded, nothing is read from it again, so it is
 * removed at once.
 */
class ExtractedPackage {
 public:
  ExtractedPackage(const std::string& symbol, const ffi::Bytes& bytes) : symbol_(symbol) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                          "/byoc_torch_aoti_XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    // mkdtemp creates the directory with mode 0700: no other user can read or replace a file.
    TVM_FFI_CHECK(mkdtemp(buf.data()) != nullptr, RuntimeError)
        << "byoc_torch subgraph '" << symbol << "': cannot create a private directory for its "
        << "AOTInductor package in " << pattern << ": " << std::strerror(errno);
    dir_ = buf.data();
    try {
      Extract(bytes);
    } catch (...) {
      Remove();
      throw;
    }
  }
  ~ExtractedPackage() { Remove(); }
  ExtractedPackage(const ExtractedPackage&) = delete;
  ExtractedPackage& operator=(const ExtractedPackage&) = delete;

  const std::string& path() const { return dir_; }

 private:
  void Extract(const ffi::Bytes& bytes) {
    try {
      // The archive is read where it lies; records are named relative to its top folder.
      caffe2::serialize::PyTorchStreamReader reader(
          std::make_shared<caffe2::serialize::MemoryReadAdapter>(
              bytes.data(), static_cast<off_t>(bytes.size())));
      for (const std::string& name : reader.getAllRecords()) {
        if (!SafeRelative(name)) {
          TVM_FFI_THROW(ValueError) << "byoc_torch subgraph '" << symbol_
                                    << "': its AOTInductor package does not load: it names a "
                                    << "file outside its own folder: " << ValidUtf8(name);
        }
        auto [data, size] = reader.getRecord(name);
        MakeParents(name);
        Write(dir_ + "/" + name, static_cast<const char*>(data.get()), size);
      }
    } catch (const c10::Error& e) {
      TVM_FFI_THROW(ValueError) << "byoc_torch subgraph '" << symbol_
                                << "': its AOTInductor package does not load: "
                                << ValidUtf8(e.what_without_backtrace());
    }
  }

  /*! \brief Whether `name` stays below the directory: not absolute, no empty or ".." parts. */
  static bool SafeRelative(const std::string& name) {
    if (name.empty() || name.front() == '/') return false;
    size_t begin = 0;
    while (begin <= name.size()) {
      size_t end = name.find('/', begin);
      if (end == std::string::npos) end = name.size();
      std::string part = name.substr(begin, end - begin);
      if (part.empty() || part == "." || part == "..") return false;
      begin = end + 1;
    }
    return true;
  }

  void MakeParents(const std::string& name) {
    for (size_t slash = name.find('/'); slash != std::string::npos;
         slash = name.find('/', slash + 1)) {
      std::string parent = dir_ + "/" + name.substr(0, slash);
      TVM_FFI_CHECK(mkdir(parent.c_str(), S_IRWXU) == 0 || errno == EEXIST, RuntimeError)
          << "byoc_torch subgraph '" << symbol_ << "': cannot create " << parent
          << " for its AOTInductor package: " << std::strerror(errno);
    }
  }

  void Write(const std::string& path, const char* data, size_t size) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, S_IRUSR | S_IWUSR);
    bool ok = fd >= 0;
    size_t written = 0;
    while (ok && written < size) {
      ssize_t n = write(fd, data + written, size - written);
      if (n < 0 && errno == EINTR) continue;
      ok = n > 0;
      if (ok) written += static_cast<size_t>(n);
    }
    int saved = errno;
    if (fd >= 0) ok = (close(fd) == 0) && ok;
    TVM_FFI_CHECK(ok, RuntimeError) << "byoc_torch subgraph '" << symbol_
                                    << "': cannot write its AOTInductor package to a private "
                                    << "directory: " << std::strerror(saved);
  }

  void Remove() {
    if (dir_.empty()) return;
    std::error_code ignored;  // nothing to report from a destructor; the name was private
    std::filesystem::remove_all(dir_, ignored);
    dir_.clear();
  }

  std::string symbol_;
  std::string dir_;
};

}  // namespace

AotiExecutor::AotiExecutor(const std::string& symbol, const ffi::Bytes& package,
                           const ffi::Array<int64_t>& inputs)
    : symbol_(symbol), inputs_(inputs.begin(), inputs.end()) {
  ExtractedPackage files(symbol, package);
  try {
    // The package's own name for its model is "model" (aoti_compile_and_package's default).
    loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(files.path(), "model");
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
