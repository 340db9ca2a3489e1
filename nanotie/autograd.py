"""Reverse-mode automatic differentiation: the Tensor and the backward engine.

A Tensor holds an array (``data``), and, if it was computed by an op while gradients
were being recorded, the op's name, its inputs (``_parents``) and a ``_backward``
closure. The closure receives the gradient of the loss with respect to the op's
output and RETURNS one gradient per input (``None`` for inputs that need none).

:meth:`Tensor.backward` walks the graph from the loss back to the leaves in reverse
topological order. The engine alone un-broadcasts each returned gradient to its
input's shape, SUMS the gradients that arrive at a tensor used more than once
(:func:`accumulate`, the tying sum), and stores the result in the leaves' ``.grad``.

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
           "make_result", "accumulate", "check_same_device", "unbroadcast", "DeviceError"]


class ShapeError(ValueError):
    """Operands whose shapes do not fit the op; the message names op and shapes."""


class AnomalyError(FloatingPointError):
    """Raised in anomaly mode when an op produces a NaN or an infinity."""


# ------------------------------------------------------------------ global modes


class _Modes(threading.local):
    grad_enabled = True
    anomaly = False


_modes = _Modes()


@contextlib.contextmanager
def _set_mode(name: str, value: bool):
    previous = getattr(_modes, name)
    setattr(_modes, name, value)
    try:
        yield
    finally:
        setattr(_modes, name, previous)


def no_grad():
    """Context manager (or decorator) in which ops record no graph."""
    return _set_mode("grad_enabled", False)


def enable_grad():
    """Context manager that turns graph recording back on inside ``no_grad``."""
    return _set_mode("grad_enabled", True)


def detect_anomaly():
    """Check every op's forward output and every backward gradient for NaN/inf: the
    first one raises :class:`AnomalyError` naming the op. A debugging aid (it scans
    every array), off by default."""
    return _set_mode("anomaly", True)


def is_grad_enabled() -> bool:
    """Whether ops record the graph now (False inside :func:`no_grad`)."""
    return _modes.grad_enabled


def is_anomaly_enabled() -> bool:
    """Whether anomaly detection is on (inside :func:`detect_anomaly`)."""
    return _modes.anomaly


def _check_finite(array, what: str) -> None:
    xp = xp_of(array)
    if array.dtype.kind in "fc" and not bool(xp.isfinite(array).all()):
        kind = "nan" if bool(xp.isnan(array).any()) else "inf"
        raise AnomalyError(f"anomaly detected: {what} produced {kind}")


# ------------------------------------------------------------------------ Tensor


def _to_array(data, dtype=None, device=None):
    """Python data or an array as an array on ``device``. Only numbers become a tensor:
    strings, None, dicts and ragged lists raise :class:`TypeError` here, not an obscure
    error in the first op that meets them."""
    if isinstance(data, Tensor):
        data = data.data
    is_array = hasattr(data, "dtype") and not isinstance(data, np.generic)
    device = device or (backend.device_of(data) if is_array else backend.default_device())
    if not hasattr(data, "dtype"):
        what = (f"a {type(data).__name__} of "
                f"{', '.join(sorted({type(v).__name__ for v in data}))}"
                if isinstance(data, (list, tuple)) else f"type {type(data).__name__}")
        try:
            probe = np.asarray(data)
        except (TypeError, ValueError) as exc:     # ragged nesting, unconvertible objects
            raise TypeError(f"tensor: expected numbers (a number, or nested lists of equal "
                            f"length), got {what}: {exc}") from None
        if probe.dtype.kind not in "biufc":
            raise TypeError(f"tensor: expected numbers (a number, or nested lists of "
                            f"numbers), got {what}")
        if dtype is None:       # Python floats become float32 (the default), as in PyTorch
            dtype = np.float32 if probe.dtype.kind == "f" else probe.dtype
    elif data.dtype.kind not in "biufc":
        raise TypeError(f"tensor: expected numbers, got an array of dtype {data.dtype}")
    if backend.device_of(data) != device:
        data = backend.to_device(data, device)
    return backend.xp_for(device).asarray(data, dtype=dtype)


class Tensor:
    """An n-dimensional array that can record how it was computed.

    Attributes follow PyTorch's names: ``data`` (a NumPy or CuPy array), ``grad``
    (an array of the same shape, or None), ``requires_grad``, ``is_leaf``.
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "_op",
                 "_retain", "__weakref__")
    __array_priority__ = 1000  # ``ndarray + Tensor`` defers to Tensor.__radd__
    # NumPy ufuncs refuse Tensors: np.exp(t) raises a TypeError (use t.exp()) instead of
    # reading the values through __array__ and dropping the graph without a word, and
    # ``ndarray * Tensor`` goes to Tensor.__rmul__ (a recorded op) as before.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=None, device=None):
        is_array = type(data) is np.ndarray or backend.is_cupy_array(data)
        self.data = data if is_array and dtype is None and device is None \
            else _to_array(data, dtype, device)
        self.grad = None
        self._parents, self._backward, self._op, self._retain = (), None, None, False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ------------------------------------------------------------ basic facts
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self._op is None,
                       doc="True for tensors made by the user, not by an op that recorded "
                           "a graph.")
    grad_fn = property(lambda self: self._op, doc="The name of the op that made this tensor.")

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def dim(self) -> int:
        return self.data.ndim

    def __len__(self) -> int:
        return len(self.data)

    def __bool__(self) -> bool:
        """``if loss < best:``: the truth of a one-element tensor, as in PyTorch. Without
        this, Python would fall back on ``len()``, which fails on a 0-d tensor and is True
        for ``tensor([0.0])``. More elements are ambiguous (any? all?), so they raise."""
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is "
                             "ambiguous: use .item() on a one-element tensor, or "
                             ".numpy().any() / .numpy().all()")
        return bool(self.item())

    def __repr__(self) -> str:
        extra = f", grad_fn={self._op}" if self._op else (
            ", requires_grad=True" if self.requires_grad else "")
        dev = "" if self.device == "cpu" else ", device='cuda'"
        body = np.array2string(self.numpy(), precision=4, separator=", ", prefix="tensor(")
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

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """``np.asarray(t)``, ``np.mean([loss1, loss2])``: NumPy reads the values (copied
        from the GPU if needed) instead of wrapping the Tensor in an object array."""
        return np.array(self.numpy(), dtype=dtype, copy=copy)

    def __float__(self) -> float:
        """``float(loss)``; NumPy also takes a 0-d Tensor in a list through this."""
        return float(self.item())

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
            seed = xp.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if seed.shape != self.shape:
                raise ShapeError(f"backward(): gradient of shape {seed.shape} does not match "
                                 f"the tensor's shape {self.shape}")
        _run_backward(self, seed, retain_graph)

    # Movement, arithmetic and reduction methods are attached by nanotie.ops.


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
    if hasattr(source, "shape") and backend.device_of(array) == backend.device_of(source) \
            and xp_of(array).may_share_memory(array, source):
        array = array.copy()
    return Tensor(array, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A leaf tensor that SHARES ``array``'s memory (no copy, as ``torch.from_numpy``):
    writing into the array changes the tensor, and the other way round."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a NumPy array, got {type(array).__name__}")
    if array.dtype.kind not in "biufc":
        raise TypeError(f"from_numpy: expected numbers, got an array of dtype {array.dtype}")
    return Tensor(array)


