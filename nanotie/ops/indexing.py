"""Indexing: ``a[index]`` and the embedding gather.

Reading ``a[index]`` copies some elements of ``a``; the backward writes the gradient
back into a zero array at the same places. When an integer index repeats an element
(``a[[0, 0, 1]]``), that element was used twice, so its gradient must be the SUM of
both uses: a scatter-ADD, not an assignment. An embedding lookup is the same gather
along rows, and a token that appears twice in a batch is exactly this case.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import Tensor, check_same_device, make_result
from ..backend import xp_of


def _index_arrays(index, xp):
    """Replace Tensors (and lists) inside an index by arrays; report whether it uses
    integer arrays, which may repeat positions."""
    items = index if isinstance(index, tuple) else (index,)
    out, advanced = [], False
    for item in items:
        if isinstance(item, Tensor):
            item = item.data
        elif isinstance(item, list):
            item = xp.asarray(item)
        if hasattr(item, "dtype") and not isinstance(item, np.generic) \
                and item.dtype.kind in "iu":
            advanced = True
        out.append(item)
    return (tuple(out) if isinstance(index, tuple) else out[0]), advanced


def getitem(a: Tensor, index) -> Tensor:
    """``a[index]`` with slices, ints, None, Ellipsis, integer arrays (repeats allowed)
    and boolean masks. Backward: g written into zeros at ``index``, repeats ADDED."""
    xp = xp_of(a.data)
    index, advanced = _index_arrays(index, xp)
    try:
        out = a.data[index]
    except IndexError as exc:
        raise IndexError(f"getitem: {exc} (tensor of shape {a.shape})") from None
    shape = a.shape

    def backward(g):
        grad = xp.zeros(shape, dtype=g.dtype)
        if advanced:
            backend.scatter_add(grad, index, g)   # repeated ids: their gradients add
        else:
            grad[index] = g                       # slices and masks never repeat
        return (grad,)

    return make_result("getitem", out, (a,), backward)


def embedding(weight: Tensor, ids) -> Tensor:
    """Rows of ``weight`` (V, D) picked by integer ``ids`` (...,) -> (..., D).

    Backward: dL/dW[v] = sum of dL/dout at every position whose id is v."""
    check_same_device("embedding", weight, ids)
    idx = ids.data if isinstance(ids, Tensor) else xp_of(weight.data).asarray(ids)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got {idx.dtype}")
    vocab, width = weight.shape
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= vocab):
        raise IndexError(f"embedding: ids must lie in [0, {vocab}), got values in "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    out = weight.data[idx]                                   # (..., D)

    def backward(g):
        grad = xp_of(g).zeros((vocab, width), dtype=g.dtype)
        backend.scatter_add(grad, idx.reshape(-1), g.reshape(-1, width))
        return (grad,)

    return make_result("embedding", out, (weight,), backward)
