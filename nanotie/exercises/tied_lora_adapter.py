"""Exercise 6: the Tied-LoRA adapter as an op, forward and backward (``GOAL``, ``STUB``).

The tied A's and B's gradients are the sum the engine forms for a Parameter that sits
in several places: the check builds L :class:`nanotie.papers.tied_lora.TiedLoRALinear`
around the same A and B, and an untied twin with a copy per layer.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..nn.layers import Linear
from ..ops import stack
from ..papers.tied_lora import TiedLoRALinear
from . import Planted
from .checking import (Checker, CheckResult, Mistake, engine_reference, learner_op,
                       leaves, wrong_backward)
from .diagnose import close

TITLE = "Tied-LoRA: the tied adapter's forward and backward"
GOAL = ("Write the Tied-LoRA update diag(v_l) B diag(u_l) A x for L layers that share ONE A "
        "and ONE B, and its backward: the tied A's and B's gradients are sums over the "
        "layers, the per-layer u_l's and v_l's are not.")
FUNCTION = "tied_lora"

STUB = '''
import numpy as np


def tied_lora(X, A, B, u, v):
    """The Tied-LoRA update of L layers that share ONE A and ONE B, and its backward.

    X: (L, N, d)  the inputs: X[l] holds the N rows x_l that layer l adapts
    A: (r, d)     ONE matrix, used by every layer (tied)
    B: (3d, r)    ONE matrix, used by every layer (tied)
    u: (L, r)     u[l] is layer l's own scale u_l, applied to the r-wide hidden (before B)
    v: (L, 3d)    v[l] is layer l's own scale v_l, applied to the 3d-wide output (after B)

    For each layer l (Eq. 1 of the paper, without the frozen base weight):

        p_l   = x_l A^T                                   (N, r)
        h_l   = p_l * u_l                                 (N, r)
        y_l   = h_l B^T                                   (N, 3d)
        out_l = y_l * v_l  = diag(v_l) B diag(u_l) A x    (N, 3d)

    Do all layers at once: X @ A.T is (L, N, r), and u[:, None, :] broadcasts
    u_l over layer l's N rows.

    Return (out, backward): out is (L, N, 3d); backward(g) takes g = dL/dout, shaped
    like out, and returns (grad_X, grad_A, grad_B, grad_u, grad_v), shaped like X, A,
    B, u, v. Back through the four lines, per layer:

        dY_l = g_l * v_l       grad_v[l] = sum over the N rows of g_l * y_l
        dH_l = dY_l B          grad_B    = sum over l of dY_l^T h_l
        dP_l = dH_l * u_l      grad_u[l] = sum over the N rows of dH_l * p_l
        dX_l = dP_l A          grad_A    = sum over l of dP_l^T x_l

    A and B are tied: each layer uses them, so their gradients are SUMS over the
    layers (and over the rows). u and v are per layer: sum over the rows only and
    keep the layer axis.
    """
    out = ...  # your forward

    def backward(g):
        grad_X = ...  # your code
        grad_A = ...  # your code
        grad_B = ...  # your code
        grad_u = ...  # your code
        grad_v = ...  # your code
        return grad_X, grad_A, grad_B, grad_u, grad_v

    return out, backward
'''


def reference(X, A, B, u, v):
    """The solution."""
    P = X @ A.T                                           # (L, N, r)
    H = P * u[:, None, :]                                 # diag(u_l) A x      (L, N, r)
    Y = H @ B.T                                           # (L, N, 3d)
    out = Y * v[:, None, :]                               # diag(v_l) B ...    (L, N, 3d)

    def backward(g):
        dY = g * v[:, None, :]                            # (L, N, 3d)
        grad_v = (g * Y).sum(axis=1)                      # per layer: rows only (L, 3d)
        dH = dY @ B                                       # (L, N, r)
        grad_B = np.einsum("lno,lnr->or", dY, H)          # tied: sum over l and n (3d, r)
        dP = dH * u[:, None, :]                           # (L, N, r)
        grad_u = (dH * P).sum(axis=1)                     # per layer: rows only (L, r)
        grad_A = np.einsum("lnr,lnd->rd", dP, X)          # tied: sum over l and n (r, d)
        grad_X = dP @ A                                   # (L, N, d)
        return grad_X, grad_A, grad_B, grad_u, grad_v

    return out, backward


# ------------------------------------------------------- the library's adapter

def _adapter_stack(X, As, Bs, u, v) -> Tensor:
    """Layer l's update from a TiedLoRALinear around a zero (frozen) base Linear, with
    A = As[l] and B = Bs[l]; stacked to (L, N, 3d). Passing the same Tensor in every
    layer (tied) or one copy per layer (the untied twin) is the only difference."""
    L, _, d = X.shape
    rows = []
    for l in range(L):
        base = Linear(d, Bs[l].shape[0], bias=False)
        base.weight.data = np.zeros(base.weight.shape)    # W_qkv,l = 0: the update alone
        base.weight.requires_grad = False
        adapter = TiedLoRALinear(base, As[l], Bs[l], u[l], v[l])
        rows.append(adapter(X[l]))                        # (N, 3d)
    return stack(rows, dim=0)                            # (L, N, 3d)


def _tied(X, A, B, u, v) -> Tensor:
    return _adapter_stack(X, [A] * X.shape[0], [B] * X.shape[0], u, v)


def _untied_parts(X, A, B, u, v, g) -> tuple:
    """The untied twin: each layer holds its own equal copy of A and of B. Returns
    ({"layer l": dL/dA_l}, {"layer l": dL/dB_l})."""
    L = X.shape[0]

    def untied(X, u, v, *copies):
        return _adapter_stack(X, copies[:L], copies[L:], u, v)

    arrays = [X, u, v] + [A.copy() for _ in range(L)] + [B.copy() for _ in range(L)]
    _, grads = engine_reference(untied, arrays, g)             # X, u, v, the A's, the B's
    return ({f"layer {l}": grads[3 + l] for l in range(L)},
            {f"layer {l}": grads[3 + L + l] for l in range(L)})


# ------------------------------------------------------------------ the check

# (L, N, d, r): three layers of five rows, then four layers of one row. 3d != r in
# both, so a transposed B always shows in its shape.
SHAPES = [(3, 5, 4, 2), (4, 1, 3, 2)]


def _inputs(rng, shape):
    L, N, d, r = shape
    return (rng.standard_normal((L, N, d)), rng.standard_normal((r, d)),
            rng.standard_normal((3 * d, r)), rng.standard_normal((L, r)),
            rng.standard_normal((L, 3 * d)))


def _describe(X, A, B, u, v):
    L, N, d = X.shape
    return (f"L={L} layers, N={N} rows each, d={d}, r={A.shape[0]}: X {X.shape}, A "
            f"{A.shape}, B {B.shape}, u {u.shape}, v {v.shape}")


SCALE_HINT = ("u_l has r entries and scales the r-wide hidden p_l = x_l A^T, BEFORE B; "
              "v_l has 3d entries and scales the 3d-wide output, after B. Per layer: "
              "((X @ A.T) * u[:, None, :]) @ B.T * v[:, None, :].")


def _forward(c, fn, X, A, B, u, v):
    """The learner's (out, backward); a broadcasting error gets the scales' hint."""
    try:
        return c.forward(fn, X, A, B, u, v, what="tied_lora(X, A, B, u, v)")
    except Mistake as m:
        if "broadcast" not in str(m):
            raise
        first = str(m).split("\nHint:")[0]
        raise Mistake(f"{first}\nHint: {SCALE_HINT}") from None


def _wrong_outputs(X, A, B, u, v):
    """Outputs of recognised wrong forwards."""
    ones_u, ones_v = np.ones_like(u), np.ones_like(v)
    return [(reference(X, A, B, ones_u, v)[0], "u is left out. " + SCALE_HINT),
            (reference(X, A, B, u, ones_v)[0], "v is left out. " + SCALE_HINT)]


def _wrong_grads(X, A, B, u, v, g):
    """{input: [(gradient of a recognised wrong backward, what went wrong)]}."""
    # v left out of the chain (dY = g, not g * v_l): the backward of v_l = 1
    dX_no_v, dA_no_v, dB_no_v, du_no_v, _ = reference(X, A, B, u, np.ones_like(v))[1](g)
    # u left out of the chain (dP = dH, not dH * u_l): X's and A's parts of u_l = 1
    dX_no_u, dA_no_u, _, _, _ = reference(X, A, B, np.ones_like(u), v)[1](g)
    v_missing = ("v is left out of the chain. out = y * v_l, so the gradient that "
                 "reaches y (and through it B, u, A and X) is dY = g * v_l, not g.")
    u_missing = ("u is left out of the chain. h = p * u_l, so the gradient that reaches "
                 "p (and through it A and X) is dP = dH * u_l, not dH.")
    return {"X": [(dX_no_v, v_missing), (dX_no_u, u_missing)],
            "A": [(dA_no_v, v_missing), (dA_no_u, u_missing)],
            "B": [(dB_no_v, v_missing)],
            "u": [(du_no_v, v_missing)],
            "v": []}


def _expect_per_layer(c, got, want, name: str, width: str, known: list) -> None:
    """u and v are NOT tied: a gradient summed over the layers gets its own message."""
    total = want.sum(axis=0)                              # the gradient a tied u or v gets
    if isinstance(got, np.ndarray) and got.shape != want.shape:
        if got.shape in (total.shape, (1,) + total.shape):
            summed = close(got.reshape(total.shape), total)
            raise Mistake(
                f"your gradient for `{name}` has shape {got.shape}, but `{name}` has shape "
                f"{want.shape}: one {name}_l of {width} entries per layer. "
                + ("It equals the SUM over the layers of the right one: " if summed else "")
                + f"{name} is NOT tied, each layer has its own {name}_l, so its gradient "
                  f"is summed over that layer's N rows only and keeps the layer axis.")
    every_layer_the_sum = (np.broadcast_to(total, want.shape),
                           f"it gives every layer the SUM over all layers. {name} is NOT "
                           f"tied, each layer has its own {name}_l, so row l of its gradient "
                           f"is layer l's alone (summed over that layer's N rows only).")
    c.expect_array(got, want, name, "gradient", known=known + [every_layer_the_sum])


def _expect_tied(c, got, parts: dict, name: str, n_rows: int, known: list) -> None:
    """A and B are tied: the gradient is the sum of the untied twin's ``parts``."""
    L = len(parts)
    want = sum(parts.values())
    if isinstance(got, np.ndarray) and got.shape == (L,) + want.shape:
        raise Mistake(f"your gradient for `{name}` has shape {got.shape}: one {want.shape} "
                      f"slice per layer. `{name}` is tied, ONE array used by all {L} layers, "
                      f"so its gradient is the SUM of those slices over the layers: "
                      f"shape {want.shape}.")
    factors = {}
    if n_rows > 1:
        rows = (f"each of a layer's N = {n_rows} rows is a use of `{name}` too; SUM its "
                f"gradient over the rows, don't average.")
        factors = {1.0 / n_rows: rows, 1.0 / (n_rows * L): rows + " (And over the layers.)"}
    c.expect_array(got, want, name, "gradient", uses=L, parts=parts, known=known,
                   factors=factors)


