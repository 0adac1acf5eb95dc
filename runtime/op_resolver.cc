/*!
 * \file op_resolver.cc
 * \brief The resolver of subgraph TorchScript (see op_resolver.h).
 */
#include "op_resolver.h"

#include <torch/csrc/jit/frontend/sugared_value.h>
#include <torch/csrc/jit/runtime/operator.h>

#include <string>

namespace byoc_torch {
namespace {

using torch::jit::GraphFunction;
using torch::jit::SourceRange;
using torch::jit::SugaredValue;

/*! \brief `torch.ops.<ns>`: `.<op>` is the operator `ns::op`, if this process registered it. */
struct OpNamespace : public SugaredValue {
  explicit OpNamespace(std::string ns) : ns_(std::move(ns)) {}
  std::string kind() const override { return "operator namespace " + ns_; }
  std::shared_ptr<SugaredValue> attr(const SourceRange& loc, GraphFunction& m,
                                     const std::string& field) override {
    c10::Symbol symbol = c10::Symbol::fromQualString(ns_ + "::" + field);
    if (torch::jit::getAllOperatorsFor(symbol).empty()) throw UnregisteredOp(ns_ + "::" + field);
    return std::make_shared<torch::jit::BuiltinFunction>(symbol, std::nullopt);
  }

 private:
  std::string ns_;
};

/*! \brief `torch.ops`: `.<ns>` is an operator namespace. */
struct OpsRoot : public SugaredValue {
  std::string kind() const override { return "torch.ops"; }
  std::shared_ptr<SugaredValue> attr(const SourceRange& loc, GraphFunction& m,
                                     const std::string& field) override {
    return std::make_shared<OpNamespace>(field);
  }
};

/*! \brief `torch`: `torch.ops` as above, every other `torch.X` the ATen builtin `aten::X`. */
struct TorchRoot : public SugaredValue {
  std::string kind() const override { return "module 'torch'"; }
  std::shared_ptr<SugaredValue> attr(const SourceRange& loc, GraphFunction& m,
                                     const std::string& field) override {
    if (field == "ops") return std::make_shared<OpsRoot>();
    return torch::jit::BuiltinModule("aten").attr(loc, m, field);
  }
};

struct OpResolver : public torch::jit::Resolver {
  std::shared_ptr<SugaredValue> resolveValue(const std::string& name, GraphFunction& m,
                                             const SourceRange& loc) override {
    if (name == "torch") return std::make_shared<TorchRoot>();
    if (name == "ops") return std::make_shared<OpsRoot>();
    return nullptr;
  }
  torch::jit::TypePtr resolveType(const std::string& name, const SourceRange& loc) override {
    return nullptr;
  }
};

}  // namespace

std::shared_ptr<torch::jit::Resolver> MakeOpResolver() { return std::make_shared<OpResolver>(); }

}  // namespace byoc_torch
