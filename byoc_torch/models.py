"""Built-in example models: defined here, so the demo, tests and benchmarks need no downloads.

Each factory returns ``(model, example_inputs)`` with fixed seeds. Every model mixes layers TVM
compiles with ops TVM 0.27's importer cannot import (erfinv, lgamma, logcumsumexp, kthvalue,
adaptive_max_pool2d, searchsorted, embedding_bag, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "EXAMPLES",
    "SUITE",
    "BertLike",
    "DemoNet",
    "GPTLike",
    "TinyCNN",
    "TinyTransformer",
    "ViTLike",
    "get_example",
]


class DemoNet(nn.Module):
    """The ``byoc-torch demo`` model: a conv stem and an MLP head (TVM) around six ops TVM
    cannot import (LibTorch), on two branches that the partitioner merges."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)
        self.norm = nn.LayerNorm(64)
        self.register_buffer("bins", torch.linspace(-2.0, 2.0, 9))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.conv(x))
        h = nn.functional.adaptive_max_pool2d(h, 4)  # unsupported by TVM
        h = h.flatten(1)
        h = self.norm(self.fc1(h))
        a = torch.special.erfinv(torch.tanh(h) * 0.99)  # unsupported
        b = torch.logcumsumexp(h, dim=1)  # unsupported, independent of `a`
        g = torch.lgamma(h.abs() + 1.0)  # unsupported
        h = torch.relu(a + b - g)
        logits = self.fc2(h)
        # Which bucket each logit falls in, and the second-smallest logit per row.
        buckets = torch.searchsorted(self.bins, logits.contiguous())  # unsupported
        second, _ = torch.kthvalue(logits, 2, dim=1)  # unsupported
        return logits, buckets + second.round().to(torch.int64).unsqueeze(1)


