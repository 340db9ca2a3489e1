"""Atomic file writes: a checkpoint or report is either the old file or the new one.

Writing in place can be interrupted (a crash, a full disk, Ctrl-C) and leave half a
file that later fails to load, or worse, loads. So every file nanotie saves is
written to a temporary file in the same folder, flushed to disk, and then renamed
over the target: on POSIX and Windows, ``os.replace`` is atomic.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write", "write_text", "unwritable", "WriteError"]


class WriteError(OSError):
    """Writing ``filename`` failed (the file meant, not its temporary): what the CLI
    reports as "cannot write", where any other OSError is a file it could not read."""


@contextmanager
def atomic_write(path, mode: str = "wb", encoding: str | None = None):
    """``with atomic_write(path) as f: ...`` writes ``path`` all at once or not at all.

    On an exception inside the block the temporary file is removed and ``path`` is
    left as it was; an OSError becomes a :class:`WriteError` naming ``path``."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp makes it private; use the usual mode
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise WriteError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, atomically."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def unwritable(folder) -> str | None:
    """Why files cannot be written in ``folder`` (made if missing), or None if they can.

    Checked by writing and removing a probe file, the only test that also catches a
    read-only mount or a full disk."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as f:
            f.write(b"probe")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return f"cannot write in {folder}: {exc.strerror or exc}"
    return None
