"""Exercise 9: one step of the modal recurrence (Hyena distillation), O(K) per token
instead of a convolution over the whole past (s_{t-1} = sum_{j>=1} lambda^(j-1) u_{t-j}).
The check compares the learner's step over a sequence with ``ModalRecurrence``
(``nanotie.papers.distillery.recurrence``) and the FFT convolution.
"""

from __future__ import annotations

import numpy as np

from ..papers.distillery.recurrence import ModalRecurrence, modal_impulse_response
from . import Planted
from .checking import Checker, CheckResult, Mistake, written
from .diagnose import close, worst_index

TITLE = "Hyena distillation: one modal step"
GOAL = ("Run a distilled long-convolution filter as a recurrence: read the complex state "
        "for the output (real part, plus the direct term), then update it, and see the "
        "token-by-token outputs equal the FFT convolution with the filter's impulse "
        "response.")
FUNCTION = "modal_step"

STUB = '''
import numpy as np


def modal_step(u_t, state, poles, residues, direct):
    """One token of the modal recurrence: returns (y_t, new_state).

    u_t:      (C,) real, this token's input, one number per channel
    state:    (C, K) complex, s_{t-1} (zeros before the first token)
    poles:    (C, K) complex, lambda_k, |lambda_k| < 1
    residues: (C, K) complex, R_k
    direct:   (C,) real, D (the filter's h_0)

    In this order (the output reads the state BEFORE this token's update):

        y_t = Re( sum_k R_k s_{t-1,k} ) + D u_t        (C,)    real
        s_t = lambda * s_{t-1} + u_t                   (C, K)  complex

    Keep the state complex: only y_t is real (np.real of the sum over k, axis=-1).
    u_t[..., None] broadcasts the input over the K modes.

    It must also run a batch of B sequences: u_t (B, C), state (B, C, K) complex,
    returning y_t (B, C) and the state (B, C, K). Index from the end (axis=-1,
    u_t[..., None], not u_t[:, None]) and the same code does both.
    Run over u_0, u_1, ... from a zero state, the outputs equal the causal
    convolution of u with h_0 = D, h_t = Re sum_k R_k lambda_k^(t-1).
    """
    y_t = ...        # your code
    new_state = ...  # your code
    return y_t, new_state
'''


def reference(u_t, state, poles, residues, direct):
    """The solution."""
    y_t = np.real(np.sum(residues * state, axis=-1)) + direct * u_t   # read s_{t-1}
    new_state = poles * state + u_t[..., None]                        # then update
    return y_t, new_state


def _system(rng, channels: int, modes: int):
    """Random stable poles (|lambda| in [0.5, 0.95]), residues, direct terms."""
    shape = (channels, modes)
    poles = rng.uniform(0.5, 0.95, shape) * np.exp(1j * rng.uniform(0.2, 2.5, shape))
    residues = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return poles, residues, rng.standard_normal(channels)


def _array(got, shape, name, complex_ok: bool) -> np.ndarray:
    """The learner's ``got`` as an array of ``shape`` (complex allowed if complex_ok)."""
    arr = np.asarray(written(got, f"`{name}`", f"Return an array of shape {shape}."))
    if arr.dtype.kind not in "biufc":
        raise Mistake(f"`{name}` is a {type(got).__name__}, not an array of numbers.")
    if arr.shape != tuple(shape):
        hint = (" Sum over the modes (axis=-1) for the output." if name == "y_t" else
                " Broadcast u_t over the modes with u_t[..., None].")
        raise Mistake(f"`{name}` has shape {arr.shape}, but it should have shape "
                      f"{tuple(shape)}.{hint}")
    if complex_ok:
        return arr.astype(np.complex128)
    if np.iscomplexobj(arr) and not np.allclose(arr.imag, 0):
        raise Mistake(f"`{name}` is complex, but the output is real: take np.real of "
                      f"the sum over the modes.")
    return arr.real.astype(np.float64)


def _expect(y, want, name: str, known=(), after: str = "") -> None:
    """A :class:`Mistake` saying how ``y`` (complex allowed) differs from ``want``,
    naming a recognised wrong answer of ``known``; ``after`` is added to the message."""
    if close(y, want):
        return
    for wrong, why in known:
        if close(y, wrong):
            raise Mistake(f"`{name}` is wrong: {why}")
    i = worst_index(y, want)
    raise Mistake(f"`{name}` is wrong: at index {i} it is {y[i]:.6g}, the correct value "
                  f"is {want[i]:.6g}." + after)


def _wrong_outputs(u_t, state, poles, residues, direct):
    """Outputs of recognised wrong steps, with what went wrong."""
    after = poles * state + u_t[..., None]
    return [
        (np.real(np.sum(residues * after, axis=-1)) + direct * u_t,
         "it reads the state AFTER this token's update, an off-by-one in time: y_t "
         "uses s_{t-1} (the past only) and D u_t for the present. Compute y_t first, "
         "then the new state."),
        (np.real(np.sum(residues * after, axis=-1)),
         "it reads the state AFTER this token's update (an off-by-one in time: y_t "
         "uses s_{t-1}) and misses the direct term D u_t."),
        (np.real(np.sum(residues * state, axis=-1)),
         "the direct term D u_t is missing: h_0 = D is the filter's weight on the "
         "present input, which the state (the past) does not hold."),
        (np.sum(residues.real * state.real, axis=-1) + direct * u_t,
         "it multiplies the real parts, Re(R) Re(s), but Re(R s) = Re(R) Re(s) - "
         "Im(R) Im(s): take the real part AFTER the complex product."),
    ]


