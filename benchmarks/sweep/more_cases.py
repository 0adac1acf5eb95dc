"""More sweep cases: byoc_torch's coverage classes (issue 11), model families built from code
and configs (random init, no downloads), and PyTorch's own operator surface (OpInfo samples).

The class and model cases are part of :data:`benchmarks.sweep.CASES`. The OpInfo cases are built
on demand (``python -m benchmarks.sweep --opinfo``): importing torch's OpInfo database and
drawing its sample inputs takes a while. Each OpInfo case is the op's first float32 CPU sample
whose arguments are tensors and Python scalars and whose result is a tensor or a tuple of
tensors; ops that torch.export rejects are kept (they count as export errors, not as
byoc_torch's).
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from byoc_torch.testing import hf_models

from .case import Case, Fn

logger = logging.getLogger(__name__)
__all__ = ["class_cases", "generation_cases", "model_cases", "opinfo_cases"]


def _x(*shape: int):
    return lambda: (torch.randn(*shape),)


class _CsrBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.eye(6).to_sparse_csr())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.to_dense()


class _CsrMm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        dense = torch.randn(6, 6)
        dense[dense < 0] = 0
        self.register_buffer("w", dense.to_sparse_csr())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(self.w, x) + 1


def _mutates(x: torch.Tensor) -> torch.Tensor:
    x.mul_(2)
    return x.cos()


def _by_mode(x: torch.Tensor, mode: str) -> torch.Tensor:
    return x.cos() if mode == "cos" else x.sin()


def _by_flag(x: torch.Tensor, flag: bool, nothing=None) -> torch.Tensor:
    return x + 1 if flag and nothing is None else x


class _SdpaView(nn.Module):
    def forward(self, q: torch.Tensor) -> torch.Tensor:
        y = F.scaled_dot_product_attention(q, q, q, is_causal=True)
        return y.transpose(1, 2).reshape(2, 5, -1).view(-1, 16)


class _Ranged(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.erfinv(x.tanh()) * 2


def _cond(x: torch.Tensor) -> torch.Tensor:
    return torch.cond(x.sum() > 0, lambda t: torch.special.erfinv(t.tanh()), torch.cos, (x,))


def class_cases() -> list[Case]:
    """One case per coverage class that can run (the ones that must fail are in tests)."""
    c = "classes"
    rm, rv = torch.zeros(6), torch.ones(6)
    return [
        Case("cls_cond", c, lambda: Fn(_cond), _x(4, 6)),
        Case("cls_rfft_output", c, lambda: Fn(torch.fft.rfft), _x(4, 8)),
        Case("cls_polar_output", c, lambda: Fn(lambda t: torch.polar(t.abs(), t)), _x(4, 6)),
        Case(
            "cls_view_as_complex_output",
            c,
            lambda: Fn(lambda t: torch.view_as_complex(t.reshape(4, 3, 2))),
            _x(4, 6),
        ),
        Case("cls_eig_output", c, lambda: Fn(torch.linalg.eig), _x(4, 4), rtol=1e-3, atol=1e-3),
        Case("cls_dropout_train", c, lambda: Fn(lambda t: torch.dropout(t, 0.5, True)), _x(8, 8)),
        Case("cls_rand_like", c, lambda: Fn(lambda t: torch.rand_like(t) + t), _x(4, 6)),
        Case(
            "cls_bernoulli",
            c,
            lambda: Fn(lambda t: torch.bernoulli(t.sigmoid()) * t),
            _x(4, 6),
        ),
        Case("cls_zero_size", c, lambda: Fn(lambda t: torch.special.erfinv(t).t() + 1), _x(0, 3)),
        Case("cls_none_output", c, lambda: Fn(lambda t: (t + 1, None)), _x(4, 6)),
        Case(
            "cls_shape_output",
            c,
            lambda: Fn(lambda t: torch.broadcast_shapes(t.shape, (1, 6))),
            _x(4, 6),
        ),
        Case("cls_sparse_csr_buffer", c, _CsrBuffer, _x(4, 6)),
        Case("cls_sparse_csr_mm", c, _CsrMm, _x(6, 4)),
        Case("cls_input_mutation", c, lambda: Fn(_mutates), _x(4, 6)),
        Case(
            "cls_symint_output",
            c,
            lambda: Fn(lambda t: (t.cos(), t.shape[0] + 1)),
            _x(4, 3),
            dynamic_shapes=(({0: Dim("b", min=2)},),),  # Fn.forward takes *xs
            make_alt_inputs=_x(9, 3),
        ),
        Case("cls_str_input", c, lambda: Fn(_by_mode), lambda: (torch.randn(4, 3), "cos")),
        Case(
            "cls_bool_none_input", c, lambda: Fn(_by_flag), lambda: (torch.randn(4, 3), True, None)
        ),
        Case(
            "cls_sdpa_no_dropout",
            c,
            lambda: Fn(lambda q: F.selu(F.scaled_dot_product_attention(q, q, q)) * 2),
            _x(1, 2, 6, 8),
        ),
        Case("cls_sdpa_view_batch2", c, _SdpaView, _x(2, 2, 5, 8)),
        Case(
            "cls_batch_norm_train",
            c,
            lambda: Fn(lambda t: F.batch_norm(t, rm.clone(), rv.clone(), training=True)),
            _x(4, 6),
        ),
        Case(
            "cls_uint64_from_libtorch",
            c,
            lambda: Fn(lambda t: (t * 10).abs().to(torch.uint64)),
            _x(4, 5),
            options=(("torch_executed_ops", ("aten._to_copy",)),),
        ),
        Case(
            "cls_dynamic_range",
            c,
            _Ranged,
            _x(4, 3),
            dynamic_shapes={"x": {0: Dim("b", min=2, max=64)}},
            make_alt_inputs=_x(64, 3),
        ),
        Case(
            "cls_bmm_k256",
            c,
            lambda: Fn(lambda a, b: torch.bmm(a, b) * 3),
            lambda: (torch.randn(2, 8, 256), torch.randn(2, 256, 8)),
            rtol=1e-3,
            atol=1e-3,
        ),
    ]


def _small_model(name: str):
    small = {
        "hf_bert": {"seq": 16, "hidden": 64, "layers": 2, "heads": 2, "intermediate": 128},
        "hf_gpt2": {"seq": 16, "batch": 2},
        "hf_vit": {},
        "hf_resnet": {},
    }

    def make():
        builder = hf_models.HF_MODELS[name]
        try:  # the SDPA variants ("hf_bert_sdpa") are as small as their family
            return builder(**small[name.removesuffix("_sdpa")])
        except TypeError:  # a builder without these knobs: its own defaults
            return builder()

    return make


def model_cases() -> list[Case]:
    """Model families built from transformers configs (random init, no downloads)."""
    cases = []
    for name in sorted(hf_models.HF_MODELS):
        make = _small_model(name)
        built = functools.cache(make)
        cases.append(
            Case(
                f"model_{name}",
                "models",
                lambda built=built: built()[0],
                lambda built=built: built()[1],
                rtol=1e-3,
                atol=1e-3,
            )
        )
    return cases


def generation_cases() -> list[Case]:
    """``model.generate`` through ``torch.compile`` (tiny random-init families of
    :mod:`byoc_torch.testing.hf_models`): greedy and sampled with a seed, a batch of two
    left-padded prompts."""
    cases = []
    for family in hf_models.GENERATION_FAMILIES:
        for sample in (False, True):
            cases.append(
                Case(
                    f"generate_{family}_{'sampled' if sample else 'greedy'}",
                    "generate",
                    functools.partial(hf_models.hf_generator, family),
                    lambda: hf_models.padded_prompts(2, (7, 4), seed=1),
                    generate=(("new_tokens", 4), ("sample", sample)),
                    options=(("placement", "tvm"),),
                )
            )
    return cases


def _plain(value: object) -> bool:
    if isinstance(value, torch.Tensor):
        return value.layout == torch.strided and not value.requires_grad
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    return isinstance(value, bool | int | float | type(None) | torch.dtype)


def opinfo_cases(limit: int | None = None) -> list[Case]:
    """One case per OpInfo of torch's database (``op_db``), from its first usable float32
    sample (see module doc); deterministic: samples are drawn after seeding 0."""
    from torch.testing._internal import common_methods_invocations as cmi

    # OpInfo's random ops call ``wrapper_set_seed``, which reseeds inside the eager call: a
    # Python side effect torch.export does not capture. The sweep seeds eager and compiled
    # alike instead (runner.run_case), so the ops are called plainly.
    cmi.wrapper_set_seed = _call
    cases = []
    for info in sorted(cmi.op_db, key=lambda o: (o.name, o.variant_test_name)):
        if torch.float32 not in info.supported_dtypes("cpu"):
            continue
        name = f"opinfo_{info.name}" + (
            f"_{info.variant_test_name}" if info.variant_test_name else ""
        )
        torch.manual_seed(0)
        try:
            sample = next(
                (
                    s
                    for s in info.sample_inputs("cpu", torch.float32, requires_grad=False)
                    if isinstance(s.input, torch.Tensor) and _plain((s.args, s.kwargs))
                ),
                None,
            )
        except Exception as err:  # a database entry that cannot draw samples here
            logger.debug("opinfo %s: no sample: %s", name, err)
            continue
        if sample is None:
            continue
        cases.append(_opinfo_case(name, info.op, sample))
        if limit is not None and len(cases) >= limit:
            break
    return cases


def _call(op, *args, **kwargs):
    return op(*args, **kwargs)


def _opinfo_case(name: str, op, sample) -> Case:
    tensors: list[torch.Tensor] = [sample.input.detach().clone()]
    slots: list = []
    for a in sample.args:
        if isinstance(a, torch.Tensor):
            slots.append(len(tensors))
            tensors.append(a.detach().clone())
        else:
            slots.append(("const", a))
    kwargs = {k: v for k, v in sample.kwargs.items() if not isinstance(v, torch.Tensor)}
    tensor_kwargs = [k for k, v in sample.kwargs.items() if isinstance(v, torch.Tensor)]
    for k in tensor_kwargs:
        tensors.append(sample.kwargs[k].detach().clone())
    first_kw = len(tensors) - len(tensor_kwargs)

    def fn(*xs):
        args = [xs[s] if isinstance(s, int) else s[1] for s in slots]
        kw = dict(kwargs)
        kw.update({k: xs[first_kw + i] for i, k in enumerate(tensor_kwargs)})
        out = op(xs[0], *args, **kw)
        return tuple(out) if isinstance(out, list) else out

    frozen = tuple(tensors)
    undefined = name.removeprefix("opinfo_").startswith(_UNINITIALIZED)
    return Case(
        name,
        "opinfo",
        lambda: Fn(fn),
        lambda: tuple(t.clone() for t in frozen),
        compare_values=not undefined,
    )


# Ops whose result holds uninitialized memory: only shape and dtype are defined.
_UNINITIALIZED = ("empty", "new_empty")
