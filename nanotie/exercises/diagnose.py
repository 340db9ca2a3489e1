"""Diagnosis: turn "your answer is wrong" into "here is what is wrong".

Each function compares a learner's array with the correct one and returns a sentence
a learner can act on, or None when nothing is wrong. They recognise the mistakes
people really make when they write a backward pass by hand:

    the shape of w.T                      a transposed gradient
    extra leading axes                    a broadcast (batch) axis left unsummed
    a size-1 axis stretched to n          a broadcast size-1 axis left unsummed
    the same numbers, one size-1 axis     a reduction without keepdim
        more or fewer
    c times the right answer              a missing 1/N, a mean instead of a sum, the
                                          upstream gradient ignored; c = 1/k for a
                                          weight used k times: the uses were not summed
    one use's part of a tied gradient     a missing sum over tied uses
    output at t moves with input at t+1   a causal off-by-one (see explain_causality)

The checks are plain NumPy on float64 arrays. Only :func:`dependency` and
:func:`explain_causality` call a function: the one they are given, once per input
position.
"""

from __future__ import annotations

import numpy as np

def close(got, want, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    """Same shape and the same values, up to float64 rounding (both in float64)."""
    got, want = np.asarray(got), np.asarray(want)
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=rtol, atol=atol))


def worst_index(got, want) -> tuple:
    """Where ``got`` is farthest from ``want`` (same shape), as a tuple of ints."""
    flat = int(np.argmax(np.abs(np.asarray(got) - np.asarray(want))))
    return tuple(int(j) for j in np.unravel_index(flat, np.shape(got)))


def your(what: str, name: str) -> str:
    """"your gradient FOR `w`", but "your output OF `matmul(a, b)`"."""
    return f"your {what} {'for' if what == 'gradient' else 'of'} `{name}`"


def explain_shape(name: str, got: tuple, want: tuple, what: str = "gradient") -> str | None:
    """Why the ``what`` (a "gradient" or an "output") for ``name`` came out with shape
    ``got`` instead of ``want``; None if the shapes agree.

    A gradient always has the shape of its input: dL/dw holds one number per entry
    of w. Each wrong shape below has a typical cause.
    """
    got, want = tuple(got), tuple(want)
    if got == want:
        return None
    grad = what == "gradient"
    head = (f"{your(what, name)} has shape {got}, but "
            + (f"`{name}` has shape {want}" if grad else f"it should have shape {want}"))
    if len(got) == len(want) >= 2 and got == want[:-2] + (want[-1], want[-2]):
        return (f"{head}: " + (f"the shape of {name}.T. " if grad else "the transpose. ")
                + f"Did you transpose? Write the product so that its shape comes out as "
                  f"{want}.")
    if [n for n in got if n != 1] == [n for n in want if n != 1]:
        if len(got) < len(want):
            cause = f"Did a sum or mean drop an axis? Pass keepdims=True (or reshape to {want})."
        elif len(got) > len(want):
            cause = (f"Did a sum or mean keep an axis (keepdims=True) that should go? Drop it "
                     f"(reshape to {want}).")
        else:
            cause = f"Their axes of size 1 are in other places: reshape to {want}."
        return f"{head}: they differ only by axes of size 1. {cause}"
    if grad and len(got) > len(want):
        extra = len(got) - len(want)
        tail = got[extra:]
        if all(w in (t, 1) for t, w in zip(tail, want)):
            return (f"{head}: the leading axes {got[:extra]} come from broadcasting, "
                    f"where the same `{name}` was used for every entry along them. Its "
                    f"gradient is the SUM over those uses: sum the leading "
                    f"{'axis' if extra == 1 else f'{extra} axes'} away"
                    + (" (and the stretched size-1 axes, with keepdims=True)."
                       if tail != want else "."))
    if grad and len(got) == len(want) and all(w in (g, 1) for g, w in zip(got, want)):
        axes = [i for i, (g, w) in enumerate(zip(got, want)) if w == 1 and g != 1]
        return (f"{head}: axis {', '.join(map(str, axes))} has size 1 in `{name}`, which "
                f"broadcasting stretched, so `{name}` was used once per entry along it. "
                f"Its gradient is the SUM over those uses: sum over "
                f"{'that axis' if len(axes) == 1 else 'those axes'} with keepdims=True.")
    return f"{head}." + (" A gradient always has the shape of its input." if grad else "")


