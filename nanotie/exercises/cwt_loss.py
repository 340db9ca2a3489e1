"""Exercise 7: the Contrastive Weight Tying loss of headless language models and its
backward, checked against the library's op, ``nanotie.papers.headless.cwt_loss``.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..papers.headless import cwt_loss as library_cwt_loss
from . import Planted
from .checking import (Checker, CheckResult, Mistake, engine_reference, learner_op, leaves,
                       softmax_rows, wrong_backward)

TITLE = "Headless LMs: the Contrastive Weight Tying loss"
GOAL = ("Write the CWT loss, cross-entropy over a K x K score matrix of outputs against "
        "the batch's target embeddings, and its backward: the targets are not detached, "
        "so their gradient has a part from the positive and a part from every "
        "denominator.")
FUNCTION = "cwt_loss"

STUB = '''
import numpy as np


def cwt_loss(O, E_targets, temperature=1.0):
    """The Contrastive Weight Tying loss (Headless LMs, Eq. 3) and its backward.

    O:         (K, D) the model's outputs o_k at the K target positions
    E_targets: (K, D) the INPUT embeddings e_k of those targets, row k the positive
               of row k of O; a token that is the target twice appears twice
    temperature: tau > 0

        S[k, j] = o_k . e_j / tau              S = O @ E_targets.T / tau   (K, K)
        loss_k  = log(sum_j exp(S[k, j])) - S[k, k]
                  (the sum runs over ALL j, the positive j = k included; subtract
                   the row max of S before exp, so exp never overflows)
        loss    = mean over k of loss_k        (a float, or a 0-d array)

    Return (loss, backward); backward(g) takes g = dL/dloss (a scalar) and returns
    (grad_O, grad_E_targets), both (K, D). With P = softmax of each ROW of S:

        dS             = g * (P - I) / K                                    (K, K)
        grad_O         = dS @ E_targets / tau
        grad_E_targets = dS.T @ O / tau

    The targets are NOT detached: e_j is the positive of row j (the -I part) and a
    negative in every row's denominator (the P part), and grad_E_targets holds both.
    """
    loss = ...  # your forward

    def backward(g):
        grad_O = ...  # your code
        grad_E_targets = ...  # your code
        return grad_O, grad_E_targets

    return loss, backward
'''


def reference(O, E_targets, temperature=1.0):
    """The solution."""
    K = O.shape[0]
    S = O @ E_targets.T / temperature                     # (K, K), positives on the diagonal
    Z = S - S.max(axis=1, keepdims=True)                  # row max 0: exp cannot overflow
    expZ = np.exp(Z)
    P = expZ / expZ.sum(axis=1, keepdims=True)            # softmax of each row
    loss = (np.log(expZ.sum(axis=1)) - np.diag(Z)).mean()

    def backward(g):
        dS = g * (P - np.eye(K)) / K                      # (K, K)
        return dS @ E_targets / temperature, dS.T @ O / temperature

    return loss, backward


def _cases(rng):
    """(O, E, ids, tau): the targets E[ids] with repeated ids, a second temperature,
    and outputs large enough that the scores reach about 1000 (a naive exp overflows)."""
    c1 = (rng.standard_normal((7, 5)), rng.standard_normal((4, 5)),
          np.array([0, 1, 1, 2, 0, 3, 1]), 1.0)
    c2 = (rng.standard_normal((6, 4)), rng.standard_normal((6, 4)),
          np.array([2, 5, 0, 1, 4, 3]), 0.5)
    c3 = (40.0 * rng.standard_normal((5, 3)), rng.standard_normal((5, 3)),
          np.array([4, 1, 1, 3, 0]), 0.05)
    return [c1, c2, c3]


def _describe(O, E, ids, tau):
    T = E[ids]
    S = O @ T.T / tau
    return (f"O {O.shape}, E_targets {T.shape} = rows {ids.tolist()} of an embedding "
            f"(repeats kept), temperature={tau}, scores up to {np.abs(S).max():.0f}")


_POSITIVE_LEFT_OUT = ("the positive is left out of the denominator. Eq. 3 divides "
                      "exp(S[k, k]) by the sum over ALL targets j of exp(S[k, j]), j = k "
                      "included, so each loss_k is a softmax cross-entropy and is >= 0.")
_DETACHED = ("the targets are treated as detached (constants). In a headless model they "
             "are NOT detached: E_targets are rows of the input embedding, and the output "
             "side is how E learns. Each e_j gets -o_j from its own positive and p_kj o_k "
             "from every row k's denominator: grad_E_targets = dS.T @ O / tau.")


def _wrong_grads(O, T, tau, g):
    """Gradients of recognised wrong backwards, for (O, E_targets), with what went wrong."""
    K = len(O)
    P = softmax_rows(O @ T.T / tau)
    positive_only = ("it holds only the positive term's part, -g o_j / (K tau), as if "
                     "the negatives were detached. e_j is also a negative in every "
                     "row's denominator, which adds sum_k p_kj o_k: grad_E_targets = "
                     "dS.T @ O / tau with dS = g (P - I) / K.")
    negatives_only = ("it holds only the denominators' part, sum_k p_kj o_k, and misses "
                      "the positive term's -o_j (the -I in dS = g (P - I) / K).")
    transposed = ("the score matrix is used the wrong way round. S = O E^T / "
                  "tau has row k = output k scored against every target, and the softmax "
                  "runs along each ROW of O E^T (axis=1): building E O^T, or softmaxing "
                  "over axis 0, or swapping dS and dS.T in the two products, gives this. "
                  "grad_O = dS @ E_targets / tau, grad_E_targets = dS.T @ O / tau.")
    # Written out here, not taken from the planted answers below, so that a planted
    # answer's test checks that the checker knows the mistake independently.
    dS = g * (P - np.eye(K)) / K
    dS_wrong = g * (softmax_rows(T @ O.T / tau) - np.eye(K)) / K      # E O^T: transposed
    dS_axis0 = dS_wrong.T               # the softmax of O E^T over axis 0 (each column)
    return {
        "O": [(dS_wrong @ T / tau, transposed), (dS.T @ T / tau, transposed),
              (dS_axis0 @ T / tau, transposed)],
        "E_targets": [(np.zeros_like(T), "it is all zeros: " + _DETACHED),
                      (-g * O / (K * tau), positive_only),
                      (g * (P.T @ O) / (K * tau), negatives_only),
                      (dS_wrong.T @ O / tau, transposed), (dS @ O / tau, transposed),
                      (dS_axis0.T @ O / tau, transposed)],
    }


def _loss_without_positive_in_denominator(O, T, tau) -> float:
    """mean_k [logsumexp_{j != k} S_kj - S_kk]: the recognised wrong forward."""
    S = O @ T.T / tau
    neg = np.where(np.eye(len(O), dtype=bool), -np.inf, S)       # negatives only
    top = neg.max(axis=1)
    return float((np.log(np.exp(neg - top[:, None]).sum(axis=1)) + top - np.diag(S)).mean())


def check(fn) -> CheckResult:
    rng = np.random.default_rng(7)
    cases = _cases(rng)
    g = 1.7                                               # not 1: a missing g shows
    with Checker(f"Exercise 7: {TITLE}") as c:
        with c.step("the loss matches nanotie's cwt_loss (repeated targets, no overflow)"):
            for O, E, ids, tau in cases:
                c.case = _describe(O, E, ids, tau)
                T = E[ids]
                loss, _ = c.forward(fn, O, T, tau, what="cwt_loss(O, E_targets, temperature)")
                want = library_cwt_loss(*leaves(O, T), tau).data
                c.expect_array(loss, want, "cwt_loss(O, E_targets, temperature)", "output",
                               known=[(_loss_without_positive_in_denominator(O, T, tau),
                                       _POSITIVE_LEFT_OUT)], factors={
                                   len(O): f"you summed over the K = {len(O)} positions; "
                                           f"the loss is their MEAN (divide by K)."})
        with c.step("the backward matches the engine: grad_O = dS E_targets / tau, "
                    "grad_E_targets = dS^T O / tau"):
            for O, E, ids, tau in cases:
                c.case = _describe(O, E, ids, tau)
                T = E[ids]
                _, (gO, gT) = engine_reference(
                    lambda o, t: library_cwt_loss(o, t, tau), [O, T], g)
                grads = c.gradients(fn, O, T, tau, g=np.float64(g),
                                    what="cwt_loss(O, E_targets, temperature)")
                grads = c.per_input(grads, ["O", "E_targets"])
                if grads[1] is None:
                    raise Mistake("your gradient for `E_targets` is None: " + _DETACHED)
                wrong = _wrong_grads(O, T, tau, g)
                factors = {1.0 / g: "you ignored the upstream gradient g; multiply by it "
                                    "(the chain rule).",
                           len(O): f"you summed over the K = {len(O)} positions; the loss "
                                   f"is their MEAN, so the gradient has a 1/K.",
                           tau: f"the 1/temperature is missing: S = O E^T / tau, so both "
                                f"gradients carry a 1/tau (tau = {tau} here).",
                           1 / tau: f"the 1/temperature is applied twice (tau = {tau} here): "
                                    f"dS = g (P - I) / K has none, and each gradient carries "
                                    f"ONE 1/tau, from S = O E^T / tau."}
                c.expect_grads(grads, {"O": gO, "E_targets": gT}, hints={
                    "O": {"known": wrong["O"], "factors": factors},
                    "E_targets": {"known": wrong["E_targets"], "factors": factors}})
        with c.step("finite differences agree with your backward, through the embedding "
                    "lookup with repeated ids (nanotie.gradcheck)"):
            for O, E, ids, tau in cases[:2]:              # (gradcheck's eps is too small
                c.case = _describe(O, E, ids, tau)        #  for scores ~1000)
                op = learner_op(fn, "cwt_loss")
                c.expect_gradcheck(lambda O, E: op(O, ops.embedding(E, ids), tau), leaves(O, E))
    return c.result


# ------------------------------------------------ wrong answers, for the tests

@wrong_backward(reference)
def _targets_detached(O, E_targets, temperature, g, grads):
    return grads[0], np.zeros_like(E_targets)


@wrong_backward(reference)
def _targets_none(O, E_targets, temperature, g, grads):
    return grads[0], None                                 # "no gradient: a constant"


@wrong_backward(reference)
def _positive_term_only(O, E_targets, temperature, g, grads):
    return grads[0], -g * O / (len(O) * temperature)


def _positive_not_in_denominator(O, E_targets, temperature=1.0):
    K = O.shape[0]
    S = O @ E_targets.T / temperature
    neg = np.where(np.eye(K, dtype=bool), -np.inf, S)     # negatives only
    top = neg.max(axis=1, keepdims=True)
    loss = (np.log(np.exp(neg - top).sum(axis=1)) + top[:, 0] - np.diag(S)).mean()
    return loss, reference(O, E_targets, temperature)[1]  # the forward fails first


def _no_max_subtraction(O, E_targets, temperature=1.0):
    S = O @ E_targets.T / temperature
    loss = (np.log(np.exp(S).sum(axis=1)) - np.diag(S)).mean()    # overflows, scores ~1000
    return loss, reference(O, E_targets, temperature)[1]


@wrong_backward(reference)
def _transposed_scores_in_backward(O, E_targets, temperature, g, grads):
    K = O.shape[0]
    P = softmax_rows(E_targets @ O.T / temperature)       # E O^T: should be O E^T
    dS = g * (P - np.eye(K)) / K
    return dS @ E_targets / temperature, dS.T @ O / temperature


@wrong_backward(reference)
def _temperature_twice(O, E_targets, temperature, g, grads):
    return tuple(grad / temperature for grad in grads)    # dS / tau, then / tau again


def _sum_not_mean(O, E_targets, temperature=1.0):
    loss, backward = reference(O, E_targets, temperature)
    K = O.shape[0]
    return loss * K, lambda g: tuple(grad * K for grad in backward(g))


MISTAKES = [
    Planted("the targets detached: no gradient for E_targets", _targets_detached,
            ("all zeros", "detached")),
    Planted("the targets detached: None for E_targets", _targets_none,
            ("is None", "detached")),
    Planted("E_targets gets only the positive term's gradient", _positive_term_only,
            ("only the positive term", "denominator")),
    Planted("the positive left out of the denominator", _positive_not_in_denominator,
            ("positive is left out of the denominator",)),
    Planted("exp of the scores without subtracting the row max", _no_max_subtraction,
            ("overflow", "subtract the max")),
    Planted("the backward builds E O^T instead of O E^T", _transposed_scores_in_backward,
            ("wrong way round", "O E^T")),
    Planted("the 1/temperature applied twice in the backward", _temperature_twice,
            ("applied twice", "ONE 1/tau")),
    Planted("the loss summed over positions instead of averaged", _sum_not_mean,
            ("summed over the K", "MEAN")),
]
