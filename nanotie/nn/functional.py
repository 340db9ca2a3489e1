"""Neural-network functions.

Most are COMPOSITES: built from the primitive ops, with no backward of their own, so
their gradients come for free from the engine (log_softmax, rms_norm, dropout,
mse_loss, silu). A few are FUSED primitives with a hand-written backward, because the
composite would be slow or unstable on a transformer's largest activations (softmax,
gelu, cross_entropy, layer_norm, linear, scaled_dot_product_attention, fftconv). Every
one is gradient-checked in the test suite.

Speed, said once: the fused ops make each large array once and update it in place
(``a *= b``, ``xp.exp(a, out=a)``), which saves a pass over memory per step of the
formula; and they write the formula as work on a block of rows, which
``backend.parallel_rows`` (the opt-in speed switch) may run on several cores.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..autograd import ShapeError, Tensor, check_same_device, make_result, unbroadcast
from ..backend import xp_of
from ..ops import embedding, logsumexp, mean, pad, relu, sigmoid, tanh
from ..ops._common import normalize_dim

__all__ = ["softmax", "log_softmax", "cross_entropy", "gelu", "layer_norm", "rms_norm",
           "dropout", "linear", "scaled_dot_product_attention", "fftconv", "mse_loss",
           "silu", "embedding", "pad", "relu", "sigmoid", "tanh"]


# ------------------------------------------------------------------- composites


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """log softmax(x)_i = x_i - logsumexp(x)."""
    return x - logsumexp(x, dim=dim, keepdim=True)


def rms_norm(x: Tensor, normalized_shape, weight: Tensor | None = None,
             eps: float = 1e-6) -> Tensor:
    """RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight, over the trailing dims."""
    dims = _trailing_dims(x, normalized_shape, "rms_norm")
    norm_shape = x.shape[x.ndim - len(dims):]
    if weight is not None and weight.shape != norm_shape:   # broadcasting would hide it
        raise ShapeError(f"rms_norm: weight of shape {weight.shape} does not match "
                         f"normalized_shape {norm_shape}")
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


def silu(x: Tensor) -> Tensor:
    """SiLU (swish): x * sigmoid(x), the gate of a SwiGLU feed-forward layer."""
    return x * sigmoid(x)


def mse_loss(x: Tensor, target) -> Tensor:
    """mean((x - target)^2), over inputs of ONE shape.

    Shapes that differ are refused, not broadcast: (4, 1) against (4,) would broadcast
    to (4, 4) and average 16 differences instead of 4 (PyTorch only warns)."""
    t_shape = np.shape(target.data if isinstance(target, Tensor) else target)
    if tuple(t_shape) != tuple(x.shape):
        raise ShapeError(f"mse_loss: input shape {x.shape} and target shape "
                         f"{tuple(t_shape)} differ; they must be the same (reshape one, "
                         f"e.g. target.reshape({x.shape}))")
    d = x - target
    return mean(d * d)


def _trailing_dims(x, normalized_shape, op) -> tuple:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape:
        raise ShapeError(f"{op}: normalized_shape {shape} does not match the trailing "
                         f"dims of input shape {x.shape}")
    return tuple(range(x.ndim - len(shape), x.ndim))


# ------------------------------------------------------------- fused primitives


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m), with m = max_j x_j (stable).

    Fused (as a composite, ``exp(x - logsumexp(x))``). With y = softmax(x), the backward
    is the Jacobian-vector product

        dL/dx_i = y_i * (g_i - sum_j g_j y_j).
    """
    axis = normalize_dim(dim, x.ndim, "softmax") if x.ndim else None
    xd = x.data
    xp = xp_of(xd)
    y = xp.asarray(xd - xd.max(axis=axis, keepdims=True))
    xp.exp(y, out=y)
    y /= y.sum(axis=axis, keepdims=True)

    def backward(g):
        gx = g * y
        s = gx.sum(axis=axis, keepdims=True)            # sum(g * y)
        gx -= y * s                                     # y * (g - sum(g * y))
        return (gx,)

    return make_result("softmax", y, (x,), backward)


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask=None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None) -> Tensor:
    """Attention, fused: softmax(q k^T * scale + mask) v, with PyTorch's name and arguments.

    ``query`` (..., Tq, E), ``key`` (..., Tk, E), ``value`` (..., Tk, Ev) -> (..., Tq, Ev);
    the leading (batch, head) axes broadcast. ``scale`` defaults to 1/sqrt(E).
    ``attn_mask`` is added to the scores (a float mask: 0 where a query may look, -inf
    where it may not); a boolean mask marks with True the keys a query may attend to
    (PyTorch's convention). ``is_causal`` lets query i see the keys j <= i. With
    ``dropout_p`` > 0 the attention weights are dropped and rescaled as by ``dropout``.

    With S = scale q k^T + mask, P = softmax(S) (row by row), O = P v and G = dL/dO:

        dv = P^T G,   dP = G v^T,   dS = P * (dP - rowsum(dP * P)),
        dq = scale dS k,   dk = scale dS^T q,   dmask = dS

    and rowsum(dP * P) = rowsum(G * O) (expand dP = G v^T and O = P v; it holds with
    dropout too), which reads (Tq, Ev) arrays instead of (Tq, Tk) ones (FlashAttention's
    trick). Fused, the (..., Tq, Tk) scores, the largest array of a transformer, are
    made once and turned into P in place, instead of once per op of the composite.
    """
    query, key, value = (t if isinstance(t, Tensor) else Tensor(t) for t in (query, key, value))
    check_same_device("scaled_dot_product_attention", query, key, value, attn_mask)
    q, k, v = query.data, key.data, value.data
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2 or q.shape[-1] != k.shape[-1] \
            or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"scaled_dot_product_attention: query {query.shape}, key "
                         f"{key.shape} and value {value.shape} do not fit: need (..., Tq, E), "
                         "(..., Tk, E) and (..., Tk, Ev)")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1), got "
                         f"{dropout_p}")
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal, not both")
    xp = xp_of(q)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    n_q, n_k = q.shape[-2], k.shape[-2]
    mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
    if is_causal:
        mask = xp.triu(xp.full((n_q, n_k), -math.inf, dtype=q.dtype), k=1)
    elif mask is not None and mask.dtype == bool:
        mask = xp.where(mask, 0.0, -math.inf).astype(q.dtype)

    q_scaled = q * scale                         # scale q (Tq x E), not S (Tq x Tk)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2],
                                () if mask is None else mask.shape[:-2])
    # P (..., Tq, Tk) is the one large new array: made once, turned into softmax in place.
    p = xp.empty(batch + (n_q, n_k), dtype=xp.result_type(q_scaled.dtype, k.dtype))
    out = xp.empty(batch + (n_q, v.shape[-1]), dtype=xp.result_type(p.dtype, v.dtype))
    if dropout_p > 0.0:
        keep = backend.rand(p.shape, p.dtype, query.device) >= dropout_p
        p_used = xp.empty_like(p)                # P with dropped weights, rescaled
    else:
        p_used = p
    ones = xp.ones(n_k, dtype=p.dtype)

    def rows_of(a, rows):       # a's block of batch rows, or all of a where it broadcasts
        return a[rows] if a.ndim == p.ndim and a.shape[0] == p.shape[0] else a

    def forward(rows):                  # a block of batch rows (the B axis of (B, H))
        s = p[rows]
        xp.matmul(rows_of(q_scaled, rows), rows_of(k, rows).swapaxes(-1, -2), out=s)
        if mask is not None:
            s += rows_of(mask, rows)                           # S = scale q k^T + mask
        s -= s.max(axis=-1, keepdims=True)
        xp.exp(s, out=s)
        s /= (s @ ones)[..., None]          # P = softmax(S); row sums by BLAS, not .sum
        if dropout_p > 0.0:
            xp.multiply(s, keep[rows], out=p_used[rows])
            p_used[rows] *= 1.0 / (1.0 - dropout_p)
        xp.matmul(p_used[rows], rows_of(v, rows), out=out[rows])   # O = P v

    _attention_blocks(forward, batch, xp)
    mask_grad = isinstance(attn_mask, Tensor) and attn_mask.requires_grad

    def backward(g):
        ds_dtype = xp.result_type(g.dtype, v.dtype)
        gq = xp.empty(batch + q.shape[-2:], dtype=xp.result_type(ds_dtype, k.dtype)) \
            if query.requires_grad else None
        gk = xp.empty(batch + k.shape[-2:], dtype=xp.result_type(ds_dtype, q.dtype)) \
            if key.requires_grad else None
        gv = xp.empty(batch + v.shape[-2:], dtype=xp.result_type(p.dtype, g.dtype)) \
            if value.requires_grad else None
        ds_all = xp.empty(p.shape, dtype=ds_dtype) if mask_grad else None

        def grad(rows):
            g_rows = g[rows]
            if gv is not None:
                xp.matmul(p_used[rows].swapaxes(-1, -2), g_rows, out=gv[rows])   # P^T G
            ds = xp.matmul(g_rows, rows_of(v, rows).swapaxes(-1, -2),             # dP, then
                           out=None if ds_all is None else ds_all[rows])        # dS in place
            if dropout_p > 0.0:
                ds *= keep[rows]
                ds *= 1.0 / (1.0 - dropout_p)
            ds -= xp.einsum("...ij,...ij->...i", g_rows, out[rows])[..., None]  # - rowsum(G*O)
            ds *= p[rows]
            if gq is not None:
                xp.matmul(ds, rows_of(k, rows), out=gq[rows])
                gq[rows] *= scale
            if gk is not None:
                xp.matmul(ds.swapaxes(-1, -2), rows_of(q_scaled, rows), out=gk[rows])

        _attention_blocks(grad, batch, xp)
        return gq, gk, gv, ds_all

    return make_result("scaled_dot_product_attention", out, (query, key, value, attn_mask),
                       backward)


