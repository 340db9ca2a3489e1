"""The primitive ops, and the table that makes them Tensor methods and operators.

Every function here is differentiable through the engine in :mod:`nanotie.autograd`.
They are grouped by kind: elementwise, reductions, movement, indexing, linear
algebra. The fused neural-network primitives live in :mod:`nanotie.nn.functional`.
"""

import numpy as np

from ..autograd import Tensor
from .elementwise import (abs, add, cast, clamp, cos, div, eq, erf, exp, ge, gt, le, log,
                          lt, maximum, minimum, mul, ne, neg, pow, relu, sigmoid, sin, sqrt,
                          sub, tanh, to_device, where)
from .indexing import embedding, getitem
from ._common import parse_to_args
from .linalg import einsum, matmul
from .movement import (T, cat, expand, flatten, pad, permute, reshape, squeeze, stack,
                       transpose, unsqueeze)
from .reduction import amax, amin, logsumexp, mean, sum

__all__ = ["abs", "add", "amax", "amin", "cast", "cat", "clamp", "cos", "div", "einsum",
           "embedding", "eq", "erf", "exp", "expand", "flatten", "ge", "getitem", "gt",
           "le", "log", "logsumexp", "lt", "matmul", "max", "maximum", "mean", "min",
           "minimum", "mul", "ne", "neg", "pad", "permute", "pow", "relu", "reshape",
           "sigmoid", "sin", "sqrt", "squeeze", "stack", "sub", "sum", "tanh", "transpose",
           "unsqueeze", "where"]

# ``max``/``min`` reduce like ``amax``/``amin`` and return the values only (PyTorch's
# ``max(dim=...)`` also returns indices; use ``argmax`` on ``.data`` for those).
max = amax
min = amin


def _to(self, *args, **kwargs):
    """``t.to("cuda")``, ``t.to(np.float64)`` or ``t.to(device, dtype)``."""
    device, dtype = parse_to_args(args, kwargs)
    out = self if dtype is None else cast(self, np.dtype(dtype))
    return out if device is None else to_device(out, device)


def _inplace(op, symbol):
    """``t += x`` is ``t = t + x``: Python REBINDS the name to a new tensor. On a trainable
    leaf that is a silent no-op on the Parameter (``p -= lr * p.grad`` in a loop over
    ``model.parameters()``), so it is refused there; ``p.data -= ...`` updates in place."""
    def method(self, other):
        if self.is_leaf and self.requires_grad:
            raise RuntimeError(f"'{symbol}' on a leaf tensor that requires grad would make a "
                               "new tensor and leave this one unchanged; to update its "
                               f"values in place, write t.data {symbol} ...")
        return op(self, other)
    return method


# One table: method name -> function. Reading it is the quickest way to learn which
# Tensor methods exist.
_METHODS = {
    "__add__": add, "__radd__": lambda a, b: add(b, a),
    "__sub__": sub, "__rsub__": lambda a, b: sub(b, a),
    "__mul__": mul, "__rmul__": lambda a, b: mul(b, a),
    "__truediv__": div, "__rtruediv__": lambda a, b: div(b, a),
    "__pow__": pow, "__rpow__": lambda a, b: pow(b, a),
    "__matmul__": matmul, "__rmatmul__": lambda a, b: matmul(b, a),
    "__neg__": neg,
    "__iadd__": _inplace(add, "+="), "__isub__": _inplace(sub, "-="),
    "__imul__": _inplace(mul, "*="), "__itruediv__": _inplace(div, "/="),
    "__lt__": lt, "__le__": le, "__gt__": gt, "__ge__": ge,
    "__getitem__": getitem,
    "add": add, "sub": sub, "mul": mul, "div": div, "pow": pow, "matmul": matmul,
    "neg": neg, "exp": exp, "log": log, "sqrt": sqrt, "abs": abs, "tanh": tanh,
    "sigmoid": sigmoid, "relu": relu, "sin": sin, "cos": cos, "erf": erf,
    "clamp": clamp, "maximum": maximum, "minimum": minimum,
    "eq": eq, "ne": ne, "lt": lt, "le": le, "gt": gt, "ge": ge,
    "sum": sum, "mean": mean, "max": amax, "min": amin, "amax": amax, "amin": amin,
    "logsumexp": logsumexp,
    "reshape": reshape, "view": reshape,
    "flatten": flatten, "permute": permute, "transpose": transpose,
    "unsqueeze": unsqueeze, "squeeze": squeeze, "expand": expand,
    "contiguous": lambda a: a,
    "float": lambda a: cast(a, "float32"), "double": lambda a: cast(a, "float64"),
    "long": lambda a: cast(a, "int64"),
    "to": _to, "cpu": lambda a: to_device(a, "cpu"), "cuda": lambda a: to_device(a, "cuda"),
}

for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)
Tensor.T = property(T)
Tensor.mT = property(lambda a: transpose(a, -2, -1))
# ``==`` and ``!=`` stay identity comparisons so Tensors can be dict keys and set
# members (the engine and the tying bookkeeping rely on it); use ``.eq()``/``.ne()``.
