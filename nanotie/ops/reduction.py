"""Reductions: sum, mean, max/min and log-sum-exp over one or more dims.

A reduction's backward broadcasts the output gradient back over the reduced axes:
every input element that contributed to an output gets that output's gradient (sum),
a 1/n share (mean), or all of it if it was the maximum.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor, make_result
from ..backend import xp_of
from ._common import normalize_dims


def _keepdim(g, shape, axes):
    """A reduced array with the reduced axes back, as size 1 (a view)."""
    return g.reshape(tuple(1 if i in axes else n for i, n in enumerate(shape)))


def _dropdim(out, axes, keepdim):
    """A result computed with keepdims=True, without the reduced axes unless kept."""
    return out if keepdim else out.reshape(
        tuple(n for i, n in enumerate(out.shape) if i not in axes))


def sum(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """sum_i a_i over ``dim``.  d/da_i = 1: the gradient is copied to every element."""
    axes, shape = normalize_dims(dim, a.ndim, "sum"), a.shape
    out = a.data.sum(axis=axes, keepdims=keepdim)
    return make_result("sum", out, (a,),
                       lambda g: (xp_of(g).broadcast_to(_keepdim(g, shape, axes), shape),))


def mean(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """(1/n) sum_i a_i over ``dim``.  d/da_i = 1/n."""
    if a.dtype.kind not in "fc":
        raise TypeError(f"mean: needs a floating-point tensor, got {a.dtype}")
    axes, shape = normalize_dims(dim, a.ndim, "mean"), a.shape
    out = a.data.mean(axis=axes, keepdims=keepdim)
    n = a.data.size // max(out.size, 1) if a.data.size else 1

    def backward(g):
        return (xp_of(g).broadcast_to(_keepdim(g * (1.0 / n), shape, axes), shape),)

    return make_result("mean", out, (a,), backward)


def amax(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """max_i a_i over ``dim``. The gradient goes to the maximal elements, split evenly
    between ties (PyTorch's ``amax`` rule)."""
    return _extreme("amax", a, dim, keepdim)


def amin(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """min_i a_i over ``dim``; the gradient rule mirrors :func:`amax`."""
    return _extreme("amin", a, dim, keepdim)


def _extreme(op, a, dim, keepdim):
    axes, x = normalize_dims(dim, a.ndim, op), a.data
    out = x.max(axis=axes, keepdims=True) if op == "amax" else x.min(axis=axes, keepdims=True)

    def backward(g):
        hit = (x == out).astype(g.dtype)                   # 1 at the extreme elements
        hit /= hit.sum(axis=axes, keepdims=True)           # ties share the gradient
        return (_keepdim(g, x.shape, axes) * hit,)

    return make_result(op, _dropdim(out, axes, keepdim), (a,), backward)


def logsumexp(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """log sum_i exp(a_i), computed as m + log sum_i exp(a_i - m) with m = max a.
    d/da_i = softmax(a)_i.

    A slice that is all -inf (a fully masked row) gives -inf, as in PyTorch, and a
    gradient of 0."""
    axes, x, xp = normalize_dims(dim, a.ndim, "logsumexp"), a.data, xp_of(a.data)
    m = x.max(axis=axes, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)     # -inf - (-inf) would be nan; any m is exact
    e = xp.exp(x - m)
    s = e.sum(axis=axes, keepdims=True)
    with np.errstate(divide="ignore"):                     # NumPy warns on log 0
        out = xp.log(s)                                    # log 0 = -inf for such a slice
    out += m                                               # (.., 1, ..) keepdim shape

    def backward(g):
        # softmax * g; an all -inf slice has e = 0 and s = 0: 0, not 0 / 0
        return (e * (_keepdim(g, x.shape, axes) / xp.where(s == 0, 1, s)),)

    return make_result("logsumexp", _dropdim(out, axes, keepdim), (a,), backward)
