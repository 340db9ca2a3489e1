"""Elementwise primitives: arithmetic, unary functions, comparisons, casts.

Each op computes its output, then hands ``make_result`` a backward closure that maps
the output's gradient ``g`` to one gradient per input, given by the local derivative
in the docstring. Broadcasting is undone by the engine, not here.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..autograd import Tensor, check_same_device, make_result
from ..backend import xp_of
from ._common import broadcast_error, data, operands


def _binary(op, a, b, forward):
    """Run a broadcasting forward and turn NumPy's error into one that names the op."""
    a, b = operands(op, a, b)
    try:
        out = forward(data(a), data(b))
    except ValueError as exc:
        if "broadcast" in str(exc):
            raise broadcast_error(op, a, b) from None
        raise
    return a, b, out


def _needs_grad(x) -> bool:
    return isinstance(x, Tensor) and x.requires_grad


# --------------------------------------------------------------------- arithmetic


def add(a, b) -> Tensor:
    """a + b.  d/da = 1, d/db = 1."""
    a, b, out = _binary("add", a, b, lambda x, y: x + y)
    return make_result("add", out, (a, b), lambda g: (g, g))


def sub(a, b) -> Tensor:
    """a - b.  d/da = 1, d/db = -1."""
    a, b, out = _binary("sub", a, b, lambda x, y: x - y)
    return make_result("sub", out, (a, b), lambda g: (g, -g))


def mul(a, b) -> Tensor:
    """a * b.  d/da = b, d/db = a."""
    a, b, out = _binary("mul", a, b, lambda x, y: x * y)
    x, y = data(a), data(b)
    return make_result("mul", out, (a, b), lambda g: (g * y if _needs_grad(a) else None,
                                                      g * x if _needs_grad(b) else None))


def div(a, b) -> Tensor:
    """a / b.  d/da = 1/b, d/db = -a/b^2."""
    a, b, out = _binary("div", a, b, lambda x, y: x / y)
    if out.dtype.kind == "f" and not any(isinstance(t, Tensor) and t.dtype.kind == "f"
                                         for t in (a, b)):
        out = out.astype("float32")             # int / int is float32, as in PyTorch
    y = data(b)

    def backward(g):
        ga = g / y
        return ga, (-ga * out if _needs_grad(b) else None)      # -g a/b^2 = -(g/b) out

    return make_result("div", out, (a, b), backward)


def pow(a, b) -> Tensor:
    """a ** b.  d/da = b a^(b-1), d/db = a^b log(a) (needs a > 0).

    As in PyTorch, d/da = 0 where b = 0 (a^0 = 1; the formula gives 0 * inf at a = 0),
    and d/db = 0 where a = 0 and b >= 0 (0^b = 0; the formula gives 0 * -inf)."""
    a, b, out = _binary("pow", a, b, lambda x, y: x ** y)
    x, y = data(a), data(b)

    def backward(g):
        ga = gb = None
        xp = xp_of(g)
        if _needs_grad(a):
            if not isinstance(y, (int, float)):
                ga = g * xp.where(y == 0, 0, y * x ** (y - 1))
            elif y == 0:                        # a Python exponent (cupy.where needs an array)
                ga = xp.zeros_like(g)
            else:
                ga = g * 2 * x if y == 2 else g * y * x ** (y - 1)
        if _needs_grad(b):
            # The log of an array in g's dtype, also for a Python base: math.log(0) raises
            # and np.log(2.0) is a float64 that would make a float32 gradient float64.
            with np.errstate(divide="ignore", invalid="ignore"):     # log 0, 0 * -inf:
                log_x = xp.log(xp.asarray(x, dtype=g.dtype))        # masked just below
                gb = g * xp.where((x == 0) & (y >= 0), 0, out * log_x)
        return ga, gb

    return make_result("pow", out, (a, b), backward)


def neg(a: Tensor) -> Tensor:
    """-a.  d/da = -1."""
    return make_result("neg", -a.data, (a,), lambda g: (-g,))


def _select(op, pick):
    def select(a, b) -> Tensor:
        a, b, out = _binary(op, a, b, lambda x, y: pick(xp_of(x, y), x, y))
        x, y = data(a), data(b)

        def backward(g):
            wa, wb = (x == out).astype(g.dtype), (y == out).astype(g.dtype)
            total = wa + wb                       # 2 where a == b, else 1
            return g * wa / total, g * wb / total

        return make_result(op, out, (a, b), backward)

    select.__name__ = select.__qualname__ = op
    select.__doc__ = (f"Elementwise {op}(a, b). The gradient goes to the "
                      f"{'larger' if op == 'maximum' else 'smaller'}; ties split it 1/2, 1/2.")
    return select


maximum = _select("maximum", lambda xp, x, y: xp.maximum(x, y))
minimum = _select("minimum", lambda xp, x, y: xp.minimum(x, y))


def where(condition, a, b) -> Tensor:
    """``a`` where ``condition`` holds, else ``b``.  d/da = cond, d/db = not cond."""
    cond = data(condition)
    a, b = operands("where", a, b)
    check_same_device("where", condition, a, b)   # the condition must live there too
    xp = xp_of(cond, data(a), data(b))
    try:
        out = xp.where(cond, data(a), data(b))
    except ValueError:
        raise broadcast_error("where", condition, a, b) from None

    def backward(g):
        zero = xp.zeros((), dtype=g.dtype)
        return xp.where(cond, g, zero), xp.where(cond, zero, g)

    return make_result("where", out, (a, b), backward)