def check_same_device(op: str, *tensors) -> None:
    """Raise a clear error when an op's tensor inputs live on different devices."""
    devices = {t.device for t in tensors if isinstance(t, Tensor)}
    if len(devices) > 1:
        raise DeviceError(f"{op}: inputs are on different devices ({', '.join(sorted(devices))}); "
                          "move them to one device first with .to(device)")


# ------------------------------------------------------------- graph recording


def make_result(op: str, data, parents: tuple, backward) -> Tensor:
    """Wrap an op's output array and, if needed, record how to differentiate it.

    ``parents`` lists the op's inputs in the order ``backward`` returns their
    gradients; entries that are not Tensors (Python scalars, None) get none.
    ``backward`` must only READ the gradient it is given (it may be the caller's).
    """
    # NumPy reductions return scalars (np.generic), not arrays
    out = Tensor(np.asarray(data) if isinstance(data, np.generic) else data)
    if _modes.anomaly:
        _check_finite(out.data, f"the forward pass of '{op}'")
    if _modes.grad_enabled and any(isinstance(p, Tensor) and p.requires_grad for p in parents):
        out.requires_grad, out._op, out._parents, out._backward = True, op, parents, backward
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
    return grad.sum(axis=axes, keepdims=True) if axes else grad


def _unbroadcast_or_raise(grad, shape: tuple, op: str, i: int):
    """:func:`unbroadcast`, or a ShapeError if that cannot give ``shape``: a backward rule
    returned a wrong shape, which would otherwise reach ``.grad`` (and the optimizer)
    silently. Fewer dims than the input never come from broadcasting."""
    fitted = unbroadcast(grad, shape) if grad.ndim >= len(shape) else grad
    if fitted.shape != shape:
        raise ShapeError(f"backward of '{op}': the gradient for input {i} has shape "
                         f"{grad.shape}, but that input has shape {shape}")
    return fitted