def check(fn) -> CheckResult:
    rng = np.random.default_rng(6)
    cases = [_inputs(rng, s) for s in SHAPES]
    upstream = [rng.standard_normal(X.shape[:2] + (B.shape[0],)) for X, A, B, u, v in cases]
    wants = [engine_reference(_tied, list(case), g)[1] for case, g in zip(cases, upstream)]
    wrongs = [_wrong_grads(*case, g) for case, g in zip(cases, upstream)]
    with Checker(f"Exercise 6: {TITLE}") as c:
        with c.step("the forward equals L TiedLoRALinear adapters sharing one A and one B"):
            for X, A, B, u, v in cases:
                c.case = _describe(X, A, B, u, v)
                out, _ = _forward(c, fn, X, A, B, u, v)
                want = _tied(*leaves(X, A, B, u, v)).data
                c.expect_array(out, want, "tied_lora(X, A, B, u, v)",
                               known=_wrong_outputs(X, A, B, u, v))
        mine = []                                         # the learner's, per case
        with c.step("the backward returns five gradients; grad_X is the engine's"):
            for case, g, want, wrong in zip(cases, upstream, wants, wrongs):
                c.case = _describe(*case)
                grads = c.gradients(fn, *case, g=g, what="tied_lora(X, A, B, u, v)")
                grads = c.per_input(grads, ["X", "A", "B", "u", "v"])
                c.expect_array(grads[0], want[0], "X", "gradient", known=wrong["X"])
                mine.append(grads)
        with c.step("the per-layer u and v: gradients summed over rows, one row per layer"):
            for case, want, wrong, grads in zip(cases, wants, wrongs, mine):
                c.case = _describe(*case)
                _expect_per_layer(c, grads[3], want[3], "u", "r", wrong["u"])
                _expect_per_layer(c, grads[4], want[4], "v", "3d", wrong["v"])
        with c.step("the tied A and B: gradients are the SUMS over layers of an untied "
                    "twin's per-layer gradients"):
            for case, g, wrong, grads in zip(cases, upstream, wrongs, mine):
                c.case = _describe(*case) + "; the twin holds a copy of A and B per layer"
                parts_A, parts_B = _untied_parts(*case, g)
                n_rows = case[0].shape[1]
                _expect_tied(c, grads[1], parts_A, "A", n_rows, wrong["A"])
                _expect_tied(c, grads[2], parts_B, "B", n_rows, wrong["B"])
        with c.step("finite differences agree with your backward (nanotie.gradcheck)"):
            for case in cases:
                c.case = _describe(*case)
                c.expect_gradcheck(learner_op(fn, "tied_lora"), leaves(*case))
    return c.result


