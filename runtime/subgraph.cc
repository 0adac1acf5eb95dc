/*!
 * \file subgraph.cc
 * \brief Compiling and running one LibTorch subgraph (see subgraph.h).
 */
#include "subgraph.h"

#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/runtime/operator.h>
#include <torch/csrc/jit/serialization/import.h>
#include <tvm/ffi/error.h>

#include <exception>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <utility>

#include "utf8.h"

namespace byoc_torch {

namespace {

/*!
 * \brief LibTorch's native resolver (`torch.X` is `aten::X`) plus one name per operator
 * namespace: `_op_ns_mylib.scale(x)` calls `mylib::scale` through the dispatcher, as
 * `torch.ops.mylib.scale` does in Python (custom ops, torchvision's, ...). The frontend writes
 * that spelling for ops outside aten (byoc_torch/frontend/torchscript.py, kOpNamespacePrefix).
 */
struct NamespaceResolver : public torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(
      const std::string& name, torch::jit::GraphFunction& m,
      const torch::jit::SourceRange& loc) override {
    static const std::string kOpNamespacePrefix = "_op_ns_";
    if (name == "torch") return std::make_shared<torch::jit::BuiltinModule>("aten");
    if (name.rfind(kOpNamespacePrefix, 0) == 0 && name.size() > kOpNamespacePrefix.size()) {
      return std::make_shared<torch::jit::BuiltinModule>(name.substr(kOpNamespacePrefix.size()));
    }
    return nullptr;
  }

  c10::TypePtr resolveType(const std::string& name, const torch::jit::SourceRange& loc) override {
    return nullptr;
  }
};

/*!
 * \brief Throw a ValueError naming the first operator outside aten that `script` calls
 * (`_op_ns_<namespace>.<name>`) and that this process has not registered.
 */
void CheckOperatorsRegistered(const std::string& script, const std::string& symbol) {
  static const std::regex kCall("_op_ns_(\\w+)\\.(\\w+)");
  for (std::sregex_iterator it(script.begin(), script.end(), kCall), end; it != end; ++it) {
    std::string op = (*it)[1].str() + "::" + (*it)[2].str();
    if (torch::jit::getAllOperatorsFor(c10::Symbol::fromQualString(op)).empty()) {
      TVM_FFI_THROW(ValueError)
          << "byoc_torch: subgraph '" << symbol << "' calls operator '" << op
          << "', which is not registered in this process: import the Python module that "
          << "defines it (torch.library) or load its library (torch.ops.load_library) "
          << "before byoc_torch.load";
    }
  }
}

}  // namespace

CompiledSubgraph::CompiledSubgraph(SubgraphSpec spec)
    : spec_(std::move(spec)), symbol_(spec_->symbol) {
  try {
    torch::jit::Module module("byoc_torch_subgraph");
    for (size_t k = 0; k < spec_->module_names.size(); ++k) {
      const ffi::Bytes& payload = spec_->module_payloads[k];
      std::istringstream in(std::string(payload.data(), payload.size()));
      module.register_module(std::string(spec_->module_names[k]), torch::jit::load(in));
    }
    module.define(std::string(spec_->script), std::make_shared<NamespaceResolver>());
    TVM_FFI_CHECK(module.find_method("forward").has_value(), ValueError)
        << "byoc_torch: TorchScript of subgraph '" << symbol_ << "' defines no forward";
    int64_t arity = static_cast<int64_t>(
        module.get_method("forward").function().getSchema().arguments().size() - 1);
    TVM_FFI_CHECK(arity == spec_->num_inputs, ValueError)
        << "byoc_torch: subgraph '" << symbol_ << "' is declared with " << spec_->num_inputs
        << " inputs but its TorchScript forward takes " << arity;
    module.eval();
    single_op_ =
        FindSingleOpPath(module, spec_->num_inputs, spec_->num_outputs, spec_->returns_tuple);
    module_ = std::move(module);
  } catch (const ffi::Error&) {
    throw;
  } catch (const c10::Error& e) {
    CheckOperatorsRegistered(std::string(spec_->script), std::string(symbol_));
    TVM_FFI_THROW(ValueError) << "byoc_torch: TorchScript of subgraph '" << symbol_
                              << "' does not compile: " << ValidUtf8(e.what_without_backtrace());
  } catch (const std::exception& e) {  // torch::jit::ErrorReport: the script does not compile
    CheckOperatorsRegistered(std::string(spec_->script), std::string(symbol_));
    TVM_FFI_THROW(ValueError) << "byoc_torch: TorchScript of subgraph '" << symbol_
                              << "' does not compile: " << ValidUtf8(e.what());
  }
}

std::vector<at::Tensor> CompiledSubgraph::RunInterpreter(
    const std::vector<at::Tensor>& inputs) const {
  std::vector<c10::IValue> stack(inputs.begin(), inputs.end());
  // Module::forward is const-callable on a copy of the handle; the handle shares state.
  torch::jit::Module module = *module_;
  c10::IValue out = module.forward(std::move(stack));
  std::vector<at::Tensor> results;
  if (spec_->returns_tuple) {
    TVM_FFI_CHECK(out.isTuple(), RuntimeError)
        << "byoc_torch subgraph '" << symbol_ << "' returned " << out.tagKind()
        << " instead of a tuple";
    for (const c10::IValue& v : out.toTupleRef().elements()) results.push_back(v.toTensor());
  } else {
    TVM_FFI_CHECK(out.isTensor(), RuntimeError)
        << "byoc_torch subgraph '" << symbol_ << "' returned " << out.tagKind()
        << " instead of a tensor";
    results.push_back(out.toTensor());
  }
  return results;
}

std::vector<at::Tensor> CompiledSubgraph::Run(const std::vector<at::Tensor>& inputs,
                                              bool fast_path) const {
  try {
    if (single_op_.has_value() && fast_path) return RunSingleOp(*single_op_, inputs);
    return RunInterpreter(inputs);
  } catch (const c10::Error& e) {
    std::string op = single_op_.has_value() ? " (" + single_op_->op_name + ")" : "";
    TVM_FFI_THROW(RuntimeError) << "byoc_torch subgraph '" << symbol_ << "'" << op
                                << " raised inside LibTorch: "
                                << ValidUtf8(e.what_without_backtrace());
  } catch (const ffi::Error&) {
    throw;
  } catch (const std::exception& e) {
    TVM_FFI_THROW(RuntimeError) << "byoc_torch subgraph '" << symbol_
                                << "' raised inside LibTorch: " << ValidUtf8(e.what());
  }
}

}  // namespace byoc_torch
