"""nanotie: a small, readable library that teaches weight tying.

The public face: the Tensor and its ops (PyTorch's names, so code transfers), the
gradient checker, and ``nn``. Everything runs on NumPy, or on CuPy on a GPU.
"""

import numpy as _np

from . import backend
from .autograd import (AnomalyError, ShapeError, Tensor, detect_anomaly, enable_grad,
                       is_anomaly_enabled, is_grad_enabled, no_grad, tensor, from_numpy)
from .backend import DeviceError, cuda_available, manual_seed
from .ops import (abs, add, amax, amin, cat, clamp, cos, div, einsum, embedding, eq, erf,
                  exp, expand, flatten, ge, gt, le, log, logsumexp, lt, matmul, max,
                  maximum, mean, min, minimum, mul, ne, neg, pad, permute, pow, relu,
                  reshape, sigmoid, sin, sqrt, squeeze, stack, sub, sum, tanh, transpose,
                  unsqueeze, where)
from .ops._common import shape_arg as _shape_arg
from .gradcheck import GradcheckError, gradcheck, gradcheck_module  # noqa: E402  (ops bound)
from . import nn  # noqa: E402

__version__ = "0.1.0"

float32 = _np.float32
float64 = _np.float64
int64 = _np.int64
bool_ = _np.bool_


def _make(fill, shape, dtype, device, requires_grad):
    """A new leaf made by ``fill(xp, shape, dtype, device)``; ``shape`` as ``*shape`` or
    one tuple, float32 and ``$NANOTIE_DEVICE`` by default."""
    device = device or backend.default_device()
    data = fill(backend.xp_for(device), _shape_arg(shape), _np.dtype(dtype or float32), device)
    return Tensor(data, requires_grad=requires_grad)


def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of zeros, shaped ``shape``."""
    return _make(lambda xp, s, d, _: xp.zeros(s, dtype=d), shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of ones, shaped ``shape``."""
    return _make(lambda xp, s, d, _: xp.ones(s, dtype=d), shape, dtype, device, requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal samples from the device's seeded generator."""
    return _make(lambda xp, s, d, dev: backend.randn(s, d, dev), shape, dtype, device,
                 requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform [0, 1) samples from the device's seeded generator."""
    return _make(lambda xp, s, d, dev: backend.rand(s, d, dev), shape, dtype, device,
                 requires_grad)


def randint(low, high, shape, device=None) -> Tensor:
    """Integers drawn uniformly from [low, high), shaped ``shape``, a tuple or one int
    (ids, never a gradient)."""
    return Tensor(backend.randint(low, high, shape, device or backend.default_device()))


__all__ = [
    "Tensor", "tensor", "from_numpy", "no_grad", "enable_grad", "is_grad_enabled",
    "detect_anomaly", "is_anomaly_enabled", "manual_seed", "gradcheck", "gradcheck_module",
    "GradcheckError", "nn", "backend", "ShapeError", "AnomalyError", "DeviceError",
    "cuda_available",
    "zeros", "ones", "randn", "rand", "randint", "float32", "float64", "int64", "bool_",
    "abs", "add", "amax", "amin", "cat", "clamp", "cos", "div", "einsum", "embedding",
    "eq", "erf", "exp", "expand", "flatten", "ge", "gt", "le", "log", "logsumexp", "lt",
    "matmul", "max", "maximum", "mean", "min", "minimum", "mul", "ne", "neg", "pad",
    "permute", "pow", "relu", "reshape", "sigmoid", "sin", "sqrt", "squeeze", "stack",
    "sub", "sum", "tanh", "transpose", "unsqueeze", "where",
]
