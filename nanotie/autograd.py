"""Reverse-mode automatic differentiation: the Tensor and the backward engine.

A Tensor holds an array (``data``), and, if it was computed by an op while gradients
were being recorded, the op's name, its inputs (``_parents``) and a ``_backward``
closure. The closure receives the gradient of the loss with respect to the op's
output and RETURNS one gradient per input (``None`` for inputs that need none).

:meth:`Tensor.backward` walks the graph from the loss back to the leaves in reverse
topological order. The engine alone

* un-broadcasts each returned gradient to its input's shape (summing the axes that
  broadcasting added or stretched),
* SUMS the gradients that arrive at a tensor used more than once, and
* stores the result in ``.grad`` of leaves that require it.

That sum is the whole story of weight tying: a Parameter used in two places (say an
embedding matrix that is also the output head) is one node with two outgoing edges,
so by the multivariable chain rule dL/dW = dL/dW|use 1 + dL/dW|use 2.

The primitive ops live in :mod:`nanotie.ops`; they are written against this module's
:func:`make_result`, which records the graph.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from . import backend
from .backend import DeviceError, xp_of

__all__ = ["Tensor", "tensor", "from_numpy", "no_grad", "enable_grad", "is_grad_enabled",
           "detect_anomaly", "is_anomaly_enabled", "ShapeError", "AnomalyError",
           "make_result"]

DEFAULT_DTYPE = np.float32


class ShapeError(ValueError):
    """Operands whose shapes do not fit the op; the message names op and shapes."""


class AnomalyError(FloatingPointError):
    """Raised in anomaly mode when an op produces a NaN or an infinity."""


# ------------------------------------------------------------------ global modes


class _Modes(threading.local):
    grad_enabled = True
    anomaly = False


_modes = _Modes()


def is_grad_enabled() -> bool:
    return _modes.grad_enabled


@contextlib.contextmanager
def _grad_mode(enabled: bool):
    previous = _modes.grad_enabled
    _modes.grad_enabled = enabled
    try:
        yield
    finally:
        _modes.grad_enabled = previous


def no_grad():
    """Context manager (or decorator) in which ops record no graph."""
    return _grad_mode(False)


def enable_grad():
    """Context manager that turns graph recording back on inside ``no_grad``."""
    return _grad_mode(True)


def is_anomaly_enabled() -> bool:
    return _modes.anomaly


@contextlib.contextmanager
def detect_anomaly():
    """Check every op's forward output and every backward gradient for NaN/inf.

    The first non-finite value raises :class:`AnomalyError` naming the op that made
    it, in the forward or the backward pass. It costs a scan of each array, so it is
    a debugging aid, off by default.
    """
    previous = _modes.anomaly
    _modes.anomaly = True
    try:
        yield
    finally:
        _modes.anomaly = previous


def _check_finite(array, what: str) -> None:
    if array.dtype.kind in "fc" and not bool(xp_of(array).isfinite(array).all()):
        xp = xp_of(array)
        kind = "nan" if bool(xp.isnan(array).any()) else "inf"
        raise AnomalyError(f"anomaly detected: {what} produced {kind}")


# ------------------------------------------------------------------------ Tensor


_NUMERIC_KINDS = "biufc"      # bool, int, unsigned, float, complex


def _to_array(data, dtype=None, device=None):
    """Turn Python data or an array into an array on ``device``.

    Only numbers become a tensor: strings, None, dicts and other objects raise
    :class:`TypeError` here, not an obscure error in the first op that meets them."""
    if isinstance(data, Tensor):
        data = data.data
    if device is None:
        device = backend.device_of(data) if hasattr(data, "shape") and not isinstance(
            data, np.generic) else backend.default_device()
    xp = backend.xp_for(device)
    if not hasattr(data, "dtype"):
        probe = _numeric_probe(data)
        # Python floats become float32 (the default dtype), as in PyTorch.
        if dtype is None:
            dtype = DEFAULT_DTYPE if probe.dtype.kind == "f" else probe.dtype
    elif data.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"tensor: expected numbers, got an array of dtype {data.dtype}")
    if backend.device_of(data) != device:
        data = backend.to_device(data, device)
    return xp.asarray(data, dtype=dtype)


def _numeric_probe(data) -> np.ndarray:
    """``np.asarray(data)``, refused unless it holds numbers in a rectangular layout."""
    what = f"type {type(data).__name__}" if not isinstance(data, (list, tuple)) else (
        f"a {type(data).__name__} of {', '.join(sorted({type(v).__name__ for v in data}))}")
    try:
        probe = np.asarray(data)
    except (TypeError, ValueError) as exc:     # ragged nesting, unconvertible objects
        raise TypeError(f"tensor: expected numbers (a number, or nested lists of equal "
                        f"length), got {what}: {exc}") from None
    if probe.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"tensor: expected numbers (a number, or nested lists of "
                        f"numbers), got {what}")
    return probe


class Tensor:
    """An n-dimensional array that can record how it was computed.

    Attributes follow PyTorch's names: ``data`` (a NumPy or CuPy array), ``grad``
    (an array of the same shape, or None), ``requires_grad``, ``is_leaf``.
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "_op",
                 "_retain", "__weakref__")
    __array_priority__ = 1000  # ``ndarray + Tensor`` defers to Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None, device=None):
        self.data = data if _is_array(data) and dtype is None and device is None \
            else _to_array(data, dtype, device)
        self.grad = None
        self._parents = ()
        self._backward = None
        self._op = None
        self._retain = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ------------------------------------------------------------ basic facts
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        """True for tensors made by the user, not by an op that recorded a graph."""
        return self._op is None

    @property
    def grad_fn(self):
        """The name of the op that made this tensor (None for a leaf)."""
        return self._op

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def dim(self) -> int:
        return self.data.ndim

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        extra = f", grad_fn={self._op}" if self._op else (
            ", requires_grad=True" if self.requires_grad else "")
        dev = "" if self.device == "cpu" else ", device='cuda'"
        body = np.array2string(backend.asnumpy(self.data), precision=4, separator=", ",
                               prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{dev}{extra})"

    # -------------------------------------------------------- conversions
    def item(self):
        """The single value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied from the GPU if needed)."""
        return backend.asnumpy(self.data)

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same values, cut from the graph (shares the array, no gradient)."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        """Mark a leaf as trainable (or frozen). Returns self."""
        if not self.is_leaf:
            raise RuntimeError(
                "requires_grad_() can only change leaf tensors; use .detach() to cut a "
                f"tensor computed by '{self._op}' from the graph")
        if requires_grad and self.data.dtype.kind not in "fc":
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` on this non-leaf tensor after backward (leaves always do)."""
        self._retain = True
        return self

    def zero_grad(self) -> None:
        self.grad = None

    # -------------------------------------------------------------- backward
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf), times ``grad``, into every leaf's ``.grad``.

        ``grad`` is the upstream gradient; it may be omitted only for a tensor with
        one element, whose gradient is then 1. Afterwards the graph is freed, unless
        ``retain_graph`` is set, so that a second backward through it fails clearly.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() was called on a tensor that does not require "
                               "grad: no input of the ops that made it has requires_grad=True")
        xp = xp_of(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() on a tensor of shape {self.shape} needs a gradient "
                    "argument: only a tensor with a single element (a scalar loss) gets "
                    "the implicit gradient 1")
            seed = xp.ones(self.shape, dtype=self.dtype)
        else:
            seed = grad.data if isinstance(grad, Tensor) else grad
            # No copy: backward rules only read their gradient, and _run_backward
            # copies the caller's array before a leaf could keep it as its .grad.
            seed = xp.asarray(seed, dtype=self.dtype)
            if seed.shape != self.shape:
                raise ShapeError(f"backward(): gradient of shape {seed.shape} does not match "
                                 f"the tensor's shape {self.shape}")
        _run_backward(self, seed, retain_graph)

    # Movement, arithmetic and reduction methods are attached by nanotie.ops.methods.


