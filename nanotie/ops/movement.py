"""Movement ops: they rearrange elements without changing any value.

Their backward applies the inverse rearrangement to the gradient: reshape it back,
transpose it back, slice the concatenated gradient apart, crop away the padding.
"""

from __future__ import annotations

import numpy as np

from ..autograd import ShapeError, Tensor, check_same_device, make_result
from ..backend import xp_of
from ._common import normalize_dim, shape_arg


def reshape(a: Tensor, *shape) -> Tensor:
    """The same elements in a new shape (one entry may be -1). Backward: reshape g back."""
    shape = shape_arg(shape)
    try:
        if any(n < -1 for n in shape):             # NumPy would read -2 as -1
            raise ValueError
        out = a.data.reshape(shape)
    except ValueError:
        raise ShapeError(f"reshape: cannot reshape a tensor of shape {a.shape} "
                         f"({a.numel()} elements) into shape {shape}") from None
    src = a.shape
    return make_result("reshape", out, (a,), lambda g: (g.reshape(src),))


def flatten(a: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim`` into one."""
    if a.ndim == 0:
        return reshape(a, 1)
    s = normalize_dim(start_dim, a.ndim, "flatten")
    e = normalize_dim(end_dim, a.ndim, "flatten")
    return reshape(a, a.shape[:s] + (-1,) + a.shape[e + 1:])


def permute(a: Tensor, *dims) -> Tensor:
    """Reorder the axes: output axis i is input axis ``dims[i]``. Backward: the inverse."""
    dims = tuple(normalize_dim(d, a.ndim, "permute") for d in shape_arg(dims))
    if sorted(dims) != list(range(a.ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of the {a.ndim} axes "
                         f"of a tensor of shape {a.shape}")
    inverse = tuple(np.argsort(dims))
    out = a.data.transpose(dims)
    return make_result("permute", out, (a,), lambda g: (g.transpose(inverse),))


def transpose(a: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap two axes. Backward: the same swap (it is its own inverse)."""
    d0 = normalize_dim(dim0, a.ndim, "transpose")
    d1 = normalize_dim(dim1, a.ndim, "transpose")
    out = a.data.swapaxes(d0, d1)
    return make_result("transpose", out, (a,), lambda g: (g.swapaxes(d0, d1),))


def T(a: Tensor) -> Tensor:
    """All axes reversed (the matrix transpose for 2-D tensors)."""
    return permute(a, tuple(reversed(range(a.ndim))))


def unsqueeze(a: Tensor, dim: int) -> Tensor:
    """Insert an axis of size 1 at ``dim``."""
    d = normalize_dim(dim, a.ndim, "unsqueeze", new_axis=True)
    return reshape(a, a.shape[:d] + (1,) + a.shape[d:])


def squeeze(a: Tensor, dim=None) -> Tensor:
    """Drop axes of size 1 (all of them, or just ``dim`` if it has size 1)."""
    if dim is None:
        return reshape(a, tuple(n for n in a.shape if n != 1))
    d = normalize_dim(dim, a.ndim, "squeeze")
    if a.shape[d] != 1:
        return a
    return reshape(a, a.shape[:d] + a.shape[d + 1:])


def expand(a: Tensor, *sizes) -> Tensor:
    """Broadcast size-1 axes (and new leading axes) to ``sizes``; -1 keeps a size.

    The backward is the engine's un-broadcast: the gradient is summed over every
    copy, which is the tying rule again (one element, many uses)."""
    sizes = shape_arg(sizes)
    lead = len(sizes) - a.ndim
    if lead < 0:
        raise ShapeError(f"expand: cannot expand shape {a.shape} to fewer dims {sizes}")
    if -1 in sizes[:lead]:      # a.shape[i - lead] would wrap round to a trailing axis
        raise ShapeError(f"expand: -1 keeps an existing size, but dim {sizes.index(-1)} of "
                         f"{sizes} is a new leading axis for shape {a.shape}")
    target = tuple(a.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes))
    try:
        out = xp_of(a.data).broadcast_to(a.data, target)
    except ValueError:
        raise ShapeError(f"expand: shape {a.shape} cannot be expanded to {target} "
                         "(only size-1 axes can grow)") from None
    return make_result("expand", out, (a,), lambda g: (g,))


def cat(tensors, dim: int = 0) -> Tensor:
    """Join tensors along an existing axis. The gradient is sliced back apart."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    check_same_device("cat", *tensors)
    if len({t.ndim for t in tensors}) > 1:
        shapes = ", ".join(str(t.shape) for t in tensors)
        raise ShapeError(f"cat: all tensors need the same number of dims, got shapes {shapes}")
    d = normalize_dim(dim, tensors[0].ndim, "cat")
    xp = xp_of(tensors[0].data)
    try:
        out = xp.concatenate([t.data for t in tensors], axis=d)
    except ValueError:
        shapes = ", ".join(str(t.shape) for t in tensors)
        raise ShapeError(f"cat: shapes {shapes} differ outside dim {d}") from None
    bounds = np.cumsum([t.shape[d] for t in tensors])[:-1]

    def backward(g):
        return tuple(xp.split(g, bounds, axis=d))

    return make_result("cat", out, tuple(tensors), backward)


def stack(tensors, dim: int = 0) -> Tensor:
    """Join equally shaped tensors along a new axis ``dim``."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    if len({t.shape for t in tensors}) > 1:
        raise ShapeError(f"stack: all tensors need the same shape, got "
                         f"{sorted({t.shape for t in tensors})}")
    d = normalize_dim(dim, tensors[0].ndim, "stack", new_axis=True)
    return cat([unsqueeze(t, d) for t in tensors], dim=d)


def pad(a: Tensor, pad, value: float = 0.0) -> Tensor:
    """Constant padding in PyTorch's order: ``(left, right)`` for the last axis, then
    ``(top, bottom)`` for the one before, and so on. Negative widths crop.
    The backward crops the padding away."""
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > a.ndim:
        raise ValueError(f"pad: expected an even number of widths, at most 2 per axis of a "
                         f"{a.ndim}-D tensor, got {pad}")
    widths = [(0, 0)] * a.ndim
    for i in range(len(pad) // 2):
        widths[a.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    for axis, ((lo, hi), n) in enumerate(zip(widths, a.shape)):
        if n + lo + hi < 0:          # cropping more than the axis holds: not an empty axis
            raise ValueError(f"pad: widths ({lo}, {hi}) on axis {axis} of a tensor of shape "
                             f"{a.shape} would leave {n + lo + hi} entries; negative widths "
                             f"crop, at most what the axis holds")
    x, xp = a.data, xp_of(a.data)
    grow = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]     # then negative widths crop
    out = xp.pad(x, grow, mode="constant", constant_values=value) if any(
        lo or hi for lo, hi in grow) else x
    crop = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(widths, out.shape))
    out, src = out[crop], x.shape

    def backward(g):
        full = xp.zeros(tuple(n + sum(gw) for n, gw in zip(src, grow)), dtype=g.dtype)
        full[crop] = g
        inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(grow, src))
        return (full[inner],)

    return make_result("pad", out, (a,), backward)
