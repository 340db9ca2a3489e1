"""Neural-network functions.

Most are COMPOSITES: built from the primitive ops, with no backward of their own, so
their gradients come for free from the engine (softmax, log_softmax, gelu, rms_norm,
dropout, linear). A few are FUSED primitives with a hand-written backward, because the
composite would be slow or unstable (cross_entropy, layer_norm, fftconv). Every one is
gradient-checked in the test suite.
"""

from __future__ import annotations

import math

from .. import backend
from ..autograd import ShapeError, Tensor, check_same_device, make_result
from ..backend import xp_of
from ..ops import embedding, erf, exp, logsumexp, mean, pad, relu, sigmoid, tanh

__all__ = ["softmax", "log_softmax", "cross_entropy", "gelu", "layer_norm", "rms_norm",
           "dropout", "linear", "fftconv", "mse_loss", "embedding", "pad", "relu",
           "sigmoid", "tanh"]


# ------------------------------------------------------------------- composites


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """softmax(x)_i = exp(x_i - logsumexp(x)): stable, since logsumexp subtracts the max."""
    return exp(x - logsumexp(x, dim=dim, keepdim=True))


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """log softmax(x)_i = x_i - logsumexp(x)."""
    return x - logsumexp(x, dim=dim, keepdim=True)


_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU(x) = x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)).

    ``approximate="tanh"``: x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))).
    """
    if approximate == "none":
        return x * 0.5 * (erf(x * _SQRT_HALF) + 1.0)
    if approximate == "tanh":
        return x * 0.5 * (tanh((x + x * x * x * 0.044715) * _SQRT_2_OVER_PI) + 1.0)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def rms_norm(x: Tensor, normalized_shape, weight: Tensor | None = None,
             eps: float = 1e-6) -> Tensor:
    """RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight, over the trailing dims."""
    dims = _trailing_dims(x, normalized_shape, "rms_norm")
    y = x * (mean(x * x, dim=dims, keepdim=True) + eps) ** -0.5
    return y * weight if weight is not None else y


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p), so the
    expectation is unchanged. The identity when not training or p = 0."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    keep = backend.rand(x.shape, x.dtype, x.device) >= p
    return x * Tensor(keep.astype(x.dtype) * (1.0 / (1.0 - p)))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with W of shape (out, in) as in PyTorch."""
    y = x @ weight.T
    return y + bias if bias is not None else y


def mse_loss(x: Tensor, target) -> Tensor:
    """mean((x - target)^2)."""
    d = x - target
    return mean(d * d)


def _trailing_dims(x, normalized_shape, op) -> tuple:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape:
        raise ShapeError(f"{op}: normalized_shape {shape} does not match the trailing "
                         f"dims of input shape {x.shape}")
    return tuple(range(x.ndim - len(shape), x.ndim))


# ------------------------------------------------------------- fused primitives


def cross_entropy(logits: Tensor, target, ignore_index: int = -100,
                  reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy from raw logits, fused for speed and stability.

        loss_i = logsumexp(z_i) - z_i[y_i]          dloss_i/dz_i = softmax(z_i) - onehot(y_i)

    ``logits`` is (N, C) (or (..., C) with the class axis LAST), ``target`` holds class
    ids of shape (N,) (or (...)). Positions whose target is ``ignore_index`` add nothing
    and are not counted by the mean.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got "
                         f"{reduction!r}")
    check_same_device("cross_entropy", logits, target)
    t = target.data if isinstance(target, Tensor) else xp_of(logits.data).asarray(target)
    if t.shape != logits.shape[:-1]:
        raise ShapeError(f"cross_entropy: target shape {t.shape} must equal the logits' "
                         f"shape without the class axis, {logits.shape[:-1]} (logits "
                         f"{logits.shape})")
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class ids, got {t.dtype}")
    n_class = logits.shape[-1]
    z = logits.data.reshape(-1, n_class)                     # (M, C)
    t = t.reshape(-1)                                        # (M,)
    xp = xp_of(z)
    valid = t != ignore_index
    safe_t = xp.where(valid, t, 0)
    rows = xp.arange(z.shape[0])
    zmax = z.max(axis=1, keepdims=True)
    e = xp.exp(z - zmax)                                     # (M, C)
    s = e.sum(axis=1, keepdims=True)                         # (M, 1)
    losses = (xp.log(s[:, 0]) + zmax[:, 0] - z[rows, safe_t]) * valid
    n_valid = valid.sum()
    if reduction == "mean":
        out = losses.sum() / n_valid.astype(z.dtype)
    elif reduction == "sum":
        out = losses.sum()
    else:
        out = losses.reshape(logits.shape[:-1])
    shape = logits.shape

    def backward(g):
        p = e / s                                            # softmax (M, C)
        p[rows, safe_t] -= 1.0                               # - onehot(y)
        if reduction == "mean":
            scale = valid * (g / n_valid.astype(g.dtype))
        elif reduction == "sum":
            scale = valid * g
        else:
            scale = valid * g.reshape(-1)
        p *= scale[:, None].astype(p.dtype)
        return p.reshape(shape), None

    return make_result("cross_entropy", out.astype(z.dtype, copy=False), (logits, target),
                       backward)


