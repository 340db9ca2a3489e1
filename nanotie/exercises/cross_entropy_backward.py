"""Exercise 3: the softmax-cross-entropy backward, with padding ids, checked against
``nanotie.nn.functional.cross_entropy``."""

from __future__ import annotations

import numpy as np

from ..nn import functional as F
from . import Planted
from .checking import (Checker, CheckResult, Mistake, engine_reference, learner_op, leaves,
                       softmax_rows, xent_rows)

TITLE = "The softmax-cross-entropy backward"
GOAL = ("Show that the gradient of softmax followed by cross-entropy is softmax minus "
        "one-hot, compute the loss without overflow, and leave padding positions out of "
        "both the mean and the gradient.")
FUNCTION = "cross_entropy"

STUB = '''
import numpy as np


def cross_entropy(logits, target, ignore_index=-100):
    """Mean softmax cross-entropy over the rows whose target is not ignore_index.

    logits: (N, C) float array, one row of class scores z_i per position
    target: (N,) int array of class ids; rows with target == ignore_index are
            padding: they add nothing to the loss and are not counted in the mean

    Return (loss, backward): loss is a float (or a 0-d array), and backward(g) takes
    the upstream gradient g (a scalar, dL/dloss) and returns (grad_logits,), (N, C).

        loss_i = log(sum_c exp(z_ic)) - z_i[y_i]       subtract max_c z_ic first, so
                                                       exp never overflows
        loss   = (sum of loss_i over counted rows) / n_counted

        dloss/dz_i = (softmax(z_i) - onehot(y_i)) / n_counted    for a counted row
                   = 0                                            for a padding row
    and grad_logits = g * dloss/dz.
    """
    loss = ...  # your forward

    def backward(g):
        grad_logits = ...  # your code
        return (grad_logits,)

    return loss, backward
'''


def reference(logits, target, ignore_index=-100):
    """The solution."""
    valid = target != ignore_index                        # (N,) counted rows
    n = max(int(valid.sum()), 1)
    z = logits - logits.max(axis=1, keepdims=True)        # (N, C), max 0 per row
    e = np.exp(z)
    probs = e / e.sum(axis=1, keepdims=True)              # softmax
    safe = np.where(valid, target, 0)                     # any id for padding rows
    rows = np.arange(len(target))
    losses = np.log(e.sum(axis=1)) - z[rows, safe]        # (N,)
    loss = (losses * valid).sum() / n

    def backward(g):
        grad = probs.copy()
        grad[rows, safe] -= 1.0                           # softmax - onehot
        return (grad * (valid[:, None] * (g / n)),)

    return loss, backward


def _cases(rng):
    """(logits, target, ignore_index, the call's keywords): padding as -100 (the
    default), padding as id 0 (the id is an argument), and logits near 1000 (a naive
    exp overflows)."""
    return [(rng.standard_normal((6, 5)), np.array([1, 0, -100, 4, 4, -100]), -100, {}),
            (rng.standard_normal((7, 4)), np.array([0, 2, 3, 0, 1, 0, 2]), 0,
             {"ignore_index": 0}),
            (1000.0 + 30.0 * rng.standard_normal((4, 6)), np.array([5, 0, 2, 2]), -100, {})]


def _describe(z, t, ignore, kwargs):
    return (f"logits {z.shape} (values near {round(float(z.mean()))}), target "
            f"{t.tolist()}, ignore_index={ignore}" + ("" if kwargs else " (the default)"))


def _known_losses(z, t, ignore):
    """Losses of recognised wrong forwards, with what went wrong (written out here, not
    taken from the planted answers below, which the tests check against these)."""
    n, n_pad = int((t != ignore).sum()), int((t == ignore).sum())
    known = []
    if ignore != -100:      # first: where t holds no -100, this loss is also the mean
                            # over all rows below, and the fixed id is what went wrong
        known.append((reference(z, t, -100)[0],
                      f"you left out the rows whose target is -100, but this call passes "
                      f"ignore_index={ignore}: use the ignore_index argument, not a fixed id."))
    if n_pad:
        losses = xent_rows(z, np.where(t != ignore, t, 0))          # padding scored as 0
        known += [(losses.sum() / n,
                   f"padding rows counted: your sum includes the losses of the {n_pad} rows "
                   f"whose target is ignore_index. Leave them out of the sum (multiply each "
                   f"row's loss by the mask), not only out of the count."),
                  (losses.mean(),
                   f"padding rows counted: your loss is the mean over all N = {len(t)} rows, "
                   f"padding included. Leave the {n_pad} rows whose target is ignore_index "
                   f"out of the sum and divide by the {n} counted rows.")]
    return known


