"""One table of ops, shared by the table-driven tests (minitorch's style).

Each :class:`Case` says

* how to call the op: ``fn(lib, *args)``, written so that the SAME function runs with
  ``lib = nanotie`` and ``lib = torch`` (both spell the functions ``lib.exp``,
  ``lib.nn.functional.softmax``, ...). Where the two APIs differ, ``torch_fn`` gives
  PyTorch's spelling of the same computation;
* what goes in: one :class:`Arg` per input, with its shape and a sampler that keeps
  the input away from the op's kinks (positive for ``log``, no ties for ``amax``, ...).
  Integer ids, targets and boolean masks are constants (``grad=False``);
* what should come out: ``ref``, a NumPy float64 formula for the forward value.

The tests that read the table:

* ``test_ops.py``: central-difference gradcheck, forward against ``ref``, float32
  stays float32;
* ``test_torch_oracle.py``: values and gradients against PyTorch;
* ``test_devices.py``: float32 (on the CPU, and on a GPU when there is one) against
  the float64 results.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

# ---------------------------------------------------------------------- samplers
# A sampler maps (rng, shape) to a float64 array. Gradient checks differentiate by
# central differences, so values must keep clear of points where the op has a kink
# (|x| at 0, max(a, b) where a == b) or is undefined (log x at x <= 0).


def normal(scale: float = 1.0):
    """Standard normal values times ``scale``."""
    return lambda rng, shape: scale * rng.standard_normal(shape)


def uniform(low: float, high: float):
    """Uniform values in [low, high)."""
    return lambda rng, shape: rng.uniform(low, high, shape)


def positive(low: float = 0.5, high: float = 2.0):
    """Values well inside (0, inf): for log, sqrt, division and the base of a power."""
    return uniform(low, high)


def away_from(*kinks: float, margin: float = 0.15, scale: float = 1.0):
    """Normal values pushed at least ``margin`` away from each kink."""

    def sample(rng, shape):
        x = scale * rng.standard_normal(shape)
        for k in kinks:
            d = x - k
            near = np.abs(d) < margin
            x[near] = k + np.where(d[near] >= 0, margin, -margin) + d[near]
        return x

    return sample


def on_grid(offset: float):
    """An integer in [-2, 2], plus ``offset``, plus jitter in (-0.15, 0.15).

    Two inputs drawn with offsets 0 and 0.5 never come closer than 0.2, so
    ``maximum(a, b)`` has no ties, whatever broadcasting pairs them up.
    """
    return lambda rng, shape: (rng.integers(-2, 3, shape) + offset
                               + rng.uniform(-0.15, 0.15, shape))


def distinct(rng, shape):
    """A shuffled ladder of values at least 0.08 apart: no ties for amax/amin."""
    n = int(np.prod(shape, dtype=int))
    ladder = rng.permutation(n) + rng.uniform(-0.3, 0.3, n)
    return (0.2 * (ladder - n / 2)).reshape(shape)


def coin(rng, shape):
    """A boolean mask that holds at least one True and one False."""
    mask = rng.random(shape) < 0.5
    mask.flat[0], mask.flat[-1] = True, False
    return mask


# ------------------------------------------------------------------- the records


@dataclass(frozen=True)
class Arg:
    """One input of an op: its shape, how to draw it, and whether it gets a gradient."""

    shape: tuple
    sample: Callable = normal()
    grad: bool = True


def arg(*shape, sample=None) -> Arg:
    """A differentiable float input, ``arg(3, 4)`` or ``arg(3, 4, sample=positive())``."""
    return Arg(tuple(shape), sample or normal())


def const(values, dtype=np.int64) -> Arg:
    """A constant input with fixed values (ids, targets, masks): no gradient."""
    array = np.asarray(values, dtype=dtype)
    return Arg(array.shape, lambda rng, shape: array.copy(), grad=False)


def mask(*shape) -> Arg:
    """A random boolean mask input (no gradient)."""
    return Arg(tuple(shape), coin, grad=False)


@dataclass(frozen=True)
class Case:
    """One row of the table: a name, ``fn(lib, *args)``, one :class:`Arg` per input, the
    NumPy formula ``ref(*arrays)``, and PyTorch's spelling where it differs."""

    name: str
    fn: Callable
    args: tuple
    ref: Callable
    torch_fn: Callable | None = None

    def sample(self) -> list:
        """The inputs as NumPy arrays, the same on every call (seeded by the name)."""
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        return [np.asarray(a.sample(rng, a.shape)) for a in self.args]

    def upstream(self, shape) -> np.ndarray:
        """A random upstream gradient dL/dout of the output's shape. A random one
        (rather than all ones) exposes transposed or permuted gradients."""
        rng = np.random.default_rng(zlib.crc32(self.name.encode()) + 1)
        return rng.standard_normal(shape)

    def __repr__(self) -> str:
        return self.name


def case(name, fn, args, ref, torch_fn=None) -> Case:
    """A row of the table (``args`` may be a list)."""
    return Case(name, fn, tuple(args), ref, torch_fn)


def run_nanotie(c: Case, arrays, dtype=np.float64, device: str = "cpu",
                upstream=None):
    """Run ``c`` through nanotie: inputs cast to ``dtype`` on ``device``, forward, then
    backward with ``upstream`` (default: ``c.upstream``). Returns the output tensor and
    the list of differentiable input tensors, whose ``.grad`` is now filled."""
    import nanotie

    tensors = []
    for spec, a in zip(c.args, arrays):
        if spec.grad:
            tensors.append(nanotie.tensor(a, dtype=dtype, device=device, requires_grad=True))
        else:
            tensors.append(nanotie.tensor(a, device=device))
    out = c.fn(nanotie, *tensors)
    w = c.upstream(out.shape) if upstream is None else upstream
    out.backward(nanotie.tensor(w, dtype=dtype, device=device))
    return out, [t for spec, t in zip(c.args, tensors) if spec.grad]


