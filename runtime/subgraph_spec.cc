/*!
 * \file subgraph_spec.cc
 * \brief Validation and reflection registration of `byoc_torch.SubgraphSpec` (see
 * subgraph_spec.h for its place in the data flow).
 */
#include "subgraph_spec.h"

#include <tvm/ffi/error.h>
#include <tvm/ffi/reflection/registry.h>

#include <utility>

namespace byoc_torch {

SubgraphSpecObj::SubgraphSpecObj(ffi::String symbol, ffi::String script, int64_t num_inputs,
                                 int64_t num_outputs, bool returns_tuple,
                                 ffi::Array<ffi::String> module_names,
                                 ffi::Array<ffi::Bytes> module_payloads,
                                 ffi::Bytes aoti_package, ffi::Array<int64_t> aoti_inputs,
                                 bool package_only)
    : symbol(std::move(symbol)),
      script(std::move(script)),
      num_inputs(num_inputs),
      num_outputs(num_outputs),
      returns_tuple(returns_tuple),
      module_names(std::move(module_names)),
      module_payloads(std::move(module_payloads)),
      aoti_package(std::move(aoti_package)),
      aoti_inputs(std::move(aoti_inputs)),
      package_only(package_only) {
  const ffi::String& sym = this->symbol;
  TVM_FFI_CHECK(!sym.empty(), ValueError) << "byoc_torch: empty subgraph symbol";
  TVM_FFI_CHECK(num_inputs >= 0 && num_outputs >= 0, ValueError)
      << "byoc_torch: negative arity for subgraph '" << sym << "'";
  TVM_FFI_CHECK(num_inputs <= kMaxArity && num_outputs <= kMaxArity, ValueError)
      << "byoc_torch: subgraph '" << sym << "' has an implausible arity (" << num_inputs
      << " inputs, " << num_outputs << " outputs)";
  TVM_FFI_CHECK(num_outputs >= 1, ValueError)
      << "byoc_torch: subgraph '" << sym << "' has no outputs";
  TVM_FFI_CHECK(returns_tuple || num_outputs == 1, ValueError)
      << "byoc_torch: subgraph '" << sym << "' returns " << num_outputs
      << " outputs but is not marked as returning a tuple";
  TVM_FFI_CHECK(this->module_names.size() == this->module_payloads.size(), ValueError)
      << "byoc_torch: subgraph '" << sym << "' has " << this->module_names.size()
      << " submodule names but " << this->module_payloads.size() << " payloads";
  TVM_FFI_CHECK(static_cast<int64_t>(this->module_names.size()) <= kMaxArity, ValueError)
      << "byoc_torch: subgraph '" << sym << "' has an implausible submodule count "
      << this->module_names.size();
  TVM_FFI_CHECK(this->aoti_package.size() > 0 || this->aoti_inputs.empty(), ValueError)
      << "byoc_torch: subgraph '" << sym << "' names AOTInductor inputs but has no package";
  for (int64_t index : this->aoti_inputs) {
    TVM_FFI_CHECK(index >= 0 && index < num_inputs, ValueError)
        << "byoc_torch: subgraph '" << sym << "' gives its AOTInductor package input " << index
        << ", but it has " << num_inputs << " inputs";
  }
  if (package_only) {
    TVM_FFI_CHECK(this->aoti_package.size() > 0, ValueError)
        << "byoc_torch: subgraph '" << sym
        << "' runs only as its AOTInductor package, and has none (its TorchScript cannot run "
           "without the weights the package froze in)";
    bool in_order = static_cast<int64_t>(this->aoti_inputs.size()) == num_inputs;
    for (int64_t k = 0; in_order && k < num_inputs; ++k) in_order = this->aoti_inputs[k] == k;
    TVM_FFI_CHECK(in_order, ValueError)
        << "byoc_torch: subgraph '" << sym
        << "' runs only as its AOTInductor package, so the package must take its " << num_inputs
        << " inputs in order";
  }
}

SubgraphSpec::SubgraphSpec(ffi::String symbol, ffi::String script, int64_t num_inputs,
                           int64_t num_outputs, bool returns_tuple,
                           ffi::Array<ffi::String> module_names,
                           ffi::Array<ffi::Bytes> module_payloads, ffi::Bytes aoti_package,
                           ffi::Array<int64_t> aoti_inputs, bool package_only)
    : ffi::ObjectRef(ffi::make_object<SubgraphSpecObj>(
          std::move(symbol), std::move(script), num_inputs, num_outputs, returns_tuple,
          std::move(module_names), std::move(module_payloads), std::move(aoti_package),
          std::move(aoti_inputs), package_only)) {}

SubgraphSpec SubgraphSpec::WithAotiPackage(ffi::Bytes package, ffi::Array<int64_t> inputs) const {
  const SubgraphSpecObj* s = get();
  return SubgraphSpec(s->symbol, s->script, s->num_inputs, s->num_outputs, s->returns_tuple,
                      s->module_names, s->module_payloads, std::move(package), std::move(inputs),
                      s->package_only);
}

SubgraphSpec SubgraphSpec::PackageOnly() const {
  const SubgraphSpecObj* s = get();
  TVM_FFI_CHECK(s->aoti_package.size() > 0, ValueError)
      << "byoc_torch: subgraph '" << s->symbol
      << "' has no AOTInductor package, so it cannot run as one alone";
  const int64_t n = static_cast<int64_t>(s->aoti_inputs.size());
  ffi::Array<int64_t> in_order;
  for (int64_t k = 0; k < n; ++k) in_order.push_back(k);
  return SubgraphSpec(s->symbol, s->script, n, s->num_outputs, s->returns_tuple, s->module_names,
                      s->module_payloads, s->aoti_package, std::move(in_order),
                      /*package_only=*/true);
}

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef().def("byoc_torch.SubgraphSpecPackageOnly",
                        [](SubgraphSpec spec) { return spec.PackageOnly(); });
  refl::ObjectDef<SubgraphSpecObj>()
      .def(refl::init<ffi::String, ffi::String, int64_t, int64_t, bool, ffi::Array<ffi::String>,
                      ffi::Array<ffi::Bytes>, ffi::Bytes, ffi::Array<int64_t>, bool>())
      .def_ro("symbol", &SubgraphSpecObj::symbol, "function name the Relax VM calls")
      .def_ro("script", &SubgraphSpecObj::script, "TorchScript source (forward and helpers)")
      .def_ro("num_inputs", &SubgraphSpecObj::num_inputs, "number of input tensors")
      .def_ro("num_outputs", &SubgraphSpecObj::num_outputs, "number of output tensors")
      .def_ro("returns_tuple", &SubgraphSpecObj::returns_tuple, "forward returns a tuple")
      .def_ro("module_names", &SubgraphSpecObj::module_names, "submodule attribute names")
      .def_ro("module_payloads", &SubgraphSpecObj::module_payloads,
              "torch.jit.save bytes of each submodule")
      .def_ro("aoti_package", &SubgraphSpecObj::aoti_package,
              "AOTInductor package bytes (empty: the TorchScript runs)")
      .def_ro("aoti_inputs", &SubgraphSpecObj::aoti_inputs,
              "indices of the inputs the AOTInductor package takes")
      .def_ro("package_only", &SubgraphSpecObj::package_only,
              "runs only as its package (the weights it froze are kept nowhere else)");
}

}  // namespace byoc_torch
