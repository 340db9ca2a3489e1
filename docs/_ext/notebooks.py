"""Execute the walkthroughs for the site: quick mode, in parallel, each in a scratch
folder, with a cache keyed on everything the outputs depend on.

A walkthrough's outputs depend on its own source, the library's source, the Python and
the versions of NumPy, SciPy and matplotlib; the cache key hashes all of them, so a
cached notebook is one that executing again would reproduce (the notebooks seed their
generators). The kernel is the interpreter running the build, registered as a
kernelspec on a private Jupyter path, as tests/test_notebooks.py does. Figures come
out through the inline backend (MPLBACKEND is unset for the kernel), so each one is an
``image/png`` output that the page shows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

KERNEL_NAME = "nanotie-site-python"
CELL_TIMEOUT_S = 300
ANSI = re.compile(r"\x1b\[[0-9;]*m")
FIGURE_TYPES = ("image/png", "image/svg+xml", "image/jpeg")


class NotebookFailed(RuntimeError):
    """A walkthrough raised while executing: the message names it and holds the cell."""


def figures(nb) -> int:
    """How many figures (image outputs) an executed notebook holds."""
    return sum(1 for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", [])
               if any(kind in out.get("data", {}) for kind in FIGURE_TYPES))


SHOWS = re.compile(r"^\s*(?:plt|fig|figure)\.show\(|^\s*display\(\s*fig", re.M)


def silent_plot_cells(nb) -> list[int]:
    """Code cells that show a figure (``plt.show()``, ``display(fig)``) but whose
    outputs hold none: a plot the reader was promised and does not see."""
    return [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            and SHOWS.search(cell.source)
            and not any(any(kind in out.get("data", {}) for kind in FIGURE_TYPES)
                        for out in cell.get("outputs", []))]


def _library_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted((root / "nanotie").rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    versions = [sys.version]
    for name in ("numpy", "scipy", "matplotlib"):
        try:
            versions.append(f"{name}={__import__(name).__version__}")
        except ImportError:
            versions.append(f"{name}=none")
    h.update("|".join(versions).encode())
    return h.hexdigest()


def cache_file(cache_dir: Path, source: Path, text: str, digest: str,
               allow_errors: bool = False) -> Path:
    """Where the executed ``source`` (its jupytext ``text``) is cached: its name and a
    hash of everything its outputs depend on (``digest``: :func:`_library_digest`)."""
    key = hashlib.sha256((digest + source.name + text + str(allow_errors)).encode()).hexdigest()
    return cache_dir / f"{source.stem}-{key[:20]}.ipynb"


def _kernel_home(home: Path) -> Path:
    """A Jupyter folder under ``home`` whose one kernel runs this Python."""
    spec_dir = home / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                     "--IPKernelApp.log_level=ERROR"],      # not its loopback-TCP notice
            "display_name": f"nanotie site ({sys.executable})", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return home


def _execute(source: str, text: str, jupyter_home: str, root: str,
             allow_errors: bool) -> tuple[str, float]:
    """Run one notebook (jupytext text) in a scratch folder; return it as JSON."""
    import jupytext
    import nbclient
    import nbformat

    os.environ["JUPYTER_PATH"] = jupyter_home
    os.environ["JUPYTER_RUNTIME_DIR"] = str(Path(jupyter_home) / "runtime")
    os.environ["NANOTIE_QUICK"] = "1"
    os.environ.pop("MPLBACKEND", None)          # the kernel's inline backend shows figures
    # The library the walkthrough imports is this checkout's, whatever is installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    nb = jupytext.reads(text, fmt="py:percent")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nanotie-site-run-") as cwd:   # not ./runs
        os.environ["TMPDIR"] = cwd              # the walkthroughs' own temporary runs too
        client = nbclient.NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT_S,
                                         allow_errors=allow_errors, resources={"metadata": {"path": cwd}})
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as exc:
            raise NotebookFailed(f"{source} failed:\n{ANSI.sub('', str(exc))}") from None
        except nbclient.exceptions.CellTimeoutError as exc:
            raise NotebookFailed(f"{source}: a cell ran past {CELL_TIMEOUT_S}s: {exc}") from None
    return nbformat.writes(nb), time.perf_counter() - start


def execute_all(root: Path, sources: list[Path], dest: Path, jobs: int,
                cache_dir: Path | None, log=print, allow_errors: bool = False) -> dict:
    """Write each executed notebook to dest/<stem>.ipynb; return {stem: info}."""
    import nbformat

    dest.mkdir(parents=True, exist_ok=True)
    digest = _library_digest(root)
    todo, info = {}, {}
    for source in sources:
        text = source.read_text()
        cached = cache_file(cache_dir, source, text, digest, allow_errors) if cache_dir else None
        if cached and cached.exists():
            (dest / f"{source.stem}.ipynb").write_text(cached.read_text())
            info[source.stem] = {"cached": True, "seconds": 0.0}
        else:
            todo[source] = (text, cached)
    if todo:
        home = _kernel_home(dest.parent / "jupyter")     # inside the build's scratch folder
        log(f"executing {len(todo)} walkthrough(s) in quick mode, {jobs} at a time")
        with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo)))) as pool:
            futures = {pool.submit(_execute, str(source.relative_to(root)), text, str(home),
                                   str(root), allow_errors): source
                       for source, (text, _) in todo.items()}
            for future in as_completed(futures):
                source = futures[future]
                try:
                    executed, seconds = future.result()
                except BaseException:
                    for other in futures:            # a failure ends the build now
                        other.cancel()
                    raise
                (dest / f"{source.stem}.ipynb").write_text(executed)
                info[source.stem] = {"cached": False, "seconds": round(seconds, 1)}
                log(f"  {source.name}: {seconds:.0f} s")
                cached = todo[source][1]
                if cached:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    for old in cached.parent.glob(f"{source.stem}-*.ipynb"):
                        old.unlink()
                    tmp = cached.with_suffix(".tmp")
                    tmp.write_text(executed)
                    tmp.replace(cached)
    for source in sources:
        nb = nbformat.read(dest / f"{source.stem}.ipynb", as_version=4)
        info[source.stem]["figures"] = figures(nb)
        info[source.stem]["silent_plot_cells"] = silent_plot_cells(nb)
    return info
