"""A truncated LSTM IS a TrellisNet: the weights that make it one (the paper's Sec. 4).

One layer (r units). Put H = r, n_levels = M and

    W1x = 0,  W2x = W_ih,  W1h = W_hh,  W2h = 0,  b = b_LSTM.

Then level j at time t reads x_t and level j-1 at time t-1, which is exactly one LSTM
step: by induction, level j at time t is the LSTM run from a zero state over the last
j inputs x_{t-j+1..t}. The top level (j = M) is the M-truncated LSTM. Biases included.

L layers (r_1..r_L). H = sum r_l: slot l of z (and c) holds layer l. Gate group q
(i, o, g, f) of slot l is row q H + offset_l. Then

    W2x: slot 1 <- W_ih^1                   (x_t feeds layer 1)
    W1h: slot l <- W_hh^l from slot l       (block diagonal: each layer's recurrence)
    W2h: slot l <- W_ih^l from slot l-1     (sub-diagonal: layer l-1 at time t feeds layer l)
    W1x = 0,  n_levels = M + L - 1,  output = the last slot (n_out = r_L).

Slot l at level j is then layer l run over j - l + 1 inputs. The caveat: slot l >= 2
at level 1 sees a zero input (slot l-1 at level 0) and no history, which an LSTM
turns into the state (o tanh(i g)) of its BIAS alone, not zero. So layer l starts one
step earlier than layer l-1, on a zero input (:func:`~.lstm.truncated_lstm` with
``staircase=True`` computes exactly that). With zero biases in layers 2..L that
extra step leaves the state at zero and the conversion is exact.
"""

from __future__ import annotations

import numpy as np

from ... import backend
from .lstm import LSTM
from .trellisnet import TrellisConfig, TrellisNet

__all__ = ["from_lstm", "trellis_blocks"]


def trellis_blocks(lstm: LSTM):
    """The TrellisNet weights of ``lstm`` as NumPy arrays, before the truncation
    chooses the depth: ``(weight_x, weight_h, bias)`` of shapes (4H, 2 n_in), (4H, 2H),
    (4H,), with the tap-(t-1) columns first in each matrix."""
    sizes = lstm.config.hidden_sizes
    n_in = lstm.config.input_size
    H = sum(sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)])       # slot l covers offsets[l]:offsets[l+1]
    dtype = lstm.layers[0].weight_ih.dtype
    W1x = np.zeros((4 * H, n_in), dtype)
    W2x = np.zeros((4 * H, n_in), dtype)
    W1h = np.zeros((4 * H, H), dtype)
    W2h = np.zeros((4 * H, H), dtype)
    b = np.zeros(4 * H, dtype)
    for l, layer in enumerate(lstm.layers):
        r = sizes[l]
        w_ih = backend.asnumpy(layer.weight_ih.data)
        w_hh = backend.asnumpy(layer.weight_hh.data)
        bias = None if layer.bias is None else backend.asnumpy(layer.bias.data)
        slot = slice(offsets[l], offsets[l + 1])
        for q in range(4):                                  # gate groups i, o, g, f
            rows = slice(q * H + offsets[l], q * H + offsets[l + 1])
            lstm_rows = slice(q * r, (q + 1) * r)
            W1h[rows, slot] = w_hh[lstm_rows]               # block diagonal
            if l == 0:
                W2x[rows] = w_ih[lstm_rows]                 # x_t feeds layer 1 only
            else:
                below = slice(offsets[l - 1], offsets[l])
                W2h[rows, below] = w_ih[lstm_rows]          # sub-diagonal
            if bias is not None:
                b[rows] = bias[lstm_rows]
    return np.concatenate([W1x, W2x], 1), np.concatenate([W1h, W2h], 1), b


def from_lstm(lstm: LSTM, M: int) -> TrellisNet:
    """A TrellisNet that computes the M-truncated ``lstm`` (exactly for one layer, and
    for several layers whose upper biases are zero; see the module docstring)."""
    sizes = lstm.config.hidden_sizes
    L = len(sizes)
    w_x, w_h, b = trellis_blocks(lstm)
    cfg = TrellisConfig(n_in=lstm.config.input_size, n_hid=sum(sizes) - sizes[-1],
                        n_out=sizes[-1], n_levels=M + L - 1)
    device = lstm.layers[0].weight_ih.device
    net = TrellisNet(cfg, dtype=w_x.dtype, device=device)
    for param, value in ((net.conv.weight_x, w_x), (net.conv.weight_h, w_h),
                         (net.conv.bias, b)):
        param.data = backend.to_device(value, device)
    return net