class TinyCNN(nn.Module):
    """A small CNN: conv/batch-norm/relu blocks, an unsupported pooling, and unfold."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32 * 2 * 2 + 16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)
        h = nn.functional.max_pool2d(h, 2)
        side = torch.special.erfinv(torch.sigmoid(h.mean(dim=(2, 3))) * 1.8 - 0.9)  # unsupported
        h = self.block2(h)
        h = nn.functional.adaptive_max_pool2d(h, 2)  # unsupported
        h = torch.cat([h.flatten(1), side], dim=1)
        return self.head(h)


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp1 = nn.Linear(dim, 4 * dim)
        self.mlp2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q = q.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
        k = k.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
        v = v.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        # A "log-cumulative" positional bias: logcumsumexp is unsupported by TVM.
        att = att + torch.logcumsumexp(att, dim=-1) * 0.01
        att = torch.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        h = self.mlp1(self.ln2(x))
        # GELU written through erfinv's inverse partner is still erf; use lgamma for a twist.
        h = nn.functional.gelu(h) + 0.01 * torch.lgamma(h.abs() + 1.0)  # lgamma unsupported
        return x + self.mlp2(h)


class TinyTransformer(nn.Module):
    """A 2-layer transformer encoder over token ids, with unsupported ops inside each block and
    an embedding_bag (unsupported) pooled summary."""

    def __init__(self, vocab: int = 100, dim: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(layers))
        self.bag = nn.EmbeddingBag(vocab, dim, mode="mean")
        self.out = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        summary = self.bag(ids)  # unsupported
        return self.out(x + summary.unsqueeze(1))


class _Attention(nn.Module):
    """Multi-head self-attention written with plain tensor ops (no fused kernels)."""

    def __init__(self, dim: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = q.reshape(b, t, h, d // h).transpose(1, 2)
        k = k.reshape(b, t, h, d // h).transpose(1, 2)
        v = v.reshape(b, t, h, d // h).transpose(1, 2)
        if rope is not None:
            q, k = _apply_rope(q, rope), _apply_rope(k, rope)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // h)
        if self.causal:
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            att = att.masked_fill(mask, float("-inf"))
        y = torch.softmax(att, dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


def _apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding with complex numbers, as LLaMA writes it (TVM cannot hold
    complex tensors: this runs in LibTorch)."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * rope).flatten(-2).type_as(x)


class _EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.att = _Attention(dim, heads, causal)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.att(self.ln1(x), rope)
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class BertLike(nn.Module):
    """A BERT-style encoder (post-embedding layer norm, GELU MLPs). Every op is one TVM 0.27
    imports, so TVM alone can compile it: the baseline for "what does TVM do by itself"."""

    def __init__(
        self, vocab: int = 1000, dim: int = 256, heads: int = 4, layers: int = 4, seq: int = 128
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, seq, dim) * 0.02)
        self.ln = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(_EncoderLayer(dim, heads) for _ in range(layers))
        self.pool = nn.Linear(dim, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.ln(self.tok(ids) + self.pos[:, : ids.shape[1]])
        for layer in self.layers:
            x = layer(x)
        return torch.tanh(self.pool(x[:, 0]))


class GPTLike(nn.Module):
    """A GPT-style causal decoder with complex-valued rotary embeddings (LibTorch) around
    TVM-compiled attention and MLPs."""

    def __init__(
        self, vocab: int = 1000, dim: int = 256, heads: int = 4, layers: int = 4, seq: int = 128
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(_EncoderLayer(dim, heads, causal=True) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        half = dim // heads // 2
        freqs = 1.0 / (10000 ** (torch.arange(half).float() / half))
        # Kept real: TVM cannot hold a complex buffer; the complex rotation is built in forward.
        self.register_buffer("angles", torch.outer(torch.arange(seq).float(), freqs))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids)
        angles = self.angles[: ids.shape[1]]
        rope = torch.polar(torch.ones_like(angles), angles)
        for layer in self.layers:
            x = layer(x, rope)
        return self.head(self.ln(x))


class ViTLike(nn.Module):
    """A ViT-style classifier whose patches are cut with ``F.unfold`` (TVM 0.27 converts it to
    the wrong shape: byoc_torch notices and runs it in LibTorch)."""

    def __init__(
        self, image: int = 64, patch: int = 8, dim: int = 192, heads: int = 3, layers: int = 4
    ) -> None:
        super().__init__()
        self.patch = patch
        n = (image // patch) ** 2
        self.embed = nn.Linear(3 * patch * patch, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.layers = nn.ModuleList(_EncoderLayer(dim, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        patches = nn.functional.unfold(img, self.patch, stride=self.patch).transpose(1, 2)
        x = self.embed(patches)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for layer in self.layers:
            x = layer(x)
        return self.head(self.ln(x[:, 0]))


def _bert() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return BertLike().eval(), (torch.randint(0, 1000, (1, 128)),)


def _gpt() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return GPTLike().eval(), (torch.randint(0, 1000, (1, 128)),)


def _vit() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return ViTLike().eval(), (torch.randn(1, 3, 64, 64),)


def _demo() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return DemoNet().eval(), (torch.randn(2, 3, 16, 16),)


def _cnn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return TinyCNN().eval(), (torch.randn(2, 3, 16, 16),)


def _transformer() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return TinyTransformer().eval(), (torch.randint(0, 100, (2, 16)),)


EXAMPLES: dict[str, Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]] = {
    "demo": _demo,
    "cnn": _cnn,
    "transformer": _transformer,
}

# The end-to-end performance suite (docs/performance.md): realistic sizes, slower to compile.
SUITE: dict[str, Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]] = {
    "bert": _bert,
    "gpt": _gpt,
    "vit": _vit,
    "cnn": _cnn,
    "demo": _demo,
}


def get_example(name: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """``(model, example_inputs)`` of a built-in example, by name."""
    factories = {**SUITE, **EXAMPLES}
    if name not in factories:
        raise KeyError(f"no built-in example '{name}'; choose from {sorted(factories)}")
    return factories[name]()
