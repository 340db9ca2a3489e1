"""The command line: ``python -m nanotie reproduce [NAME ...]``, ``python -m nanotie list``,
``python -m nanotie exercise {list,start,check}``, ``python -m nanotie pages`` (the results
pages, from the latest reproduction) and ``python -m nanotie site --out site/`` (the course
site, built by docs/_ext/sitebuild.py); the last two write into a repository checkout.

A usage error prints one line to stderr and exits with status 2, never a traceback.
``exercise check`` exits 0 when the learner's file passes, 1 when it fails or cannot
be loaded (a syntax error, say: reported in a line or two, with the line of the file).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from errno import ENOSPC, EROFS
from pathlib import Path

from . import backend
from .files import WriteError, unwritable
from .nn.module import StateDictError
from .pages import ROOT as CHECKOUT
from .papers import REGISTRY
from .protocol import CorpusError, Runner, dask_executor
from .train import CheckpointError, _one_line


class UsageError(Exception):
    """A mistake in how the command was called."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):          # argparse would print the whole usage block
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m nanotie", description="nanotie: weight tying, in miniature")
    sub = p.add_subparsers(dest="command", metavar="{reproduce,list,pages,exercise,site}")
    r = sub.add_parser("reproduce", help="run the papers' miniature reproductions")
    r.add_argument("names", nargs="*", metavar="NAME", help="experiments to run (default: all)")
    r.add_argument("--full", action="store_true", help="the longer profile instead of quick")
    r.add_argument("--out", default="runs", metavar="DIR", help="output folder (default: runs)")
    r.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="where to run (default: $NANOTIE_DEVICE or cpu)")
    r.add_argument("--seed", type=int, default=0,
                   help="first random seed; each configuration runs seeds SEED, SEED+1, ... "
                        "(default: 0)")
    r.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes for independent runs (default: one per core, "
                        "one on a GPU; 1: in this process)")
    r.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on the Dask cluster whose scheduler is at ADDRESS "
                        "(needs the cluster extra)")
    sub.add_parser("list", help="list the registered experiments")
    pg = sub.add_parser("pages", help="regenerate the papers' results pages and the README's "
                                      "results table from runs (in this checkout)",
                        description="Rewrite each paper's results page (nanotie/papers/*/"
                                    "README.md, its plots in docs/results/) and the README's "
                                    f"results table, in {CHECKOUT}.")
    pg.add_argument("--from", dest="runs", type=Path, default=Path("runs"), metavar="DIR",
                    help="the reproduce output folder (default: runs)")
    pg.add_argument("--full-from", dest="full_runs", type=Path, default=None, metavar="DIR",
                    help="a --full reproduce output folder to add to each page")
    e = sub.add_parser("exercise", help="gradient-checked exercises: list, start, check")
    esub = e.add_subparsers(dest="action", metavar="{list,start,check}")
    esub.add_parser("list", help="list the exercises")
    st = esub.add_parser("start", help="write an exercise's stub file to fill in")
    st.add_argument("number", type=int, metavar="N", help="the exercise's number")
    st.add_argument("--dir", type=Path, default=Path("."),
                    help="folder for the stub (default: the current one)")
    st.add_argument("--force", action="store_true",
                    help="replace the file if it exists (your work in it is lost)")
    ch = esub.add_parser("check", help="check your solution to an exercise")
    ch.add_argument("number", type=int, metavar="N", help="the exercise's number")
    ch.add_argument("file", type=Path, nargs="?", metavar="FILE",
                    help="your file (default: the stub's name, exNN_<name>.py, here)")
    s = sub.add_parser("site", help="build the course site, offline (needs the docs extra)")
    s.add_argument("--out", type=Path, default=Path("site"), metavar="DIR",
                   help="output folder (default: site); open DIR/index.html")
    s.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="walkthroughs executed at once, and Sphinx's processes (default: cores)")
    s.add_argument("--no-cache", action="store_true",
                   help="execute every walkthrough, even those build/site-cache holds")
    s.add_argument("--repo-url", default=os.environ.get("NANOTIE_REPO_URL"), metavar="URL",
                   help="also link each source line to this public repository, e.g. "
                        "https://github.com/OWNER/nanotie/blob/main (default: "
                        "$NANOTIE_REPO_URL, or none)")
    s.add_argument("--allow-errors", action="store_true",
                   help="render a walkthrough whose cell fails, with its traceback (drafts)")
    return p


