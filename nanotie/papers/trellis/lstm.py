"""A plain (stacked) LSTM, and the M-truncated LSTM that a TrellisNet reproduces.

One layer with weights W_ih (4r, n_in), W_hh (4r, r) and bias b (4r), gates in the
order i, o, g, f (the TrellisNet's order; PyTorch's is i, f, g, o):

    a_t = W_ih x_t + W_hh h_{t-1} + b
    i, o, g, f = sigma(a[0:r]), sigma(a[r:2r]), tanh(a[2r:3r]), sigma(a[3r:4r])
    c_t = f * c_{t-1} + i * g          h_t = o * tanh(c_t)

Layer l > 1 reads layer l-1's h as its input. The M-TRUNCATED LSTM answers, at every
t, what the LSTM outputs after running from a zero state over x_{t-M+1..t} only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ... import backend
from ...autograd import Tensor
from ...nn import Module, ModuleList
from ...nn import functional as F
from ...nn.layers import init_uniform
from ...ops import stack
from .trellisnet import SeqOutput

__all__ = ["LSTMConfig", "LSTMLayer", "LSTM", "truncated_lstm"]


@dataclass
class LSTMConfig:
    """The shapes of a stacked LSTM."""
    input_size: int = 32           # channels of x_t
    hidden_sizes: tuple = (64,)    # r_l of each layer, bottom first
    bias: bool = True              # one bias vector b per layer (PyTorch has two: b_ih + b_hh)


class LSTMLayer(Module):
    """One LSTM layer; weights ~ U(-1/sqrt(r), 1/sqrt(r)) as in PyTorch."""

    def __init__(self, n_in: int, r: int, bias: bool = True, dtype=None, device=None):
        super().__init__()
        k = 1.0 / math.sqrt(r)
        self.weight_ih = init_uniform((4 * r, n_in), k, dtype, device)
        self.weight_hh = init_uniform((4 * r, r), k, dtype, device)
        self.bias = init_uniform((4 * r,), k, dtype, device) if bias else None

    def forward(self, xs: list, state=None) -> tuple:
        """One input (B, n_in) per time step -> (one h (B, r) per step, (h_T, c_T)).
        ``state`` (h, c) each (B, r); None is zeros."""
        r = self.weight_hh.shape[1]
        if state is None:
            xp = backend.xp_of(xs[0].data)
            zero = Tensor(xp.zeros((xs[0].shape[0], r), dtype=xs[0].dtype))
            state = (zero, zero)
        h, c = state
        hs = []
        for x_t in xs:
            a = F.linear(x_t, self.weight_ih, self.bias) + F.linear(h, self.weight_hh)  # (B, 4r)
            i, o = a[:, 0:r].sigmoid(), a[:, r:2 * r].sigmoid()
            g, f = a[:, 2 * r:3 * r].tanh(), a[:, 3 * r:].sigmoid()
            c = f * c + i * g
            h = o * c.tanh()
            hs.append(h)
        return hs, (h, c)


class LSTM(Module):
    """A stack of :class:`LSTMLayer`: x (B, T, n_in) -> :class:`~.trellisnet.SeqOutput`
    whose ``out`` is the top layer's h (B, T, r_L) and ``history`` the list of each
    layer's (h, c)."""

    def __init__(self, config: LSTMConfig, dtype=None, device=None):
        super().__init__()
        self.config = config
        sizes = (config.input_size,) + config.hidden_sizes
        self.layers = ModuleList([LSTMLayer(sizes[l], sizes[l + 1], config.bias, dtype, device)
                                  for l in range(len(config.hidden_sizes))])

    def forward(self, x: Tensor, history=None) -> SeqOutput:
        # Steps are passed between layers as lists of (B, r) tensors: slicing one
        # stacked (B, T, 4r) array per step would cost a full-size gradient per slice.
        xs = [x[:, t] for t in range(x.shape[1])]
        states = []
        for l, layer in enumerate(self.layers):
            xs, state = layer(xs, None if history is None else history[l])
            states.append(state)
        return SeqOutput(stack(xs, dim=1), states, [])


def truncated_lstm(lstm: LSTM, x: Tensor, M: int, staircase: bool = False) -> Tensor:
    """The M-truncated LSTM, by brute force: for every t, run ``lstm`` from a zero state
    over x_{max(0, t-M+1)..t} and keep the top layer's last h. (B, T, n_in) -> (B, T, r_L).

    ``staircase=True`` computes what a converted multi-layer TrellisNet computes when
    the LSTM has biases (see :func:`~.convert.from_lstm`): when the window is full
    (t >= M + l - 2), layer l >= 2 first reads ONE zero input before its real inputs,
    that is, it starts one step earlier than the layer below it. With zero biases that
    step leaves the zero state at zero, so both answers agree."""
    B, T, _ = x.shape
    xp = backend.xp_of(x.data)
    outs = []
    for t in range(T):
        seq = [x[:, s] for s in range(max(0, t - M + 1), t + 1)]   # <= M steps of (B, n_in)
        for l, layer in enumerate(lstm.layers):
            if staircase and l >= 1 and t >= M + l - 1:         # layer index l is layer l+1
                seq = [Tensor(xp.zeros_like(seq[0].data))] + seq
            seq, _ = layer(seq)
        outs.append(seq[-1])
    return stack(outs, dim=1)
