"""Gradient-checked exercises: write a forward and a backward, get told what is wrong.

    python -m nanotie exercise list              the exercises, numbered
    python -m nanotie exercise start 2           writes ex02_matmul_backward.py (a stub)
    python -m nanotie exercise check 2           runs the checker on that file

``exercise check`` runs the checker in a child process with a time limit
(:func:`.files.check_file`), so the exit status is 0 only when the checker says so.
From Python, ``exercises.get(2).check(my_matmul).raise_if_failed()``; in a notebook,
``my_matmul = exercises.get(2).check_in_notebook(my_matmul)``.

Each checker compares the learner's forward and backward with the library's own op,
and runs :func:`nanotie.gradcheck` (central differences, float64, a random upstream
gradient) on the learner's backward. When something is wrong it says what, in words
a learner can act on ("the gradient for `b` has the shape of b.T: did you
transpose?"); :mod:`.diagnose` holds those explanations, :mod:`.checking` the
toolkit a ``check`` is built from.

Adding an exercise
------------------
One module here, ``nanotie/exercises/<name>.py``, that defines:

    TITLE      one line, shown by ``exercise list``
    GOAL       what the learner takes away, a sentence or two
    FUNCTION   the name of the function the learner writes, e.g. "matmul"
    STUB       the learner's starting file: imports, then ``def FUNCTION(...)`` with
               a docstring that states the task and the math, and a body to fill
               in (``...`` placeholders or ``raise NotImplementedError``), so that
               checking the stub as it is fails with :class:`~.checking.NotWritten` ("not
               written yet"). No solution in it.
    reference  the solution: a function with the stub's signature, self-contained
               (it may use only what STUB imports), so it can be pasted into the stub
    check(fn) -> CheckResult     built with :class:`.checking.Checker`; an op
               exercise (``fn(*arrays) -> (out, backward)``) compares with the
               library's op and ends with ``expect_gradcheck``; a formula exercise
               (a count, a bound) compares values, with ``diagnose`` for the message
    MISTAKES   at least two :class:`Planted` wrong answers of the kinds learners
               write (:func:`.checking.wrong_backward` changes only a backward), each
               with words its failure message must contain; the tests run them all

and one ``register(N, "<name>")`` line below. Nothing else changes: the CLI, the
stub writer and the tests find it through the registry.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from dataclasses import dataclass

from .. import backend
from .checking import CheckResult, Checker, ExerciseFailed, Mistake, NotWritten

__all__ = ["REGISTRY", "Exercise", "Planted", "register", "get", "skip_if_unwritten",
           "CheckResult", "Checker", "ExerciseFailed", "Mistake", "NotWritten"]


@dataclass(frozen=True)
class Exercise:
    """A registered exercise: its number and its module, imported on first use."""
    number: int          # what the CLI calls it
    name: str            # module name under nanotie/exercises/, e.g. "matmul_backward"

    @property
    def module(self):
        """The exercise module, imported on first use."""
        return importlib.import_module(f"{__name__}.{self.name}")

    @property
    def title(self) -> str:
        return self.module.TITLE

    @property
    def goal(self) -> str:
        return self.module.GOAL

    @property
    def function(self) -> str:
        return self.module.FUNCTION

    @property
    def stub_filename(self) -> str:
        return f"ex{self.number:02d}_{self.name}.py"

    @property
    def reference(self):
        return self.module.reference

    def check(self, fn) -> CheckResult:
        """Run this exercise's checker on ``fn``. Checkers that build models draw from
        nanotie's seeded generator; it is put back afterwards, so checking an answer in
        a notebook does not change what the following cells compute."""
        saved = backend.random_state()
        try:
            return self.module.check(fn)
        finally:
            backend.restore_random_state(saved)

    def check_in_notebook(self, fn):
        """Check ``fn`` and print the report; return the function the cells below use.

        A wrong answer stops the notebook with the report (:class:`~.checking.ExerciseFailed`). An
        answer not written yet does not: the report says so, and the reference solution
        stands in for it, so a notebook run unchanged still reaches its end."""
        result = self.check(fn)
        name = getattr(fn, "__name__", self.function)   # the notebook's name, e.g. my_fftconv
        if result.message and name != self.function:
            result.message = result.message.replace(f"`{self.function}(", f"`{name}(")
        if not result.unwritten:
            result.raise_if_failed()
        print(result.report())
        if result.unwritten:
            print("(Until yours passes, the cells below use the reference solution.)")
            return self.reference
        return fn

    def mistake(self, words: str):
        """The planted wrong answer whose description contains ``words``: a notebook
        shows what the checker says about it without printing code near the answer."""
        found = [m.fn for m in self.module.MISTAKES if words in m.description]
        if not found:
            raise KeyError(f"exercise {self.number}: no planted mistake mentions {words!r}")
        return found[0]


@dataclass(frozen=True)
class Planted:
    """A wrong answer of a kind learners write, for the tests: ``fn`` must fail the
    check, with every string in ``expect`` in the message."""

    description: str     # the mistake, e.g. "returns the gradient of b transposed"
    fn: object           # a function with the stub's signature
    expect: tuple        # words the failure message must contain


@contextmanager
def skip_if_unwritten(name: str):
    """For a notebook's own exercise: the check cell runs under ``with
    skip_if_unwritten("my_fn"):``, and an answer that still raises NotImplementedError
    is reported in a line instead of stopping the notebook."""
    try:
        yield
    except NotImplementedError:
        print(f"`{name}` is not written yet: replace `raise NotImplementedError` in the "
              f"cell above with your code, then run this cell again.")


REGISTRY: dict[int, Exercise] = {}


def register(number: int, name: str) -> None:
    """Add exercise ``number``, the module ``nanotie/exercises/<name>.py``."""
    REGISTRY[number] = Exercise(number, name)


def get(number: int) -> Exercise:
    """The exercise with this number; KeyError naming the known ones otherwise."""
    if number not in REGISTRY:
        raise KeyError(f"no exercise {number} (known: {', '.join(map(str, sorted(REGISTRY)))})")
    return REGISTRY[number]


# The engine and tying.
register(1, "unbroadcast")
register(2, "matmul_backward")
register(3, "cross_entropy_backward")
register(4, "layer_norm_backward")
register(5, "tied_gradient")
# The papers, in the order of `python -m nanotie list`.
register(6, "tied_lora_adapter")
register(7, "cwt_loss")
register(8, "fftconv_backward")
register(9, "modal_step")
register(10, "hankel_bound")
register(11, "stlm_budget")
register(12, "trellis_weights")
register(13, "tying_memory")