def _is_array(x) -> bool:
    return type(x) is np.ndarray or backend.is_cupy_array(x)


def tensor(data, requires_grad: bool = False, dtype=None, device=None) -> Tensor:
    """Make a leaf tensor from Python data or an array: always a COPY, as
    ``torch.tensor`` does, so editing the array later changes neither the tensor nor
    its gradients. (``from_numpy(array)`` or ``Tensor(array)`` share the array.)

    Python floats become float32 (the default), integers int64. ``device`` defaults to
    the array's own device, or ``$NANOTIE_DEVICE`` for Python data. Anything but
    numbers (strings, None, dicts, objects) raises :class:`TypeError`.
    """
    source = data.data if isinstance(data, Tensor) else data
    array = _to_array(data, dtype, device)
    if hasattr(source, "shape") and not isinstance(source, np.generic) and \
            _may_share(array, source):
        array = array.copy()
    return Tensor(array, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A leaf tensor that SHARES ``array``'s memory (no copy, as ``torch.from_numpy``):
    writing into the array changes the tensor, and the other way round."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a NumPy array, got {type(array).__name__}")
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"from_numpy: expected numbers, got an array of dtype {array.dtype}")
    return Tensor(array)


def _may_share(a, b) -> bool:
    """Could arrays ``a`` and ``b`` overlap in memory? (False across devices.)"""
    if backend.device_of(a) != backend.device_of(b):
        return False
    return bool(xp_of(a).may_share_memory(a, b))