# ------------------------------------------------ wrong answers, for the tests

@wrong_backward(reference)
def _last_layer_only(X, A, B, u, v, g, grads):
    gX, _, _, gu, gv = grads
    _, gA, gB, _, _ = reference(X[-1:], A, B, u[-1:], v[-1:])[1](g[-1:])
    return gX, gA, gB, gu, gv                             # the other layers' uses lost


@wrong_backward(reference)
def _tied_averaged(X, A, B, u, v, g, grads):
    gX, gA, gB, gu, gv = grads
    return gX, gA / len(X), gB / len(X), gu, gv           # a mean over the layers


@wrong_backward(reference)
def _per_layer_summed(X, A, B, u, v, g, grads):
    gX, gA, gB, gu, gv = grads
    return gX, gA, gB, gu.sum(axis=0), gv.sum(axis=0)     # u, v treated as tied


@wrong_backward(reference)
def _grad_B_transposed(X, A, B, u, v, g, grads):
    gX, gA, gB, gu, gv = grads
    return gX, gA, gB.T, gu, gv                           # H^T dY: (r, 3d)


def _u_after_B(X, A, B, u, v):
    out = (X @ A.T) @ B.T * u[:, None, :] * v[:, None, :]  # u meets the 3d-wide output
    return out, reference(X, A, B, u, v)[1]


@wrong_backward(reference)
def _v_missing_from_grad_B(X, A, B, u, v, g, grads):
    gX, gA, _, gu, gv = grads
    H = (X @ A.T) * u[:, None, :]
    return gX, gA, np.einsum("lno,lnr->or", g, H), gu, gv   # g where g * v belongs


MISTAKES = [
    Planted("the tied A's and B's gradients taken from the last layer only",
            _last_layer_only, ("only the part from layer", "misses", "SUM")),
    Planted("the tied A's and B's gradients averaged over the layers", _tied_averaged,
            ("off by a factor of", "SUMMED")),
    Planted("u's and v's gradients summed over the layers, as if they were tied",
            _per_layer_summed, ("NOT tied", "SUM over the layers", "keeps the layer axis")),
    Planted("B's gradient transposed", _grad_B_transposed, ("shape of B.T", "transpose")),
    Planted("u applied after B instead of before", _u_after_B, ("BEFORE B",)),
    Planted("v left out of B's gradient", _v_missing_from_grad_B,
            ("v is left out", "g * v_l")),
]
