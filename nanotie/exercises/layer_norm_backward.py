"""Exercise 4: the layer_norm backward, checked against
``nanotie.nn.functional.layer_norm``."""

from __future__ import annotations

import numpy as np

from ..autograd import tensor
from ..nn import functional as F
from . import Planted
from .checking import Checker, CheckResult, engine_reference, learner_op, leaves

TITLE = "The layer_norm backward"
GOAL = ("Differentiate through a normalization: the mean and variance depend on x, "
        "which adds two terms to dx; and the shared scale and shift get gradients summed "
        "over all rows.")
FUNCTION = "layer_norm"

STUB = '''
import numpy as np


def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last axis, and its backward.

    x: (..., D);  weight, bias: (D,), shared by every row x[..., :]

    Forward, per row (the mean and variance over the last axis, keepdims=True so they
    broadcast back against x; the variance divides by D, not D - 1):

        mu = mean(x),  var = mean((x - mu)^2),  xhat = (x - mu) / sqrt(var + eps)
        out = xhat * weight + bias

    Return (out, backward); backward(g) takes g = dL/dout (shaped like x) and returns
    (grad_x, grad_weight, grad_bias), shaped like x, weight, bias. Per row, with
    dxhat = g * weight:

        grad_x = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps)

    (the two mean terms come from mu and var, which depend on x too). weight and bias
    are used by every row, so their gradients SUM over all the leading axes:

        grad_weight = sum over rows of g * xhat,   grad_bias = sum over rows of g
    """
    out = ...  # your forward

    def backward(g):
        grad_x = ...  # your code
        grad_weight = ...
        grad_bias = ...
        return grad_x, grad_weight, grad_bias

    return out, backward
'''


def reference(x, weight, bias, eps=1e-5):
    """The solution."""
    mu = x.mean(axis=-1, keepdims=True)                    # (..., 1)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)     # (..., 1), two-pass
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mu) * rstd                                 # (..., D)
    out = xhat * weight + bias

    def backward(g):
        dxhat = g * weight
        grad_x = (dxhat - dxhat.mean(axis=-1, keepdims=True)
                  - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)) * rstd
        rows = (-1, x.shape[-1])                           # all leading axes as one
        grad_weight = (g * xhat).reshape(rows).sum(axis=0)
        grad_bias = g.reshape(rows).sum(axis=0)
        return grad_x, grad_weight, grad_bias

    return out, backward


# x's shapes: a square matrix first (where a mean without keepdims broadcasts silently
# along the wrong axis, and can be named; elsewhere it only fails to broadcast), rows of
# a matrix, and a (B, T, D) batch
SHAPES = [(5, 5), (4, 6), (2, 3, 5)]


def _inputs(rng, shape):
    d = shape[-1]
    x = 2.0 * rng.standard_normal(shape) + 0.5
    return x, 1.0 + 0.5 * rng.standard_normal(d), 0.3 * rng.standard_normal(d)


def _forward_mistakes(x, w, b):
    """Outputs of recognised wrong forwards, with what went wrong."""
    xhat_unbiased = (x - x.mean(-1, keepdims=True)) / np.sqrt(
        x.var(-1, ddof=1, keepdims=True) + 1e-5)
    known = [(xhat_unbiased * w + b, "the variance divides by D - 1; LayerNorm's divides "
                                     "by D (np.var's default, ddof=0).")]
    if x.ndim == 2 and x.shape[0] == x.shape[1]:           # no keepdims: (N,) - as a row
        mu = x.mean(axis=-1)                               # (N,), subtracted as a row
        xhat = (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=-1) + 1e-5)
        known.append((xhat * w + b,
                      "a mean over the last axis lost that axis (no keepdims), so it "
                      "was subtracted along the wrong axis. Use keepdims=True."))
    return known


def _grad_x_mistakes(x, w, b, g):
    """grad_x of recognised wrong backwards, with what went wrong."""
    rstd, dxhat = 1 / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5), g * w
    xhat = (x - x.mean(axis=-1, keepdims=True)) * rstd
    from_mu = dxhat.mean(axis=-1, keepdims=True)
    from_var = xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
    return [(dxhat * rstd,                                             # mu, var held fixed
             "you treated mu and var as constants, but both depend on x: that adds "
             "- mean(dxhat) - xhat * mean(dxhat * xhat)."),
            ((dxhat - from_mu) * rstd, "the variance's term is missing: var depends on x "
                                       "too, which adds - xhat * mean(dxhat * xhat)."),
            ((dxhat - from_var) * rstd, "the mean's term is missing: mu depends on x too, "
                                        "which adds - mean(dxhat)."),
            (reference(x, np.ones_like(w), b)[1](g)[0],
             "the weight is missing: start from dxhat = g * weight.")]


