"""Generation with O(1) work per token: a distilled Hyena LM run as a recurrence.

Laughing Hyena, Section 3. A Hyena operator remembers the past in two places, and
after distillation both have a fixed size: the SHORT conv reads the last K-1 projected
inputs (a (B, 3D, K-1) window, shifted one column per token), and the LONG conv is a
modal SSM with a complex state of K_m modes per channel, (B, D, K_m) for Hyena and
(B, M, N, N, K_m) for MultiHyena (one set of poles per head, for all its N² channels).

One token through one operator (the equations of ``operator.py`` with time fixed;
``rec`` is the layer's ModalRecurrence, with D = ĥ_0 + Dskip folded in):

    z_t        = in_proj(u_t)                                 # Step 1      (B, 3D)
    z~_t       = b + Σ_j W[:, j] window[:, j]                 # Step 2, window = [cache, z_t]
    q, k, v    = split(z~_t)
    w_t        = k . v                (Hyena)                 # Step 3      (B, D)
               = k_t v_t^T per head   (MultiHyena)            #             (B, M, N, N)
    y_t        = Re Σ_k R_k s_{t-1,k} + D w_t ;  s_t = λ . s_{t-1} + w_t     # Step 4
    out_t      = out_proj(q . y_t)    (Hyena)                 # Step 5
               = out_proj(q_t^T y_t)  per head (MultiHyena)

Nothing in it depends on t. A PREFILL runs the same steps on a whole prompt at once
(``ModalRecurrence.prefill``: one FFT and a contraction with powers of λ). The fair
baseline, an UNdistilled Hyena that caches like a Transformer, is :class:`ConvCache`.

The rest of the network is position-wise, so the LM runs through the GPT's own
``forward(idx, cache=state)``: each Block hands its layer's cache to its mixer, whose
``forward`` hands the chunk to the cache's ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ... import backend
from ...autograd import Tensor, no_grad
from ...nn import functional as F

__all__ = ["MixerCache", "RecurrentState", "init_cache", "init_state", "ConvCache",
           "init_conv_cache", "init_conv_state"]


class _LayerCache:
    """What both caches do with a chunk u (B, T, D): the operator's Steps 1-3 and 5,
    with the short conv continuing from the cached window (the missing past is read
    from it instead of zero padding; it shifts by T columns), and Step 4 by the
    cache's own ``long_conv``. For generation only: no gradients flow through it."""

    def forward(self, op, u: Tensor) -> Tensor:              # (B, T, D) -> (B, T, D)
        D, T = op.d_model, u.shape[1]
        with no_grad():
            z = op.in_proj(u).data.swapaxes(1, 2)                     # Step 1: (B, 3D, T)
            window = backend.xp_of(z).concatenate([self.window, z], axis=-1)  # (B, 3D, K-1+T)
            self.window = window[..., T:]                             # the last K-1 columns
            z = op.short(Tensor(window)).data[..., -T:]               # Step 2: the new T
            q, k, v = z[:, :D], z[:, D:2 * D], z[:, 2 * D:]           # each (B, D, T)
            w = op.gate(Tensor(k), Tensor(v)).data                    # Step 3
            y = op.readout(Tensor(q), Tensor(self.long_conv(w)))      # Steps 4-5: (B, D, T)
            return op.out_proj(y.transpose(1, 2))                     # (B, T, D)


@dataclass
class MixerCache(_LayerCache):
    """One distilled operator's memory of the past: O(1) in the sequence length."""

    rec: object       # the layer's ModalRecurrence (Dskip folded into its direct term)
    window: object    # (B, 3D, K-1): the last K-1 in_proj outputs, zeros at the start
    state: object     # (B, D, K_m) or (B, M, N, N, K_m) complex: the modal state s_{t-1}

    def nbytes(self) -> int:
        return int(self.window.nbytes + self.state.nbytes)

    def long_conv(self, w):
        """Step 4 in recurrent form: one token is one O(1) step, a prompt one prefill."""
        if w.shape[-1] == 1:
            y, self.state = self.rec.step(w[..., 0], self.state)
            return y[..., None]
        y, self.state = self.rec.prefill(w, self.state)
        return y


@dataclass
class RecurrentState:
    """What a distilled LM carries between calls of ``forward(idx, cache=state)``;
    ``layers`` and ``length`` are the names ``GPT.forward`` reads (as a KVCache's)."""

    layers: list      # one MixerCache (or ConvCache) per block
    length: int = 0   # tokens consumed so far

    def numbers(self) -> int:
        """How many numbers the state holds (complex counted once): constant in t. A
        distilled model's state only (MixerCache layers)."""
        return sum(c.window.size + c.state.size for c in self.layers)

    def nbytes(self) -> int:
        """Bytes this sequence batch's state holds now (a ConvCache: the filled part
        of its buffer, which grows with the context; a MixerCache: constant)."""
        return sum(c.nbytes() for c in self.layers)


