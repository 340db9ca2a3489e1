"""The modal recurrence: a long convolution run as a small diagonal state-space model.

A distilled filter is a *modal* system: K complex poles λ_k, residues R_k and a
direct term D. Its impulse response is

    ĥ_0 = D,        ĥ_t = Re Σ_k R_k λ_k^(t-1)        (t >= 1)                 (modal form)

and convolving an input with ĥ is the same as running the recurrence

    y_t = Re Σ_k R_k s_{t-1,k} + D u_t        (read the state, then update it)
    s_t = λ ⊙ s_{t-1} + u_t                    (s_{-1} = 0)

because s_{t-1} = Σ_{j>=1} λ^(j-1) u_{t-j}: unrolling the state gives back the sum over
the whole past. This is the textbook SSM x_{t+1} = A x_t + B u_t, y_t = C x_t + D u_t
with A = diag(λ), B = 1, C = R (taking the real part). A real pole is one real state;
a complex pole stands for a conjugate pair (its residue already counts both members),
so it is two real states held in one complex number.

Three ways to the same outputs: :meth:`ModalRecurrence.forward` (parallel, an FFT
convolution with ĥ, O(T log T)); :meth:`ModalRecurrence.prefill` (a whole prompt and
the final state in one pass); :meth:`ModalRecurrence.step` (one token, O(K) work per
channel however long the context: what makes generation O(1) per token).

Shapes. Time is the LAST axis, as in ``nanotie.nn.functional.fftconv``: ``u`` is
(..., T), the state (..., K); ``poles`` and ``residues`` are (*channel_shape, K) and
``direct`` channel_shape, which broadcasts against u's leading axes: (D,) for Hyena's
u (B, D, T), (M, 1, 1) for MultiHyena's u (B, M, N, N, T) (one filter per head).
"""

from __future__ import annotations

from dataclasses import dataclass

from nanotie.autograd import Tensor
from nanotie.backend import xp_of
from nanotie.nn import functional as F

__all__ = ["mode_powers", "modal_impulse_response", "ModalRecurrence"]

# The prefill materialises powers λ^j for one chunk of time steps at a time; this caps
# that block at about this many complex numbers (16 MiB in complex128).
_PREFILL_BLOCK = 1 << 20


def mode_powers(poles, length: int):
    """λ^0, λ^1, ..., λ^(length-1) for every pole: (..., K) -> (..., K, length).

    A running product (``cumprod``), the same repeated multiplication the recurrence
    does, done in at least complex128 and returned in the poles' dtype. It is much
    faster than ``poles ** arange(length)``, which calls a complex power per entry.
    """
    xp = xp_of(poles)
    wide = xp.result_type(poles.dtype, xp.complex128)
    factors = xp.empty(poles.shape + (max(length, 0),), dtype=wide)
    factors[..., :1] = 1
    factors[..., 1:] = poles.astype(wide)[..., None]
    return xp.cumprod(factors, axis=-1).astype(poles.dtype, copy=False)


def modal_impulse_response(poles, residues, direct, length: int):
    """ĥ_0 = D, ĥ_t = Re Σ_k R_k λ_k^(t-1) for t = 1..length-1.

    poles, residues: (..., K) complex; direct: (...) real. Returns (..., length), real.
    Padding modes (λ = 0, R = 0) contribute nothing, so banks of filters with
    different orders can share one K.
    """
    xp = xp_of(poles)
    powers = mode_powers(xp.asarray(poles), length - 1)           # λ^(t-1): (..., K, L-1)
    tail = xp.real(xp.sum(residues[..., None] * powers, axis=-2))  # (..., L-1)
    head = xp.asarray(direct, dtype=tail.dtype)[..., None]        # (..., 1)
    head = xp.broadcast_to(head, tail.shape[:-1] + (1,))
    return xp.concatenate([head, tail], axis=-1)                   # (..., L)