def _wrong_states(u_t, state, poles):
    right = poles * state + u_t[..., None]
    return [
        (np.real(right), "the new state is real: the real part was taken too early. "
                         "The state must stay complex (a complex pole rotates it); only "
                         "the output y_t takes np.real."),
        (poles * state, "the input u_t is not added to the state."),
        (poles * (state + u_t[..., None]), "u_t is multiplied by lambda: s_t = lambda "
                                           "s_{t-1} + u_t adds the input after the "
                                           "decay, with weight 1."),
    ]


def _step(c, fn, u_t, state, poles, residues, direct):
    """The learner's (y_t, new_state), of the right shapes and kinds."""
    what = "modal_step(u_t, state, poles, residues, direct)"
    y, s = c.returns(fn, u_t, state, poles, residues, direct, what=what,
                     names="y_t, new_state")
    return (_array(y, u_t.shape, "y_t", complex_ok=False),
            _array(s, state.shape, "new_state", complex_ok=True))


def check(fn) -> CheckResult:
    rng = np.random.default_rng(9)
    poles, residues, direct = _system(rng, 3, 2)
    state = rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2))
    u_t = rng.standard_normal(3)
    u = rng.standard_normal((3, 12))
    u_batch = rng.standard_normal((4, 3))
    state_batch = rng.standard_normal((4, 3, 2)) + 1j * rng.standard_normal((4, 3, 2))
    rec = ModalRecurrence(poles, residues, direct)
    with Checker(f"Exercise 9: {TITLE}") as c:
        with c.step("one step from a nonzero state: y_t and s_t as ModalRecurrence.step"):
            c.case = "C = 3 channels, K = 2 complex modes, a random complex state"
            want_y, want_s = rec.step(u_t, state)
            y, s = _step(c, fn, u_t, state, poles, residues, direct)
            _expect(y, want_y, "y_t", _wrong_outputs(u_t, state, poles, residues, direct))
            _expect(s, want_s, "new_state", _wrong_states(u_t, state, poles))
        with c.step("token by token from s = 0, the outputs equal the FFT convolution "
                    "with the impulse response"):
            c.case = f"u of shape {u.shape} (C, T), 2 modes per channel"
            final, ys = np.zeros(poles.shape, dtype=np.complex128), []    # s_{-1} = 0
            for t in range(u.shape[1]):
                y, final = _step(c, fn, u[:, t], final, poles, residues, direct)
                ys.append(y)
            h = modal_impulse_response(poles, residues, direct, u.shape[-1])
            _expect(np.stack(ys, axis=-1), rec.forward(u), "the outputs y", after=(
                f"\nThe filter is h_0 = D, h_t = Re sum_k R_k lambda_k^(t-1); here "
                f"h[0, :4] = {np.round(h[0, :4], 4)}."))
            _expect(final, rec.prefill(u)[1], "the final state")
        with c.step("a batch, u_t (B, C) and state (B, C, K): as ModalRecurrence.step"):
            c.case = f"B = 4 sequences: u_t {u_batch.shape}, state {state_batch.shape}"
            want_y, want_s = rec.step(u_batch, state_batch)
            try:
                y, s = _step(c, fn, u_batch, state_batch, poles, residues, direct)
            except Mistake as m:
                raise Mistake(f"{m}\nOne sequence works, a batch does not: count the axes "
                              f"from the end (u_t[..., None], axis=-1), not from the "
                              f"front (u_t[:, None]).") from None
            _expect(y, want_y, "y_t", _wrong_outputs(u_batch, state_batch, poles, residues,
                                                      direct))
            _expect(s, want_s, "new_state", _wrong_states(u_batch, state_batch, poles))
    return c.result


# ------------------------------------------------ wrong answers, for the tests

def _real_state(u_t, state, poles, residues, direct):
    y_t, new_state = reference(u_t, state, poles, residues, direct)
    return y_t, np.real(new_state)                                   # too early


def _read_after_update(u_t, state, poles, residues, direct):
    _, new_state = reference(u_t, state, poles, residues, direct)
    return reference(u_t, new_state, poles, residues, direct)[0], new_state


def _no_direct_term(u_t, state, poles, residues, direct):
    return reference(u_t, state, poles, residues, 0 * direct)


def _new_axis_in_front(u_t, state, poles, residues, direct):
    y_t, _ = reference(u_t, state, poles, residues, direct)
    return y_t, poles * state + u_t[:, None]          # right for u_t (C,) only


MISTAKES = [
    Planted("np.real on the state: the real part taken too early", _real_state,
            ("real part was taken too early",)),
    Planted("the output reads the state after the update", _read_after_update,
            ("AFTER", "off-by-one in time")),
    Planted("y_t without D u_t", _no_direct_term, ("direct term", "missing")),
    Planted("u_t[:, None]: a batch fails", _new_axis_in_front,
            ("a batch does not", "u_t[..., None]")),
]