def _site(args) -> int:
    """The builder lives in the repository's docs/, not in the package: find it beside
    the package (an editable install or a checkout) and run it."""
    import importlib.util

    builder = Path(__file__).resolve().parent.parent / "docs" / "_ext" / "sitebuild.py"
    if not builder.exists():
        raise UsageError(f"site: builds from a repository checkout, and {builder.parents[2]} "
                         f"is not one; clone the repository, then pip install -e \".[docs]\"")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: need at least 1")
    if args.repo_url and not args.repo_url.startswith(("https://", "http://")):
        raise UsageError(f"--repo-url {args.repo_url}: give the whole address, "
                         "https://... (without it every source link is a dead relative one)")
    # Found now, not after minutes of building (a file there: the builder says so).
    made = not args.out.exists()
    problem = None if args.out.is_file() else unwritable(args.out)
    if problem:
        raise UsageError(f"--out {args.out}: {problem}")
    spec = importlib.util.spec_from_file_location("sitebuild", builder)
    sitebuild = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sitebuild)
    cache = None if args.no_cache else builder.parents[2] / "build" / "site-cache"
    try:
        sitebuild.build(args.out, args.jobs, cache, args.repo_url,
                        allow_errors=args.allow_errors)
    except sitebuild.SiteError as exc:
        if made and args.out.is_dir() and not any(args.out.iterdir()):
            args.out.rmdir()                    # the probe's folder, nothing built in it
        raise UsageError(str(exc)) from None
    except sitebuild.NotebookFailed as exc:          # a walkthrough's cell and traceback
        print(f"nanotie: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _reproduce(args) -> int:
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        raise UsageError(f"unknown experiment(s): {', '.join(unknown)} (known: "
                         f"{', '.join(REGISTRY)})")
    if not args.out.strip():
        raise UsageError("--out: give a folder name, e.g. --out runs")
    args.out = Path(args.out)
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: seeds are integers >= 0")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: need at least 1")
    if args.scheduler is not None and not args.scheduler.strip():    # an unset $ADDRESS
        raise UsageError("--scheduler: give the scheduler's address, e.g. tcp://HOST:8786")
    if args.workers is not None and args.scheduler:
        raise UsageError("--workers and --scheduler: give one (the cluster has its own)")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    if args.device == "cuda" and not backend.cuda_available():
        raise UsageError("--device cuda: " + backend._cupy_status()[1])
    try:
        device = args.device or backend.default_device()
    except backend.DeviceError as exc:          # NANOTIE_DEVICE names an unusable device
        raise UsageError(f"$NANOTIE_DEVICE: {exc}") from None
    names = args.names or list(REGISTRY)
    profile = "full" if args.full else "quick"
    lines = []
    # The runner first: a --scheduler that cannot be reached then leaves no folder behind.
    with _runner(args, device) as runner:       # shuts its worker processes down
        for folder in [args.out / "cache"] + [args.out / n for n in names]:
            problem = unwritable(folder)       # found now, not after minutes of training
            if problem:
                raise UsageError(f"--out {args.out}: {problem}")
        for name in names:
            print(f"== {name} ({profile} profile, {device}) ==", flush=True)
            start = time.perf_counter()
            results = REGISTRY[name].run(quick=not args.full, out_dir=args.out / name,
                                         seed=args.seed, device=device, runner=runner)
            summary = {**results.get("summary", {}),
                       "time": f"{time.perf_counter() - start:.0f} s"}
            lines.append(f"  {name:14s} " + "  ".join(f"{k} {v}" for k, v in summary.items()))
            print(f"   wrote {args.out / name}/report.md, results.json and plots", flush=True)
    print("\nSummary:\n" + "\n".join(lines))
    return 0


def _runner(args, device: str) -> Runner:
    """Where the runs go: a Dask cluster (--scheduler), or a local process pool."""
    cache = args.out / "cache" / "runs"
    if args.scheduler:
        try:
            executor = dask_executor(args.scheduler)
        except RuntimeError as exc:
            raise UsageError(f"--scheduler: {exc}") from None
        except OSError as exc:
            raise UsageError(f"--scheduler {args.scheduler}: cannot connect ({exc})") from None
        return Runner(cache, executor, device)
    return Runner.local(cache, args.workers, device)


