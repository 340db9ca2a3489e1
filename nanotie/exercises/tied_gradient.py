"""Exercise 5: the gradient of a tied weight is a sum, dL/dE = dL/dE|lookup + dL/dE|head:
the engine's one ``+`` (autograd.py, "the tying sum"), written by hand.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..nn import functional as F
from . import Planted
from .checking import (Checker, CheckResult, engine_reference, learner_op, leaves,
                       softmax_rows, wrong_backward)

TITLE = "The tied gradient is a sum"
GOAL = ("Write the backward of a model whose embedding is also its output head, and see "
        "that the shared matrix's gradient is the sum of the gradients of its two uses "
        "(and that a token looked up twice gets a summed row gradient).")
FUNCTION = "tied_lm"

STUB = '''
import numpy as np


def tied_lm(E, ids, targets):
    """A tiny language model with a tied embedding, and its backward.

    E: (V, D) the ONE matrix used twice;  ids, targets: (N,) int arrays in [0, V)

        x      = E[ids]                  use 1: look up rows           (N, D)
        h      = tanh(x)                                                (N, D)
        logits = h @ E.T                 use 2: score every token      (N, V)
        loss   = mean over n of [logsumexp(logits_n) - logits_n[targets_n]]

    Return (loss, backward); backward(g) takes g = dL/dloss (a scalar) and returns
    (grad_E,), shaped (V, D). Work back from the loss:

        dlogits = g * (softmax(logits) - onehot(targets)) / N          (N, V)
        head part of dE    = dlogits.T @ h                              (V, D)
        dh = dlogits @ E;  dx = dh * (1 - h**2)                         (N, D)
        lookup part of dE  = row ids[n] gets dx[n], for every n: if an id occurs
                             twice, its row gets BOTH: np.add.at(part, ids, dx)

    E is tied: it is used twice, so grad_E = lookup part + head part.
    """
    loss = ...  # your forward

    def backward(g):
        grad_E = ...  # your code
        return (grad_E,)

    return loss, backward
'''


def reference(E, ids, targets):
    """The solution."""
    n = len(ids)
    h = np.tanh(E[ids])                                   # use 1, (N, D)
    logits = h @ E.T                                      # use 2, (N, V)
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = -np.log(probs[rows, targets]).mean()

    def backward(g):
        dlogits = probs.copy()
        dlogits[rows, targets] -= 1.0
        dlogits *= g / n                                  # (N, V)
        head = dlogits.T @ h                              # (V, D)
        dx = (dlogits @ E) * (1 - h ** 2)                 # (N, D)
        lookup = np.zeros_like(E)
        np.add.at(lookup, ids, dx)                        # repeated ids add up
        return (lookup + head,)                           # the tying sum

    return loss, backward


def _cases(rng):
    """(E, ids, targets): V != D with repeated and unused ids, then V == D (where a
    transposed head part has the right shape)."""
    return [(rng.normal(0, 0.7, (7, 4)), np.array([2, 0, 2, 5, 2, 3]),
             np.array([1, 2, 6, 0, 2, 5])),
            (rng.normal(0, 0.7, (5, 5)), np.array([1, 4, 1, 0]), np.array([3, 3, 0, 1]))]


def _model(E_in, E_out, ids, targets):
    """The model with its two uses of E as separate arguments (untied)."""
    h = ops.embedding(E_in, ids).tanh()
    return F.cross_entropy(h @ E_out.T, targets)


def _dlogits(E, ids, targets, g):
    """h (N, D) and dL/dlogits (N, V): what the wrong backwards below build on."""
    h = np.tanh(E[ids])
    d = softmax_rows(h @ E.T)
    d[np.arange(len(ids)), targets] -= 1.0
    return h, d * g / len(ids)


def _recognised(E, ids, targets, g, parts):
    """Gradients of recognised wrong backwards, with what went wrong."""
    head = parts["the head h @ E.T"]
    h, dlogits = _dlogits(E, ids, targets, g)
    dropped = head.copy()
    dropped[ids] += (dlogits @ E) * (1 - h ** 2)            # grad[ids] += dx: repeats lost
    known = [(dropped,
              "rows of ids that occur more than once got the gradient of only one "
              "occurrence: `grad[ids] += dx` does not add repeated indices. Use "
              "np.add.at(grad, ids, dx); each occurrence is a use of that row, and uses add.")]
    no_tanh = head.copy()
    np.add.at(no_tanh, ids, dlogits @ E)                    # dx = dh: tanh' left out
    known.append((no_tanh, "the lookup's part misses tanh's derivative: h = tanh(x), so "
                           "dx = dh * (1 - h**2), not dh."))
    if E.shape[0] == E.shape[1]:
        known.append((parts["the lookup E[ids]"] + head.T,
                      "the head's part is transposed: for logits = h @ E.T it is "
                      "dlogits.T @ h, of shape (V, D)."))
    return known


def check(fn) -> CheckResult:
    rng = np.random.default_rng(5)
    cases = _cases(rng)
    g = 1.3
    with Checker(f"Exercise 5: {TITLE}") as c:
        with c.step("the loss matches the same model built from nanotie ops"):
            for E, ids, targets in cases:
                c.case = f"E {E.shape}, ids {ids.tolist()}, targets {targets.tolist()}"
                loss, _ = c.forward(fn, E, ids, targets, what="tied_lm(E, ids, targets)")
                want = _model(*leaves(E, E), ids, targets).data
                c.expect_array(loss, want, "tied_lm(E, ids, targets)")
        with c.step("grad_E is the sum of the untied model's gradients: the lookup's "
                    "part + the head's part"):
            for E, ids, targets in cases:
                c.case = f"E {E.shape}, ids {ids.tolist()}, targets {targets.tolist()}"
                # each use's gradient, dL/dE along that path, from the untied model
                _, untied = engine_reference(_model, [E, E.copy(), ids, targets], g)
                parts = {"the lookup E[ids]": untied[0], "the head h @ E.T": untied[1]}
                grads = c.gradients(fn, E, ids, targets, g=np.float64(g),
                                    what="tied_lm(E, ids, targets)")
                c.expect_grads(grads, {"E": sum(parts.values())}, hints={"E": {
                    "uses": 2, "parts": parts,
                    "known": _recognised(E, ids, targets, g, parts),
                    "factors": {1.0 / g: "you ignored the upstream gradient g; multiply "
                                         "by it (the chain rule)."}}})
        with c.step("finite differences agree with your backward (nanotie.gradcheck)"):
            for E, ids, targets in cases:
                c.case = f"E {E.shape}, ids {ids.tolist()}, targets {targets.tolist()}"
                c.expect_gradcheck(learner_op(fn, "tied_lm"), leaves(E) + [ids, targets])
    return c.result


# ------------------------------------------------ wrong answers, for the tests

@wrong_backward(reference)
def _head_only(E, ids, targets, g, grads):
    h, dlogits = _dlogits(E, ids, targets, g)
    return (dlogits.T @ h,)                               # the lookup's part is missing


@wrong_backward(reference)
def _averaged_uses(E, ids, targets, g, grads):
    return (grads[0] / 2,)                                # (lookup + head) / 2


@wrong_backward(reference)
def _fancy_index_add(E, ids, targets, g, grads):
    h, dlogits = _dlogits(E, ids, targets, g)
    grad = dlogits.T @ h
    grad[ids] += (dlogits @ E) * (1 - h ** 2)             # repeated ids: not summed
    return (grad,)


MISTAKES = [
    Planted("only the head's part: the sum over tied uses is missing", _head_only,
            ("misses", "SUM")),
    Planted("the two uses averaged instead of summed", _averaged_uses,
            ("factor of 2", "SUM")),
    Planted("grad[ids] += dx, which drops repeated ids", _fancy_index_add,
            ("np.add.at",)),
]