def check(fn) -> CheckResult:
    rng = np.random.default_rng(2)
    cases = _cases(rng)
    g = 1.7                                               # not 1: a missing g shows
    what = "cross_entropy(logits, target)"
    with Checker(f"Exercise 3: {TITLE}") as c:
        with c.step("the loss matches nanotie's cross_entropy (padding left out, no "
                    "overflow)"):
            for z, t, ignore, kwargs in cases:
                c.case = _describe(z, t, ignore, kwargs)
                loss, _ = c.forward(fn, z, t, what=what, **kwargs)
                want = F.cross_entropy(leaves(z)[0], t, ignore_index=ignore).data
                n = int((t != ignore).sum())
                c.expect_array(loss, want, what, known=_known_losses(z, t, ignore), factors={
                    n / len(t): f"you divided by N = {len(t)}, all the rows; divide by the "
                                f"number of counted rows ({n})."})
        with c.step("the backward matches the engine: (softmax - onehot) / n_counted, "
                    "zero on padding rows"):
            for z, t, ignore, kwargs in cases:
                c.case = _describe(z, t, ignore, kwargs)
                _, (want, _) = engine_reference(
                    lambda x, y: F.cross_entropy(x, y, ignore_index=ignore), [z, t], g)
                grads = c.gradients(fn, z, t, g=np.float64(g), what=what, **kwargs)
                (got,) = c.per_input(grads, ["logits"])
                if isinstance(got, np.ndarray) and got.shape == z.shape:
                    _check_padding_rows(got, want, t, ignore)
                valid = t != ignore
                c.expect_array(got, want, "logits", "gradient", factors={
                    1.0 / g: "you ignored the upstream gradient g; multiply by it (the chain "
                             "rule).",
                    valid.sum() / len(t): "you divided by N, all the rows; divide by the "
                                          "number of counted rows."},
                    known=[(softmax_rows(z) * g * valid[:, None] / valid.sum(),
                            "you forgot to subtract the one-hot of the target: dloss/dz_i = "
                            "softmax(z_i) - onehot(y_i).")])
        with c.step("finite differences agree with your backward (nanotie.gradcheck)"):
            for z, t, ignore, kwargs in cases[:2]:         # (gradcheck's eps is too
                c.case = _describe(z, t, ignore, kwargs)   #  small for logits ~1000)
                op = learner_op(lambda x, y: fn(x, y, **kwargs), "cross_entropy")
                c.expect_gradcheck(op, leaves(z) + [t])
    return c.result


def _check_padding_rows(got, want, t, ignore):
    """The wrong-pad-id mistakes, named: padding rows must get zero gradient, and
    counted rows must not."""
    pad = t == ignore
    leaked = [int(i) for i in np.flatnonzero(pad) if np.any(got[i] != 0)]
    if leaked:
        raise Mistake(f"rows {leaked} have target == ignore_index ({ignore}): they are "
                      f"padding and must get a zero gradient, but yours is not zero there.")
    dropped = [int(i) for i in np.flatnonzero(~pad) if not np.any(got[i]) and np.any(want[i])]
    if dropped:
        raise Mistake(f"rows {dropped} (targets {sorted(set(t[dropped].tolist()))}) got a "
                      f"zero gradient, but only rows with target == ignore_index "
                      f"({ignore}) are padding: did you ignore the wrong id?")


# ------------------------------------------------ wrong answers, for the tests

def _fixed_pad_id(logits, target, ignore_index=-100):
    return reference(logits, target, -100)                # ignores the argument


def _mean_over_all_rows(logits, target, ignore_index=-100):
    loss, backward = reference(logits, target, ignore_index)
    n_valid, n = int((target != ignore_index).sum()), len(target)
    return loss * n_valid / n, lambda g: (backward(g)[0] * n_valid / n,)


def _no_max_subtraction(logits, target, ignore_index=-100):
    valid = target != ignore_index
    rows, safe = np.arange(len(target)), np.where(valid, target, 0)
    losses = np.log(np.exp(logits).sum(axis=1)) - logits[rows, safe]    # overflows near 1000
    return (losses * valid).sum() / valid.sum(), reference(logits, target, ignore_index)[1]


def _no_onehot(logits, target, ignore_index=-100):
    valid = target != ignore_index
    scale = valid[:, None] / max(int(valid.sum()), 1)
    return (reference(logits, target, ignore_index)[0],
            lambda g: (softmax_rows(logits) * scale * g,))            # softmax alone


def _padding_in_the_sum(logits, target, ignore_index=-100):
    valid = target != ignore_index
    losses = xent_rows(logits, np.where(valid, target, 0))
    return (losses.sum() / max(int(valid.sum()), 1),                  # padding not masked
            reference(logits, target, ignore_index)[1])


def _padding_everywhere(logits, target, ignore_index=-100):
    losses = xent_rows(logits, np.where(target != ignore_index, target, 0))
    return losses.mean(), reference(logits, target, ignore_index)[1]


MISTAKES = [
    Planted("always ignores -100, whatever ignore_index says", _fixed_pad_id,
            ("passes ignore_index=0", "not a fixed id")),
    Planted("divides by all N rows, padding included", _mean_over_all_rows,
            ("divided by N", "counted rows")),
    Planted("exp without subtracting the row max", _no_max_subtraction,
            ("overflow", "subtract the max")),
    Planted("softmax without the one-hot subtraction", _no_onehot, ("one-hot",)),
    Planted("padding rows' losses summed, divided by the counted rows", _padding_in_the_sum,
            ("padding rows counted", "out of the sum")),
    Planted("padding rows counted in the sum and the mean", _padding_everywhere,
            ("padding rows counted", "mean over all")),
]