def layer_norm(x: Tensor, normalized_shape, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the trailing dims, fused (one op instead of about eight).

        mu = mean(x),  var = mean((x - mu)^2)        (two-pass: stable in float32)
        xhat = (x - mu) / sqrt(var + eps),  y = xhat * w + b

    Backward, with n the normalized size and dxhat = g * w:
        dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps)
        dw = sum over batch of g * xhat,  db = sum over batch of g
    """
    dims = _trailing_dims(x, normalized_shape, "layer_norm")
    check_same_device("layer_norm", x, weight, bias)
    xd = x.data
    xp = xp_of(xd)
    mu = xd.mean(axis=dims, keepdims=True)
    xc = xd - mu
    var = (xc * xc).mean(axis=dims, keepdims=True)
    rstd = 1.0 / xp.sqrt(var + eps)
    xhat = xc * rstd                                         # (..., *normalized_shape)
    out = xhat * weight.data if weight is not None else xhat.copy()
    if bias is not None:
        out += bias.data
    batch_axes = tuple(range(xd.ndim - len(dims)))

    def backward(g):
        gw = (g * xhat).sum(axis=batch_axes) if weight is not None and weight.requires_grad \
            else None
        gb = g.sum(axis=batch_axes) if bias is not None and bias.requires_grad else None
        gx = None
        if x.requires_grad:
            dxhat = g * weight.data if weight is not None else g
            m1 = dxhat.mean(axis=dims, keepdims=True)
            m2 = (dxhat * xhat).mean(axis=dims, keepdims=True)
            gx = dxhat - m1
            gx -= xhat * m2
            gx *= rstd
        return gx, gw, gb

    return make_result("layer_norm", out, (x, weight, bias), backward)


def fftconv(u: Tensor, h: Tensor) -> Tensor:
    """Causal convolution along the last axis, by FFT, in O(L log L):

        y[..., t] = sum_{s=0}^{t} h[..., s] * u[..., t - s]        (output length L)

    ``u`` is (..., L), ``h`` is (..., Lh); leading axes broadcast (e.g. u (B, D, L)
    with h (D, L)). Zero-padding both to n >= L + Lh - 1 makes the FFT's circular
    convolution equal the linear one, so nothing wraps around.

    Backward (correlations, also by FFT, with G = FFT(dL/dy)):
        dL/du[t] = sum_s h[s] g[t + s]  = IFFT(G * conj(H))[:L]
        dL/dh[s] = sum_t u[t] g[t + s]  = IFFT(G * conj(U))[:Lh]
    """
    check_same_device("fftconv", u, h)
    L, Lh = u.shape[-1], h.shape[-1]
    n = backend.fft_size(L + Lh - 1)
    dtype = u.dtype
    U = backend.rfft(u.data, n)                              # (..., n//2 + 1)
    H = backend.rfft(h.data, n)
    try:
        Y = U * H
    except ValueError:
        raise ShapeError(f"fftconv: leading dims of u {u.shape} and h {h.shape} cannot "
                         "be broadcast together") from None
    out = backend.irfft(Y, n, dtype)[..., :L]

    def backward(g):
        xp = xp_of(g)
        G = backend.rfft(g, n)
        gu = backend.irfft(G * xp.conj(H), n, dtype)[..., :L] if u.requires_grad else None
        gh = backend.irfft(G * xp.conj(U), n, dtype)[..., :Lh] if h.requires_grad else None
        return gu, gh

    return make_result("fftconv", out, (u, h), backward)
