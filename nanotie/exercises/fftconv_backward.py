"""Exercise 8: the causal FFT convolution and its backward (Hyena's long convolution,
O(L log L) by FFT instead of O(L^2) by the direct sum), checked against the library's
op, ``nanotie.nn.functional.fftconv``.
"""

from __future__ import annotations

import numpy as np

from ..autograd import unbroadcast
from ..nn import functional as F
from . import Planted
from .checking import (Checker, CheckResult, Mistake, engine_reference, learner_op, leaves,
                       wrong_backward)
from .diagnose import explain_causality

TITLE = "Hyena: the causal FFT convolution backward"
GOAL = ("Compute Hyena's long causal convolution by FFT, with the zero padding that stops "
        "the circular wrap-around, and derive its backward: two correlations, IFFT(G * "
        "conj(H)) and IFFT(G * conj(U)), with the filter's gradient summed over the batch.")
FUNCTION = "fftconv"

STUB = '''
import numpy as np

from nanotie.autograd import unbroadcast    # exercise 1: sums a gradient to a shape


def fftconv(u, h):
    """The causal convolution y = h * u along the last axis, by FFT, and its backward.

    u: (..., L)   the signal, e.g. (B, D, L): a batch of D channels
    h: (..., Lh)  the filter, Lh <= L, e.g. (D, L): ONE filter per channel, shared by
                  every batch row (its leading axes broadcast against u's)

        y[..., t] = sum_{s=0}^{t} h[..., s] * u[..., t - s]         (..., L)

    By FFT: U = np.fft.rfft(u, n), H = np.fft.rfft(h, n), y = np.fft.irfft(U * H, n)
    cropped to the first L steps. The product of spectra is a CIRCULAR convolution:
    pad to n >= L + Lh - 1 (rfft(x, n) pads with zeros) or the end of the sequence
    wraps around onto its start, and y[t] sees inputs after t.

    Return (y, backward); backward(g) takes g = dL/dy, shaped like y, and returns
    (grad_u, grad_h), shaped like u and h. From the sum above:

        grad_u[r] = sum_t g[t] h[t - r]   = irfft(G * conj(H), n)[..., :L]
        grad_h[s] = sum_t g[t] u[t - s]   = irfft(G * conj(U), n)[..., :Lh]

    with G = rfft(g, n): correlations, a product with the complex CONJUGATE. h is
    used by every batch row, so grad_h is the SUM over the axes that broadcasting
    added (or stretched from size 1) to reach y's shape: unbroadcast(grad, h.shape).
    """
    y = ...  # your forward

    def backward(g):
        grad_u = ...  # your code
        grad_h = ...  # your code
        return grad_u, grad_h

    return y, backward
'''


def reference(u, h):
    """The solution."""
    L, Lh = u.shape[-1], h.shape[-1]
    n = L + Lh - 1                                        # no wrap-around
    U, H = np.fft.rfft(u, n), np.fft.rfft(h, n)
    y = np.fft.irfft(U * H, n)[..., :L]                   # (..., L)

    def backward(g):
        G = np.fft.rfft(g, n)
        grad_u = np.fft.irfft(G * np.conj(H), n)[..., :L]      # correlation with h
        grad_h = np.fft.irfft(G * np.conj(U), n)[..., :Lh]     # correlation with u
        return unbroadcast(grad_u, u.shape), unbroadcast(grad_h, h.shape)  # sum the batch

    return y, backward


# (u's shape, h's shape): one channel, a batch sharing one filter per channel with a
# shorter filter, and a size-1 channel axis stretched over D channels
CASES = [((9,), (9,)), ((2, 3, 8), (3, 5)), ((2, 3, 7), (1, 7))]


def _wrong_backwards(u, h, g):
    """Gradients of recognised wrong backwards, with what went wrong."""
    L, Lh = u.shape[-1], h.shape[-1]
    n = L + Lh - 1
    U, H, G = np.fft.rfft(u, n), np.fft.rfft(h, n), np.fft.rfft(g, n)
    flip = ("the backward CONVOLVES g with the signal instead of correlating: y[t] uses "
            "u[t - s], so dL/du[r] = sum_t g[t] h[t - r] runs FORWARD in t from r. In "
            "the Fourier domain that is a product with the complex conjugate, G * "
            "conj(H) (not G * H).")
    conv_u = np.fft.irfft(G * H, n)[..., :L]
    conv_h = np.fft.irfft(G * U, n)[..., :Lh]
    circ = ("the backward wraps around: computed with n = L (no zero padding), the "
            "correlation's end comes back onto its start. Pad to n >= L + Lh - 1.")
    circ_u = np.fft.irfft(np.fft.rfft(g, L) * np.conj(np.fft.rfft(h, L)), L)[..., :L]
    circ_h = np.fft.irfft(np.fft.rfft(g, L) * np.conj(np.fft.rfft(u, L)), L)[..., :Lh]
    return {"u": [(unbroadcast(conv_u, u.shape), flip), (unbroadcast(circ_u, u.shape), circ)],
            "h": [(unbroadcast(conv_h, h.shape), flip), (unbroadcast(circ_h, h.shape), circ)]}