def F(lib):
    """``lib.nn.functional``: nanotie's and PyTorch's share the names used here."""
    return lib.nn.functional


# ------------------------------------------------------- NumPy reference formulas


erf_ref = np.vectorize(math.erf, otypes=[np.float64])


def logsumexp_ref(x, axis=None, keepdims=False):
    m = x.max(axis=axis, keepdims=True)
    out = m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))
    return out if keepdims else out.squeeze(axis=axis)


def softmax_ref(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attention_ref(q, k, v, mask=None, scale=None):
    """softmax(q k^T * scale + mask) v, with an additive float mask."""
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = scale * q @ np.swapaxes(k, -1, -2)
    return softmax_ref(s if mask is None else s + mask, -1) @ v


def causal_mask_ref(n_q, n_k):
    """0 where query i may see key j (j <= i), -inf above the diagonal."""
    return np.where(np.tril(np.ones((n_q, n_k), dtype=bool)), 0.0, -np.inf)


def cross_entropy_ref(z, t, reduction="mean", ignore_index=-100):
    """-log softmax(z)[t] per position (class axis last); ignored positions drop out."""
    logp = z - logsumexp_ref(z, axis=-1, keepdims=True)
    keep = t != ignore_index
    picked = np.take_along_axis(logp, np.where(keep, t, 0)[..., None], axis=-1)[..., 0]
    losses = np.where(keep, -picked, 0.0)
    if reduction == "none":
        return losses
    return losses.sum() / (keep.sum() if reduction == "mean" else 1)


def gelu_ref(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + erf_ref(x / math.sqrt(2)))


def layer_norm_ref(x, n_dims, w=None, b=None, eps=1e-5):
    axes = tuple(range(-n_dims, 0))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    y = y * w if w is not None else y
    return y + b if b is not None else y


def rms_norm_ref(x, n_dims, w=None, eps=1e-6):
    axes = tuple(range(-n_dims, 0))
    y = x / np.sqrt((x ** 2).mean(axis=axes, keepdims=True) + eps)
    return y * w if w is not None else y


def gather_rows_ref(w, ids):
    """out[i, j] = w[ids[i, j]], row by row."""
    return np.array([[w[v] for v in row] for row in ids])


def causal_conv_ref(u, h):
    """y[..., t] = sum_{s <= t} h[..., s] u[..., t - s], by the direct sum."""
    L = u.shape[-1]
    y = np.zeros(np.broadcast_shapes(u.shape, h.shape[:-1] + (L,)))
    for s in range(min(L, h.shape[-1])):
        y[..., s:] += h[..., s:s + 1] * u[..., :L - s]
    return y


# ---------------------------------------------- PyTorch's spellings, where they differ


def causal_conv_direct(lib, u, h):
    """The same convolution as ``fftconv``, by shifting u right s steps (pad s on the
    left, crop s on the right) and summing; PyTorch has no fftconv."""
    L, Lh = u.shape[-1], h.shape[-1]
    return sum(h[..., s:s + 1] * F(lib).pad(u, (s, -s)) for s in range(min(L, Lh)))


def cross_entropy_class_axis_1(lib, z, t, reduction="mean"):
    """PyTorch wants the class axis at 1 for (N, T, C) logits: move it there."""
    return F(lib).cross_entropy(z.permute(0, 2, 1), t, reduction=reduction)


# ---------------------------------------------------------------------- the table

_KINK_FREE = away_from(0.0)
_CE_TARGET = const([1, -100, 3, 0, 3])            # one ignored position, class 3 twice
_CE_TARGET_3D = const([[2, 0, -100], [1, 1, 3]])

CASES = [
    # --------------------------------------------------------------- arithmetic
    case("add_broadcast", lambda lib, a, b: a + b, [arg(3, 1, 4), arg(2, 4)],
         lambda a, b: a + b),
    case("add_size1_both", lambda lib, a, b: a + b, [arg(3, 1), arg(1, 4)],
         lambda a, b: a + b),
    case("add_scalar_right", lambda lib, x: x + 2.5, [arg(3, 4)], lambda x: x + 2.5),
    case("add_scalar_left", lambda lib, x: 2.5 + x, [arg(3, 4)], lambda x: 2.5 + x),
    case("sub_size1", lambda lib, a, b: a - b, [arg(1, 4), arg(3, 1)], lambda a, b: a - b),
    case("sub_scalar_right", lambda lib, x: x - 1.5, [arg(3, 4)], lambda x: x - 1.5),
    case("sub_scalar_left", lambda lib, x: 1.5 - x, [arg(3, 4)], lambda x: 1.5 - x),
    case("mul_broadcast", lambda lib, a, b: a * b, [arg(2, 3), arg(3)], lambda a, b: a * b),
    case("mul_scalar_left", lambda lib, x: 3.0 * x, [arg(3, 4)], lambda x: 3.0 * x),
    case("mul_0d_tensor", lambda lib, a, b: a * b, [arg(3, 4), arg()], lambda a, b: a * b),
    case("mul_same_tensor_twice", lambda lib, x: x * x, [arg(3, 4)], lambda x: x * x),
    case("div_broadcast", lambda lib, a, b: a / b, [arg(3, 4), arg(3, 1, sample=positive())],
         lambda a, b: a / b),
    case("div_scalar_right", lambda lib, x: x / 4.0, [arg(3, 4)], lambda x: x / 4.0),
    case("div_scalar_left", lambda lib, x: 2.0 / x, [arg(3, 4, sample=positive())],
         lambda x: 2.0 / x),
    case("pow_2", lambda lib, x: x ** 2, [arg(3, 4)], lambda x: x * x),
    case("pow_3", lambda lib, x: x ** 3, [arg(3, 4)], lambda x: x * x * x),
    case("pow_half", lambda lib, x: x ** 0.5, [arg(3, 4, sample=positive())], np.sqrt),
    case("pow_negative", lambda lib, x: x ** -1.5, [arg(3, 4, sample=positive())],
         lambda x: 1.0 / (x * np.sqrt(x))),
    case("pow_scalar_base", lambda lib, x: 2.0 ** x, [arg(3, 4)],
         lambda x: np.exp(x * math.log(2.0))),
    case("pow_tensor_tensor", lambda lib, a, b: a ** b,
         [arg(3, 4, sample=positive()), arg(4)], lambda a, b: np.exp(b * np.log(a))),
    case("neg", lambda lib, x: -x, [arg(3, 4)], lambda x: -x),
    # ---------------------------------------------------------- unary functions
    case("exp", lambda lib, x: lib.exp(x), [arg(3, 4)], np.exp),
    case("log", lambda lib, x: lib.log(x), [arg(3, 4, sample=positive(0.2, 3.0))], np.log),
    case("sqrt", lambda lib, x: x.sqrt(), [arg(3, 4, sample=positive())], np.sqrt),
    case("abs", lambda lib, x: lib.abs(x), [arg(3, 4, sample=_KINK_FREE)], np.abs),
    case("tanh", lambda lib, x: lib.tanh(x), [arg(3, 4)], np.tanh),
    case("sigmoid", lambda lib, x: lib.sigmoid(x), [arg(3, 4, sample=normal(3.0))],
         lambda x: 1.0 / (1.0 + np.exp(-x))),
    case("relu", lambda lib, x: lib.relu(x), [arg(3, 4, sample=_KINK_FREE)],
         lambda x: np.where(x > 0, x, 0.0)),
    case("sin", lambda lib, x: lib.sin(x), [arg(3, 4, sample=normal(2.0))], np.sin),
    case("cos", lambda lib, x: x.cos(), [arg(3, 4, sample=normal(2.0))], np.cos),
    case("erf", lambda lib, x: lib.erf(x), [arg(3, 4)], erf_ref),
    case("maximum_broadcast", lambda lib, a, b: lib.maximum(a, b),
         [arg(3, 4, sample=on_grid(0.0)), arg(4, sample=on_grid(0.5))],
         lambda a, b: np.where(a > b, a, b)),
    # torch.maximum takes two tensors; clamp(min=) is its spelling for a scalar.
    case("maximum_scalar", lambda lib, x: lib.maximum(x, 0.3),
         [arg(3, 4, sample=away_from(0.3))], lambda x: np.where(x > 0.3, x, 0.3),
         torch_fn=lambda lib, x: lib.clamp(x, min=0.3)),
    case("minimum", lambda lib, a, b: lib.minimum(a, b),
         [arg(2, 3, sample=on_grid(0.5)), arg(2, 3, sample=on_grid(0.0))],
         lambda a, b: np.where(a < b, a, b)),
    case("where_broadcast", lambda lib, c, a, b: lib.where(c, a, b),
         [mask(3, 4), arg(3, 4), arg(4)], lambda c, a, b: np.where(c, a, b)),
    case("where_broadcast_condition", lambda lib, c, a: lib.where(c, a, 0.0),
         [mask(4), arg(3, 4)], lambda c, a: np.where(c, a, 0.0)),
    case("where_from_comparison", lambda lib, x: lib.where(x > 0, x, 0.1 * x),
         [arg(3, 4, sample=_KINK_FREE)], lambda x: np.where(x > 0, x, 0.1 * x)),
    case("clamp_both", lambda lib, x: x.clamp(min=-0.5, max=0.5),
         [arg(3, 4, sample=away_from(-0.5, 0.5))], lambda x: np.minimum(np.maximum(x, -0.5), 0.5)),
    case("clamp_min", lambda lib, x: lib.clamp(x, min=-0.3),
         [arg(3, 4, sample=away_from(-0.3))], lambda x: np.maximum(x, -0.3)),
    case("clamp_max", lambda lib, x: x.clamp(max=0.2),
         [arg(3, 4, sample=away_from(0.2))], lambda x: np.minimum(x, 0.2)),
    # -------------------------------------------------------------- reductions
    case("sum_all", lambda lib, x: x.sum(), [arg(2, 3, 4)], lambda x: x.sum()),
    case("sum_dim", lambda lib, x: x.sum(dim=1), [arg(2, 3, 4)], lambda x: x.sum(axis=1)),
    case("sum_dim_negative_keepdim", lambda lib, x: x.sum(dim=-1, keepdim=True),
         [arg(2, 3, 4)], lambda x: x.sum(axis=-1, keepdims=True)),
    case("sum_tuple", lambda lib, x: x.sum(dim=(0, 2)), [arg(2, 3, 4)],
         lambda x: x.sum(axis=(0, 2))),
    case("sum_tuple_keepdim", lambda lib, x: lib.sum(x, dim=(0, 2), keepdim=True),
         [arg(2, 3, 4)], lambda x: x.sum(axis=(0, 2), keepdims=True)),
    case("sum_none_keepdim", lambda lib, x: x.sum(dim=None, keepdim=True), [arg(2, 3, 4)],
         lambda x: x.sum(keepdims=True)),
    # PyTorch accepts dim 0 of a 0-d tensor; reducing over it changes nothing.
    case("sum_0d_dim0", lambda lib, x: x.sum(dim=0), [arg()], lambda x: x),
    case("mean_all", lambda lib, x: x.mean(), [arg(2, 3, 4)], lambda x: x.mean()),
    case("mean_dim", lambda lib, x: x.mean(dim=0), [arg(2, 3, 4)], lambda x: x.mean(axis=0)),
    case("mean_tuple_keepdim", lambda lib, x: x.mean(dim=(1, 2), keepdim=True),
         [arg(2, 3, 4)], lambda x: x.mean(axis=(1, 2), keepdims=True)),
    case("mean_size1_axis", lambda lib, x: x.mean(dim=1), [arg(3, 1, 4)],
         lambda x: x[:, 0, :]),
    case("amax_all", lambda lib, x: x.amax(), [arg(2, 3, 4, sample=distinct)],
         lambda x: x.max()),
    case("amax_dim", lambda lib, x: x.amax(dim=1), [arg(2, 3, 4, sample=distinct)],
         lambda x: x.max(axis=1)),
    case("amax_tuple_keepdim", lambda lib, x: lib.amax(x, dim=(0, 2), keepdim=True),
         [arg(2, 3, 4, sample=distinct)], lambda x: x.max(axis=(0, 2), keepdims=True)),
    case("amax_0d_dim_minus1", lambda lib, x: x.amax(dim=-1), [arg()], lambda x: x),
    case("amin_all", lambda lib, x: x.amin(), [arg(2, 3, 4, sample=distinct)],
         lambda x: x.min()),
    case("amin_dim_keepdim", lambda lib, x: x.amin(dim=-1, keepdim=True),
         [arg(2, 3, 4, sample=distinct)], lambda x: x.min(axis=-1, keepdims=True)),
    case("amin_tuple", lambda lib, x: lib.amin(x, dim=(1, 2)),
         [arg(2, 3, 4, sample=distinct)], lambda x: x.min(axis=(1, 2))),
    # nanotie's max/min(dim) return the values only; PyTorch's (values, indices).
    case("max_dim_values", lambda lib, x: x.max(dim=1), [arg(3, 4, sample=distinct)],
         lambda x: x.max(axis=1), torch_fn=lambda lib, x: x.max(dim=1).values),
    case("min_keepdim_values", lambda lib, x: x.min(dim=0, keepdim=True),
         [arg(3, 4, sample=distinct)], lambda x: x.min(axis=0, keepdims=True),
         torch_fn=lambda lib, x: x.min(dim=0, keepdim=True).values),
    # x is used twice, once through a keepdim reduction that broadcasts back.
    case("center_rows", lambda lib, x: x - x.mean(dim=-1, keepdim=True), [arg(3, 4)],
         lambda x: x - x.mean(axis=-1, keepdims=True)),
    case("logsumexp_dim", lambda lib, x: x.logsumexp(dim=1), [arg(2, 3, 4)],
         lambda x: logsumexp_ref(x, axis=1)),
    case("logsumexp_tuple_keepdim", lambda lib, x: lib.logsumexp(x, dim=(0, 2), keepdim=True),
         [arg(2, 3, 4)], lambda x: logsumexp_ref(x, axis=(0, 2), keepdims=True)),
    # exp(50) is fine in float64 but exp(100) overflows float32: the max must be
    # subtracted first.
    case("logsumexp_large_values", lambda lib, x: lib.logsumexp(x, dim=-1),
         [arg(3, 4, sample=normal(50.0))], lambda x: logsumexp_ref(x, axis=-1)),
    # -------------------------------------------------------------- movement
    case("reshape", lambda lib, x: x.reshape(4, 3), [arg(3, 4)], lambda x: x.reshape(4, 3)),
    case("reshape_minus_one", lambda lib, x: x.reshape(2, -1, 2), [arg(2, 3, 4)],
         lambda x: x.reshape(2, 6, 2)),
    case("view_tuple", lambda lib, x: x.view((6, 4)), [arg(2, 3, 4)],
         lambda x: x.reshape(6, 4)),
    case("transpose", lambda lib, x: x.transpose(0, 2), [arg(2, 3, 4)],
         lambda x: np.swapaxes(x, 0, 2)),
    case("transpose_negative", lambda lib, x: x.transpose(-1, -2), [arg(2, 3, 4)],
         lambda x: np.swapaxes(x, 1, 2)),
    case("permute", lambda lib, x: x.permute(2, 0, 1), [arg(2, 3, 4)],
         lambda x: np.transpose(x, (2, 0, 1))),
    case("T", lambda lib, x: x.T, [arg(3, 4)], lambda x: x.transpose()),
    case("mT", lambda lib, x: x.mT, [arg(2, 3, 4)], lambda x: np.swapaxes(x, -1, -2)),
    case("unsqueeze_front", lambda lib, x: x.unsqueeze(0), [arg(3, 4)], lambda x: x[None]),
    case("unsqueeze_at_minus_ndim_minus_1", lambda lib, x: x.unsqueeze(-3), [arg(3, 4)],
         lambda x: x[None]),
    case("transpose_at_minus_ndim", lambda lib, x: x.transpose(-3, 1), [arg(2, 3, 4)],
         lambda x: x.transpose(1, 0, 2)),
    case("unsqueeze_negative", lambda lib, x: x.unsqueeze(-1), [arg(3, 4)],
         lambda x: x[..., None]),
    case("squeeze_dim", lambda lib, x: x.squeeze(1), [arg(3, 1, 4)], lambda x: x[:, 0]),
    case("squeeze_all", lambda lib, x: x.squeeze(), [arg(1, 3, 1, 4)],
         lambda x: x.reshape(3, 4)),
    case("squeeze_not_size1", lambda lib, x: x.squeeze(0), [arg(3, 4)], lambda x: x),
    case("flatten_middle", lambda lib, x: x.flatten(1, 2), [arg(2, 3, 4, 2)],
         lambda x: x.reshape(2, 12, 2)),
    case("flatten_all", lambda lib, x: lib.flatten(x), [arg(2, 3, 4)], lambda x: x.ravel()),
    case("flatten_0d", lambda lib, x: lib.flatten(x), [arg()], lambda x: x.reshape(1)),
    case("expand_0d", lambda lib, x: x.expand(3, 2), [arg()],
         lambda x: np.full((3, 2), x)),
    case("expand_new_axes", lambda lib, x: x.expand(2, 3, 4), [arg(3, 1)],
         lambda x: np.broadcast_to(x, (2, 3, 4))),
    case("expand_minus_one", lambda lib, x: x.expand(3, -1), [arg(1, 4)],
         lambda x: np.broadcast_to(x, (3, 4))),
    case("expand_a_tuple_with_minus_one_after_a_new_axis",
         lambda lib, x: x.expand((2, -1, 4)), [arg(3, 1)],
         lambda x: np.broadcast_to(x, (2, 3, 4))),
    # ------------------------------------------------------------- indexing
    case("getitem_slices", lambda lib, x: x[1:3, ::2], [arg(4, 5)], lambda x: x[1:3, ::2]),
    case("getitem_int", lambda lib, x: x[1], [arg(4, 5)], lambda x: x[1]),
    case("getitem_negative_int_and_slice", lambda lib, x: x[-1, 1:], [arg(4, 5)],
         lambda x: x[3, 1:]),
    case("getitem_none", lambda lib, x: x[:, None, 1:4], [arg(4, 5)],
         lambda x: x[:, 1:4].reshape(4, 1, 3)),
    case("getitem_ellipsis", lambda lib, x: x[..., 0], [arg(2, 3, 4)], lambda x: x[:, :, 0]),
    case("getitem_none_ellipsis", lambda lib, x: x[None, ..., 2:], [arg(2, 3, 4)],
         lambda x: x[:, :, 2:].reshape(1, 2, 3, 2)),
    # Repeated ids: rows 0 and 2 are read twice, so their gradients must add up.
    case("getitem_int_array_repeats", lambda lib, x, i: x[i],
         [arg(4, 5), const([0, 2, 0, -1, 2])], lambda x, i: np.stack([x[j] for j in i])),
    case("getitem_list_repeats", lambda lib, x: x[[0, 0, 3]], [arg(4, 5)],
         lambda x: np.stack([x[0], x[0], x[3]])),
    case("getitem_int_array_and_slice", lambda lib, x, i: x[i, 1:3],
         [arg(4, 5), const([2, 0, 2])], lambda x, i: np.stack([x[j, 1:3] for j in i])),
    case("getitem_ellipsis_int_array", lambda lib, x, i: x[..., i],
         [arg(2, 3, 4), const([3, 3, 0])], lambda x, i: np.stack([x[:, :, j] for j in i], -1)),
    # PyTorch has no negative steps; flip is its spelling.
    case("getitem_negative_step", lambda lib, x: x[::-1, 1:], [arg(3, 4)],
         lambda x: np.flipud(x)[:, 1:], torch_fn=lambda lib, x: x.flip(0)[:, 1:]),
    case("getitem_int_array_columns", lambda lib, x, i: x[:, i],
         [arg(4, 5), const([1, 1, 3])], lambda x, i: np.stack([x[:, j] for j in i], axis=1)),
    case("getitem_int_array_pairs", lambda lib, x, i, j: x[i, j],
         [arg(4, 5), const([0, 0, 3, 1]), const([2, 2, 4, 0])],
         lambda x, i, j: np.array([x[a, b] for a, b in zip(i, j)])),
    case("getitem_int_array_2d", lambda lib, x, i: x[i],
         [arg(4, 5), const([[0, 1], [1, 0], [3, 3]])],
         lambda x, i: np.stack([np.stack([x[j] for j in row]) for row in i])),
    case("getitem_bool_mask", lambda lib, x, m: x[m], [arg(4, 5), mask(4, 5)],
         lambda x, m: np.array([v for v, keep in zip(x.ravel(), m.ravel()) if keep])),
    case("getitem_bool_mask_and_slice", lambda lib, x, m: x[m, 1:], [arg(4, 5), mask(4)],
         lambda x, m: np.stack([x[r, 1:] for r in range(4) if m[r]])),
    case("getitem_bool_rows", lambda lib, x, m: x[m], [arg(4, 5), mask(4)],
         lambda x, m: np.stack([x[r] for r in range(4) if m[r]])),
    # ------------------------------------------------------ joining and padding
    case("cat_dim1", lambda lib, a, b, c: lib.cat([a, b, c], dim=1),
         [arg(2, 3), arg(2, 1), arg(2, 2)], lambda a, b, c: np.hstack([a, b, c])),
    case("cat_dim0_3d", lambda lib, a, b: lib.cat([a, b], dim=0),
         [arg(1, 3, 2), arg(2, 3, 2)], lambda a, b: np.vstack([a, b])),
    case("cat_negative_dim", lambda lib, a, b: lib.cat([a, b], dim=-1),
         [arg(2, 3, 1), arg(2, 3, 2)], lambda a, b: np.dstack([a, b])),
    case("cat_same_tensor_twice", lambda lib, a: lib.cat([a, a], dim=0), [arg(2, 3)],
         lambda a: np.vstack([a, a])),
    case("stack_dim0", lambda lib, a, b, c: lib.stack([a, b, c]),
         [arg(2, 3), arg(2, 3), arg(2, 3)], lambda a, b, c: np.array([a, b, c])),
    case("stack_negative_dim", lambda lib, a, b: lib.stack([a, b], dim=-1),
         [arg(2, 3), arg(2, 3)], lambda a, b: np.dstack([a, b])),
    case("pad_last_axis", lambda lib, x: F(lib).pad(x, (1, 2)), [arg(3, 4)],
         lambda x: np.hstack([np.zeros((3, 1)), x, np.zeros((3, 2))])),
    case("pad_two_axes_value", lambda lib, x: F(lib).pad(x, (1, 0, 0, 2), value=0.5),
         [arg(3, 4)], lambda x: np.vstack([np.hstack([np.full((3, 1), 0.5), x]),
                                           np.full((2, 5), 0.5)])),
    # Negative widths crop: drop column 0 and the last row, pad 2 columns, 1 row.
    case("pad_negative_widths", lambda lib, x: F(lib).pad(x, (-1, 2, 1, -1)), [arg(3, 4)],
         lambda x: np.vstack([np.zeros((1, 5)),
                              np.hstack([x[:-1, 1:], np.zeros((2, 2))])])),
    case("pad_crop_only", lambda lib, x: F(lib).pad(x, (-1, -1)), [arg(3, 4)],
         lambda x: x[:, 1:3]),
    case("pad_three_axes", lambda lib, x: F(lib).pad(x, (1, 0, 0, 1, 1, 0)), [arg(1, 2, 3)],
         lambda x: np.concatenate([np.zeros((1, 3, 4)), np.concatenate(
             [np.concatenate([np.zeros((1, 2, 1)), x], axis=2), np.zeros((1, 1, 4))],
             axis=1)], axis=0)),
    # ---------------------------------------------------------------- matmul
    case("matmul_2d", lambda lib, a, b: a @ b, [arg(3, 4), arg(4, 5)], np.matmul),
    case("matmul_batched", lambda lib, a, b: a @ b, [arg(2, 3, 4), arg(2, 4, 5)], np.matmul),
    case("matmul_broadcast_batch", lambda lib, a, b: lib.matmul(a, b),
         [arg(2, 1, 3, 4), arg(3, 4, 2)], np.matmul),
    case("matmul_vector_matrix", lambda lib, a, b: a @ b, [arg(4), arg(4, 5)], np.matmul),
    case("matmul_matrix_vector", lambda lib, a, b: a @ b, [arg(3, 4), arg(4)], np.matmul),
    case("matmul_vector_vector", lambda lib, a, b: a @ b, [arg(4), arg(4)],
         lambda a, b: np.sum(a * b)),
    case("matmul_shared_weight", lambda lib, x, w: x @ w, [arg(2, 3, 4), arg(4, 5)],
         np.matmul),
    case("matmul_batched_vector", lambda lib, a, b: a @ b, [arg(2, 3, 4), arg(4)], np.matmul),
    case("matmul_matrix_batched", lambda lib, a, b: a @ b, [arg(3, 4), arg(2, 4, 5)],
         np.matmul),
    case("matmul_vector_batched", lambda lib, a, b: a @ b, [arg(4), arg(2, 4, 3)], np.matmul),
    case("matmul_size1", lambda lib, a, b: a @ b, [arg(1, 4), arg(4, 1)], np.matmul),
    case("matmul_self_transpose", lambda lib, x: x @ x.T, [arg(3, 4)], lambda x: x @ x.T),
    # ---------------------------------------------------------------- einsum
    case("einsum_matmul", lambda lib, a, b: lib.einsum("ij,jk->ik", a, b),
         [arg(3, 4), arg(4, 2)], lambda a, b: np.einsum("ij,jk->ik", a, b)),
    case("einsum_spaces_and_a_list", lambda lib, a, b: lib.einsum("ij, jk -> ik", [a, b]),
         [arg(3, 4), arg(4, 2)], lambda a, b: np.einsum("ij,jk->ik", a, b)),
    case("einsum_batched", lambda lib, a, b: lib.einsum("bij,bjk->bik", a, b),
         [arg(2, 3, 4), arg(2, 4, 2)], lambda a, b: np.einsum("bij,bjk->bik", a, b)),
    case("einsum_ellipsis", lambda lib, a, b: lib.einsum("...ij,jk->...ik", a, b),
         [arg(2, 3, 4), arg(4, 2)], lambda a, b: np.einsum("...ij,jk->...ik", a, b)),
    case("einsum_ellipsis_broadcast", lambda lib, a, b: lib.einsum("...ij,...jk->...ik", a, b),
         [arg(2, 1, 3, 4), arg(3, 4, 2)], lambda a, b: np.matmul(a, b)),
    case("einsum_implicit", lambda lib, a, b: lib.einsum("ij,jk", a, b),
         [arg(3, 4), arg(4, 2)], lambda a, b: a @ b),
    # Implicit mode sums every letter that appears twice, the batch letter b too.
    case("einsum_implicit_sums_batch", lambda lib, a, b: lib.einsum("bij,bjk", a, b),
         [arg(2, 3, 4), arg(2, 4, 2)], lambda a, b: (a @ b).sum(axis=0)),
    # k appears only in b and not in the output: it is summed away in the forward.
    case("einsum_letter_summed_away", lambda lib, a, b: lib.einsum("ij,jk->i", a, b),
         [arg(3, 4), arg(4, 2)], lambda a, b: a @ b.sum(axis=1)),
    case("einsum_single_operand", lambda lib, x: lib.einsum("ijk->ki", x), [arg(2, 3, 4)],
         lambda x: x.sum(axis=1).T),
    case("einsum_outer", lambda lib, a, b: lib.einsum("i,j->ij", a, b), [arg(3), arg(4)],
         lambda a, b: a[:, None] * b[None, :]),
    case("einsum_attention_scores", lambda lib, q, k: lib.einsum("bhtd,bhsd->bhts", q, k),
         [arg(1, 2, 3, 4), arg(1, 2, 3, 4)], lambda q, k: q @ np.swapaxes(k, -1, -2)),
    case("einsum_three_operands", lambda lib, a, b, c: lib.einsum("ij,jk,kl->il", a, b, c),
         [arg(2, 3), arg(3, 4), arg(4, 2)], lambda a, b, c: a @ b @ c),
    # ------------------------------------------------------------- embedding
    # Token 2 appears three times, token 0 twice: dL/dW[v] sums over every use of v.
    case("embedding_repeated_ids", lambda lib, w, ids: lib.embedding(w, ids),
         [arg(5, 3), const([[0, 2, 0], [4, 2, 2]])], lambda w, ids: gather_rows_ref(w, ids)),
    case("embedding_one_id_thrice", lambda lib, w, ids: lib.embedding(w, ids),
         [arg(4, 2), const([1, 1, 1])], lambda w, ids: np.stack([w[1]] * 3)),
    # F.embedding: nanotie's takes (weight, ids), PyTorch's (ids, weight).
    case("F_embedding", lambda lib, w, ids: F(lib).embedding(w, ids),
         [arg(5, 3), const([3, 3, 1])], lambda w, ids: w[[3, 3, 1]],
         torch_fn=lambda lib, w, ids: F(lib).embedding(ids, w)),
    # Weight tying in one line: the embedding matrix is also the output head, so its
    # gradient is the sum of both uses.
    case("tied_embedding_and_head", lambda lib, w, ids: lib.embedding(w, ids) @ w.T,
         [arg(5, 3), const([[0, 2, 0], [4, 2, 2]])],
         lambda w, ids: gather_rows_ref(w, ids) @ w.T),
    # ---------------------------------------------------------- nn.functional
    case("softmax_last", lambda lib, x: F(lib).softmax(x, dim=-1), [arg(3, 4)],
         lambda x: softmax_ref(x, -1)),
    case("softmax_dim0", lambda lib, x: F(lib).softmax(x, dim=0), [arg(3, 4)],
         lambda x: softmax_ref(x, 0)),
    case("softmax_large_logits", lambda lib, x: F(lib).softmax(x, dim=-1),
         [arg(2, 5, sample=normal(30.0))], lambda x: softmax_ref(x, -1)),
    case("softmax_0d", lambda lib, x: F(lib).softmax(x, dim=0), [arg()],
         lambda x: np.ones(())),
    # Attention: a GPT's causal case; a float mask that gets a gradient (a learned bias),
    # with more keys than queries; a boolean mask and broadcast batch axes.
    case("sdpa_causal",
         lambda lib, q, k, v: F(lib).scaled_dot_product_attention(q, k, v, is_causal=True),
         [arg(2, 3, 4), arg(2, 3, 4), arg(2, 3, 5)],
         lambda q, k, v: attention_ref(q, k, v, causal_mask_ref(3, 3))),
    case("sdpa_large_scores",          # exp(800 + score) overflows: the max must go first
         lambda lib, q, k, v, m: F(lib).scaled_dot_product_attention(q, k, v, attn_mask=m),
         [arg(2, 3, 4), arg(2, 3, 4), arg(2, 3, 5), const(np.full((3, 3), 800.0), np.float64)],
         attention_ref),
    case("sdpa_float_mask_grad",
         lambda lib, q, k, v, m: F(lib).scaled_dot_product_attention(q, k, v, attn_mask=m),
         [arg(2, 2, 4), arg(2, 5, 4), arg(2, 5, 3), arg(2, 5)], attention_ref),
    case("sdpa_bool_mask_broadcast_scale",
         lambda lib, q, k, v, m: F(lib).scaled_dot_product_attention(q, k, v, attn_mask=m,
                                                                     scale=0.3),
         [arg(2, 2, 3, 4), arg(2, 1, 4, 4), arg(1, 4, 2),
          const([[True, False, True, False], [True] * 4, [False, True, True, False]],
                dtype=bool)],
         lambda q, k, v, m: attention_ref(q, k, v, np.where(m, 0.0, -np.inf), 0.3)),
    case("log_softmax", lambda lib, x: F(lib).log_softmax(x, dim=1), [arg(2, 3, 4)],
         lambda x: x - logsumexp_ref(x, axis=1, keepdims=True)),
    case("cross_entropy_mean", lambda lib, z, t: F(lib).cross_entropy(z, t),
         [arg(5, 4), _CE_TARGET], cross_entropy_ref),
    case("cross_entropy_sum", lambda lib, z, t: F(lib).cross_entropy(z, t, reduction="sum"),
         [arg(5, 4), _CE_TARGET], lambda z, t: cross_entropy_ref(z, t, "sum")),
    case("cross_entropy_none", lambda lib, z, t: F(lib).cross_entropy(z, t, reduction="none"),
         [arg(5, 4), _CE_TARGET], lambda z, t: cross_entropy_ref(z, t, "none")),
    case("cross_entropy_one_sample", lambda lib, z, t: F(lib).cross_entropy(z, t),
         [arg(4), const(2)], cross_entropy_ref),
    case("cross_entropy_custom_ignore_index",
         lambda lib, z, t: F(lib).cross_entropy(z, t, ignore_index=3),
         [arg(5, 4), const([1, 3, 2, 0, 3])],
         lambda z, t: cross_entropy_ref(z, t, ignore_index=3)),
    # nanotie keeps the class axis last for (N, T, C) logits; PyTorch wants it at 1.
    case("cross_entropy_3d_mean", lambda lib, z, t: F(lib).cross_entropy(z, t),
         [arg(2, 3, 4), _CE_TARGET_3D], cross_entropy_ref,
         torch_fn=cross_entropy_class_axis_1),
    case("cross_entropy_3d_none",
         lambda lib, z, t: F(lib).cross_entropy(z, t, reduction="none"),
         [arg(2, 3, 4), _CE_TARGET_3D], lambda z, t: cross_entropy_ref(z, t, "none"),
         torch_fn=lambda lib, z, t: cross_entropy_class_axis_1(lib, z, t, "none")),
    case("dropout_eval_is_identity", lambda lib, x: F(lib).dropout(x, 0.5, training=False),
         [arg(3, 4)], lambda x: x),
    case("gelu_exact", lambda lib, x: F(lib).gelu(x), [arg(3, 4, sample=normal(2.0))],
         gelu_ref),
    case("gelu_tanh", lambda lib, x: F(lib).gelu(x, approximate="tanh"),
         [arg(3, 4, sample=normal(2.0))], lambda x: gelu_ref(x, "tanh")),
    case("silu", lambda lib, x: F(lib).silu(x), [arg(3, 4, sample=normal(2.0))],
         lambda x: x / (1 + np.exp(-x))),
    case("layer_norm_affine", lambda lib, x, w, b: F(lib).layer_norm(x, (4,), w, b),
         [arg(2, 3, 4), arg(4), arg(4)], lambda x, w, b: layer_norm_ref(x, 1, w, b)),
    case("layer_norm_plain", lambda lib, x: F(lib).layer_norm(x, (4,)), [arg(3, 4)],
         lambda x: layer_norm_ref(x, 1)),
    case("layer_norm_weight_only", lambda lib, x, w: F(lib).layer_norm(x, (5,), w),
         [arg(2, 5), arg(5)], lambda x, w: layer_norm_ref(x, 1, w)),
    case("layer_norm_two_dims", lambda lib, x, w, b: F(lib).layer_norm(x, (3, 4), w, b),
         [arg(2, 3, 4), arg(3, 4), arg(3, 4)], lambda x, w, b: layer_norm_ref(x, 2, w, b)),
    case("layer_norm_two_dims_plain", lambda lib, x: F(lib).layer_norm(x, (2, 3)),
         [arg(2, 2, 3)], lambda x: layer_norm_ref(x, 2)),
    case("rms_norm_weight", lambda lib, x, w: F(lib).rms_norm(x, (4,), w, eps=1e-6),
         [arg(2, 3, 4), arg(4)], lambda x, w: rms_norm_ref(x, 1, w)),
    case("rms_norm_two_dims", lambda lib, x: F(lib).rms_norm(x, (3, 4), eps=1e-6),
         [arg(2, 3, 4)], lambda x: rms_norm_ref(x, 2)),
    case("linear_bias", lambda lib, x, w, b: F(lib).linear(x, w, b),
         [arg(2, 3, 4), arg(5, 4), arg(5)], lambda x, w, b: x @ w.T + b),
    case("linear_no_bias", lambda lib, x, w: F(lib).linear(x, w), [arg(3, 4), arg(2, 4)],
         lambda x, w: x @ w.T),
    case("mse_loss", lambda lib, x, y: F(lib).mse_loss(x, y), [arg(3, 4), arg(3, 4)],
         lambda x, y: ((x - y) ** 2).mean()),
    # PyTorch has no fftconv: the oracle is the direct causal sum.
    case("fftconv_broadcast", lambda lib, u, h: F(lib).fftconv(u, h),
         [arg(2, 3, 8), arg(3, 8)], causal_conv_ref, torch_fn=causal_conv_direct),
    case("fftconv_short_filter", lambda lib, u, h: F(lib).fftconv(u, h),
         [arg(2, 8), arg(2, 3)], causal_conv_ref, torch_fn=causal_conv_direct),
    case("fftconv_broadcast_size1", lambda lib, u, h: F(lib).fftconv(u, h),
         [arg(3, 7), arg(1, 4)], causal_conv_ref, torch_fn=causal_conv_direct),
    case("fftconv_long_filter", lambda lib, u, h: F(lib).fftconv(u, h),
         [arg(2, 5), arg(8)], causal_conv_ref, torch_fn=causal_conv_direct),
    case("fftconv_1d", lambda lib, u, h: F(lib).fftconv(u, h), [arg(6), arg(6)],
         causal_conv_ref, torch_fn=causal_conv_direct),
]

CASE_NAMES = [c.name for c in CASES]
assert len(set(CASE_NAMES)) == len(CASES), "case names must be unique"
