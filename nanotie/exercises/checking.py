"""The checking toolkit every exercise's ``check(fn)`` is built from.

A check is a few named steps, run in order, inside a :class:`Checker`: ``with
c.step(name):`` blocks that set ``c.case`` (the inputs, shown with a failure), call the
learner's code through ``c.forward``/``c.gradients`` and compare with ``c.expect_*``
(``matmul_backward.py``'s ``check`` is a short example).

The first step that finds a mistake stops the check, so a learner sees one problem
at a time, stated in words they can act on (see :mod:`.diagnose`). Their code runs only
inside :meth:`Checker.call` and :meth:`Checker.expect_gradcheck`: an error in it
becomes such a message, with the line of their file, never a traceback.

Learner ops follow the library's primitive style (``make_result`` in autograd.py) on
float64 NumPy arrays: ``fn(*inputs) -> (out, backward)``, ``backward(g)`` RETURNING one
gradient per input. :func:`engine_reference` runs the library's own op for comparison.
"""

from __future__ import annotations

import re
import textwrap
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..autograd import Tensor, make_result
from ..gradcheck import gradcheck_report
from .diagnose import close, explain_shape, explain_values, your

_PACKAGE_DIR = Path(__file__).resolve().parent.parent     # nanotie/
_FLOAT64 = ("work in float64, the inputs' dtype (no np.float32, astype(np.float32) or "
            "dtype=np.float32).")


class Mistake(Exception):
    """A problem in the learner's answer; the message is written for the learner."""


class NotWritten(Mistake):
    """A part of the answer is still the stub's (``...`` or ``raise NotImplementedError``)."""


class ExerciseFailed(AssertionError):
    """Raised by :meth:`CheckResult.raise_if_failed`; the message is the report."""


class _Stop(Exception):
    """Ends a check after its first failing step."""


@dataclass
class CheckResult:
    """What a check found: the steps that passed, and the first problem, if any."""

    title: str
    passed_steps: list = field(default_factory=list)
    failed_step: str | None = None
    message: str | None = None        # what is wrong, for the learner
    unwritten: bool = False           # the problem: a part not written yet (NotWritten)

    @property
    def passed(self) -> bool:
        return self.message is None

    def report(self) -> str:
        lines = [self.title]
        lines += [f"  ok    {s}" for s in self.passed_steps]
        if self.passed:
            lines.append(f"Passed: all {len(self.passed_steps)} checks.")
        else:
            lines.append(f"  FAIL  {self.failed_step}")
            for paragraph in self.message.splitlines():
                lines += textwrap.wrap(paragraph, 88, initial_indent=" " * 8,
                                       subsequent_indent=" " * 8) or [""]
            lines.append("Not passed yet: fix this one, then check again.")
        return "\n".join(lines)

    def raise_if_failed(self) -> "CheckResult":
        """For notebooks: ``check(fn).raise_if_failed()`` stops the cell with the report."""
        if not self.passed:
            raise ExerciseFailed(self.report())
        return self


