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

__all__ = ["gradcheck", "gradcheck_module", "gradcheck_report", "GradcheckError",
           "ArgResult"]


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with the finite-difference one."""


@dataclass
class ArgResult:
    """How one argument fared."""

    position: int              # index in the inputs
    name: str                  # parameter name of fn (or a model's parameter path)
    shape: tuple
    mode: str = "-"            # "elementwise" or "directional" ("-": not compared)
    passed: bool = False
    max_abs_err: float = float("inf")
    worst_index: tuple | int | None = None   # element index, or direction number
    analytic: float | None = None            # values at the worst index
    numeric: float | None = None
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


def _check_arrays(named, loss, what, eps, atol, rtol, max_elements, n_directions, rng):
    """One :class:`ArgResult` per ``(position, name, tensor)`` after a backward: its
    ``.grad`` against central differences of ``loss()``."""
    results = []
    for i, name, t in named:
        res = dict(position=i, name=name, shape=tuple(t.shape))
        if t.grad is None:
            results.append(ArgResult(**res, note=f"no gradient reached this {what}"))
        else:
            results.append(_check_array(res, t.data, backend.asnumpy(t.grad), loss, eps,
                                        atol, rtol, max_elements, n_directions, rng))
    return results


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
    w = backend.xp_of(out.data).asarray(rng.standard_normal(out.shape))  # random upstream
    out.backward(w)

    def loss() -> float:
        with no_grad():
            return float((fn(*xs).data * w).sum())

    names = _arg_names(fn, len(inputs))
    return _check_arrays([(i, names[i], xs[i]) for i in checked], loss,
                         "argument (is it used, and does every op on its path record a "
                         "graph?)", eps, atol, rtol, max_elements, n_directions, rng)


def _check_array(res: dict, data, analytic, loss, eps, atol, rtol, max_elements,
                 n_directions, rng) -> ArgResult:
    """Central differences of ``loss()`` while ``data`` (an array the loss reads) is
    perturbed IN PLACE and restored: every element if it is small, else a few random
    unit directions v, compared with analytic . v."""
    if data.size <= max_elements:
        numeric = np.empty(data.shape)
        # Index the array itself: data.reshape(-1) is a COPY for a transposed (Fortran-order)
        # array, whose perturbations would never reach the loss.
        for idx in np.ndindex(data.shape):
            old = data[idx].item()
            data[idx] = old + eps
            plus = loss()
            data[idx] = old - eps
            minus = loss()
            data[idx] = old
            numeric[idx] = (plus - minus) / (2 * eps)
        return _compare(res, "elementwise", analytic, numeric, atol, rtol)
    a_vals, n_vals = [], []
    for _ in range(n_directions):
        v = rng.standard_normal(data.shape)
        v /= np.linalg.norm(v)
        vd, old = backend.xp_of(data).asarray(v), data.copy()
        data += eps * vd
        plus = loss()
        data[...] = old - eps * vd
        minus = loss()
        data[...] = old
        a_vals.append(float((analytic * v).sum()))
        n_vals.append((plus - minus) / (2 * eps))
    return _compare(res, "directional", np.array(a_vals), np.array(n_vals), atol, rtol)


def _compare(res, mode, analytic, numeric, atol, rtol) -> ArgResult:
    if analytic.size == 0:                       # an empty input: nothing can be wrong
        return ArgResult(**res, mode=mode, passed=True, max_abs_err=0.0)
    err = np.abs(analytic - numeric)
    excess = err - (atol + rtol * np.abs(numeric))
    worst = int(np.argmax(excess))
    idx = np.unravel_index(worst, analytic.shape) if mode == "elementwise" else worst
    idx = tuple(int(j) for j in idx) if isinstance(idx, tuple) else idx
    return ArgResult(**res, mode=mode, passed=bool((excess <= 0).all()),
                     max_abs_err=float(err.max()), worst_index=idx,
                     analytic=float(analytic.reshape(-1)[worst]),
                     numeric=float(numeric.reshape(-1)[worst]))


def _verdict(results, label, atol, rtol, raise_exception) -> bool:
    failed = [r for r in results if not r.passed]
    if failed and raise_exception:
        lines = "\n  ".join(r.describe() for r in failed)
        raise GradcheckError(f"gradcheck failed for {label!r}:\n  {lines}\n"
                             f"(tolerance: |analytic - numeric| <= {atol} + {rtol} * |numeric|)")
    return not failed


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
    return _verdict(results, name or getattr(fn, "__name__", "fn"), atol, rtol,
                    raise_exception)


def gradcheck_module(model, loss_fn, *, eps: float = 1e-6, atol: float = 1e-5,
                     rtol: float = 1e-3, max_elements: int = 64, n_directions: int = 2,
                     seed: int = 0, name: str | None = None,
                     raise_exception: bool = True) -> bool:
    """Check the gradients of a model's OWN Parameters against central differences.

    ``loss_fn()`` takes no arguments and returns a scalar loss computed with ``model``
    (a closure over the model and a batch). :func:`gradcheck` copies its inputs, which
    a model cannot take; this perturbs each Parameter's array IN PLACE and restores
    it. A tied Parameter is checked once, against its summed gradient. The model must
    be float64 (``model.double()``) and the loss deterministic (no dropout). Failures
    name the parameter's path, e.g. ``wte.weight``.
    """
    named = [(path, p) for path, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("gradcheck_module: the model has no parameter that requires grad")
    if any(p.dtype != np.float64 for _, p in named):
        raise TypeError("gradcheck_module: the model must be float64; call model.double()")
    for _, p in named:
        p.grad = None
    out = loss_fn()
    if not isinstance(out, Tensor) or out.data.size != 1:
        raise TypeError("gradcheck_module: loss_fn() must return a scalar Tensor")
    out.backward()

    def loss() -> float:
        with no_grad():
            return float(loss_fn().item())

    results = _check_arrays([(i, path, p) for i, (path, p) in enumerate(named)], loss,
                            "parameter", eps, atol, rtol, max_elements, n_directions,
                            np.random.default_rng(seed))
    return _verdict(results, name or type(model).__name__, atol, rtol, raise_exception)
