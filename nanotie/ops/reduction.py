"""Reductions: sum, mean, max/min and log-sum-exp over one or more dims.

A reduction's backward broadcasts the output gradient back over the reduced axes:
every input element that contributed to an output gets that output's gradient (sum),
a 1/n share (mean), or all of it if it was the maximum.
"""

from __future__ import annotations

from ..autograd import Tensor, make_result
from ..backend import xp_of
from ._common import normalize_dims


def _keepdim_shape(shape, axes) -> tuple:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _expand_back(g, shape, axes, keepdim):
    """Broadcast a reduced gradient back to the input's shape (a read-only view)."""
    if not keepdim:
        g = g.reshape(_keepdim_shape(shape, axes))
    return xp_of(g).broadcast_to(g, shape)


def sum(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """sum_i a_i over ``dim``.  d/da_i = 1: the gradient is copied to every element."""
    axes = normalize_dims(dim, a.ndim, "sum")
    out = a.data.sum(axis=axes, keepdims=keepdim)
    shape = a.shape
    return make_result("sum", out, (a,), lambda g: (_expand_back(g, shape, axes, keepdim),))


def mean(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """(1/n) sum_i a_i over ``dim``.  d/da_i = 1/n."""
    if a.dtype.kind not in "fc":
        raise TypeError(f"mean: needs a floating-point tensor, got {a.dtype}")
    axes = normalize_dims(dim, a.ndim, "mean")
    out = a.data.mean(axis=axes, keepdims=keepdim)
    shape = a.shape
    n = a.data.size // max(out.size, 1) if a.data.size else 1
    return make_result("mean", out, (a,),
                       lambda g: (_expand_back(g * (1.0 / n), shape, axes, keepdim),))


def amax(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """max_i a_i over ``dim``. The gradient goes to the maximal elements, split evenly
    between ties (PyTorch's ``amax`` rule)."""
    return _extreme("amax", a, dim, keepdim)


def amin(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """min_i a_i over ``dim``; the gradient rule mirrors :func:`amax`."""
    return _extreme("amin", a, dim, keepdim)


def _extreme(op, a, dim, keepdim):
    axes = normalize_dims(dim, a.ndim, op)
    x = a.data
    out = x.max(axis=axes, keepdims=True) if op == "amax" else x.min(axis=axes, keepdims=True)

    def backward(g):
        hit = (x == out).astype(g.dtype)                   # 1 at the extreme elements
        hit /= hit.sum(axis=axes, keepdims=True)           # ties share the gradient
        g = g if keepdim else g.reshape(out.shape)
        return (g * hit,)

    return make_result(op, out if keepdim else out.reshape(
        tuple(n for i, n in enumerate(x.shape) if i not in axes)), (a,), backward)


def logsumexp(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """log sum_i exp(a_i), computed as m + log sum_i exp(a_i - m) with m = max a.
    d/da_i = softmax(a)_i."""
    axes = normalize_dims(dim, a.ndim, "logsumexp")
    x = a.data
    xp = xp_of(x)
    m = x.max(axis=axes, keepdims=True)
    e = xp.exp(x - m)
    s = e.sum(axis=axes, keepdims=True)
    out = xp.log(s)
    out += m                                               # (.., 1, ..) keepdim shape

    def backward(g):
        g = g if keepdim else g.reshape(out.shape)
        return (e * (g / s),)                              # softmax * g

    return make_result("logsumexp", out if keepdim else out.reshape(
        tuple(n for i, n in enumerate(x.shape) if i not in axes)), (a,), backward)
