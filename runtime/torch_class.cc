/*!
 * \file torch_class.cc
 * \brief A compiled model as PyTorch sees it: the TorchScript custom class
 * `torch.classes.byoc_torch.Executable_import_byoc_torch_to_load` (Python: `Executable`) and the
 * op `torch.ops.byoc_torch.execute`.
 *
 * Place in the data flow: byoc_torch/torch_library.py makes an Executable from a compiled
 * model's artifact (the exported shared library, as a uint8 tensor), and the nn.Module
 * byoc_torch returns calls `execute(executable, inputs)` whenever PyTorch traces it
 * (torch.export, torch.jit.trace/script, torch.compile). The artifact is the one home of the
 * model's signature (JSON, in its `torch` runtime module): `signature()` reads it from there,
 * loading the artifact if this process does not hold it yet. The Executable pickles as
 * ("", artifact) through def_pickle (archives written by earlier versions hold a copy of the
 * signature in that string; it is ignored on load), so torch.jit.save, torch.export.save and
 * torch.save carry the whole compiled model; loading needs only `import byoc_torch` (which loads this
 * library and so registers the class and the op). The class's TorchScript name says so, because
 * it is what PyTorch's error names when a model holding one is loaded without byoc_torch
 * ("Unknown type name '__torch__.torch.classes.byoc_torch.Executable_import_byoc_torch_to_load'").
 *
 * The op's kernel is C++ alone (executable.h): on an Executable's first call it verifies
 * the artifact's seal, loads it (or reuses the executable this process already holds for
 * the same bytes) and then runs the Relax VM, so a C++ process without Python (a LibTorch
 * application, Triton's PyTorch backend) runs TorchScript archives holding compiled parts
 * once it has loaded this library and TVM's runtime (docs/deployment.md). Errors reach
 * PyTorch as c10 errors (RuntimeError, ValueError or TypeError in Python), never an abort.
 * The op's output shapes during tracing come from the fake kernel in Python
 * (byoc_torch/torch_library.py), which reads `signature()`.
 */
#include <ATen/ATen.h>
#include <torch/custom_class.h>
#include <torch/library.h>
#include <tvm/ffi/error.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "executable.h"
#include "sealed_artifact.h"

namespace byoc_torch {
namespace {
namespace ffi = tvm::ffi;

#define BYOC_TORCH_CLASS_NAME "Executable_import_byoc_torch_to_load"

/*! \brief A tvm-ffi error (loading or running the artifact) as the c10 error of its kind; the
 * message names byoc_torch's own kinds (ArtifactError, UnregisteredOpError, ...), which c10
 * has no class for. */
[[noreturn]] void RethrowAsTorch(const ffi::Error& err) {
  std::string kind = err.kind();
  bool builtin = kind == "RuntimeError" || kind == "ValueError" || kind == "TypeError";
  std::string text = builtin ? err.message() : kind + ": " + err.message();
  if (kind == "ArtifactError" || kind == "ValueError" || kind == "InputError") {
    TORCH_CHECK_VALUE(false, text);
  }
  if (kind == "TypeError" || kind == "InputTypeError") TORCH_CHECK_TYPE(false, text);
  TORCH_CHECK(false, text);
}

class Executable : public torch::CustomClassHolder {
 public:
  explicit Executable(at::Tensor artifact) : artifact_(std::move(artifact)) {
    TORCH_CHECK(
        artifact_.scalar_type() == at::kByte && artifact_.dim() == 1 && artifact_.device().is_cpu(),
        "byoc_torch.Executable: the artifact must be a 1-D uint8 CPU tensor, got ",
        artifact_.scalar_type(), " of shape ", artifact_.sizes(), " on ", artifact_.device());
    artifact_ = artifact_.contiguous();
  }

  /*! \brief The signature the artifact stores (loading it on first use). */
  std::string signature() {
    try {
      return Loaded()->signature();
    } catch (const ffi::Error& err) {
      RethrowAsTorch(err);
    }
  }
  const at::Tensor& artifact() const { return artifact_; }

  std::vector<at::Tensor> Run(const std::vector<at::Tensor>& inputs) {
    try {
      return Loaded()->Run(inputs);
    } catch (const ffi::Error& err) {
      RethrowAsTorch(err);
    }
  }

 private:
  /*! \brief The artifact verified and loaded, on the first call. Loaded without holding mu_
   * (it takes long); two threads may both load one, one is kept. */
  std::shared_ptr<ArtifactExecutable> Loaded() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (loaded_) return loaded_;
    }
    std::shared_ptr<ArtifactExecutable> made = ArtifactExecutable::Load(
        static_cast<const uint8_t*>(artifact_.data_ptr()), static_cast<size_t>(artifact_.numel()));
    std::lock_guard<std::mutex> lock(mu_);
    if (!loaded_) loaded_ = std::move(made);
    return loaded_;
  }

  at::Tensor artifact_;  // the sealed artifact, byte for byte
  std::mutex mu_;        // guards loaded_
  std::shared_ptr<ArtifactExecutable> loaded_;
};

/*! \brief What an Executable pickles as: ("", artifact). The string is kept so that archives
 * written when it carried a copy of the signature still load. */
using State = std::tuple<std::string, at::Tensor>;

/*! \brief Check the seal of an artifact being unpickled (torch.jit.load, torch.load,
 * torch.export.load of a model holding a compiled part), so a damaged one fails the load, as a
 * ValueError "ArtifactError: ...", not the first call. One SHA-256 pass over the bytes. */
void VerifyUnpickled(const at::Tensor& artifact) {
  if (artifact.scalar_type() != at::kByte || artifact.dim() != 1 || !artifact.device().is_cpu()) {
    return;  // the constructor refuses it with its own message
  }
  at::Tensor bytes = artifact.contiguous();
  try {
    VerifySealedArtifact(bytes.data_ptr<uint8_t>(), static_cast<size_t>(bytes.numel()),
                         "a compiled part inside a TorchScript or pickle archive being loaded");
  } catch (const ffi::Error& err) {
    RethrowAsTorch(err);
  }
}

std::vector<at::Tensor> Execute(const c10::intrusive_ptr<Executable>& executable,
                                const std::vector<at::Tensor>& inputs) {
  return executable->Run(inputs);
}

}  // namespace

TORCH_LIBRARY(byoc_torch, m) {
  // Where the op's fake kernel lives: PyTorch imports it when it needs output shapes.
  m.set_python_module("byoc_torch.torch_library");
  m.class_<Executable>(BYOC_TORCH_CLASS_NAME)
      .def(torch::init<at::Tensor>())
      .def("signature",
           [](const c10::intrusive_ptr<Executable>& self) { return self->signature(); })
      // What torch.export and torch.compile see of the object (the fake class rebuilds from it).
      .def("__obj_flatten__",
           [](const c10::intrusive_ptr<Executable>& self) {
             return std::make_tuple(std::make_tuple(std::string("signature"), self->signature()));
           })
      .def_pickle(
          [](const c10::intrusive_ptr<Executable>& self) -> State {
            return State(std::string(), self->artifact());
          },
          [](State state) -> c10::intrusive_ptr<Executable> {
            VerifyUnpickled(std::get<1>(state));
            return c10::make_intrusive<Executable>(std::move(std::get<1>(state)));
          });
  m.def("execute(__torch__.torch.classes.byoc_torch." BYOC_TORCH_CLASS_NAME
        " executable, Tensor[] inputs) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(byoc_torch, CPU, m) { m.impl("execute", Execute); }
TORCH_LIBRARY_IMPL(byoc_torch, CUDA, m) { m.impl("execute", Execute); }

}  // namespace byoc_torch
