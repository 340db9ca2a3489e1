"""Exercise 2: the matmul backward, dL/dA = G B^T and dL/dB = A^T G, which the shapes
alone pin down; a weight B shared by a batch of A's gets a gradient summed over it.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from . import Planted
from .checking import (Checker, CheckResult, engine_reference, learner_op, leaves,
                       wrong_backward)

TITLE = "The matmul backward"
GOAL = ("Derive dL/dA = G B^T and dL/dB = A^T G from C_ij = sum_k A_ik B_kj, let the "
        "shapes guide you, and sum the shared weight's gradient over the batch.")
FUNCTION = "matmul"

STUB = '''
import numpy as np


def matmul(a, b):
    """out = a @ b, and its backward.

    a: (..., M, K), a batch of matrices (or one matrix)
    b: (K, N), ONE weight matrix shared by every matrix in the batch

    Return (out, backward): out = a @ b, of shape (..., M, N), and a function
    backward(g) that takes the upstream gradient g = dL/dout, shaped like out, and
    returns (grad_a, grad_b), shaped like a and b.

    With out_ij = sum_k a_ik b_kj:

        dL/da_ik = sum_j g_ij b_kj        i.e.  grad_a = g @ b.T           (..., M, K)
        dL/db_kj = sum_i a_ik g_ij        i.e.  grad_b = a.T @ g           (K, N)

    For a batch, b is used by every matrix in it: grad_b is the SUM of a.T @ g over
    the batch axes. (For an array with a batch axis, .T reverses ALL axes; use
    .swapaxes(-1, -2) to transpose the last two.)
    """
    out = ...  # your forward

    def backward(g):
        grad_a = ...  # your code
        grad_b = ...  # your code
        return grad_a, grad_b

    return out, backward
'''


def reference(a, b):
    """The solution."""
    out = a @ b                                           # (..., M, N)

    def backward(g):
        grad_a = g @ b.T                                  # (..., M, N) @ (N, K)
        grad_b = (a.swapaxes(-1, -2) @ g).reshape(-1, *b.shape).sum(axis=0)  # sum batch
        return grad_a, grad_b

    return out, backward


# (a's shape, b's shape): one matrix, a batch, a batch with two batch axes (all of
# them are summed for grad_b), a square one (a transposed answer has the right shape
# there, so only the values can catch it)
CASES = [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 2, 3, 4), (4, 5)), ((4, 4), (4, 4))]


def check(fn) -> CheckResult:
    rng = np.random.default_rng(1)
    data = [(rng.standard_normal(sa), rng.standard_normal(sb)) for sa, sb in CASES]
    with Checker(f"Exercise 2: {TITLE}") as c:
        with c.step(f"the forward equals a @ b ({len(CASES)} shapes)"):
            for a, b in data:
                c.case = f"a {a.shape}, b {b.shape}"
                out, _ = c.forward(fn, a, b, what="matmul(a, b)")
                c.expect_array(out, a @ b, "matmul(a, b)")
        with c.step("the backward matches the engine's gradients, dL/da and dL/db"):
            for a, b in data:
                c.case = f"a {a.shape}, b {b.shape}"
                g = rng.standard_normal(a.shape[:-1] + b.shape[-1:])
                _, (ga, gb) = engine_reference(ops.matmul, [a, b], g)
                grads = c.gradients(fn, a, b, g=g, what="matmul(a, b)")
                batch = a.size // (a.shape[-2] * a.shape[-1])       # b's uses
                c.expect_grads(grads, {"a": ga, "b": gb}, hints={"b": {"uses": batch}})
        with c.step("finite differences agree with your backward (nanotie.gradcheck)"):
            for a, b in data:
                c.case = f"a {a.shape}, b {b.shape}"
                c.expect_gradcheck(learner_op(fn, "matmul"), leaves(a, b))
    return c.result


# ------------------------------------------------ wrong answers, for the tests

@wrong_backward(reference)
def _grad_b_transposed(a, b, g, grads):
    return grads[0], grads[1].T                                  # g.T @ a, summed


def _batch_not_summed(a, b):
    return a @ b, lambda g: (g @ b.T, a.swapaxes(-1, -2) @ g)   # keeps the batch axis


def _one_batch_axis_summed(a, b):
    def backward(g):
        grad_b = a.swapaxes(-1, -2) @ g
        return g @ b.T, grad_b.sum(axis=0) if grad_b.ndim == 3 else grad_b

    return a @ b, backward


@wrong_backward(reference)
def _grad_a_without_transpose(a, b, g, grads):
    return g @ b, grads[1]                                       # grad_a needs b.T


MISTAKES = [
    Planted("grad_b = g.T @ a: the transpose of the right answer", _grad_b_transposed,
            ("shape of b.T", "transpose")),
    Planted("grad_b keeps the batch axis", _batch_not_summed, ("leading axes", "SUM")),
    Planted("grad_b summed over one batch axis only (a.ndim == 3)", _one_batch_axis_summed,
            ("leading axes (2, 2)", "SUM")),
    Planted("grad_a = g @ b, without b's transpose", _grad_a_without_transpose,
            ("transpose",)),
]
