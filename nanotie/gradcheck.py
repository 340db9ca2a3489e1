"""Finite-difference gradient checks.

For a function f of tensors, pick a RANDOM upstream gradient w of f's output shape
and compare the engine's gradient of the scalar L(x) = sum(f(x) * w) with central
differences in float64:

    dL/dx_i  ~=  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)         error O(eps^2)

A random w matters: with w = 1 everywhere, a backward that returns a transposed or
permuted gradient can still pass. Small inputs are checked element by element; large
ones along a few random directions v, where dL/dx . v ~= (L(x + eps v) - L(x - eps v))
/ (2 eps).

Failure messages name the function, the argument and the worst index, with both
values, so that a learner can see WHERE their backward goes wrong.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from . import backend
from .autograd import Tensor, no_grad

__all__ = ["gradcheck", "gradcheck_report", "GradcheckError", "ArgResult"]


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with the finite-difference one."""


@dataclass
class ArgResult:
    """How one argument fared."""

    position: int              # index in the inputs
    name: str                  # parameter name of fn, if it can be read
    shape: tuple
    mode: str                  # "elementwise" or "directional"
    passed: bool
    max_abs_err: float
    worst_index: tuple | int | None   # element index, or direction number
    analytic: float | None     # values at the worst index
    numeric: float | None
    note: str = ""             # e.g. "no gradient reached this argument"

    def describe(self) -> str:
        head = f"argument {self.position} ({self.name}, shape {self.shape})"
        if self.note:
            return f"{head}: {self.note}"
        where = (f"element {self.worst_index}" if self.mode == "elementwise"
                 else f"random direction {self.worst_index}")
        return (f"{head}: worst at {where}: analytic {self.analytic:.6g}, numeric "
                f"{self.numeric:.6g} (abs error {self.max_abs_err:.2e})")


def _arg_names(fn, n):
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[:n] + [f"arg{i}" for i in range(len(names), n)]


def gradcheck_report(fn, inputs, *, eps: float = 1e-6, atol: float = 1e-5,
                     rtol: float = 1e-3, max_elements: int = 512, n_directions: int = 4,
                     seed: int = 0) -> list:
    """Check ``fn``'s gradients for every input with ``requires_grad``; return one
    :class:`ArgResult` per checked input. Inputs are copied to float64 first."""
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    rng = np.random.default_rng(seed)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing "
                         "to check")
    xs = [Tensor(x.data.astype(np.float64), requires_grad=True) if i in checked else x
          for i, x in enumerate(inputs)]
    out = fn(*xs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if out.dtype != np.float64:
        raise TypeError(f"gradcheck: fn returned {out.dtype} from float64 inputs; the "
                        "check needs float64 all the way through")
    xp = backend.xp_of(out.data)
    w = xp.asarray(rng.standard_normal(out.shape))          # the random upstream gradient
    out.backward(w)

    def loss() -> float:
        with no_grad():
            return float((fn(*xs).data * w).sum())

    names = _arg_names(fn, len(inputs))
    results = []
    for i in checked:
        x = xs[i]
        res = dict(position=i, name=names[i], shape=tuple(x.shape))
        if x.grad is None:
            results.append(ArgResult(**res, mode="-", passed=False, max_abs_err=float("inf"),
                                     worst_index=None, analytic=None, numeric=None,
                                     note="no gradient reached this argument (is it used, "
                                          "and does every op on its path record a graph?)"))
            continue
        analytic = backend.asnumpy(x.grad)
        if x.data.size <= max_elements:
            numeric = np.empty(x.shape)
            flat = x.data.reshape(-1)   # a view: perturbing it perturbs x
            for k in range(flat.size):
                old = flat[k].item()
                flat[k] = old + eps
                plus = loss()
                flat[k] = old - eps
                minus = loss()
                flat[k] = old
                numeric.reshape(-1)[k] = (plus - minus) / (2 * eps)
            results.append(_compare(res, "elementwise", analytic, numeric, atol, rtol))
        else:
            a_vals, n_vals = [], []
            for _ in range(n_directions):
                v = rng.standard_normal(x.shape)
                v /= np.linalg.norm(v)
                vd = xp.asarray(v)
                old = x.data.copy()
                x.data += eps * vd
                plus = loss()
                x.data[...] = old - eps * vd
                minus = loss()
                x.data[...] = old
                a_vals.append(float((analytic * v).sum()))
                n_vals.append((plus - minus) / (2 * eps))
            results.append(_compare(res, "directional", np.array(a_vals), np.array(n_vals),
                                    atol, rtol))
    return results


def _compare(res, mode, analytic, numeric, atol, rtol) -> ArgResult:
    err = np.abs(analytic - numeric)
    excess = err - (atol + rtol * np.abs(numeric))
    worst = int(np.argmax(excess)) if excess.size else 0
    idx = np.unravel_index(worst, analytic.shape) if mode == "elementwise" else worst
    idx = tuple(int(j) for j in idx) if isinstance(idx, tuple) else idx
    return ArgResult(**res, mode=mode, passed=bool((excess <= 0).all()),
                     max_abs_err=float(err.max()) if err.size else 0.0, worst_index=idx,
                     analytic=float(analytic.reshape(-1)[worst]) if err.size else 0.0,
                     numeric=float(numeric.reshape(-1)[worst]) if err.size else 0.0)


def gradcheck(fn, inputs, *, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              max_elements: int = 512, n_directions: int = 4, seed: int = 0,
              name: str | None = None, raise_exception: bool = True) -> bool:
    """True if ``fn``'s analytic gradients match central differences (float64).

    On a mismatch, raise :class:`GradcheckError` naming ``name`` (default: the
    function's name), every failing argument and its worst index; with
    ``raise_exception=False`` return False instead.
    """
    results = gradcheck_report(fn, inputs, eps=eps, atol=atol, rtol=rtol,
                               max_elements=max_elements, n_directions=n_directions,
                               seed=seed)
    failed = [r for r in results if not r.passed]
    if failed and raise_exception:
        label = name or getattr(fn, "__name__", "fn")
        lines = "\n  ".join(r.describe() for r in failed)
        raise GradcheckError(f"gradcheck failed for {label!r}:\n  {lines}\n"
                             f"(tolerance: |analytic - numeric| <= {atol} + {rtol} * |numeric|)")
    return not failed
