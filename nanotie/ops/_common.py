"""Small helpers shared by the op modules: operands, shapes and error messages."""

from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import ShapeError, Tensor, check_same_device

SCALARS = (int, float, bool, np.number, np.bool_)


def data(x):
    """The array (or Python scalar) behind an operand."""
    return x.data if isinstance(x, Tensor) else x


def as_operand(x, like: Tensor):
    """Keep Tensors and Python scalars; wrap arrays and lists as constant Tensors.

    Python scalars stay scalars so that ``x * 2`` costs no array allocation (and on
    the GPU no host-to-device copy); NumPy's promotion rules keep float32 * 2.0
    float32.
    """
    if isinstance(x, Tensor):
        return x
    if isinstance(x, SCALARS):
        return x.item() if isinstance(x, (np.number, np.bool_)) else x
    device = like.device if isinstance(like, Tensor) else None
    return Tensor(backend.to_device(np.asarray(x) if isinstance(x, list) else x,
                                    device or backend.device_of(x)))


def operands(op: str, a, b):
    """Normalise the two operands of a binary op and check their devices."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: expected at least one Tensor, got {type(a).__name__} "
                        f"and {type(b).__name__}")
    like = a if isinstance(a, Tensor) else b
    a, b = as_operand(a, like), as_operand(b, like)
    check_same_device(op, a, b)
    return a, b


def shape_of(x) -> tuple:
    return tuple(x.shape) if hasattr(x, "shape") else ()   # Tensors and raw arrays


def broadcast_error(op: str, *xs) -> ShapeError:
    shapes = " and ".join(str(tuple(shape_of(x))) for x in xs)
    return ShapeError(f"{op}: shapes {shapes} cannot be broadcast together "
                      "(trailing dimensions must be equal or 1)")


def normalize_dims(dim, ndim: int, op: str) -> tuple:
    """``dim`` (None, int or tuple) as a sorted tuple of non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"{op}: dim {d} is out of range for a tensor with {ndim} dims")
        out.append(int(d) % max(ndim, 1))
    if ndim == 0:
        return ()   # like PyTorch, dim 0 or -1 of a 0-d tensor is accepted and reduces nothing
    return tuple(sorted(set(out)))


def normalize_dim(dim: int, ndim: int, op: str, new_axis: bool = False) -> int:
    """``dim`` as a non-negative axis. With ``new_axis`` (unsqueeze, stack) it names
    where to INSERT an axis, so ``ndim`` itself is allowed."""
    n = ndim + 1 if new_axis else ndim
    if not -n <= dim < n:
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dims"
                         + (f" (a new axis goes at {-n}..{n - 1})" if new_axis else ""))
    return dim % n


def parse_to_args(args, kwargs) -> tuple:
    """``(device, dtype)`` from the arguments of ``.to(...)``, as PyTorch reads them:
    a string is a device, anything else a dtype, and both may be given by keyword."""
    kwargs = dict(kwargs)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    if kwargs:
        raise TypeError(f"to(): unexpected arguments {sorted(kwargs)}")
    for a in args:
        if isinstance(a, str):
            device = a
        else:
            dtype = a
    return device, dtype
