"""The order-2 Hyena operator and MultiHyena, its head-tied variant.

Both map u (B, L, D) -> (B, L, D) in three steps, one method each, so a subclass
can replace one step and keep the others (the distilled model swaps the filters
for modal ones; a test swaps them for a single pole)::

    q, k, v = self.project(u)          # in_proj D -> 3D, short causal conv      (B, D, L) x 3
    y       = self.mix(q, k, v)        # readout(q, long_conv(gate(k, v)))        (B, D, L)
    out     = self.out_proj(y)         # D -> D                                   (B, L, D)

    long_conv(w) = h * w + Dskip . w   # per filter, by FFT; h = self.filters(L)

Hyena (one filter per channel, ``x0, x1, v = q, k, v``):

    y = x0 . (h * (x1 . v) + Dskip . (x1 . v))

MultiHyena (M heads of width N = D/M; ONE filter per head, tied across its N^2
channels):

    z_t^m        = k_t^m (v_t^m)^T                                  (N, N) per head
    y_t^m[j]     = sum_i q_t^m[i] ((h^m * z^m)_t[i, j] + Dskip_m z_t^m[i, j])

With a single real pole, h^m_t = lam^t, the convolution is a running sum and
MultiHyena is linear attention with decay (see :func:`linear_attention_with_decay`):

    S_t = lam S_{t-1} + k_t v_t^T,         y_t = q_t^T (S_t + Dskip z_t)
"""

from __future__ import annotations

import math

import numpy as np

from ... import backend
from ...autograd import Tensor, no_grad
from ...nn import functional as F
from ...nn.layers import Linear, init_normal, init_uniform
from ...nn.module import Module
from ...ops import einsum, pad
from .filters import ImplicitFilter

__all__ = ["short_conv", "ShortConv", "HyenaOperator", "MultiHyenaOperator",
           "linear_attention_with_decay"]


