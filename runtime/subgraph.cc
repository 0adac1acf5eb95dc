/*!
 * \file subgraph.cc
 * \brief Compiling and running one LibTorch subgraph (see subgraph.h).
 */
#include "subgraph.h"

#include <torch/csrc/jit/serialization/import.h>
#include <tvm/ffi/error.h>

#include <exception>
#include <sstream>
#include <utility>

#include "op_resolver.h"
#include "utf8.h"

namespace byoc_torch {

CompiledSubgraph::CompiledSubgraph(SubgraphSpec spec)
    : spec_(std::move(spec)), symbol_(spec_->symbol) {
  try {
    torch::jit::Module module("byoc_torch_subgraph");
    for (size_t k = 0; k < spec_->module_names.size(); ++k) {
      const ffi::Bytes& payload = spec_->module_payloads[k];
      std::istringstream in(std::string(payload.data(), payload.size()));
      module.register_module(std::string(spec_->module_names[k]), torch::jit::load(in));
    }
    module.define(std::string(spec_->script), MakeOpResolver());
    TVM_FFI_CHECK(module.find_method("forward").has_value(), ValueError)
        << "byoc_torch: TorchScript of subgraph '" << symbol_ << "' defines no forward";
    int64_t arity = static_cast<int64_t>(
        module.get_method("forward").function().getSchema().arguments().size() - 1);
    // A package-only subgraph is called without the constants its package froze in, which
    // its TorchScript takes besides (it never runs; the module refuses to, see Invoke).
    TVM_FFI_CHECK(arity == spec_->num_inputs || (spec_->package_only && arity > spec_->num_inputs),
                  ValueError)
        << "byoc_torch: subgraph '" << symbol_ << "' is declared with " << spec_->num_inputs
        << " inputs but its TorchScript forward takes " << arity;
    module.eval();
    if (!spec_->package_only) {
      single_op_ =
          FindSingleOpPath(module, spec_->num_inputs, spec_->num_outputs, spec_->returns_tuple);
    }
    module_ = std::move(module);
  } catch (const ffi::Error&) {
    throw;
  } catch (const UnregisteredOp& e) {
    ThrowUnregistered(e.qualified_name());
  } catch (const c10::Error& e) {
    // A scripted submodule calling an unregistered op fails inside torch::jit::load.
    std::string message = e.what_without_backtrace();
    const std::string marker = "Unknown builtin op: ";
    size_t at = message.find(marker);
    if (at != std::string::npos) {
      size_t begin = at + marker.size();
      size_t end = message.find_first_of(".\n ", begin);
      ThrowUnregistered(message.substr(begin, end == std::string::npos ? end : end - begin));
    }
    TVM_FFI_THROW(ValueError) << "byoc_torch: TorchScript of subgraph '" << symbol_
                              << "' does not compile: " << ValidUtf8(message);
  } catch (const std::exception& e) {
    TVM_FFI_THROW(ValueError) << "byoc_torch: TorchScript of subgraph '" << symbol_
                              << "' does not compile: " << ValidUtf8(e.what());
  }
}

void CompiledSubgraph::ThrowUnregistered(const std::string& qualified_name) const {
  std::string ns = qualified_name.substr(0, qualified_name.find("::"));
  std::string op = qualified_name.substr(ns.size() + (ns.size() < qualified_name.size() ? 2 : 0));
  TVM_FFI_THROW(UnregisteredOpError)
      << "byoc_torch: subgraph '" << symbol_ << "' calls torch.ops." << ns << "." << op << " ("
      << qualified_name << "), which is not registered in this process. Register it before "
      << "compiling or loading: import the Python module that defines it with torch.library, "
      << "or load its C++ library with torch.ops.load_library(...)";
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