def init_cache(op, batch: int) -> MixerCache:
    """The empty cache of one distilled operator for ``batch`` sequences (zeros:
    nothing seen yet, which is also what the parallel form's zero padding means)."""
    if not hasattr(op, "recurrence"):
        raise TypeError(f"init_cache: {type(op).__name__} has no recurrent form; "
                        "distil the model first (distilled.distill)")
    rec = op.recurrence()
    return MixerCache(rec, _empty_window(op, batch), rec.init_state(_gate_shape(op, batch)))


def init_state(model, batch: int) -> RecurrentState:
    """The empty state of a distilled LM for ``batch`` sequences."""
    return RecurrentState([init_cache(op, batch) for op in model.mixers()])


def _empty_window(op, batch: int):
    weight = op.short.weight.data                                 # (3D, K)
    return backend.xp_of(weight).zeros((batch, weight.shape[0], weight.shape[1] - 1),
                                       weight.dtype)


def _gate_shape(op, batch: int) -> tuple:
    """The shape of one time step of the long convolution's input, read off the
    operator's own gate: (B, D) for Hyena, (B, M, N, N) for MultiHyena."""
    one_step = Tensor(backend.xp_of(op.dskip.data).zeros((batch, op.d_model, 1)))
    return op.gate(one_step, one_step).shape[:-1]


# ------------------------------------------------- the cached (undistilled) Hyena


@dataclass
class ConvCache(_LayerCache):
    """An undistilled operator's memory of the past: the gated inputs of every past
    position, in a buffer preallocated to the filters' length (O(L) per sequence)."""

    h_rev: object     # (C, L_max): the filters reversed in time, h_rev[:, L_max-1-j] = h_j
    dskip: object     # (C,)
    window: object    # (B, 3D, K-1): the last K-1 in_proj outputs
    gated: object     # (B, C, ..., L_max): w_0, w_1, ... (the unused tail is zeros)
    length: int = 0   # positions filled

    def nbytes(self) -> int:
        """Bytes of per-sequence state in use: the window and the filled positions."""
        return int(self.window.nbytes + self.gated[..., :self.length].nbytes)

    def long_conv(self, w):
        """Step 4 on the chunk's gated inputs w (.., T), appended to the buffer:
        (h * w)_t + Dskip w_t at the new positions, reading all of it. T = 1 is O(L)
        per channel (y_t = Σ_{s<=t} w_s h_{t-s}, a dot product over s); a prompt
        (T > 1) is one FFT convolution."""
        start, T = self.length, w.shape[-1]
        n, L = start + T, self.h_rev.shape[-1]
        if n > L:
            raise ValueError(f"ConvCache: {n} positions exceed the filters' length {L}")
        self.gated[..., start:n] = w
        self.length = n
        lead = (self.h_rev.shape[0],) + (1,) * (self.gated.ndim - 3)
        if T == 1:
            h = self.h_rev[:, L - n:].reshape(lead + (n,))            # h_{t-s} for s = 0..t
            s = (self.gated[..., :n] * h).sum(axis=-1)[..., None]
        else:
            h = self.h_rev[:, ::-1][:, :n].reshape(lead + (n,))       # h_0..h_{n-1}
            s = F.fftconv(Tensor(self.gated[..., :n]), Tensor(h)).data[..., start:n]
        return s + self.dskip.reshape((-1,) + (1,) * (w.ndim - 3) + (1,)) * w


def init_conv_cache(op, batch: int) -> ConvCache:
    """The empty cache of one (undistilled) operator for ``batch`` sequences; its
    filters are materialised once, at the operator's full length."""
    weight = op.short.weight.data
    xp = backend.xp_of(weight)
    with no_grad():
        h = op.filters(op.max_len).data                           # (C, L_max)
    gated = xp.zeros(_gate_shape(op, batch) + (op.max_len,), weight.dtype)
    return ConvCache(xp.ascontiguousarray(h[:, ::-1]), op.dskip.data,
                     _empty_window(op, batch), gated)


def init_conv_state(model, batch: int) -> RecurrentState:
    """The empty cached state of an undistilled Hyena LM (``model(idx, cache=state)``
    then runs one position per call, like a GPT with its KV cache)."""
    return RecurrentState([init_conv_cache(op, batch) for op in model.mixers()])

