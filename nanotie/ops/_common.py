"""Small helpers shared by the op modules: operands, dims and error messages."""

from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import ShapeError, Tensor, _to_array, check_same_device


def data(x):
    """The array (or Python scalar) behind an operand."""
    return x.data if isinstance(x, Tensor) else x


def operands(op: str, a, b):
    """The two operands of a binary op, on one device: Tensors stay, arrays and lists
    become constant Tensors, Python and NumPy scalars become Python scalars (no array
    to allocate, and NumPy's promotion keeps float32 * 2.0 float32)."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: expected at least one Tensor, got {type(a).__name__} "
                        f"and {type(b).__name__}")
    like = a if isinstance(a, Tensor) else b

    def operand(x):
        if isinstance(x, (np.number, np.bool_)):    # np.float64 is also a float
            return x.item()
        if isinstance(x, (Tensor, int, float, bool)):
            return x
        if isinstance(x, list):     # as tensor() reads it: Python floats become float32
            return Tensor(_to_array(x, device=like.device))
        return Tensor(backend.to_device(x, like.device))

    a, b = operand(a), operand(b)
    # As in PyTorch, an integer Tensor takes the dtype of the float it meets, and a Python
    # float counts as float32: NumPy would make float32 * int64 (an int list, ids) and
    # ids * 0.5 float64.
    if isinstance(a, Tensor) and a.dtype.kind in "biu" and _float_dtype(b):
        a = Tensor(a.data.astype(_float_dtype(b)))
    elif isinstance(b, Tensor) and b.dtype.kind in "biu" and _float_dtype(a):
        b = Tensor(b.data.astype(_float_dtype(a)))
    check_same_device(op, a, b)
    return a, b


def _float_dtype(x):
    """The float dtype ``x`` gives an integer operand: its own for a float Tensor,
    float32 for a Python float, None otherwise."""
    if isinstance(x, Tensor):
        return x.dtype if x.dtype.kind in "fc" else None
    return np.dtype(np.float32) if isinstance(x, float) else None


def broadcast_error(op: str, *xs) -> ShapeError:
    """The ShapeError for shapes that cannot be broadcast, naming them."""
    shapes = " and ".join(str(tuple(getattr(x, "shape", ()))) for x in xs)
    return ShapeError(f"{op}: shapes {shapes} cannot be broadcast together "
                      "(trailing dimensions must be equal or 1)")


def shape_arg(shape) -> tuple:
    """A shape given as ``*shape`` (``reshape(a, 2, 3)``) or as one tuple or list."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def normalize_dim(dim: int, ndim: int, op: str, new_axis: bool = False) -> int:
    """``dim`` as a non-negative axis. With ``new_axis`` (unsqueeze, stack) it names
    where to INSERT an axis, so ``ndim`` itself is allowed."""
    n = ndim + 1 if new_axis else ndim
    if not -n <= dim < n:
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dims"
                         + (f" (a new axis goes at {-n}..{n - 1})" if new_axis else ""))
    return dim % n


def normalize_dims(dim, ndim: int, op: str) -> tuple:
    """``dim`` (None, int or tuple) as a sorted tuple of non-negative axes. Like
    PyTorch, dim 0 or -1 of a 0-d tensor is accepted and reduces nothing."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    n = max(ndim, 1)
    for d in dims:
        if not -n <= d < n:
            raise IndexError(f"{op}: dim {d} is out of range for a tensor with {ndim} dims")
    return tuple(sorted({int(d) % n for d in dims})) if ndim else ()


def parse_to_args(args, kwargs) -> tuple:
    """``(device, dtype)`` from the arguments of ``.to(...)``, as PyTorch reads them:
    a string is a device, anything else a dtype, and both may be given by keyword."""
    kwargs = dict(kwargs)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    if kwargs:
        raise TypeError(f"to(): unexpected arguments {sorted(kwargs)}")
    for a in args:
        device, dtype = (a, dtype) if isinstance(a, str) else (device, a)
    return device, dtype
