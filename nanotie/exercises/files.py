"""The learner's file: writing the stub, and loading their function back from it.

Loading a file that does not work yet is the normal case here, so every way it can
fail (missing, a syntax error, an error while importing, no such function) becomes
a :class:`LearnerFileError` with a short message that points at the line, never a
traceback.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from .checking import CheckResult, describe_exception

#: A check's time limit in seconds (the references take well under a second);
#: $NANOTIE_CHECK_SECONDS overrides it.
CHECK_SECONDS = 60.0


class LearnerFileError(Exception):
    """The learner's file cannot be loaded; the message says why and where."""


class StubExistsError(FileExistsError):
    """The stub's file exists already (it may hold the learner's work)."""


def stub_text(exercise) -> str:
    """The starting file: a header saying what to do, then the module's STUB."""
    goal = textwrap.indent(textwrap.fill(" ".join(exercise.goal.split()), 84), "    ")
    header = (f'"""Exercise {exercise.number}: {exercise.title}\n\nGoal:\n{goal}\n\n'
              f"Write `{exercise.function}` below (the docstring gives the math), then "
              f"check it:\n\n    python -m nanotie exercise check {exercise.number} "
              f'{exercise.stub_filename}\n"""\n\n')
    stub = exercise.module.STUB.strip("\n")
    gap = "\n" if stub.startswith("def ") else ""     # two blank lines before a def (PEP 8)
    return header + gap + stub + "\n"


def write_stub(exercise, directory=".", force: bool = False) -> Path:
    """Write the exercise's stub to ``directory``; refuse to replace an existing file
    unless ``force``. Returns the path written."""
    path = Path(directory) / exercise.stub_filename
    if path.exists() and not force:
        raise StubExistsError(f"{path} already exists and may hold your work; pass "
                              f"--force to replace it with a fresh stub")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(stub_text(exercise))
    return path


def load_function(path, name: str):
    """Import the file at ``path`` as a fresh module and return its function ``name``."""
    path = Path(path)
    if not path.is_file():
        raise LearnerFileError(f"{path}: no such file" if not path.exists()
                               else f"{path}: not a file")
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LearnerFileError(f"{path}: cannot be read ({exc})") from None
    try:
        compile(source, str(path), "exec")
    except SyntaxError as exc:
        line = (exc.text or "").rstrip("\n")
        shown = f"\n    {line.strip()}" if line.strip() else ""
        raise LearnerFileError(f"{path.name}, line {exc.lineno}: {exc.msg}{shown}") from None
    module_name = f"_nanotie_exercise_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module        # so dataclasses etc. in their file work
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:             # noqa: BLE001  (anything, sys.exit included)
        raise LearnerFileError(describe_exception(exc, f"importing {path.name}",
                                                  quote=False)) from None
    finally:
        sys.modules.pop(module_name, None)
    fn = getattr(module, name, None)
    if fn is None:
        defined = sorted(k for k, v in vars(module).items()
                         if callable(v) and not k.startswith("_")
                         and getattr(v, "__module__", None) == module_name)
        found = f" (it defines: {', '.join(defined)})" if defined else ""
        raise LearnerFileError(f"{path.name} defines no function `{name}`{found}; the "
                               f"checker calls `{name}`")
    if not callable(fn):
        raise LearnerFileError(f"{path.name}: `{name}` is a {type(fn).__name__}, not a "
                               f"function")
    return fn


# ------------------------------------------------ checking a file in its own process


@dataclass
class FileCheck:
    """What checking a learner's file found: the checker's own ``result``, or, when
    the checker never said, a one-line ``problem`` (the file cannot be loaded, it
    ended the process, it ran out of time)."""

    result: CheckResult | None = None
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.result is not None and self.result.passed


def check_seconds() -> float:
    """The time limit for a check: $NANOTIE_CHECK_SECONDS, else :data:`CHECK_SECONDS`;
    a ValueError that says so when the variable is not a positive number."""
    text = os.environ.get("NANOTIE_CHECK_SECONDS", str(CHECK_SECONDS))
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"NANOTIE_CHECK_SECONDS={text!r}: the time limit for a check must "
                         f"be a positive number of seconds (unset, it is {CHECK_SECONDS:g})")
    return seconds


def check_file(exercise, path, timeout: float | None = None) -> FileCheck:
    """Load ``path`` and run ``exercise``'s check on its function in a CHILD process,
    for at most ``timeout`` seconds (default :func:`check_seconds`).

    The child is what makes a check impossible to fool by accident: a file that calls
    ``sys.exit(0)`` or ``os._exit(0)`` (at import, in the function, in the backward),
    loops forever or raises a ``BaseException`` ends or loses the child, never the
    grader. A check passes only when the child sends the checker's result back.

    The child is a fresh interpreter (about 0.13 s of imports), not a fork of this
    process: forking a process whose BLAS threads run can deadlock, and multiprocessing's
    other ways run the caller's script again in the child. It writes its one message,
    pickled, to its standard output; what the learner's code prints goes to stderr.
    """
    if timeout is None:
        timeout = check_seconds()
    env = {**os.environ,               # the child imports nanotie from where this one did
           "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(exercise.number), str(path)],
                             stdout=subprocess.PIPE, env=env)
    try:
        out, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = None
    finally:                           # out of time, or Ctrl-C: leave no child behind
        if child.poll() is None:
            child.kill()
            child.communicate()
    name = Path(path).name
    if out is None:
        return FileCheck(problem=f"{name} did not finish within {timeout:g} s (an endless "
                                 f"loop? a loop that never reaches its end condition?)")
    try:
        kind, payload = pickle.loads(out)
    except Exception:                  # noqa: BLE001  (no message, or half of one)
        code = child.returncode
        how = (f"exit status {code}: sys.exit() or os._exit() in your code?" if code >= 0
               else f"killed by signal {-code}")
        return FileCheck(problem=f"{name} ended the check before the checker said "
                                 f"anything ({how}); a check passes only when the "
                                 f"checker says so")
    return FileCheck(result=payload) if kind == "result" else FileCheck(problem=payload)


# What the child runs: its message goes to the real stdout, everything else to stderr.
_CHILD = ("import os, sys; out = os.fdopen(os.dup(1), 'wb'); os.dup2(2, 1); "
          "from nanotie.exercises.files import _check_in_child; "
          "_check_in_child(int(sys.argv[1]), sys.argv[2], out)")


def _check_in_child(number: int, path: str, out) -> None:
    """The child's side of :func:`check_file`: write ("result", CheckResult) or
    ("problem", one line), pickled, to ``out``."""
    from . import get

    exercise = get(number)
    try:
        message = ("result", exercise.check(load_function(path, exercise.function)))
    except LearnerFileError as exc:
        message = ("problem", str(exc))
    except KeyboardInterrupt:
        message = ("problem", "the check was interrupted (KeyboardInterrupt: Ctrl-C, or "
                              "raised by your code)")
    except BaseException as exc:             # noqa: BLE001  (a checker bug)
        message = ("problem", f"the checker for exercise {number} stopped: "
                              f"{type(exc).__name__}: {exc}")
    out.write(pickle.dumps(message))
    out.flush()
