"""The standard layers: Linear, Embedding, LayerNorm, RMSNorm, Dropout, MLP, SwiGLU.

Each holds its Parameters and calls a function of :mod:`nanotie.nn.functional`.
Initialisation follows PyTorch's defaults; :class:`~nanotie.nn.transformer.GPT`
re-initialises its own weights the GPT-2 way.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..autograd import Tensor
from . import functional as F
from .module import Module, Parameter

__all__ = ["Linear", "Embedding", "LayerNorm", "RMSNorm", "Dropout", "MLP", "SwiGLU",
           "init_normal", "init_uniform", "init_zeros"]


# ------------------------------------------------------------- initialisers


def _new(shape, dtype, device):
    return tuple(shape), np.dtype(dtype or np.float32), device or backend.default_device()


def init_normal(shape, std: float, dtype=None, device=None) -> Parameter:
    """A Parameter with entries ~ N(0, std^2), from the seeded generator."""
    shape, dtype, device = _new(shape, dtype, device)
    return Parameter(backend.randn(shape, dtype, device) * dtype.type(std))


def init_uniform(shape, bound: float, dtype=None, device=None) -> Parameter:
    """A Parameter with entries ~ U(-bound, bound)."""
    shape, dtype, device = _new(shape, dtype, device)
    u = backend.rand(shape, dtype, device)
    return Parameter(u * dtype.type(2 * bound) - dtype.type(bound))


def init_zeros(shape, dtype=None, device=None, value: float = 0.0) -> Parameter:
    """A Parameter filled with ``value`` (zeros by default)."""
    shape, dtype, device = _new(shape, dtype, device)
    return Parameter(backend.xp_for(device).full(shape, value, dtype=dtype))


# ------------------------------------------------------------------- layers


class Linear(Module):
    """y = x W^T + b, with W of shape (out_features, in_features).

    Both W and b start ~ U(-1/sqrt(in), 1/sqrt(in)), PyTorch's default."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype=None, device=None):
        super().__init__()
        for name, n in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
                raise ValueError(f"Linear: {name} must be a positive integer, got {n!r}")
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = init_uniform((out_features, in_features), bound, dtype, device)
        self.bias = init_uniform((out_features,), bound, dtype, device) if bias else None

    def forward(self, x: Tensor) -> Tensor:      # (..., in) -> (..., out)
        return F.linear(x, self.weight, self.bias)

    def __repr__(self):
        return (f"Linear(in={self.in_features}, out={self.out_features}, "
                f"bias={self.bias is not None})")


class Embedding(Module):
    """A lookup table: row ``i`` of ``weight`` (num_embeddings, dim) is token i's vector.

    Its gradient is a scatter-add: each row gets the sum of the gradients at the
    positions that read it. Starts ~ N(0, 1), PyTorch's default."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=None, device=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = init_normal((num_embeddings, embedding_dim), 1.0, dtype, device)

    def forward(self, ids) -> Tensor:            # (...) int -> (..., dim)
        return F.embedding(self.weight, ids)

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last dim."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, dtype=None,
                 device=None):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = init_zeros((dim,), dtype, device, value=1.0)
        self.bias = init_zeros((dim,), dtype, device) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)

    def __repr__(self):
        return f"LayerNorm({self.dim}, bias={self.bias is not None})"


class RMSNorm(Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dim (no centring)."""

    def __init__(self, dim: int, eps: float = 1e-6, dtype=None, device=None):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = init_zeros((dim,), dtype, device, value=1.0)

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (self.dim,), self.weight, self.eps)

    def __repr__(self):
        return f"RMSNorm({self.dim})"


class Dropout(Module):
    """Zero activations with probability p while training; the identity in eval()."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def __repr__(self):
        return f"Dropout(p={self.p})"


class MLP(Module):
    """The transformer's feed-forward layer: proj(GELU(fc(x))) with GELU's tanh
    approximation (GPT-2's), hidden = 4 d by default.

    ``out_dim`` (default: ``dim``) makes it width-changing, d -> hidden -> out_dim."""

    def __init__(self, dim: int, hidden: int | None = None, dropout: float = 0.0,
                 bias: bool = True, dtype=None, device=None, out_dim: int | None = None):
        super().__init__()
        hidden = hidden or 4 * dim
        self.fc = Linear(dim, hidden, bias, dtype, device)
        self.proj = Linear(hidden, out_dim or dim, bias, dtype, device)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:      # (..., d) -> (..., out_dim)
        return self.drop(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class SwiGLU(Module):
    """A gated feed-forward layer: proj(SiLU(x W_gate^T) * (x W_up^T)).

    The gate multiplies elementwise, so the hidden width defaults to 8/3 d (rounded
    to a multiple of 8) to keep the parameter count of a 4 d MLP."""

    def __init__(self, dim: int, hidden: int | None = None, dropout: float = 0.0,
                 bias: bool = False, dtype=None, device=None):
        super().__init__()
        hidden = hidden or 8 * ((8 * dim // 3 + 7) // 8)
        self.gate = Linear(dim, hidden, bias, dtype, device)
        self.up = Linear(dim, hidden, bias, dtype, device)
        self.proj = Linear(hidden, dim, bias, dtype, device)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:      # (..., d) -> (..., d)
        return self.drop(self.proj(F.silu(self.gate(x)) * self.up(x)))