class Checker:
    """Runs a check's steps; collects the result in ``self.result``."""

    def __init__(self, title: str):
        self.result = CheckResult(title)
        self.case = None      # set to describe the inputs being checked; shown on failure

    def __enter__(self) -> "Checker":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        return kind is _Stop                     # swallow only the early stop

    @contextmanager
    def step(self, name: str):
        """One named check; a :class:`Mistake` inside it fails the whole check."""
        self.case = None
        try:
            yield
        except Mistake as m:
            where = f"\n(checked on: {self.case})" if self.case else ""
            self.result.failed_step, self.result.message = name, str(m) + where
            self.result.unwritten = isinstance(m, NotWritten)
            raise _Stop from None
        self.result.passed_steps.append(name)

    # ------------------------------------------------------- the learner's code

    def call(self, fn, *args, what: str, **kwargs):
        """``fn(*args, **kwargs)``, with array arguments copied (so the learner cannot
        change the checker's data). An exception in it becomes a :class:`Mistake`
        (any exception, ``sys.exit`` included; only Ctrl-C passes through), and so
        does an argument changed in place; NumPy's overflow warnings are silenced (a
        NaN in the answer is diagnosed)."""
        originals = list(args)
        args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        try:
            with np.errstate(all="ignore"):
                value = fn(*args, **kwargs)
        except NotImplementedError:
            raise NotWritten(f"`{what}` is not written yet: replace `raise "
                             f"NotImplementedError` with your code.") from None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:             # noqa: BLE001  (any error in their code)
            raise Mistake(describe_exception(exc, what)) from None
        _refuse_in_place(what, args, originals)
        return value

    def returns(self, fn, *args, what: str, names: str, **kwargs) -> tuple:
        """``fn(*args, **kwargs)``, as :meth:`call` runs it, must return a tuple of the
        items ``names`` ("out, backward"); returns that tuple."""
        value = self.call(fn, *args, what=what, **kwargs)
        n = len(names.split(", "))
        if not isinstance(value, (tuple, list)) or len(value) != n:
            got = (f"a {type(value).__name__} of length {len(value)}"
                   if isinstance(value, (tuple, list)) else f"a {type(value).__name__}")
            raise Mistake(f"`{what}` must return a tuple of {n}: ({names}); it returned "
                          f"{got}.")
        return tuple(value)

    def forward(self, fn, *args, what: str, **kwargs) -> tuple:
        """Call a learner op ``fn(*args) -> (out, backward)``; return the pair."""
        out, backward = self.returns(fn, *args, what=what, names="out, backward", **kwargs)
        if not callable(backward):
            raise Mistake(f"`{what}` must return (out, backward) with backward a function "
                          f"of the upstream gradient g; the second item is a "
                          f"{type(backward).__name__}.")
        return out, backward

    def gradients(self, fn, *args, g, what: str, **kwargs):
        """What the learner op's ``backward(g)`` returns, after its forward on ``args``."""
        _, backward = self.forward(fn, *args, what=what, **kwargs)
        return self.call(backward, g, what="backward(g)")

    # ---------------------------------------------------------------- comparing

    def expect_shape(self, got, shape: tuple, name: str, what: str = "output") -> np.ndarray:
        """``got`` must be an array of this shape (values are not looked at)."""
        arr = as_array(got, shape, name, what)
        msg = explain_shape(name, arr.shape, tuple(shape), what)
        if msg:
            raise Mistake(msg)
        return arr

    def expect_array(self, got, want, name: str, what: str = "output", **hints) -> np.ndarray:
        """``got`` must be an array with ``want``'s shape and values. ``hints`` go to
        :func:`.diagnose.explain_values` (uses, parts, factors, known)."""
        want = np.asarray(want)
        arr = as_array(got, want.shape, name, what)
        msg = (explain_shape(name, arr.shape, want.shape, what)
               or explain_values(name, arr, want, what=what, **hints))
        if msg and _low_precision(got):      # the checker compares in float64: say so
            head = (f"{your(what, name)} has dtype {got.dtype}, and the checker compares in "
                    f"float64 (to about 1e-9), which {got.dtype} cannot reach: {_FLOAT64}")
            close_enough = close(arr, want, rtol=1e-3, atol=1e-5)
            msg = head if close_enough else head + " Apart from that: " + msg
        if msg:
            raise Mistake(msg)
        return arr

    def per_input(self, grads, names: list) -> tuple:
        """``grads`` (what backward returned) as a tuple of one gradient per input."""
        if grads is None:                        # no return statement
            wanted = ", ".join(f"grad_{n}" for n in names) + ("," if len(names) == 1 else "")
            raise Mistake(f"backward(g) returned None: did you forget `return {wanted}`?")
        if not isinstance(grads, (tuple, list)):
            grads = (grads,)                     # a bare array: one gradient
        if len(grads) != len(names):
            raise Mistake(f"backward must return a tuple of {len(names)} gradient(s), one "
                          f"per input ({', '.join(names)}); it returned {len(grads)}.")
        return tuple(grads)

    def expect_grads(self, grads, wants: dict, hints: dict | None = None) -> None:
        """``grads`` (what backward returned) against ``wants`` = {input name: correct
        gradient}, in order. ``hints`` = {input name: dict of explain_values hints}."""
        for name, got in zip(wants, self.per_input(grads, list(wants))):
            self.expect_array(got, wants[name], name, "gradient", **(hints or {}).get(name, {}))

    def expect_gradcheck(self, op, inputs) -> None:
        """Central differences (nanotie.gradcheck, float64, random upstream gradient)
        must agree with the backward that ``op`` records."""
        try:
            with np.errstate(all="ignore"):
                results = gradcheck_report(op, inputs)
        except (Mistake, KeyboardInterrupt):
            raise
        except BaseException as exc:             # noqa: BLE001  (sys.exit included)
            raise Mistake(describe_exception(exc, "your function, under gradcheck")) from None
        bad = [r for r in results if not r.passed]
        low = sorted(getattr(op, "low_precision", ()))
        if bad and low:
            raise Mistake(f"finite differences disagree with your backward, and your "
                          f"function computes in {' and '.join(low)} (its output or a "
                          f"gradient has that dtype). A finite difference divides a tiny "
                          f"change in the output by a tiny step, which float32's 7 "
                          f"digits cannot resolve: {_FLOAT64}")
        if bad:
            raise Mistake("finite differences disagree with your backward:\n"
                          + "\n".join(r.describe() for r in bad))


