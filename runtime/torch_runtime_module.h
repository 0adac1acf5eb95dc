/*!
 * \file torch_runtime_module.h
 * \brief The `torch` runtime module: runs byoc_torch subgraphs with LibTorch.
 *
 * Place in the data flow: the codegen `relax.ext.torch` (byoc_torch/codegen.py) builds one
 * SubgraphSpec per external function and calls `byoc_torch.CreateTorchRuntimeModule(specs,
 * metadata)`; `export_library` stores the module's bytes (serialization.h) and
 * `ffi.Module.load_from_bytes.torch` restores it. The module compiles each spec once
 * (subgraph.h) and exposes one function per symbol; the Relax VM calls it with TVM tensors,
 * which cross zero-copy in both directions (tensor_bridge.h).
 *
 * Calling conventions of the function named by a subgraph symbol:
 *   - value-returning (what byoc_torch's own lowering emits): f(in_0..in_{n-1}) -> tensor or
 *     Array of tensors;
 *   - destination-passing (what Relax's stock RunCodegen emits): f(in_0.., out_0..) -> None,
 *     the results are copied into the given outputs.
 *
 * Module functions besides the symbols (all per module instance):
 *   __byoc_torch_metadata__()            the metadata string (byoc_torch keeps the signature);
 *   __byoc_torch_set_metadata__(text)    replace it (the driver, once the report is final);
 *   __byoc_torch_symbols__()             the subgraph symbols;
 *   __byoc_torch_stats__()               {symbol: [calls, ns in LibTorch, has fast path 0/1]};
 *   __byoc_torch_reset_stats__()         zero the counters and drop recorded outputs;
 *   __byoc_torch_set_mode__(mode)        "normal" | "record" | "replay"; returns the previous;
 *   __byoc_torch_set_fast_path__(on)     single-op fast path on/off; returns the previous;
 *   __byoc_torch_set_aoti__(sym, pt2, in) make an AOTInductor package subgraph sym's executor
 *                                        (taking inputs `in`), or, given empty bytes, its
 *                                        TorchScript again; the serialized spec follows;
 *   __byoc_torch_executors__()           {symbol: "aot_inductor" | "torchscript"}.
 * Record keeps each subgraph's last outputs and input shapes; replay returns those outputs
 * without running LibTorch (a benchmark times the TVM part alone), and refuses inputs whose
 * shapes or dtypes differ from the recorded call. Counters are atomic, the recording is under
 * a lock: the module may be called from several threads (one VM per thread shares it).
 */
#ifndef BYOC_TORCH_RUNTIME_TORCH_RUNTIME_MODULE_H_
#define BYOC_TORCH_RUNTIME_TORCH_RUNTIME_MODULE_H_

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/string.h>

#include "subgraph_spec.h"

namespace byoc_torch {

/*! \brief A torch runtime module compiling every spec; ValueError on bad or duplicate specs. */
ffi::Module CreateTorchRuntimeModule(const ffi::Array<SubgraphSpec>& specs,
                                     const ffi::String& metadata);

}  // namespace byoc_torch

#endif  // BYOC_TORCH_RUNTIME_TORCH_RUNTIME_MODULE_H_