def clamp(a: Tensor, min=None, max=None) -> Tensor:
    """Clip to [min, max].  d/da = 1 inside the interval (ends included), else 0."""
    if min is None and max is None:
        raise ValueError("clamp: give at least one of min and max")
    x, xp = a.data, xp_of(a.data)
    out = xp.clip(x, min, max).astype(x.dtype, copy=False)

    def backward(g):
        keep = xp.ones(x.shape, dtype=bool)
        if min is not None:
            keep &= x >= min
        if max is not None:
            keep &= x <= max
        return (g * keep,)

    return make_result("clamp", out, (a,), backward)


# ---------------------------------------------------------------- unary functions


def exp(a: Tensor) -> Tensor:
    """e^a.  d/da = e^a (the output itself)."""
    out = xp_of(a.data).exp(a.data)
    return make_result("exp", out, (a,), lambda g: (g * out,))


def log(a: Tensor) -> Tensor:
    """ln a.  d/da = 1/a."""
    x = a.data
    return make_result("log", xp_of(x).log(x), (a,), lambda g: (g / x,))


def sqrt(a: Tensor) -> Tensor:
    """sqrt(a).  d/da = 1 / (2 sqrt(a))."""
    out = xp_of(a.data).sqrt(a.data)
    return make_result("sqrt", out, (a,), lambda g: (g * 0.5 / out,))


def abs(a: Tensor) -> Tensor:
    """|a|.  d/da = sign(a) (0 at 0, like PyTorch)."""
    x, xp = a.data, xp_of(a.data)
    return make_result("abs", xp.abs(x), (a,), lambda g: (g * xp.sign(x),))


def tanh(a: Tensor) -> Tensor:
    """tanh(a).  d/da = 1 - tanh(a)^2."""
    out = xp_of(a.data).tanh(a.data)
    return make_result("tanh", out, (a,), lambda g: (g * (1 - out * out),))


def sigmoid(a: Tensor) -> Tensor:
    """1 / (1 + e^-a), computed as (1 + tanh(a/2)) / 2, which never overflows.
    d/da = s (1 - s)."""
    out = xp_of(a.data).tanh(a.data * 0.5)
    out += 1
    out *= 0.5
    return make_result("sigmoid", out, (a,), lambda g: (g * out * (1 - out),))


def relu(a: Tensor) -> Tensor:
    """max(a, 0).  d/da = 1 where a > 0, else 0."""
    x = a.data
    return make_result("relu", xp_of(x).maximum(x, 0), (a,), lambda g: (g * (x > 0),))


def sin(a: Tensor) -> Tensor:
    """sin(a).  d/da = cos(a)."""
    x, xp = a.data, xp_of(a.data)
    return make_result("sin", xp.sin(x), (a,), lambda g: (g * xp.cos(x),))


def cos(a: Tensor) -> Tensor:
    """cos(a).  d/da = -sin(a)."""
    x, xp = a.data, xp_of(a.data)
    return make_result("cos", xp.cos(x), (a,), lambda g: (-g * xp.sin(x),))


def erf(a: Tensor) -> Tensor:
    """erf(a) = 2/sqrt(pi) * integral_0^a e^(-t^2) dt.  d/da = 2/sqrt(pi) e^(-a^2)."""
    x, xp = a.data, xp_of(a.data)
    out = backend.erf(x).astype(x.dtype, copy=False)
    two_over_sqrt_pi = 2.0 / math.sqrt(math.pi)
    return make_result("erf", out, (a,), lambda g: (g * two_over_sqrt_pi * xp.exp(-x * x),))


# ------------------------------------------------------------ comparisons, casts


def _comparison(op, fn):
    def compare(a, b) -> Tensor:
        """A comparison carries no gradient: its output is a boolean constant."""
        return Tensor(_binary(op, a, b, fn)[2])

    compare.__name__ = compare.__qualname__ = op
    return compare


lt = _comparison("lt", lambda x, y: x < y)
le = _comparison("le", lambda x, y: x <= y)
gt = _comparison("gt", lambda x, y: x > y)
ge = _comparison("ge", lambda x, y: x >= y)
eq = _comparison("eq", lambda x, y: x == y)
ne = _comparison("ne", lambda x, y: x != y)


def cast(a: Tensor, dtype) -> Tensor:
    """The same values in another dtype; the gradient is cast back."""
    if a.dtype == dtype:
        return a
    src, out = a.dtype, a.data.astype(dtype)
    if out.dtype.kind not in "fc":
        return Tensor(out)  # integer/bool results carry no gradient
    return make_result("cast", out, (a,), lambda g: (g.astype(src),))


def to_device(a: Tensor, device: str) -> Tensor:
    """The same values on another device; the gradient travels back."""
    if a.device == device:
        return a
    src, out = a.device, backend.to_device(a.data, device)
    return make_result("to_device", out, (a,), lambda g: (backend.to_device(g, src),))