@dataclass(frozen=True)
class ModalRecurrence:
    """A bank of modal filters ready to run: poles, residues and direct term on one
    device and in one precision (shapes and recurrence: the module docstring)."""

    poles: object      # (*channel_shape, K) complex, |λ| < 1
    residues: object   # (*channel_shape, K) complex
    direct: object     # channel_shape, real: ĥ_0 (plus any skip term folded in)

    @property
    def n_modes(self) -> int:
        """K, the number of complex modes per channel (padding included)."""
        return self.poles.shape[-1]

    def impulse_response(self, length: int):
        """ĥ (*channel_shape, length): the filter this recurrence convolves with."""
        return modal_impulse_response(self.poles, self.residues, self.direct, length)

    # ------------------------------------------------------------------ the state

    def init_state(self, batch_shape):
        """The zero state s_{-1}: (*batch_shape, K) complex, with batch_shape the
        shape of one time step of the input (e.g. (B, D))."""
        xp = xp_of(self.poles)
        return xp.zeros(tuple(batch_shape) + (self.n_modes,), dtype=self.poles.dtype)

    def step(self, u, state):
        """One token: u (*batch_shape) real, state (*batch_shape, K) complex.

            y_t = Re Σ_k R_k s_{t-1,k} + D u_t,      s_t = λ ⊙ s_{t-1} + u_t

        Returns (y_t, s_t). The work is O(K) per channel, independent of t.
        """
        xp = xp_of(u, state)
        y = xp.real(xp.sum(self.residues * state, axis=-1)) + self.direct * u
        state = self.poles * state + u[..., None]
        return y.astype(u.dtype, copy=False), state

    # ------------------------------------------------------------ whole sequences

    def forward(self, u):
        """Parallel form: y = ĥ * u (causal), by FFT. u (..., T) real -> (..., T)."""
        if u.shape[-1] == 0:
            return u.copy()
        h = self.impulse_response(u.shape[-1]).astype(u.dtype, copy=False)  # (*channel, T)
        return F.fftconv(Tensor(u), Tensor(h)).data

    def prefill(self, u, state=None):
        """Run a whole prompt u (..., T) at once: returns (y (..., T), s_{T-1}).

        Both continue from ``state`` = s_{-1} (zeros if None: a fresh sequence). The
        outputs are the convolution of the new inputs (:meth:`forward`) plus what the
        old state still contributes, Re Σ_k R_k λ_k^t s_{-1,k} at step t; the final
        state is

            s_{T-1} = λ^T ⊙ s_{-1} + Σ_{τ<T} λ^(T-1-τ) u_τ

        computed chunk by chunk: for a chunk of c steps, s <- λ^c ⊙ s + V u_chunk with
        V[k, j] = λ_k^(c-1-j), one matrix product per chunk and no loop over tokens.
        """
        xp = xp_of(u)
        T = u.shape[-1]
        y = self.forward(u)
        if state is None:
            state = self.init_state(u.shape[:-1])
        elif state.shape[-1] != self.n_modes:
            raise ValueError(f"prefill: state has {state.shape[-1]} modes, "
                             f"the recurrence has {self.n_modes}")
        else:
            # The past's share of the new outputs: y_t += Re Σ_k R_k λ_k^t s_{-1,k}.
            powers = mode_powers(self.poles, T)                         # (*channel, K, T)
            carried = (self.residues * state)[..., None] * powers       # (..., K, T)
            y = y + xp.real(xp.sum(carried, axis=-2)).astype(y.dtype, copy=False)
        chunk = max(1, min(T, _PREFILL_BLOCK // max(1, self.poles.size)))
        # V: (*channel, chunk, K) with V[..., j, k] = λ_k^(chunk-1-j).
        powers = mode_powers(self.poles, chunk + 1)                     # λ^0..λ^chunk
        V = xp.swapaxes(powers[..., chunk - 1::-1], -1, -2)             # λ^(chunk-1-j)
        u_c = u.astype(self.poles.dtype)                             # complex (..., T)
        for start in range(0, T, chunk):
            c = min(chunk, T - start)
            block = u_c[..., None, start:start + c]                   # (..., 1, c)
            contribution = (block @ V[..., chunk - c:, :])[..., 0, :]  # (..., K)
            state = powers[..., c] * state + contribution
        return y, state