def explain_values(name: str, got, want, *, uses: int | None = None,
                   parts: dict | None = None, factors: dict | None = None,
                   known: list | None = None, what: str = "gradient") -> str | None:
    """Why ``got`` (already the right shape) differs from ``want``, or None if it doesn't.

    uses     the number of times ``name`` is used (a tied weight, a weight shared by a
             batch, a broadcast input): a gradient 1/uses of the right one means the
             uses were averaged or only one was taken.
    parts    {use name: that use's gradient} for a tied weight; the correct gradient
             is their sum, and a learner's that equals some of them misses the rest.
    factors  {scale: explanation} for scale factors this exercise can produce, e.g.
             {1 / g: "you ignored the upstream gradient g"}.
    known    [(wrong array, explanation)]: answers of recognised wrong formulas.
    """
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if close(got, want):
        return None
    who = your(what, name)
    if not np.all(np.isfinite(got)):
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(got))[0])
        holds = f"is {got[where]}" if got.ndim == 0 else f"holds {got[where]} at index {where}"
        return (f"{who} {holds}. Look for an overflowing exp (subtract the max first), a "
                f"division by zero, or a log of 0.")
    for wrong, explanation in known or []:
        if close(got, wrong):
            return f"{who} is wrong: {explanation}"
    if got.ndim >= 2 and got.shape[-1] == got.shape[-2] and close(got, want.swapaxes(-1, -2)):
        return (f"{who} is the TRANSPOSE of the right one (the shapes agree only because "
                f"the matrix is square). Did you transpose?")
    msg = _explain_parts(name, got, parts) if parts else None
    if msg:
        return msg
    if not np.any(got):
        return (f"{who} is all zeros: no gradient reaches it. Is it used in the forward "
                f"pass, and does your backward return its part?")
    denom = float((want * want).sum())          # c * want closest to got (least squares)
    c = float((got * want).sum()) / denom if denom > 0 else float("nan")
    single = got.size == 1          # one number is always some c times another
    if np.isfinite(c) and close(got, c * want, rtol=1e-5, atol=1e-8):
        msg = _explain_scale(who, name, c, uses, factors or {}, named_only=single)
        if msg:
            return msg
    if single:
        return f"{who} is {_number(got.item())}; the correct value is {_number(want.item())}."
    i = worst_index(got, want)
    return (f"{who} is wrong: at index {i} it is {got[i]:.6g}, the correct value is "
            f"{want[i]:.6g} (largest error {np.abs(got - want).max():.2e}).")


def _number(x: float) -> str:
    """A count as an int (123456789, not 1.23457e+08); other numbers to 6 digits."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:.6g}"


def _explain_scale(who, name, c, uses, factors, named_only: bool = False) -> str | None:
    """Why ``got`` is ``c`` times the correct gradient; with ``named_only``, only a
    known factor, the uses or a sign (else None: one number is c times any other)."""
    def near(x):
        return np.isclose(c, x, rtol=1e-5, atol=0)

    for value, explanation in factors.items():
        if near(value):
            return f"{who} is {c:.4g} times the correct one: {explanation}"
    if uses and uses > 1 and near(1.0 / uses):
        return (f"{who} is off by a factor of {uses}, the number of times `{name}` is used. "
                f"Is the gradient SUMMED over those {uses} uses (not averaged, not taken "
                f"from one of them)?")
    if uses and uses > 1 and near(uses):
        return (f"{who} is {uses} times too large ({uses} is the number of its uses): is "
                f"one use's gradient counted {uses} times?")
    if near(-1.0):
        return f"{who} has the wrong sign: it is exactly minus the correct one."
    if named_only or f"{c:.4g}" == "1":        # never "1 times the correct one"
        return None
    return (f"{who} is {c:.4g} times the correct one: a scale factor is missing or extra "
            f"(a 1/N from a mean? the upstream gradient g?).")


def _explain_parts(name, got, parts: dict) -> str | None:
    """Does ``got`` equal the sum of SOME of a tied weight's per-use gradients?"""
    names = list(parts)
    n = len(names)
    for mask in range(1, 2 ** n - 1):               # every non-empty proper subset
        chosen = [names[i] for i in range(n) if mask >> i & 1]
        if close(got, sum(parts[k] for k in chosen)):
            missing = [k for k in names if k not in chosen]
            return (f"your gradient for `{name}` holds only the part from "
                    f"{' + '.join(chosen)}, and misses {' + '.join(missing)}. `{name}` is "
                    f"tied: one array used in {n} places, so its gradient is the SUM of "
                    f"the gradients of all its uses ({' + '.join(names)}).")
    return None


def dependency(fn, x, eps: float = 1e-3, tol: float = 1e-9):
    """D[s, t] = True when output position s changes as input position t is nudged.

    ``fn`` maps a float64 array to an array with the same length along the last axis
    (time); all other axes are summed over. The cost is one call per input position.
    """
    x = np.array(x, dtype=np.float64)
    base = np.asarray(fn(x.copy()), dtype=np.float64)
    dep = np.zeros((base.shape[-1], x.shape[-1]), dtype=bool)
    for t in range(x.shape[-1]):
        nudged = x.copy()
        nudged[..., t] += eps
        out = np.asarray(fn(nudged), dtype=np.float64)
        change = np.abs(out - base).reshape(-1, base.shape[-1]).max(axis=0)   # (S,)
        dep[:, t] = change > tol
    return dep


def explain_causality(fn, x) -> str | None:
    """Is ``fn`` causal along the last axis? Output t may use inputs 0..t only."""
    dep = dependency(fn, x)
    s_len, t_len = dep.shape
    future = [(s, t) for s in range(s_len) for t in range(t_len) if t > s and dep[s, t]]
    if future:
        s, t = max(future, key=lambda st: (st[1] - st[0], -st[0]))   # the farthest look
        if t - s == 1:                                               # one step ahead
            return (f"the output at t={s} depends on the input at t={t}, one step after "
                    f"it: an off-by-one in the causal shift or mask (a future value leaks in).")
        return (f"the output at t={s} depends on the input at t={t}, {t - s} steps after "
                f"it: the computation is not causal (is the mask, padding or shift the "
                f"right way round?).")
    present = range(min(s_len, t_len))
    if not any(dep[s, s] for s in present) and any(dep[s, s - 1] for s in present if s):
        return ("the output at t never depends on the input at t, only on earlier steps: "
                "shifted one step too far (an off-by-one in the causal shift).")
    return None