def written(got, who: str, none_hint: str):
    """``got``, a value the learner returned; a :class:`NotWritten` while it is still the
    stub's ``...``, a :class:`Mistake` when it is None (``none_hint`` says what to return)."""
    if got is Ellipsis:
        raise NotWritten(f"{who} is still `...`: that part is not written yet.")
    if got is None:
        raise Mistake(f"{who} is None. {none_hint}")
    return got


def as_array(got, shape: tuple, name: str, what: str = "output") -> np.ndarray:
    """The learner's ``got`` as a float64 array (meant to have ``shape``, not checked)."""
    who = your(what, name)
    written(got, who, f"Return an array of shape {tuple(shape)}." if shape else "Return a number.")
    if isinstance(got, Tensor):
        raise Mistake(f"{who} is a nanotie Tensor; this exercise works on plain NumPy "
                      f"arrays (use np. functions).")
    try:
        if np.asarray(got).dtype.kind in "US":       # text: "12" would pass as 12.0
            raise TypeError
        return np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        raise Mistake(f"{who} is a {type(got).__name__}, not an array of numbers.") from None


def describe_exception(exc: BaseException, what: str, quote: bool = True) -> str:
    """One or two lines: what raised, where in the learner's file (" (file.py, line 12:
    the code)", the innermost frame that is neither nanotie's nor NumPy's), and a hint."""
    text = (f"`{what}`" if quote else what) + f" raised {type(exc).__name__}: {exc}"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename)
        if _PACKAGE_DIR not in path.resolve().parents and "numpy" not in path.parts:
            text += f" ({path.name}, line {frame.lineno}: {(frame.line or '').strip()})"
            break
    hint = _exception_hint(exc)
    return text + ("\n" + hint if hint else "")


def _exception_hint(exc: BaseException) -> str:
    msg = str(exc)
    if isinstance(exc, SystemExit):
        return ("Hint: sys.exit() or exit() ends the check before it can pass; a check "
                "passes only when the checker says so. Return your answer instead.")
    if "could not be broadcast" in msg:
        shapes = _BROADCAST_SHAPES.findall(msg.partition("[")[0])   # not "remapped" ones
        if len(shapes) == 2 and _transposes(*(s.replace(" ", "") for s in shapes)):
            return (f"Hint: the shapes {shapes[0]} and {shapes[1]} are transposes of each "
                    f"other: one of the arrays probably needs a transpose (.T or "
                    f"swapaxes(-1, -2)).")
        return ("Hint: two arrays' shapes do not line up. Is an axis missing: a sum or "
                "mean without keepdims=True, or an array that needs a new axis to "
                "broadcast (x[..., None])?")
    if "matmul" in msg and ("mismatch" in msg or "aligned" in msg):
        return ("Hint: the inner sizes of a matrix product disagree. Write down each "
                "operand's shape; one of them probably needs a transpose (.T or "
                "swapaxes(-1, -2)).")
    if isinstance(exc, NameError):
        return "Hint: is an import missing at the top of your file (import numpy as np)?"
    return ""


_BROADCAST_SHAPES = re.compile(r"\([\d, ]*\)")      # NumPy's "shapes (4,3) (3,4)"


def _transposes(a: str, b: str) -> bool:
    """Are the shapes written ``a`` and ``b`` ("(4,3)") different but transposes, by .T
    or by swapping the last two axes?"""
    a, b = (tuple(int(n) for n in s.strip("()").split(",") if n) for s in (a, b))
    return a != b and len(a) >= 2 and b in (a[::-1], a[:-2] + (a[-1], a[-2]))


# --------------------------------------------------------- ops from learner code

