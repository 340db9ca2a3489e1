"""Exercise 1: un-broadcasting a gradient, a SUM over the broadcast axes, which the
engine does for every op (``nanotie.autograd.unbroadcast``); here the learner writes it.
"""

from __future__ import annotations

import numpy as np

from ..autograd import make_result, unbroadcast as engine_unbroadcast
from . import Planted
from .checking import Checker, CheckResult, leaves

TITLE = "Un-broadcasting a gradient"
GOAL = ("Broadcasting copies an input along new leading axes and along axes of size 1. "
        "Each copy is a use, so the input's gradient is the SUM of the upstream gradient "
        "over the copies. Learn which axes to sum, and when to keep them.")
FUNCTION = "unbroadcast"

STUB = '''
import numpy as np


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`: the backward of broadcasting.

    An input x of shape `shape` was broadcast up to grad.shape (in x + y, x * y, ...),
    so each entry of x was used once per copy, and its gradient is the SUM of the
    upstream gradient over the copies. Two rules, in this order:

      1. Broadcasting PREPENDS axes until both shapes have as many dims. Sum those
         leading axes away.                                 (B, T, D) -> (T, D)
      2. An axis where x has size 1 was stretched. Sum over it and keep it, with
         keepdims=True.                                     (T, D) -> (1, D)

    grad:  a NumPy array of the broadcast shape, e.g. (B, T, D)
    shape: x's shape, a tuple, e.g. (1, D), (D,) or ()
    Returns an array of shape `shape` exactly.
    """
    raise NotImplementedError
'''


def reference(grad, shape):
    """The solution: rule 1, then rule 2."""
    shape = tuple(shape)
    while grad.ndim > len(shape):                 # rule 1: added leading axes
        grad = grad.sum(axis=0)
    for axis, n in enumerate(shape):              # rule 2: stretched size-1 axes
        if n == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


# (input shape, broadcast shape): leading axes, size-1 axes, both, a scalar, no-op, and
# two stretched size-1 axes (a loop that stops after the first one shows there)
CASES = [((3,), (4, 3)), ((4, 1), (4, 3)), ((1, 3), (2, 4, 3)), ((2, 1, 3), (2, 5, 3)),
         ((), (2, 3)), ((1,), (3, 1, 2)), ((4, 3), (4, 3)), ((1, 3, 1), (2, 4, 3, 5))]


def _copies(in_shape, out_shape) -> int:
    """How many times broadcasting used each entry of the input."""
    return int(np.prod(out_shape)) // max(int(np.prod(in_shape)), 1)


def check(fn) -> CheckResult:
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(out_shape) for _, out_shape in CASES]
    with Checker(f"Exercise 1: {TITLE}") as c:
        with c.step(f"the result has the input's shape ({len(CASES)} cases)"):
            for (in_shape, out_shape), g in zip(CASES, grads):
                c.case = f"grad of shape {out_shape}, shape={in_shape}"
                got = c.call(fn, g, in_shape, what="unbroadcast(grad, shape)")
                c.expect_shape(got, in_shape, "x", "gradient")
        with c.step("the values are the sums the engine computes"):
            for (in_shape, out_shape), g in zip(CASES, grads):
                c.case = f"grad of shape {out_shape}, shape={in_shape}"
                got = c.call(fn, g, in_shape, what="unbroadcast(grad, shape)")
                c.expect_array(got, engine_unbroadcast(g, in_shape), "x", "gradient",
                               uses=_copies(in_shape, out_shape))
        with c.step("as the backward of broadcasting, it passes nanotie.gradcheck"):
            for in_shape, out_shape in CASES:
                c.case = f"x of shape {in_shape} broadcast to {out_shape}"
                c.expect_gradcheck(_broadcast_op(fn, out_shape),
                                   leaves(rng.standard_normal(in_shape)))
    return c.result


def _broadcast_op(fn, out_shape):
    """x -> x broadcast to out_shape, whose backward is the learner's unbroadcast."""
    def broadcast_to(x):
        out = np.broadcast_to(x.data, out_shape).copy()
        return make_result("broadcast_to", out, (x,), lambda g: (fn(g, x.shape),))
    return broadcast_to


# ------------------------------------------------ wrong answers, for the tests

def _no_leading_sum(grad, shape):
    for axis, n in enumerate(shape):                  # rule 2 only
        if n == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _no_keepdims(grad, shape):
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis)                # drops the axis
    return grad


def _first_size_one_axis_only(grad, shape):
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and grad.shape[axis] != 1:
            return grad.sum(axis=axis, keepdims=True)   # returns inside the loop
    return grad


def _mean_not_sum(grad, shape):
    return reference(grad, shape) / _copies(shape, grad.shape)


MISTAKES = [
    Planted("skips rule 1: leading broadcast axes left unsummed", _no_leading_sum,
            ("leading axes", "SUM")),
    Planted("sums a size-1 axis without keepdims", _no_keepdims, ("keepdims=True",)),
    Planted("sums the first stretched size-1 axis only", _first_size_one_axis_only,
            ("axis 2 has size 1", "keepdims=True")),
    Planted("averages the copies instead of summing them", _mean_not_sum,
            ("averaged", "SUM")),
]