def _exercise(args) -> int:
    from . import exercises
    from .exercises.files import StubExistsError, check_file, check_seconds, write_stub

    if args.action is None:
        raise UsageError("exercise: say what to do: list, start N or check N [FILE]")
    if args.action == "list":
        rows = []
        for ex in exercises.REGISTRY.values():
            try:
                title = ex.title
            except Exception as exc:         # noqa: BLE001  (one broken module: say so)
                title = f"(cannot be loaded: {type(exc).__name__}: {exc})"
            rows.append((ex.number, title, ex.stub_filename))
        width = max(len(title) for _, title, _ in rows)
        for number, title, filename in rows:
            print(f"{number:3d}  {title:{width}s}  {filename}")
        print("\nStart one with: python -m nanotie exercise start N")
        return 0
    try:
        ex = exercises.get(args.number)
    except KeyError:
        known = ", ".join(map(str, sorted(exercises.REGISTRY)))
        raise UsageError(f"no exercise {args.number} (known: {known}; see: python -m "
                         f"nanotie exercise list)") from None
    if args.action == "start":
        if args.dir.exists() and not args.dir.is_dir():
            raise UsageError(f"--dir {args.dir}: exists and is not a folder")
        try:
            path = write_stub(ex, args.dir, force=args.force)
        except StubExistsError as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"cannot write the stub in {exc.filename or args.dir}: "
                             f"{exc.strerror or exc}") from None
        print(f"Wrote {path}: exercise {ex.number}, {ex.title}.\n"
              f"Fill in `{ex.function}` (its docstring gives the math), then run:\n"
              f"    python -m nanotie exercise check {ex.number} {path}")
        return 0
    path = args.file or Path(ex.stub_filename)
    if not path.exists():
        hint = ("" if args.file else
                f"; write it with: python -m nanotie exercise start {ex.number}")
        raise UsageError(f"{path}: no such file{hint}")
    if not path.is_file():
        raise UsageError(f"{path}: not a file")
    try:
        timeout = check_seconds()
    except ValueError as exc:                # NANOTIE_CHECK_SECONDS=abc, 0 or -1
        raise UsageError(str(exc)) from None
    found = check_file(ex, path, timeout)    # in a child process, with a time limit
    if found.problem is not None:            # broken, ended early, too slow: not a pass
        print(f"nanotie: cannot check: {found.problem}", file=sys.stderr)
        return 1
    print(found.result.report())
    return 0 if found.passed else 1


def main(argv=None) -> int:
    """``python -m nanotie ARGS``: run the command, return its exit status."""
    try:
        args = _parser().parse_args(argv)
        if args.command == "reproduce":
            return _reproduce(args)
        if args.command == "exercise":
            return _exercise(args)
        if args.command == "site":
            return _site(args)
        if args.command == "pages":
            from .pages import write_pages
            try:
                written = write_pages(args.runs, args.full_runs)
            except (FileNotFoundError, ValueError) as exc:     # no checkout, a bad run
                raise UsageError(str(exc)) from None
            for path in written:
                print(f"wrote {path}")
            if not written:
                print(f"no finished reproduction in {args.runs}; nothing written")
            return 0
        if args.command == "list":
            for exp in REGISTRY.values():
                print(f"{exp.name:16s} {exp.title}")
            return 0
        _parser().print_help()
        return 2
    except UsageError as exc:
        print(f"nanotie: error: {exc}", file=sys.stderr)
        return 2
    except (CheckpointError, StateDictError, CorpusError) as exc:   # made for another run
        print(f"nanotie: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:         # writes are atomic: a failed one left no half file
        writes = isinstance(exc, WriteError) or exc.errno in (ENOSPC, EROFS)   # full, read-only
        verb = "write" if writes else "read"           # else a file gone, locked or a folder
        where = f"cannot {verb} {exc.filename}: " if exc.filename else ""
        print(f"nanotie: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:      # checkpoints are atomic: a rerun resumes from the last
        print("nanotie: interrupted", file=sys.stderr)
        return 130