def learner_op(fn, name: str):
    """Wrap ``fn(*arrays) -> (out, backward)`` as a nanotie op on Tensors, for gradcheck.
    Tensor arguments reach ``fn`` as their arrays, others unchanged."""
    low_precision = set()      # dtypes below float64 seen in outputs or gradients

    def op(*inputs):
        arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
        before = [a.copy() if isinstance(a, np.ndarray) else None for a in arrays]
        result = fn(*arrays)
        _refuse_in_place(name, arrays, before)
        out, backward = result
        if _low_precision(out):
            low_precision.add(str(out.dtype))
        out = np.asarray(out, dtype=np.float64)

        def run_backward(g) -> tuple:
            gs = backward(g)
            return tuple(gs) if isinstance(gs, (tuple, list)) else (gs,)

        def grads(g):
            kept = g.copy()
            gs = run_backward(g)
            _refuse_in_place("backward(g)", [g], [kept])
            _refuse_in_place(f"the backward of {name}", arrays, before)
            gs = [np.array(gr) if isinstance(gr, np.ndarray) else gr for gr in gs]
            again = run_backward(kept.copy())          # a graph may be run back twice
            if any(isinstance(a, np.ndarray) and not np.array_equal(
                    a, b, equal_nan=a.dtype.kind in "fc") for a, b in zip(gs, again)):
                raise Mistake(_SECOND_BACKWARD)
            low_precision.update(str(gr.dtype) for gr in gs if _low_precision(gr))
            return tuple(None if gr is None else np.asarray(gr, dtype=np.float64)
                         for gr in gs)

        return make_result(name, out, tuple(inputs), grads)

    op.__name__ = name
    op.low_precision = low_precision
    return op


_SECOND_BACKWARD = (
    "`backward(g)` returns other gradients when it is called a second time: it writes "
    "into an array that its forward computed (probs[...] -= 1, or d *= g on such an "
    "array), so a second backward through the same graph (retain_graph=True) goes wrong. "
    "Work on a copy (grad = probs.copy()).")


def _refuse_in_place(what: str, arrays: list, before: list):
    """A :class:`Mistake` if the call ``what`` wrote into one of the ``arrays`` it was
    given (``before``: their copies from before the call; None for a non-array)."""
    for i, (a, b) in enumerate(zip(arrays, before)):
        if isinstance(b, np.ndarray) and not (a.shape == b.shape and np.array_equal(
                a, b, equal_nan=a.dtype.kind in "fc")):
            raise Mistake(explain_in_place(what, i))


def explain_in_place(what: str, i: int) -> str:
    """Why writing into argument ``i`` of ``what`` is a mistake; the argument is named
    from ``what`` ("matmul(a, b)": i = 1 is `b`)."""
    inside = what.partition("(")[2].rpartition(")")[0]
    names = [n.strip() for n in inside.split(",") if n.strip()]
    name = f"`{names[i]}`" if i < len(names) else f"argument {i + 1}"
    if name == "`g`":
        return (f"`{what}` changed the upstream gradient g IN PLACE (g *= ..., g -= ..., "
                f"g[...] = ...). A backward must only read g: the engine may hand the "
                f"same array to other ops. Compute into a new array (g * w, not g *= w).")
    return (f"`{what}` changed its input {name} IN PLACE (x -= ..., x[...] = ..., "
            f"np.exp(x, out=x)). The caller's array, and anything else that holds it, "
            f"changes too; work on a new array (x = x - m, or x.copy()).")


def _low_precision(value) -> bool:
    return isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind == "f" and \
        value.dtype.itemsize < 8


def softmax_rows(z):
    """softmax over the last axis, the max subtracted first so exp cannot overflow."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def xent_rows(z, targets):
    """Each row's cross-entropy, logsumexp(z_i) - z_i[t_i], (N,); max subtracted first.
    The references write it out (a learner's file has only NumPy); the wrong answers
    and the diagnoses built on it use this one."""
    z = z - z.max(axis=-1, keepdims=True)
    return np.log(np.exp(z).sum(axis=-1)) - z[np.arange(len(z)), targets]


def engine_reference(op, arrays: list, upstream) -> tuple:
    """Run the library's ``op`` on float64 Tensors made from the float ``arrays``
    (other arguments, such as integer ids, pass through) and backpropagate
    ``upstream``; return (out array, grads), with None for the non-Tensor arguments."""
    tensors = leaves(*arrays)
    out = op(*tensors)
    out.backward(np.asarray(upstream, dtype=np.float64))
    grads = [t.grad if isinstance(t, Tensor) else None for t in tensors]
    return out.data, grads


def leaves(*arrays) -> list:
    """float64 Tensors that require a gradient (integer arrays pass through)."""
    return [Tensor(np.array(a, dtype=np.float64), requires_grad=True)
            if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in arrays]


def wrong_backward(reference):
    """For planted answers: ``@wrong_backward(reference)`` over ``change(*inputs, g,
    grads)`` makes an op with ``reference``'s forward whose backward returns what
    ``change`` makes of the reference's gradients ``grads``."""
    def planted_from(change):
        def planted(*inputs):
            out, backward = reference(*inputs)
            return out, lambda g: change(*inputs, g, backward(g))

        planted.__name__ = change.__name__                # the planted test's name
        return planted

    return planted_from
