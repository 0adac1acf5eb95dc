"""Small Hugging Face models with random weights, built from configs (no downloads).

Place in the data flow: outside the compiler. These builders are shared by the benchmarks
(``benchmarks/peers.py``) and the tests; each returns ``(model, example_inputs)`` like the
factories of :mod:`byoc_torch.models`, seeded, in eval mode, wrapped so that the model returns
a tuple of tensors (no ``ModelOutput``, no cache objects) and exports with
``torch.export.export``.

Attention: the transformers take ``attention="eager"`` (explicit matmul + softmax, the
default here: every contestant gets the same plain graph of matmuls, softmax and elementwise
ops) or ``"sdpa"`` (transformers' own default: one ``scaled_dot_product_attention`` node per
layer; torch 2.13, transformers 5.23). :data:`HF_MODELS` has both: ``hf_bert`` and
``hf_bert_sdpa``, etc.

Needs the ``bench`` extra (``pip install byoc_torch[bench]``) for ``transformers``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "GENERATION_FAMILIES",
    "HF_MODELS",
    "TupleOutputs",
    "hf_bert",
    "hf_generator",
    "hf_gpt2",
    "hf_resnet",
    "hf_vit",
    "padded_prompts",
]

_ATTENTION = "eager"
ATTENTIONS = ("eager", "sdpa")


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
    attention: str = _ATTENTION,
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """``BertModel`` (with pooler) over ``input_ids``: outputs (last hidden state, pooled)."""
    tf = _transformers()
    torch.manual_seed(0)
    config = tf.BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        attn_implementation=attention,
    )
    model = tf.BertModel(config)
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    return _finish(model), (ids,)


def hf_gpt2(
    seq: int = 128,
    batch: int = 1,
    n_embd: int = 256,
    layers: int = 4,
    heads: int = 4,
    attention: str = _ATTENTION,
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
        attn_implementation=attention,
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
    attention: str = _ATTENTION,
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
        attn_implementation=attention,
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
    "hf_bert_sdpa": functools.partial(hf_bert, attention="sdpa"),
    "hf_gpt2_sdpa": functools.partial(hf_gpt2, attention="sdpa"),
    "hf_vit_sdpa": functools.partial(hf_vit, attention="sdpa"),
}


# -- generation: whole models with their LM heads and caches, for model.generate ------------------
def _decoder_config(tf, family: str, hidden: int, layers: int):
    """A tiny config of a decoder-only family (2 heads, vocab 128)."""
    common = dict(
        vocab_size=128,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    head = hidden // 2
    if family == "llama":
        return tf.LlamaForCausalLM, tf.LlamaConfig(**common)
    if family == "qwen2":
        return tf.Qwen2ForCausalLM, tf.Qwen2Config(**common)
    if family == "mistral":  # sliding-window cache
        return tf.MistralForCausalLM, tf.MistralConfig(**common, sliding_window=8)
    if family == "phi":
        return tf.PhiForCausalLM, tf.PhiConfig(**common)
    if family == "phi3":
        return tf.Phi3ForCausalLM, tf.Phi3Config(**common, pad_token_id=0)
    if family == "gemma":
        return tf.GemmaForCausalLM, tf.GemmaConfig(**common, head_dim=head)
    if family == "gemma2":  # sliding-window and full layers alternate
        return tf.Gemma2ForCausalLM, tf.Gemma2Config(**common, head_dim=head, sliding_window=8)
    if family == "gpt2":
        config = tf.GPT2Config(
            vocab_size=128, n_embd=hidden, n_layer=layers, n_head=2, n_positions=128
        )
        return tf.GPT2LMHeadModel, config
    raise ValueError(f"unknown family {family!r}")


def _seq2seq_config(tf, family: str, hidden: int, layers: int):
    if family == "t5":
        config = tf.T5Config(
            vocab_size=128,
            d_model=hidden,
            d_kv=hidden // 2,
            d_ff=2 * hidden,
            num_layers=layers,
            num_heads=2,
            decoder_start_token_id=0,
        )
        return tf.T5ForConditionalGeneration, config
    if family == "bart":
        config = tf.BartConfig(
            vocab_size=128,
            d_model=hidden,
            encoder_layers=layers,
            decoder_layers=layers,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=2 * hidden,
            decoder_ffn_dim=2 * hidden,
            max_position_embeddings=128,
        )
        return tf.BartForConditionalGeneration, config
    raise ValueError(f"unknown family {family!r}")


GENERATION_FAMILIES = (
    "llama",
    "qwen2",
    "mistral",
    "phi",
    "phi3",
    "gemma",
    "gemma2",
    "gpt2",
    "t5",
    "bart",
)


def hf_generator(family: str, hidden: int = 32, layers: int = 1, seed: int = 0) -> nn.Module:
    """A tiny random-init ``...ForCausalLM`` / ``...ForConditionalGeneration`` of ``family``
    (one of :data:`GENERATION_FAMILIES`), in eval mode, for ``model.generate`` (the whole
    model: LM head, caches, ``ModelOutput``). Eager attention, so that every contestant runs
    the same plain graph."""
    tf = _transformers()
    torch.manual_seed(seed)
    if family in ("t5", "bart"):
        cls, config = _seq2seq_config(tf, family, hidden, layers)
    else:
        cls, config = _decoder_config(tf, family, hidden, layers)
    config._attn_implementation = _ATTENTION
    model = cls(config).eval()
    model.generation_config.pad_token_id = 0
    return model


def padded_prompts(batch: int, lengths: tuple[int, ...], seed: int = 0):
    """``(input_ids, attention_mask)``: ``batch`` prompts of vocabulary 128, left-padded to the
    longest of ``lengths`` (cycled over the batch)."""
    gen = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    ids = torch.randint(3, 128, (batch, longest), generator=gen)
    mask = torch.ones_like(ids)
    for b in range(batch):
        pad = longest - lengths[b % len(lengths)]
        ids[b, :pad] = 0
        mask[b, :pad] = 0
    return ids, mask
