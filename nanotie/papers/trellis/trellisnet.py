"""The TrellisNet: one kernel-2 causal convolution W shared by every level.

Each level reads the input sequence x (injected again) and the level below, z^(i),
and applies THE SAME convolution and an LSTM-style gate, z^(i+1) = f(W * [x; z^(i)]):

    zhat_t = W1x x_{t-d} + W2x x_t + W1h z^(i)_{t-d} + W2h z^(i)_t + b       (4H outputs)
    i, o, g, f = sigma(zhat[0:H]), sigma(zhat[H:2H]), tanh(zhat[2H:3H]), sigma(zhat[3H:4H])
    c^(i+1)_t = f * c^(i)_{t-d} + i * g        z^(i+1)_t = o * tanh(c^(i+1)_t)

with d the level's dilation (1 by default). H = n_hid + n_out; z and c start at zero
(level 0) and the output is the last n_out channels of the top level's z. The input
part W1x x_{t-d} + W2x x_t + b does not depend on the level, so it is computed ONCE
per dilation and re-injected at every level.

The subclass :class:`UntiedTCN` overrides one hook, :meth:`TrellisNet.conv_at`, to
give every level its own convolution: the same architecture, untied across depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ... import backend
from ...autograd import Tensor
from ...nn import Module, ModuleList, Parameter
from ...nn import functional as F
from ...nn.layers import init_normal, init_zeros
from ...ops import cat, pad, sigmoid, sqrt, tanh

__all__ = ["TrellisNet", "UntiedTCN", "TrellisConv", "TrellisConfig", "SeqOutput",
           "gated_activation", "locked_dropout", "shift_right", "trellis_parameters"]


class TrellisNet(Module):
    """A TrellisNet sequence core: x (B, T, n_in) -> :class:`SeqOutput`.

    ``forward(x, history=None)``: ``history`` = (h, c), each (B, H), the top level's
    last state of the previous segment. It fills the left padding of EVERY level
    (the reference's repackaging); None means zeros."""

    def __init__(self, config: TrellisConfig, dtype=None, device=None):
        super().__init__()
        self.config = config
        self.conv = TrellisConv(config, dtype, device)    # ONE convolution for all levels

    def conv_at(self, level: int) -> TrellisConv:
        """The convolution of ``level``: the same object at every level."""
        return self.conv

    def forward(self, x: Tensor, history=None) -> SeqOutput:
        cfg, H = self.config, self.config.hidden
        h_hist, c_hist = history if history is not None else (None, None)
        x = locked_dropout(x, cfg.dropout_in, self.training)
        drop_h = self.training and cfg.dropout_h > 0
        mask = locked_mask(x.shape[0], H, cfg.dropout_h, x) if drop_h else None
        injected = self.injections(x)                # W_x * [x_{t-d}; x_t] + b, per level
        z = c = Tensor(backend.xp_of(x.data).zeros((*x.shape[:2], H), dtype=x.dtype))  # level 0
        aux = []
        for level, d in enumerate(cfg.level_dilations()):
            conv = self.conv_at(level)                # the tie: the same W at every level
            z_in = z if mask is None else z * mask     # the same mask at every level and step
            zhat = injected[level] + conv.hidden_term(z_in, d, h_hist)   # W * [x; z^(i)]
            z, c = gated_activation(zhat, shift_right(c, d, c_hist))   # z^(i+1), c^(i+1)
            if cfg.aux_every and (level + 1) % cfg.aux_every == 0 and level + 1 < cfg.n_levels:
                aux.append(z[..., H - cfg.n_out:])
        out = locked_dropout(z[..., H - cfg.n_out:], cfg.dropout_out, self.training)
        return SeqOutput(out, (z[:, -1], c[:, -1]), aux)       # history: (B, H) each

    def injections(self, x: Tensor) -> list:
        """The input part W1x x_{t-d} + W2x x_t + b of every level. It does not depend
        on z, so each (convolution, dilation) computes it once: the TrellisNet once per
        dilation, the untied TCN once per level."""
        done, out = {}, []
        for level, d in enumerate(self.config.level_dilations()):
            conv = self.conv_at(level)
            if (id(conv), d) not in done:
                done[id(conv), d] = conv.input_term(x, d)
            out.append(done[id(conv), d])
        return out

    def forward_concat(self, x: Tensor, history=None) -> Tensor:
        """The textbook form, for checking the cached W·x: at every level one convolution
        over the concatenated [x; z] with W = [W_x | W_h], nothing cached. Returns
        the output (B, T, n_out); no dropout."""
        cfg, H, n = self.config, self.config.hidden, self.config.n_in
        h_hist, c_hist = history if history is not None else (None, None)
        z = c = Tensor(backend.xp_of(x.data).zeros((*x.shape[:2], H), dtype=x.dtype))
        for level, d in enumerate(cfg.level_dilations()):
            conv = self.conv_at(level)
            w_x, w_h = _normed(conv.weight_x, conv.gain_x), _normed(conv.weight_h, conv.gain_h)
            # Columns of W ordered as the taps [x_{t-d}, z_{t-d}, x_t, z_t].
            w = cat([w_x[:, :n], w_h[:, :H], w_x[:, n:], w_h[:, H:]], dim=1)
            prev = cat([shift_right(x, d), shift_right(z, d, h_hist)], dim=-1)
            zhat = F.linear(cat([prev, x, z], dim=-1), w, conv.bias)      # (B, T, 4H)
            z, c = gated_activation(zhat, shift_right(c, d, c_hist))
        return z[..., H - cfg.n_out:]


def gated_activation(zhat: Tensor, c_prev: Tensor) -> tuple:
    """LSTM-style gates in the order i, o, g, f; returns (z, c) of the next level."""
    H = zhat.shape[-1] // 4
    i = sigmoid(zhat[..., 0:H])
    o = sigmoid(zhat[..., H:2 * H])
    g = tanh(zhat[..., 2 * H:3 * H])
    f = sigmoid(zhat[..., 3 * H:4 * H])
    c = f * c_prev + i * g                # c^(i+1)_t = f * c^(i)_{t-d} + i * g
    return o * tanh(c), c                 # z^(i+1)_t = o * tanh(c^(i+1)_t)


class UntiedTCN(TrellisNet):
    """The same architecture with a SEPARATE convolution per level: a plain gated TCN
    with input injection. Its parameter count grows linearly with the depth."""

    def __init__(self, config: TrellisConfig, dtype=None, device=None):
        Module.__init__(self)
        self.config = config
        self.convs = ModuleList([TrellisConv(config, dtype, device)
                                 for _ in range(config.n_levels)])

    def conv_at(self, level: int) -> TrellisConv:
        return self.convs[level]


class TrellisConv(Module):
    """The kernel-2 causal convolution over [x; z] with 4H output channels.

    Stored as two matrices whose columns are the two taps, t - d then t:
    ``weight_x`` (4H, 2 n_in) = [W1x | W2x] and ``weight_h`` (4H, 2H) = [W1h | W2h].
    With weight norm, each is g * v / ||v|| row by row (Salimans & Kingma, 2016), with
    the gain g starting at ||v|| so that the initial weight is v.
    """

    def __init__(self, config: TrellisConfig, dtype=None, device=None):
        super().__init__()
        H4, n_in, H = 4 * config.hidden, config.n_in, config.hidden
        self.weight_x = init_normal((H4, 2 * n_in), config.init_std, dtype, device)
        self.weight_h = init_normal((H4, 2 * H), config.init_std, dtype, device)
        self.bias = init_zeros((H4,), dtype, device)
        self.gain_x = self.gain_h = None                     # weight norm's gains
        if config.weight_norm:
            self.gain_x = Parameter(_row_norm(self.weight_x).data.copy())
            self.gain_h = Parameter(_row_norm(self.weight_h).data.copy())

    def input_term(self, x: Tensor, d: int) -> Tensor:
        """W1x x_{t-d} + W2x x_t + b: (B, T, n_in) -> (B, T, 4H)."""
        taps = cat([shift_right(x, d), x], dim=-1)            # (B, T, 2 n_in)
        return F.linear(taps, _normed(self.weight_x, self.gain_x), self.bias)

    def hidden_term(self, z: Tensor, d: int, h_hist=None) -> Tensor:
        """W1h z_{t-d} + W2h z_t: (B, T, H) -> (B, T, 4H)."""
        taps = cat([shift_right(z, d, h_hist), z], dim=-1)    # (B, T, 2H)
        return F.linear(taps, _normed(self.weight_h, self.gain_h))


# ------------------------------------------------------- configuration, helpers


@dataclass
class TrellisConfig:
    """The shapes of a TrellisNet: channels, levels, dilations and dropout."""
    n_in: int = 32                 # input channels per time step (the paper's ninp)
    n_hid: int = 64                # hidden channels that are not read out (nhid)
    n_out: int = 32                # channels read out: the LAST n_out of z (nout)
    n_levels: int = 8              # depth; with dilation 1 the receptive field is n_levels + 1
    dilations: tuple | None = None # one per level (e.g. 1, 1, 2, 4, ...); None: all 1
    weight_norm: bool = False      # w = g v / ||v|| for each output channel
    dropout_in: float = 0.0        # locked (variational) dropout on the input sequence
    dropout_h: float = 0.0         # locked dropout on z before each level's convolution
    dropout_out: float = 0.0       # locked dropout on the output
    aux_every: int = 0             # collect z's output channels every this many levels (0: never)
    init_std: float = 0.01         # convolution weights ~ N(0, init_std^2), as the reference

    def __post_init__(self):
        if self.dilations is not None and len(self.dilations) != self.n_levels:
            raise ValueError(f"TrellisConfig: dilations has {len(self.dilations)} entries, "
                             f"n_levels is {self.n_levels}; give one per level")
        if min(self.level_dilations()) < 1:     # d = 0 would make the "t - d" tap read x_t
            raise ValueError(f"TrellisConfig: dilations must be >= 1, got {self.dilations}")
        for name in ("dropout_in", "dropout_h", "dropout_out"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"TrellisConfig: {name} must be in [0, 1), got "
                                 f"{getattr(self, name)}")

    @property
    def hidden(self) -> int:
        """H = n_hid + n_out, the width of z and c."""
        return self.n_hid + self.n_out

    def level_dilations(self) -> tuple:
        return self.dilations or (1,) * self.n_levels

    def receptive_field(self) -> int:
        """How many inputs x_{t-R+1..t} can reach the output at t: 1 + sum of dilations."""
        return 1 + sum(self.level_dilations())


class SeqOutput(NamedTuple):
    """What a sequence core returns: ``out`` (B, T, n_out); ``history`` the state to carry
    into the next segment, ``(h, c)`` each (B, H); ``aux`` intermediate outputs."""

    out: Tensor
    history: tuple
    aux: list


def locked_mask(batch: int, channels: int, p: float, like: Tensor) -> Tensor:
    """A variational dropout mask (B, 1, C): 0 or 1 / (1 - p), the SAME at every step."""
    keep = backend.rand((batch, 1, channels), like.dtype, like.device) >= p
    return Tensor(keep.astype(like.dtype) * (1.0 / (1.0 - p)))


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Variational dropout: x (B, T, C) * m (B, 1, C), one mask per sequence and channel."""
    if not training or p == 0.0:
        return x
    return x * locked_mask(x.shape[0], x.shape[2], p, x)


def shift_right(x: Tensor, d: int, fill: Tensor | None = None) -> Tensor:
    """x_{t-d} for every t: (B, T, C) -> (B, T, C). The first d steps come from ``fill``
    (B, C), the previous segment's state (history repackaging), or are zero."""
    shifted = pad(x, (0, 0, d, -d))                       # zeros in front, last d cropped
    if fill is None:
        return shifted
    xp = backend.xp_of(x.data)
    first = (xp.arange(x.shape[1]) < d).astype(x.dtype)[None, :, None]   # (1, T, 1)
    return shifted + fill.reshape(fill.shape[0], 1, fill.shape[1]) * Tensor(first)


def _row_norm(v: Tensor) -> Tensor:
    """||v_r|| for each row r of a matrix: (R, K) -> (R,)."""
    return sqrt((v * v).sum(dim=1))


def _normed(v: Tensor, gain: Tensor | None) -> Tensor:
    """v, or with weight norm g v / ||v|| row by row."""
    return v if gain is None else v * (gain / _row_norm(v)).reshape(-1, 1)


def trellis_parameters(config: TrellisConfig) -> int:
    """Parameters of one TrellisNet core: 4H (2 n_in + 2H + 1), plus 8H gains with
    weight norm; independent of n_levels."""
    H = config.hidden
    return 4 * H * (2 * config.n_in + 2 * H + 1) + (8 * H if config.weight_norm else 0)
