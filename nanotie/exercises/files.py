"""The learner's file: writing the stub, and loading their function back from it.

Loading a file that does not work yet is the normal case here, so every way it can
fail (missing, a syntax error, an error while importing, no such function) becomes
a :class:`LearnerFileError` with a short message that points at the line, never a
traceback.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

from .checking import describe_exception


class LearnerFileError(Exception):
    """The learner's file cannot be loaded; the message says why and where."""


class StubExistsError(FileExistsError):
    """The stub's file exists already (it may hold the learner's work)."""


def stub_text(exercise) -> str:
    """The starting file: a header saying what to do, then the module's STUB."""
    goal = "\n".join("    " + line if line else "" for line in _wrap(exercise.goal))
    header = (f'"""Exercise {exercise.number}: {exercise.title}\n\n'
              f"Goal:\n{goal}\n\n"
              f"Write `{exercise.function}` below (the docstring gives the math), then "
              f"check it:\n\n"
              f"    python -m nanotie exercise check {exercise.number} "
              f"{exercise.stub_filename}\n"
              f'"""\n\n')
    return header + exercise.module.STUB.strip("\n") + "\n"


def _wrap(text: str, width: int = 84) -> list:
    return textwrap.wrap(" ".join(text.split()), width)


def write_stub(exercise, directory=".", force: bool = False) -> Path:
    """Write the exercise's stub to ``directory``; refuse to replace an existing file
    unless ``force``. Returns the path written."""
    directory = Path(directory)
    path = directory / exercise.stub_filename
    if path.exists() and not force:
        raise StubExistsError(f"{path} already exists and may hold your work; pass "
                              f"--force to replace it with a fresh stub")
    directory.mkdir(parents=True, exist_ok=True)
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
    except Exception as exc:                 # noqa: BLE001  (anything their file raises)
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