def short_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Depthwise causal convolution with a short kernel, along the last axis:

        y[b, c, t] = bias[c] + sum_{j=0}^{K-1} weight[c, j] * x[b, c, t - (K-1) + j]

    x is (B, C, L), weight (C, K), bias (C,); x is zero before t = 0. This is PyTorch's
    ``conv1d(x, weight[:, None], groups=C, padding=K-1)[..., :L]``: the last tap
    weight[:, K-1] multiplies the current input. Built from pad and slices, so its
    gradient comes from theirs."""
    C, K = weight.shape
    if x.ndim != 3 or x.shape[1] != C:
        raise ValueError(f"short_conv: expected x of shape (B, {C}, L) for a weight of "
                         f"shape {weight.shape}, got {x.shape}")
    L = x.shape[-1]
    xp = pad(x, (K - 1, 0))                                  # (B, C, L + K - 1)
    y = xp[:, :, 0:L] * weight[:, 0:1]
    for j in range(1, K):
        y = y + xp[:, :, j:j + L] * weight[:, j:j + 1]       # (B, C, L)
    return y + bias[:, None] if bias is not None else y


class ShortConv(Module):
    """A :func:`short_conv` with its own weight (C, K) and bias (C,), initialised like
    PyTorch's Conv1d: U(-1/sqrt(K), 1/sqrt(K)) (a depthwise kernel's fan-in is K)."""

    def __init__(self, channels: int, kernel_size: int = 3, dtype=None, device=None):
        super().__init__()
        self.channels, self.kernel_size = channels, kernel_size
        bound = 1.0 / math.sqrt(kernel_size)
        self.weight = init_uniform((channels, kernel_size), bound, dtype, device)
        self.bias = init_uniform((channels,), bound, dtype, device)

    def reset_parameters(self) -> None:
        """Draw the weight and bias again (a model-wide re-initialisation calls it)."""
        bound = 1.0 / math.sqrt(self.kernel_size)
        for p in (self.weight, self.bias):
            p.data = init_uniform(p.shape, bound, p.dtype, p.device).data

    def forward(self, x: Tensor) -> Tensor:        # (B, C, L) -> (B, C, L)
        return short_conv(x, self.weight, self.bias)


class HyenaOperator(Module):
    """Order-2 Hyena with one implicit long filter per channel (D filters).

    ``forward(u, kv=None)`` takes and returns (B, L, D), the call signature of
    :class:`~nanotie.nn.transformer.CausalSelfAttention`, so it can stand in a
    :class:`~nanotie.nn.transformer.Block` as ``block.attn``. Its cache, when
    generating, is one of ``nanotie.papers.distillery.generate`` (``ConvCache``: the
    past gated inputs, O(L) per token; ``MixerCache``: a distilled filter's state, O(1)).
    """

    def __init__(self, d_model: int, max_len: int, filter_width: int = 64,
                 filter_emb_dim: int = 3, filter_inner: int = 2, filter_omega: float = 1.0,
                 short_kernel: int = 3, bias: bool = True, dtype=None, device=None):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.in_proj = Linear(d_model, 3 * d_model, bias, dtype, device)        # Step 1
        self.short = ShortConv(3 * d_model, short_kernel, dtype, device)         # Step 2
        self.filter = ImplicitFilter(self.n_filters, max_len, filter_emb_dim, filter_width,
                                     filter_inner, filter_omega, dtype=dtype, device=device)
        self.dskip = init_normal((self.n_filters,), 1.0, dtype, device)          # Step 4
        self.out_proj = Linear(d_model, d_model, bias, dtype, device)            # Step 5

    @property
    def n_filters(self) -> int:
        """Distinct long filters: D (one per channel)."""
        return self.d_model

    # ------------------------------------------------------------------ steps
    def project(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Steps 1-2: in_proj to 3D, the short causal conv, split into q, k, v
        (the paper's x0, x1, v), each (B, D, L) with time on the last axis."""
        if u.ndim != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"{type(self).__name__}: expected input (B, L, {self.d_model}), "
                             f"got {u.shape}")
        if u.shape[1] > self.max_len:
            raise ValueError(f"{type(self).__name__}: sequence of {u.shape[1]} is longer "
                             f"than the filters' max_len {self.max_len}")
        D = self.d_model
        z = self.short(self.in_proj(u).transpose(1, 2))      # (B, 3D, L)
        return z[:, :D], z[:, D:2 * D], z[:, 2 * D:]         # q=x0, k=x1, v

    def filters(self, length: int) -> Tensor:
        """The long filters h as a Tensor (n_filters, L): the implicit filter. A
        subclass may return other filters (a test uses a single pole)."""
        return self.filter(length)

    def long_conv(self, w: Tensor) -> Tensor:
        """Step 4: y = h * w + Dskip . w along the last axis, one filter per slice of
        axis 1. w is (B, n_filters, ..., L); axes between share their slice's filter.
        A distilled operator keeps it and overrides ``filters(L)``; its recurrent form
        is its cache's ``forward`` (``distillery.generate.MixerCache``)."""
        L = w.shape[-1]
        # MultiHyena's tie: head m's one filter h^m broadcasts over its N^2 channels.
        lead = (self.n_filters,) + (1,) * (w.ndim - 3)       # (C, 1..): a 1 per middle axis
        h = self.filters(L).reshape(lead + (L,))             # the tie: (C, 1.., L)
        return F.fftconv(w, h) + w * self.dskip.reshape(lead + (1,))

    def gate(self, k: Tensor, v: Tensor) -> Tensor:
        """Step 3, the long convolution's input: x1 . v (B, D, L)."""
        return k * v

    def readout(self, q: Tensor, s: Tensor) -> Tensor:
        """Step 5 before out_proj, on the long convolution's output s: x0 . s."""
        return q * s

    def mix(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Steps 3-5 before the out-projection: y = x0 . long_conv(x1 . v)."""
        return self.readout(q, self.long_conv(self.gate(k, v)))   # (B, D, L)

    def forward(self, u: Tensor, kv=None) -> Tensor:         # (B, L, D) -> (B, L, D)
        if kv is not None:          # cached generation: the cache runs the chunk
            return kv.forward(self, u)
        y = self.mix(*self.project(u))                       # (B, D, L)
        return self.out_proj(y.transpose(1, 2))              # (B, L, D)

    # ------------------------------------------------------ for distillation
    def filter_array(self, length: int | None = None) -> np.ndarray:
        """The materialised long filters h (n_filters, L) as a float64 NumPy array
        (L defaults to max_len); a sequence of length L uses exactly these."""
        with no_grad():
            h = self.filters(length or self.max_len)             # (n_filters, L)
        return backend.asnumpy(h.data).astype(np.float64)

    def dskip_array(self) -> np.ndarray:
        """The skip weights Dskip (n_filters,) as a float64 NumPy array."""
        return backend.asnumpy(self.dskip.data).astype(np.float64)


class MultiHyenaOperator(HyenaOperator):
    """MultiHyena: M heads of width N = D/M, one long filter per HEAD, used by all N^2
    channels of the head's outer product k v^T (M filters instead of D).

    Only the gate, the readout and the filter count differ from :class:`HyenaOperator`."""

    def __init__(self, d_model: int, max_len: int, n_head: int, **kwargs):
        if n_head < 1 or d_model % n_head:
            raise ValueError(f"MultiHyenaOperator: d_model={d_model} is not divisible by "
                             f"n_head={n_head}")
        Module.__init__(self)    # registers nothing yet; n_head must exist before the
        self.n_head = n_head     # base class sizes the filter bank by n_filters
        super().__init__(d_model, max_len, **kwargs)

    @property
    def n_filters(self) -> int:
        """Distinct long filters: M (one per head)."""
        return self.n_head

    def heads(self, x: Tensor) -> Tensor:
        """(B, D, L) -> (B, M, N, L): the channels split into M heads of width N."""
        B, D, L = x.shape
        return x.reshape(B, self.n_head, D // self.n_head, L)

    def gate(self, k: Tensor, v: Tensor) -> Tensor:
        """z_t = k_t v_t^T per head: (B, M, N, N, L)."""
        return einsum("bmil,bmjl->bmijl", self.heads(k), self.heads(v))

    def readout(self, q: Tensor, s: Tensor) -> Tensor:
        """q_t^T s_t per head, on s = h^m * z^m + Dskip_m z^m: (B, D, L)."""
        y = einsum("bmil,bmijl->bmjl", self.heads(q), s)     # (B, M, N, L)
        return y.reshape(q.shape)


def linear_attention_with_decay(q, k, v, lam: float, dskip):
    """MultiHyena with the single-pole filter h_t = lam^t, as a recurrence (arrays):

        S_t = lam S_{t-1} + k_t v_t^T,        y_t = q_t^T (S_t + Dskip k_t v_t^T)

    q, k, v are (B, M, N, L) arrays, dskip is (M,); returns y (B, M, N, L). O(L) steps
    with an (N, N) state per head, and nothing but the state carried between them."""
    xp = backend.xp_of(q)
    B, M, N, L = q.shape
    S = xp.zeros((B, M, N, N), dtype=q.dtype)                # the state (B, M, N, N)
    y = xp.zeros_like(q)
    for t in range(L):
        z = k[..., t, None] * v[..., None, :, t]             # k_t v_t^T (B, M, N, N)
        S = lam * S + z
        y[..., t] = xp.einsum("bmi,bmij->bmj", q[..., t], S + dskip[:, None, None] * z)
    return y
