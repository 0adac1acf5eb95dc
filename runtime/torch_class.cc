/*!
 * \file torch_class.cc
 * \brief A compiled model as PyTorch sees it: the TorchScript custom class
 * `torch.classes.byoc_torch.Executable_import_byoc_torch_to_load` (Python: `Executable`) and the
 * op `torch.ops.byoc_torch.execute`.
 *
 * Place in the data flow: byoc_torch/torch_library.py makes an Executable from a compiled
 * model's artifact (the exported shared library, as a uint8 tensor) and its signature (JSON),
 * and the nn.Module byoc_torch returns calls `execute(executable, inputs)` whenever PyTorch
 * traces it (torch.export, torch.jit.trace/script, torch.compile). The Executable pickles as
 * (signature, artifact) through def_pickle, so torch.jit.save, torch.export.save and torch.save
 * carry the whole compiled model; loading needs only `import byoc_torch` (which loads this
 * library and so registers the class and the op). The class's TorchScript name says so, because
 * it is what PyTorch's error names when a model holding one is loaded without byoc_torch
 * ("Unknown type name '__torch__.torch.classes.byoc_torch.Executable_import_byoc_torch_to_load'").
 *
 * The op's kernel runs the artifact through the global function
 * `byoc_torch.executable_runner(artifact, signature) -> runner` that byoc_torch's Python side
 * registers: it loads the artifact with `byoc_torch.load` (so the artifact checks and the
 * input checks are those of every other load) and returns `runner(inputs) -> outputs`. The
 * runner is made once per Executable, on its first call. The op's output shapes during
 * tracing come from the fake kernel in Python (byoc_torch/torch_library.py), which reads
 * `signature()`.
 */
#include <ATen/ATen.h>
#include <ATen/DLConvertor.h>
#include <torch/custom_class.h>
#include <torch/library.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace byoc_torch {
namespace {
namespace ffi = tvm::ffi;

constexpr const char* kRunnerFactory = "byoc_torch.executable_runner";
#define BYOC_TORCH_CLASS_NAME "Executable_import_byoc_torch_to_load"

/*! \brief The bytes [first, last) a tensor's elements span in memory. */
std::pair<uintptr_t, uintptr_t> Span(const at::Tensor& t) {
  uintptr_t first = reinterpret_cast<uintptr_t>(t.data_ptr());
  int64_t last_element = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last_element += (t.size(d) - 1) * t.stride(d);
  return {first, first + static_cast<uintptr_t>((last_element + 1) * t.element_size())};
}

/*! \brief Do two tensors share memory? (DLPack crossings make new storages over the same
 * memory, so storages are not compared: addresses are.) */
bool SharesMemory(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || a.device() != b.device()) return false;
  auto [a0, a1] = Span(a);
  auto [b0, b1] = Span(b);
  return a0 < b1 && b0 < a1;
}

class Executable : public torch::CustomClassHolder {
 public:
  Executable(std::string signature, at::Tensor artifact)
      : signature_(std::move(signature)), artifact_(std::move(artifact)) {
    TORCH_CHECK(
        artifact_.scalar_type() == at::kByte && artifact_.dim() == 1 && artifact_.device().is_cpu(),
        "byoc_torch.Executable: the artifact must be a 1-D uint8 CPU tensor, got ",
        artifact_.scalar_type(), " of shape ", artifact_.sizes(), " on ", artifact_.device());
    artifact_ = artifact_.contiguous();
  }

  const std::string& signature() const { return signature_; }
  const at::Tensor& artifact() const { return artifact_; }

  std::vector<at::Tensor> Run(const std::vector<at::Tensor>& inputs) {
    if (at::GradMode::is_enabled()) {
      for (size_t i = 0; i < inputs.size(); ++i) {
        TORCH_CHECK(!inputs[i].requires_grad(), "byoc_torch: input ", i,
                    " requires grad, but a compiled model is inference-only (its outputs "
                    "carry no gradient); call it under torch.no_grad() or torch.inference_mode()");
      }
    }
    ffi::Array<ffi::Tensor> args;
    for (const at::Tensor& t : inputs) {
      args.push_back(ffi::Tensor::FromDLPackVersioned(at::toDLPackVersioned(t)));
    }
    ffi::Array<ffi::Tensor> results = Runner()(args).cast<ffi::Array<ffi::Tensor>>();
    std::vector<at::Tensor> outputs;
    outputs.reserve(results.size());
    for (const ffi::Tensor& r : results) {
      at::Tensor out = at::fromDLPackVersioned(r.ToDLPackVersioned());
      // The op's schema promises fresh outputs: a result sharing memory with an input (a model
      // that returns its input) is copied.
      for (const at::Tensor& in : inputs) {
        if (SharesMemory(out, in)) {
          out = out.clone();
          break;
        }
      }
      outputs.push_back(std::move(out));
    }
    return outputs;
  }

 private:
  ffi::Function Runner() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (runner_.has_value()) return *runner_;
    }
    // Made without holding mu_: the factory runs Python (it takes the GIL), and a thread
    // holding the GIL may be waiting for mu_. Two threads may both make one; one is kept.
    std::optional<ffi::Function> factory = ffi::Function::GetGlobal(kRunnerFactory);
    TORCH_CHECK(factory.has_value(),
                "byoc_torch: this model holds a byoc_torch compiled model; run `import "
                "byoc_torch` in Python before calling it (it registers ",
                kRunnerFactory, ")");
    const char* data = static_cast<const char*>(artifact_.data_ptr());
    ffi::Function made = (*factory)(ffi::Bytes(data, static_cast<size_t>(artifact_.numel())),
                                    ffi::String(signature_))
                             .cast<ffi::Function>();
    std::lock_guard<std::mutex> lock(mu_);
    if (!runner_.has_value()) runner_ = std::move(made);
    return *runner_;
  }

  std::string signature_;
  at::Tensor artifact_;  // the exported shared library, byte for byte
  std::mutex mu_;        // guards runner_
  std::optional<ffi::Function> runner_;
};

using State = std::tuple<std::string, at::Tensor>;

std::vector<at::Tensor> Execute(const c10::intrusive_ptr<Executable>& executable,
                                const std::vector<at::Tensor>& inputs) {
  return executable->Run(inputs);
}

}  // namespace

TORCH_LIBRARY(byoc_torch, m) {
  // Where the op's fake kernel lives: PyTorch imports it when it needs output shapes.
  m.set_python_module("byoc_torch.torch_library");
  m.class_<Executable>(BYOC_TORCH_CLASS_NAME)
      .def(torch::init<std::string, at::Tensor>())
      .def("signature",
           [](const c10::intrusive_ptr<Executable>& self) { return self->signature(); })
      // What torch.export and torch.compile see of the object (the fake class rebuilds from it).
      .def("__obj_flatten__",
           [](const c10::intrusive_ptr<Executable>& self) {
             return std::make_tuple(std::make_tuple(std::string("signature"), self->signature()));
           })
      .def_pickle(
          [](const c10::intrusive_ptr<Executable>& self) -> State {
            return State(self->signature(), self->artifact());
          },
          [](State state) -> c10::intrusive_ptr<Executable> {
            return c10::make_intrusive<Executable>(std::move(std::get<0>(state)),
                                                   std::move(std::get<1>(state)));
          });
  m.def("execute(__torch__.torch.classes.byoc_torch." BYOC_TORCH_CLASS_NAME
        " executable, Tensor[] inputs) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(byoc_torch, CPU, m) { m.impl("execute", Execute); }
TORCH_LIBRARY_IMPL(byoc_torch, CUDA, m) { m.impl("execute", Execute); }

}  // namespace byoc_torch
