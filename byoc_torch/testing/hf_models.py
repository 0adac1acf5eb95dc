"""Small Hugging Face models with random weights, built from configs (no downloads).

Place in the data flow: outside the compiler. These builders are shared by the benchmarks
(``benchmarks/peers.py``) and the tests; each returns ``(model, example_inputs)`` like the
factories of :mod:`byoc_torch.models`, seeded, in eval mode, wrapped so that the model returns
a tuple of tensors (no ``ModelOutput``, no cache objects) and exports with
``torch.export.export``.

Attention: the transformers use ``attn_implementation="eager"`` (explicit matmul + softmax).
``"sdpa"`` exports as well (torch 2.13, transformers 5.23: one
``scaled_dot_product_attention`` node per layer), but the eager form gives every contestant
the same plain graph of matmuls, softmax and elementwise ops.

Needs the ``bench`` extra (``pip install byoc_torch[bench]``) for ``transformers``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["HF_MODELS", "TupleOutputs", "hf_bert", "hf_gpt2", "hf_resnet", "hf_vit"]

_ATTENTION = "eager"


def _transformers():
    """The ``transformers`` module, offline; a clear ImportError when it is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            "byoc_torch.testing.hf_models needs Hugging Face transformers: "
            "pip install byoc_torch[bench]"
        ) from err
    return transformers


class TupleOutputs(nn.Module):
    """Calls a Hugging Face model with ``return_dict=False`` and returns its tensors as a
    tuple (``None`` entries dropped)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(*inputs, return_dict=False)
        if isinstance(out, torch.Tensor):
            return (out,)
        return tuple(o for o in out if isinstance(o, torch.Tensor))


def _finish(model: nn.Module) -> nn.Module:
    return TupleOutputs(model).eval()


def hf_bert(
    seq: int = 128,
    batch: int = 1,
    hidden: int = 256,
    layers: int = 4,
    heads: int = 4,
    intermediate: int = 1024,
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """``BertModel`` (with pooler) over ``input_ids``: outputs (last hidden state, pooled)."""
    tf = _transformers()
    torch.manual_seed(0)
    config = tf.BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        attn_implementation=_ATTENTION,
    )
    model = tf.BertModel(config)
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    return _finish(model), (ids,)


def hf_gpt2(
    seq: int = 128, batch: int = 1, n_embd: int = 256, layers: int = 4, heads: int = 4
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """``GPT2Model`` (no LM head, no KV cache) over ``input_ids``: the last hidden state."""
    tf = _transformers()
    torch.manual_seed(0)
    config = tf.GPT2Config(
        n_embd=n_embd,
        n_layer=layers,
        n_head=heads,
        n_positions=max(seq, 128),
        use_cache=False,
        attn_implementation=_ATTENTION,
    )
    model = tf.GPT2Model(config)
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    return _finish(model), (ids,)


def hf_vit(
    image: int = 64,
    patch: int = 8,
    batch: int = 1,
    hidden: int = 192,
    layers: int = 4,
    heads: int = 3,
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """``ViTModel`` (with pooler) over ``pixel_values``: (last hidden state, pooled)."""
    tf = _transformers()
    torch.manual_seed(0)
    config = tf.ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        image_size=image,
        patch_size=patch,
        attn_implementation=_ATTENTION,
    )
    model = tf.ViTModel(config)
    pixels = torch.randn(batch, 3, image, image)
    return _finish(model), (pixels,)


def hf_resnet(
    image: int = 96,
    batch: int = 1,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    depths: tuple[int, ...] = (1, 1, 1, 1),
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A small ``ResNetModel`` (basic blocks) over ``pixel_values``: (last feature map,
    pooled)."""
    tf = _transformers()
    torch.manual_seed(0)
    config = tf.ResNetConfig(
        embedding_size=widths[0],
        hidden_sizes=list(widths),
        depths=list(depths),
        layer_type="basic",
    )
    model = tf.ResNetModel(config)
    # Random batch-norm statistics, so that eval-mode normalization is not the identity.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    pixels = torch.randn(batch, 3, image, image)
    return _finish(model), (pixels,)


# The benchmark configurations, by name.
HF_MODELS: dict[str, Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]] = {
    "hf_bert": hf_bert,
    "hf_gpt2": hf_gpt2,
    "hf_vit": hf_vit,
    "hf_resnet": hf_resnet,
}