def check(fn) -> CheckResult:
    rng = np.random.default_rng(8)
    data = [(rng.standard_normal(su), rng.standard_normal(sh)) for su, sh in CASES]
    with Checker(f"Exercise 8: {TITLE}") as c:
        with c.step("the output has u's shape"):
            for u, h in data:
                c.case = f"u {u.shape}, h {h.shape}"
                y, _ = c.forward(fn, u, h, what="fftconv(u, h)")
                c.expect_shape(y, u.shape, "fftconv(u, h)")
        with c.step("the output at t depends on the inputs 0..t only (causal, no wrap)"):
            for u, h in data:
                c.case = f"u {u.shape}, h {h.shape}"
                msg = explain_causality(
                    lambda v, h=h: c.forward(fn, v, h, what="fftconv(u, h)")[0], u)
                if msg and "not causal" in msg:
                    msg += (" An FFT product is a CIRCULAR convolution: without zero "
                            "padding to n >= L + Lh - 1, the end of the sequence wraps "
                            "around onto its start.")
                if msg:
                    raise Mistake(msg)
        with c.step("the forward equals nanotie.nn.functional.fftconv"):
            for u, h in data:
                c.case = f"u {u.shape}, h {h.shape}"
                y, _ = c.forward(fn, u, h, what="fftconv(u, h)")
                c.expect_array(y, F.fftconv(*leaves(u, h)).data, "fftconv(u, h)")
        with c.step("the backward matches the engine's gradients, dL/du and dL/dh"):
            for u, h in data:
                c.case = f"u {u.shape}, h {h.shape}"
                g = rng.standard_normal(u.shape)
                _, (gu, gh) = engine_reference(F.fftconv, [u, h], g)
                grads = c.gradients(fn, u, h, g=g, what="fftconv(u, h)")
                known = _wrong_backwards(u, h, g)
                c.expect_grads(grads, {"u": gu, "h": gh}, hints={
                    "u": {"known": known["u"]},
                    "h": {"known": known["h"], "uses": u[..., 0].size // h[..., 0].size}})
        with c.step("finite differences agree with your backward (nanotie.gradcheck)"):
            for u, h in data:
                c.case = f"u {u.shape}, h {h.shape}"
                c.expect_gradcheck(learner_op(fn, "fftconv"), leaves(u, h))
    return c.result


# ------------------------------------------------ wrong answers, for the tests

def _no_padding(u, h):
    L = u.shape[-1]
    y = np.fft.irfft(np.fft.rfft(u, L) * np.fft.rfft(h, L), L)       # circular: wraps
    return y, reference(u, h)[1]


def _shifted_output(u, h):
    L, Lh = u.shape[-1], h.shape[-1]
    n = L + Lh
    y = np.fft.irfft(np.fft.rfft(u, n) * np.fft.rfft(h, n), n)[..., 1:L + 1]   # one late
    return y, reference(u, h)[1]


@wrong_backward(reference)
def _grad_h_not_summed(u, h, g, grads):
    n = u.shape[-1] + h.shape[-1] - 1
    grad_h = np.fft.irfft(np.fft.rfft(g, n) * np.conj(np.fft.rfft(u, n)), n)  # (B, D, n)
    return grads[0], grad_h[..., :h.shape[-1]]


@wrong_backward(reference)
def _convolution_in_backward(u, h, g, grads):
    n = u.shape[-1] + h.shape[-1] - 1
    grad_u = np.fft.irfft(np.fft.rfft(g, n) * np.fft.rfft(h, n), n)           # no conj
    return grad_u[..., :u.shape[-1]], grads[1]


MISTAKES = [
    Planted("no zero padding: the circular convolution wraps around", _no_padding,
            ("not causal", "CIRCULAR convolution", "zero padding")),
    Planted("the output cropped one step late: a causal off-by-one", _shifted_output,
            ("one step after it", "off-by-one")),
    Planted("grad_h keeps the batch axis", _grad_h_not_summed, ("leading axes", "SUM")),
    Planted("grad_u convolves instead of correlating (no conj)", _convolution_in_backward,
            ("CONVOLVES", "conj")),
]