def _attention_blocks(work, batch: tuple, xp) -> None:
    """``work`` on blocks of the first batch axis, or once on all when there is none."""
    backend.parallel_rows(work, batch[0], xp) if batch else work(Ellipsis)


_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_C = 0.044715          # the cubic coefficient of GELU's tanh approximation
_MIN_BLOCK = 1 << 16        # elements (multiply-adds for a product) below which a block
_MIN_PRODUCT = 1 << 20      # costs more to hand to a thread than it saves


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU(x) = x * Phi(x), Phi the standard normal CDF = (1 + erf(x / sqrt 2)) / 2.

        d/dx = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)

    ``approximate="tanh"`` (GPT-2's): with u = sqrt(2/pi) (x + c x^3), c = 0.044715,
    t = tanh(u),

        GELU(x) ~= x/2 (1 + t),   d/dx = (1 + t)/2 + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 c x^2)

    Fused (as a composite it is about eight ops on the widest activation of an MLP).
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    xp = xp_of(x.data)
    xd = xp.ascontiguousarray(x.data if x.dtype.kind in "fc" else x.data.astype("float64"))
    n = xd.size
    out = xp.empty_like(xd)
    kept = xp.empty_like(xd)             # Phi(x), or t = tanh(u): what backward reuses
    flat_x, flat_out, flat_kept = xd.reshape(-1), out.reshape(-1), kept.reshape(-1)

    if approximate == "none":
        def forward(part):
            xs, cdf, y = flat_x[part], flat_kept[part], flat_out[part]
            cdf[...] = backend.erf(xs * _SQRT_HALF)
            cdf += 1.0
            cdf *= 0.5                                       # Phi(x)
            xp.multiply(xs, cdf, out=y)

        def derivative(part, dx):
            xs, cdf = flat_x[part], flat_kept[part]
            xp.multiply(xs, xs, out=dx)
            dx *= -0.5
            xp.exp(dx, out=dx)
            dx *= xs
            dx *= _INV_SQRT_2PI                              # x phi(x)
            dx += cdf
    else:
        def forward(part):
            xs, t, y = flat_x[part], flat_kept[part], flat_out[part]
            xp.multiply(xs, xs, out=t)
            t *= _GELU_C
            t += 1.0
            t *= xs
            t *= _SQRT_2_OVER_PI                             # u
            xp.tanh(t, out=t)                                # t = tanh(u)
            xp.add(t, 1.0, out=y)
            y *= xs
            y *= 0.5

        def derivative(part, dx):
            xs, t = flat_x[part], flat_kept[part]
            xp.multiply(xs, xs, out=dx)
            dx *= 3 * _GELU_C
            dx += 1.0
            dx *= xs
            dx *= _SQRT_2_OVER_PI                            # x du/dx
            sech2 = t * t
            xp.subtract(1.0, sech2, out=sech2)               # 1 - t^2
            dx *= sech2
            dx += t
            dx += 1.0
            dx *= 0.5

    backend.parallel_rows(forward, n, xp, min_rows=_MIN_BLOCK)

    def backward(g):
        flat_g = xp.ascontiguousarray(g).reshape(-1)
        dx = xp.empty_like(xd)
        flat_dx = dx.reshape(-1)

        def chain(part):                                     # dL/dx = g * GELU'(x)
            derivative(part, flat_dx[part])
            flat_dx[part] *= flat_g[part]

        backend.parallel_rows(chain, n, xp, min_rows=_MIN_BLOCK)
        return (dx,)

    return make_result("gelu", out, (x,), backward)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with W of shape (out, in) as in PyTorch.

    Fused: the rows of x, seen as an (N, in) matrix, make ONE matrix product, and the
    bias is added in place. With G = dL/dy as an (N, out) matrix:

        dx = G W,   dW = G^T x,   db = sum of the rows of G
    """
    x, weight = (t if isinstance(t, Tensor) else Tensor(t) for t in (x, weight))
    bias = bias if bias is None or isinstance(bias, Tensor) else Tensor(bias)
    check_same_device("linear", x, weight, bias)
    xd, w = x.data, weight.data
    if w.ndim != 2 or xd.ndim == 0 or xd.shape[-1] != w.shape[1]:
        raise ShapeError(f"linear: input of shape {x.shape} does not fit a weight of shape "
                         f"{weight.shape}: the weight must be (out_features, "
                         f"{xd.shape[-1] if xd.ndim else '?'})")
    n_out, n_in = w.shape
    if bias is not None and bias.shape != (n_out,):
        raise ShapeError(f"linear: bias of shape {bias.shape} does not fit a weight of "
                         f"shape {weight.shape}: it must be ({n_out},)")
    xp = xp_of(xd)
    x2 = xd.reshape(-1, n_in)                                # (N, in)
    n_rows = x2.shape[0]
    y = xp.empty((n_rows, n_out), dtype=xp.result_type(x2.dtype, w.dtype))   # (N, out)
    min_rows = _MIN_PRODUCT // max(1, n_in * n_out)         # a row: n_in * n_out multiply-adds
    backend.parallel_rows(lambda rows: xp.matmul(x2[rows], w.T, out=y[rows]), n_rows, xp, min_rows)
    if bias is not None:
        b = bias.data
        if y.dtype == np.result_type(y.dtype, b.dtype):
            y += b
        else:                                                # a wider bias: promote
            y = y + b
    out = y.reshape(xd.shape[:-1] + (n_out,))

    def backward(g):
        g2 = g.reshape(-1, n_out)                            # (N, out)
        gx = gw = gb = None
        if x.requires_grad:
            gx = xp.empty((n_rows, n_in), dtype=xp.result_type(g2.dtype, w.dtype))
            backend.parallel_rows(lambda rows: xp.matmul(g2[rows], w, out=gx[rows]),
                                  n_rows, xp, min_rows)
            gx = gx.reshape(xd.shape)                        # G W
        if weight.requires_grad:
            gw = xp.empty((n_out, n_in), dtype=xp.result_type(g2.dtype, x2.dtype))
        if bias is not None and bias.requires_grad:
            gb = xp.empty(n_out, dtype=g2.dtype)
            ones = xp.ones(n_rows, dtype=g2.dtype)

        def weight_grads(rows):                              # a block of output features
            g_rows = g2[:, rows]
            if gw is not None:
                xp.matmul(g_rows.T, x2, out=gw[rows])        # G^T x, (out, in)
            if gb is not None:                               # column sums of G, by BLAS
                xp.matmul(ones, g_rows, out=gb[rows])

        if gw is not None or gb is not None:
            backend.parallel_rows(weight_grads, n_out, xp,
                                  min_rows=_MIN_PRODUCT // max(1, n_rows * n_in))
        return gx, gw, gb

    return make_result("linear", out, (x, weight, bias), backward)


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
    # NumPy would read a negative id from the end of the row (silently scoring another
    # class) and fail on y >= C: every counted target must be 0 <= y < C.
    bad = valid & ((t < 0) | (t >= n_class))
    if bool(bad.any()):
        raise IndexError(f"cross_entropy: target {int(t[bad][0])} is not a class id for "
                         f"logits with {n_class} classes (expected 0 <= target < "
                         f"{n_class}, or ignore_index={ignore_index})")
    safe_t = xp.where(valid, t, 0)
    rows = xp.arange(z.shape[0])
    zmax = z.max(axis=1)                                     # (M,)
    e = z - zmax[:, None]                                    # (M, C)
    xp.exp(e, out=e)           # in place: one (M, C) array, not two; kept for backward
    s = e @ xp.ones(n_class, dtype=e.dtype)   # row sums, (M,): BLAS uses all threads
    losses = (xp.log(s) + zmax - z[rows, safe_t]) * valid
    n_valid = valid.sum()
    if reduction == "mean":
        out = losses.sum() / n_valid.astype(z.dtype)
    elif reduction == "sum":
        out = losses.sum()
    else:
        out = losses.reshape(logits.shape[:-1])
    shape = logits.shape

    def backward(g):
        g = g.reshape(-1) / n_valid.astype(g.dtype) if reduction == "mean" else g.reshape(-1)
        scale = (valid * g).astype(e.dtype, copy=False)     # dloss/dloss_i, (M,)
        # (softmax - onehot(y)) * scale, row by row, in one pass over (M, C):
        p = e * (scale / s)[:, None]                         # softmax = e / s
        p[rows, safe_t] -= scale
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
    xd = x.data if x.dtype.kind in "fc" else x.data.astype("float64")  # as .mean() would
    xp = xp_of(xd)
    shape, norm_shape = xd.shape, xd.shape[xd.ndim - len(dims):]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != norm_shape:    # reshape(n) below would hide it
            raise ShapeError(f"layer_norm: {name} of shape {p.shape} does not match "
                             f"normalized_shape {norm_shape}")
    n = math.prod(norm_shape)
    rows = math.prod(shape[:xd.ndim - len(dims)])
    # x as (rows, n), one row per normalized slice. A row mean is a product with a vector
    # of 1/n (BLAS, faster than .mean), a row mean of a product a row-wise einsum (no
    # temporary array).
    x2 = xd.reshape(rows, n)
    mean_vec = xp.full(n, 1.0 / max(n, 1), dtype=xd.dtype)   # (n,)
    w = None if weight is None else weight.data.reshape(n)
    b = None if bias is None else bias.data.reshape(n)
    xhat = xp.empty((rows, n), dtype=xd.dtype)
    rstd = xp.empty(rows, dtype=xd.dtype)                    # 1 / sqrt(var + eps)
    out_dtype = xp.result_type(xd.dtype, *(a.dtype for a in (w, b) if a is not None))
    out = xp.empty(shape, dtype=out_dtype)                   # (..., *normalized_shape)

    def forward(r):
        xh, y = xhat[r], out.reshape(rows, n)[r]
        xp.subtract(x2[r], (x2[r] @ mean_vec)[:, None], out=xh)   # x - mu
        var = xp.einsum("ij,ij->i", xh, xh) / n                   # mean((x - mu)^2)
        rstd[r] = 1.0 / xp.sqrt(var + eps)
        xh *= rstd[r][:, None]                                    # xhat
        if w is not None:
            xp.multiply(xh, w, out=y)
        else:
            y[...] = xh
        if b is not None:
            y += b

    backend.parallel_rows(forward, rows, xp, min_rows=_MIN_BLOCK // max(n, 1))

    def backward(g):
        g2 = g.reshape(rows, n)
        gx = gw = gb = None
        if weight is not None and weight.requires_grad:
            gw = xp.einsum("ij,ij->j", g2, xhat).reshape(norm_shape)  # sum_rows g * xhat
        if bias is not None and bias.requires_grad:
            gb = (xp.ones(rows, dtype=g2.dtype) @ g2).reshape(norm_shape)  # BLAS column sums
        if x.requires_grad:
            gx = xp.empty(shape, dtype=xp.result_type(g.dtype, out_dtype))

            def grad(r):
                d = gx.reshape(rows, n)[r]
                if w is not None:
                    xp.multiply(g2[r], w, out=d)                    # dxhat
                else:
                    d[...] = g2[r]
                m1 = d @ mean_vec                                   # mean(dxhat)
                m2 = xp.einsum("ij,ij->i", d, xhat[r]) / n          # mean(dxhat * xhat)
                d -= m1[:, None]
                d -= xhat[r] * m2[:, None]
                d *= rstd[r][:, None]

            backend.parallel_rows(grad, rows, xp, min_rows=_MIN_BLOCK // max(n, 1))
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
        # The FFT is linear, so the sum over broadcast axes (the batch, for h) that the
        # engine would do after the inverse FFT is done before it, on the spectrum:
        # one inverse FFT per filter instead of one per batch row.
        gu = backend.irfft(unbroadcast(G * xp.conj(H), U.shape), n, dtype)[..., :L] \
            if u.requires_grad else None
        gh = backend.irfft(unbroadcast(G * xp.conj(U), H.shape), n, dtype)[..., :Lh] \
            if h.requires_grad else None
        return gu, gh

    return make_result("fftconv", out, (u, h), backward)