def check(fn) -> CheckResult:
    rng = np.random.default_rng(3)
    cases = [_inputs(rng, s) for s in SHAPES]
    with Checker(f"Exercise 4: {TITLE}") as c:
        with c.step(f"the forward matches nanotie's layer_norm ({len(SHAPES)} shapes)"):
            for x, w, b in cases:
                c.case = f"x {x.shape}, weight and bias ({x.shape[-1]},)"
                out, _ = c.forward(fn, x, w, b, what="layer_norm(x, weight, bias)")
                want = F.layer_norm(tensor(x), (x.shape[-1],), tensor(w), tensor(b)).data
                c.expect_array(out, want, "layer_norm(x, weight, bias)",
                               known=_forward_mistakes(x, w, b))
        with c.step("the backward matches the engine: grad_x, grad_weight, grad_bias"):
            for x, w, b in cases:
                c.case = f"x {x.shape}, weight and bias ({x.shape[-1]},)"
                g = rng.standard_normal(x.shape)
                _, (gx, gw, gb) = engine_reference(
                    lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b), [x, w, b], g)
                grads = c.gradients(fn, x, w, b, g=g, what="layer_norm(x, weight, bias)")
                n_rows = x.size // x.shape[-1]                      # weight's, bias's uses
                c.expect_grads(grads, {"x": gx, "weight": gw, "bias": gb}, hints={
                    "x": {"known": _grad_x_mistakes(x, w, b, g)},
                    "weight": {"uses": n_rows}, "bias": {"uses": n_rows}})
        with c.step("the eps argument is used: the forward with eps=0.1"):
            x, w, b = cases[1]
            c.case = f"x {x.shape}, weight and bias ({x.shape[-1]},), eps=0.1"
            out, _ = c.forward(fn, x, w, b, eps=0.1, what="layer_norm(x, weight, bias)")
            want = F.layer_norm(tensor(x), (x.shape[-1],), tensor(w), tensor(b), 0.1).data
            c.expect_array(out, want, "layer_norm(x, weight, bias)", known=[(
                reference(x, w, b)[0], "it uses eps = 1e-5, but this call passes eps=0.1: use "
                                       "the eps argument.")])
        with c.step("finite differences agree with your backward (nanotie.gradcheck)"):
            for x, w, b in cases[1:]:
                c.case = f"x {x.shape}, weight and bias ({x.shape[-1]},)"
                c.expect_gradcheck(learner_op(fn, "layer_norm"), leaves(x, w, b))
    return c.result


# ------------------------------------------------ wrong answers, for the tests

def _weight_grad_per_row(x, weight, bias, eps=1e-5):
    out, backward = reference(x, weight, bias, eps)
    xhat = (out - bias) / weight
    return out, lambda g: (backward(g)[0], g * xhat, backward(g)[2])   # not summed over rows


def _constant_statistics(x, weight, bias, eps=1e-5):
    out, backward = reference(x, weight, bias, eps)
    var = x.var(axis=-1, keepdims=True)
    return out, lambda g: (g * weight / np.sqrt(var + eps), *backward(g)[1:])  # mu, var fixed


def _mean_without_keepdims(x, weight, bias, eps=1e-5):
    mu = x.mean(axis=-1)                                   # (...,): the axis is gone
    var = ((x - mu) ** 2).mean(axis=-1)
    xhat = (x - mu) / np.sqrt(var + eps)
    return xhat * weight + bias, reference(x, weight, bias, eps)[1]


def _eps_ignored(x, weight, bias, eps=1e-5):
    return reference(x, weight, bias)                     # always 1e-5


MISTAKES = [
    Planted("eps ignored: always 1e-5", _eps_ignored, ("passes eps=0.1", "eps argument")),
    Planted("grad_weight left per row (not summed over the batch)", _weight_grad_per_row,
            ("leading axes", "SUM")),
    Planted("grad_x treats the mean and variance as constants", _constant_statistics,
            ("constants", "depend on x")),
    Planted("the mean without keepdims", _mean_without_keepdims,
            ("subtracted along the wrong axis", "keepdims=True")),
]
