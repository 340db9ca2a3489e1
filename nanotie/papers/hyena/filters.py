"""The implicit long filter of Hyena: a small sine MLP of position, times a decay.

A Hyena layer convolves each channel with a filter as long as the sequence. Storing
those filters explicitly would cost D x L parameters and tie the model to one length.
Instead the filter is a FUNCTION of position, evaluated on the grid it is needed on:

    t_tau   = tau / (L_max - 1)                                  tau = 0 .. L_max - 1
    PE(tau) = [t_tau, cos(2 pi f_k tau / L_max), -sin(2 pi f_k tau / L_max)]_k   (E features)
    z       = sin(omega * (W_1 PE + b_1))                        (width W)
    z       = sin(omega * (W_i z + b_i))                         i = 2 .. 1 + n_inner
    h_c(tau) = (W_out z)_c * exp(-t_tau |delta_c|)                c = 0 .. C - 1

The bands are f_k = linspace(1e-4, K - 1, K) with K = (E - 1) / 2. The frequencies
omega (one per hidden unit, a vector of width W) are ONE Parameter shared by every
sine layer: the reference code reuses one activation module, so this is a tie
inside the filter, and omega's gradient is the sum over the layers that use it.

The window exp(-t |delta_c|) makes the filters decay, at fixed per-channel rates (as
in the reference code) spread from a slow to a fast one by :func:`decay_rates`.

A sequence of length L <= L_max uses the first L samples of the same grid, so a
filter, and with it every output, does not depend on how long the input is: the
model is causal and runs at any length up to L_max.
"""

from __future__ import annotations

import math

import numpy as np

from ... import backend
from ...autograd import Tensor
from ...nn.layers import Linear
from ...nn.module import Module, ModuleList, Parameter

__all__ = ["positional_features", "decay_rates", "ImplicitFilter"]


def positional_features(max_len: int, emb_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The grid ``t`` (L_max,) and the features PE (L_max, E) of the docstring above."""
    if emb_dim < 3 or emb_dim % 2 == 0:
        raise ValueError(f"positional_features: emb_dim must be odd and >= 3 (t plus a "
                         f"cos and a sin per band), got {emb_dim}")
    bands = (emb_dim - 1) // 2
    t = np.linspace(0.0, 1.0, max_len)                              # (L_max,)
    tau = np.arange(max_len)
    f = np.linspace(1e-4, bands - 1, bands)                         # (K,)
    angle = 2 * math.pi * tau[:, None] * f[None, :] / max_len       # (L_max, K)
    pe = np.concatenate([t[:, None], np.cos(angle), -np.sin(angle)], axis=1)  # (L_max, E)
    return t, pe


def decay_rates(channels: int, fast_decay: float = 0.3, slow_decay: float = 1.5,
                target: float = 1e-2) -> np.ndarray:
    """|delta_c|, spread evenly from slow (channel 0) to fast (the last channel).

    exp(-t |delta|) reaches ``target`` at t = log(1/target) / |delta|, so the slow
    rate is log(1/target)/slow_decay and the fast one log(1/target)/fast_decay."""
    scale = math.log(1.0 / target)
    return np.linspace(scale / slow_decay, scale / fast_decay, channels)   # (C,)


class ImplicitFilter(Module):
    """``C`` long filters from one sine MLP: ``filter(L)`` -> Tensor (C, L).

    ``C`` is the number of DISTINCT filters: D for Hyena (one per channel), M for
    MultiHyena (one per head)."""

    def __init__(self, channels: int, max_len: int, emb_dim: int = 3, width: int = 64,
                 n_inner: int = 2, omega: float = 1.0, dtype=None, device=None):
        super().__init__()
        self.channels, self.max_len = channels, max_len
        dtype = np.dtype(dtype or np.float32)
        device = device or backend.default_device()
        xp = backend.xp_for(device)
        t, pe = positional_features(max_len, emb_dim)
        rates = decay_rates(channels)
        window = np.exp(-t[:, None] * rates[None, :])                 # (L_max, C)
        # Fixed functions of position: buffers, rebuilt from the settings (not saved).
        self.register_buffer("pe", xp.asarray(pe, dtype=dtype), persistent=False)
        self.register_buffer("window", xp.asarray(window, dtype=dtype), persistent=False)
        self.inp = Linear(emb_dim, width, dtype=dtype, device=device)
        self.inner = ModuleList(Linear(width, width, dtype=dtype, device=device)
                                for _ in range(n_inner))
        self.out = Linear(width, channels, bias=False, dtype=dtype, device=device)
        # omega: ONE Parameter that every sine layer uses (a tie inside the filter).
        self.freq = Parameter(xp.full((width,), omega, dtype=dtype))

    def sine(self, x: Tensor) -> Tensor:
        """sin(omega * x), with omega (W,) broadcast over positions."""
        return (self.freq * x).sin()                         # the tie: one omega, every layer

    def forward(self, length: int) -> Tensor:
        if not 1 <= length <= self.max_len:
            raise ValueError(f"ImplicitFilter: length must lie in [1, {self.max_len}] (the "
                             f"filter's max_len), got {length}")
        z = self.sine(self.inp(self.pe[:length]))            # (L, W)
        for layer in self.inner:
            z = self.sine(layer(z))                          # (L, W)
        h = self.out(z) * self.window[:length]               # (L, C), decayed
        return h.transpose(0, 1)                             # (C, L)