def accumulate(grads: dict, node: Tensor, g) -> None:
    """THE TYING SUM. A tensor used in k places (a tied weight, a value read twice) is
    one node with k outgoing edges, so by the multivariable chain rule its gradient is
    the SUM of the k gradients: dL/dW = dL/dW|use 1 + ... + dL/dW|use k. This one
    ``+`` is what makes weight tying correct."""
    grads[node] = grads[node] + g if node in grads else g      # the tying sum


def _topological_order(root: Tensor) -> list:
    """Nodes that need a gradient, root first, each before every node it consumes."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:  # iterative DFS: deep graphs do not hit Python's recursion limit
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
        elif node not in visited:
            visited.add(node)
            stack.append((node, True))
            stack += [(p, False) for p in node._parents
                      if isinstance(p, Tensor) and p.requires_grad and p not in visited]
    return order[::-1]


def _freed_backward(*_):
    raise RuntimeError("trying to backward through the graph a second time: its buffers "
                       "were freed by the first backward(); pass retain_graph=True to it")


def _run_backward(root: Tensor, seed, retain_graph: bool) -> None:
    grads = {root: seed}                  # node -> dL/dnode, summed over its uses
    for node in _topological_order(root):
        g = grads.pop(node, None)
        if g is None:
            continue
        leaf = node._backward is None
        if leaf or node._retain:
            # A stored gradient is a COPY: g may be the caller's array, a view, or the
            # very array another leaf gets; .grad must be the tensor's own to update.
            # (A second backward() adds to .grad, as in PyTorch: a sum over calls, not uses.)
            grad = g.copy() if node.grad is None else node.grad + g
            # NumPy returns a 0-d result as a scalar, which cannot be updated in place
            node.grad = np.asarray(grad) if isinstance(grad, np.generic) else grad
        if leaf:
            continue
        parents, parent_grads = node._parents, node._backward(g)
        if not retain_graph:
            node._backward, node._parents = _freed_backward, ()
        for i, (p, pg) in enumerate(zip(parents, parent_grads)):
            if pg is None or not isinstance(p, Tensor) or not p.requires_grad:
                continue
            if _modes.anomaly:
                _check_finite(pg, f"the backward pass of '{node._op}' (gradient for input {i})")
            if pg.shape != p.shape:     # the op broadcast p (or its backward rule is wrong)
                pg = _unbroadcast_or_raise(pg, p.shape, node._op, i)
            accumulate(grads, p, pg.astype(p.dtype, copy=False))   # float32 stays float32