# ------------------------------------------------------------- graph recording


def make_result(op: str, data, parents: tuple, backward) -> Tensor:
    """Wrap an op's output array and, if needed, record how to differentiate it.

    ``parents`` lists the op's inputs in the order ``backward`` returns their
    gradients; entries that are not Tensors (Python scalars, None) get none.
    ``backward`` may update arrays it makes itself in place, but must only READ the
    gradient it is given: that array may be the caller's, or another node's too.
    """
    if isinstance(data, np.generic):   # NumPy reductions return scalars, not arrays
        data = np.asarray(data)
    out = Tensor(data)
    if _modes.anomaly:
        _check_finite(data, f"the forward pass of '{op}'")
    if _modes.grad_enabled:
        for p in parents:
            if isinstance(p, Tensor) and p.requires_grad:
                out.requires_grad = True
                out._op = op
                out._parents = parents
                out._backward = backward
                break
    return out


def unbroadcast(grad, shape: tuple):
    """Sum ``grad`` down to ``shape``, undoing NumPy broadcasting.

    Broadcasting copies an input along new leading axes and along axes of size 1, so
    the input's gradient is the SUM over those copies (the same rule as tying).
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _topological_order(root: Tensor) -> list:
    """Nodes that need a gradient, each after all the nodes that consume it."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:  # iterative DFS: deep graphs do not hit Python's recursion limit
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for p in node._parents:
            if isinstance(p, Tensor) and p.requires_grad and id(p) not in visited:
                stack.append((p, False))
    order.reverse()  # root first
    return order


def _freed_backward(*_):
    raise RuntimeError("trying to backward through the graph a second time: its buffers "
                       "were freed by the first backward(); pass retain_graph=True to it")


def _run_backward(root: Tensor, seed, retain_graph: bool) -> None:
    grads = {id(root): seed}   # id(node) -> accumulated dL/dnode
    owned = set()              # ids of nodes whose grad array the engine made itself
    # ids of arrays a leaf must not keep as they are: those already handed to a leaf in
    # this pass, and the seed, which may be the caller's own array.
    leaf_arrays = {id(seed)}
    anomaly = _modes.anomaly
    for node in _topological_order(root):
        g = grads.pop(id(node), None)
        if g is None:
            continue
        if node._backward is None:          # a leaf
            _store_leaf_grad(node, g, leaf_arrays)
            continue
        if node._retain:
            node.grad = g.copy() if node.grad is None else node.grad + g
        parent_grads = node._backward(g)
        if not retain_graph:
            node._backward = _freed_backward
            parents, node._parents = node._parents, ()
        else:
            parents = node._parents
        for i, (p, pg) in enumerate(zip(parents, parent_grads)):
            if pg is None or not isinstance(p, Tensor) or not p.requires_grad:
                continue
            if anomaly:
                _check_finite(pg, f"the backward pass of '{node._op}' (gradient for input {i})")
            pg = unbroadcast(pg, p.shape)
            if pg.dtype != p.dtype:      # an op mixing dtypes: float32 inputs keep float32 grads
                pg = pg.astype(p.dtype)
            key = id(p)
            if key not in grads:
                grads[key] = pg
            elif key in owned:
                grads[key] += pg     # the tying sum, in place in an array we own
            else:
                grads[key] = grads[key] + pg  # the tying sum: a tensor used twice
                owned.add(key)


def _store_leaf_grad(leaf: Tensor, g, leaf_arrays: set) -> None:
    """Accumulate into ``leaf.grad``, copying ``g`` if anything else could alias it."""
    if leaf.grad is not None:
        leaf.grad += g   # gradients accumulate across backward calls; .grad is ours alone
        return
    shared = (id(g) in leaf_arrays or not g.flags.owndata
              or not getattr(g.flags, "writeable", True))
    if shared:
        g = g.copy()
    leaf_arrays.add(id(g))
    leaf.grad = g


def check_same_device(op: str, *tensors) -> None:
    """Raise a clear error when an op's tensor inputs live on different devices."""
    devices = {t.device for t in tensors if isinstance(t, Tensor)}
    if len(devices) > 1:
        raise DeviceError(f"{op}: inputs are on different devices ({', '.join(sorted(devices))}); "
                          "move them to one device first with .to(device)")


__all__ += ["check_same_device", "unbroadcast", "DeviceError"]
