"""Shared timing helpers and scaffolding for the benchmarks (not part of the library).

Two things make a CPU comparison fair and repeatable on a small, shared machine:

* The SAME number of threads on both sides. NumPy's matrix products run on its BLAS
  thread pool; PyTorch has its own pool. :func:`blas_threads` finds how many threads
  NumPy's BLAS uses and :func:`match_torch_threads` gives PyTorch the same number.
* A timer that resists noise. :func:`compare` warms every contender up, picks a loop
  count so that one timed repeat lasts long enough for the clock, and then runs the
  repeats INTERLEAVED (a, b, a, b, ...), so that a burst of load from a neighbour
  slows both sides instead of just one. It reports the median (and the min) of the
  per-iteration times over the repeats. Two thread pools on few cores fight: right
  after NumPy's BLAS ran, PyTorch's OpenMP threads can wait on still-spinning BLAS
  threads (and the other way round), which measured up to 10 ms per switch on a
  2-core machine. ``settle`` pauses before each timed block to let them go idle.

Absolute seconds depend on the machine and its neighbours; read the RATIOS, which
are measured side by side in one process.

The scaffolding the benchmark scripts share is here too: :func:`parser` (the options
they all take), :func:`timer_options`, :func:`import_torch`, :func:`machine` and
:func:`write_json`. Importing this module puts the repository root on ``sys.path``, so
the scripts run nanotie from the checkout they sit in.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import threadpoolctl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # nanotie from a checkout

__all__ = ["blas_threads", "match_torch_threads", "compare", "Timing", "markdown_table",
           "at_least", "parser", "timer_options", "import_torch", "machine", "write_json"]

_LIMITER = None   # the threadpoolctl limiter applied by blas_threads(limit=...), if any


def blas_threads(limit: int | None = None) -> tuple[int, str]:
    """How many threads NumPy's BLAS uses, and how that was found: threadpoolctl's
    report of the loaded BLAS libraries (a dependency of nanotie). ``limit``, if given,
    is applied to them for the rest of the process."""
    global _LIMITER
    if limit is not None:   # called as a function, not in a ``with``: the limit lasts
        _LIMITER = threadpoolctl.threadpool_limits(limits=int(limit), user_api="blas")
    pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    if not pools:
        raise SystemExit(f"threadpoolctl {threadpoolctl.__version__} sees no BLAS library in "
                         "NumPy, so the threads it times with are unknown (NumPy 2's OpenBLAS "
                         "needs threadpoolctl >= 3.5)")
    n = max(int(p["num_threads"]) for p in pools)
    return n, f"threadpoolctl ({', '.join(sorted({p.get('internal_api', '?') for p in pools}))})"


def match_torch_threads(torch, n: int) -> int:
    """Give PyTorch's intra-op pool ``n`` threads; returns what PyTorch now reports."""
    torch.set_num_threads(int(n))
    return torch.get_num_threads()


class Timing(dict):
    """Per-iteration seconds of one contender: ``median``, ``min``, ``repeats``,
    ``number`` (loop count per repeat) and the raw ``times``; ``cpu_median`` and
    ``cpu_times`` are the same for the process's CPU time (user + sys, all its threads)."""


def _autorange(fn, min_time: float, max_number: int = 1_000_000) -> int:
    """The smallest loop count of the form 1, 2, 5, 10, 20, ... that takes at least
    ``min_time`` seconds (as ``timeit.Timer.autorange`` does)."""
    number = 1
    while True:
        for factor in (1, 2, 5):
            n = number * factor
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            if time.perf_counter() - t0 >= min_time or n >= max_number:
                return n
        number *= 10


def compare(contenders: dict, *, repeats: int = 7, warmup: int = 2,
            min_time: float = 0.05, settle: float = 0.0) -> dict:
    """Time each zero-argument callable in ``contenders`` (name -> fn).

    Every fn is called ``warmup`` times, then gets its own loop count from
    :func:`_autorange`, then ``repeats`` rounds run with the contenders interleaved.
    The garbage collector is paused while timing (as in ``timeit``) so that a
    collection triggered by one side is not billed to the other. With ``settle`` > 0,
    each timed block starts after a pause of that many seconds and one untimed call.
    Returns name -> :class:`Timing`.

    Besides the wall clock, each repeat reads the process's CPU time (user + sys over
    all its threads, ``time.process_time``). On a machine shared with busy neighbours
    the wall clock counts the time a thread waited for a core and the CPU time does
    not; for one thread the CPU time is the cost of the work itself, for several it
    adds the time their threads spent spinning while waiting for one another.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    numbers = {name: _autorange(fn, min_time) for name, fn in contenders.items()}
    times = {name: [] for name in contenders}
    cpu_times = {name: [] for name in contenders}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in contenders.items():
                n = numbers[name]
                if settle:
                    # Let the other side's idle worker threads stop spinning (OpenBLAS
                    # and OpenMP busy-wait for a while after each call, and on a small
                    # machine that steals cores), then wake our own with one call.
                    time.sleep(settle)
                    fn()
                c0, t0 = time.process_time(), time.perf_counter()
                for _ in range(n):
                    fn()
                times[name].append((time.perf_counter() - t0) / n)
                cpu_times[name].append((time.process_time() - c0) / n)
            gc.collect()   # between rounds, outside the timed region
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Timing(median=statistics.median(ts), min=min(ts), repeats=repeats,
                         number=numbers[name], times=ts,
                         cpu_median=statistics.median(cpu_times[name]),
                         cpu_times=cpu_times[name])
            for name, ts in times.items()}


def markdown_table(header, rows, text_columns: int = 1) -> str:
    """A Markdown table; the first ``text_columns`` columns left-aligned, the rest
    (numbers) right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < text_columns else "---:"
                            for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------ the scripts' scaffolding


def at_least(low: float, kind=int):
    """An argparse type: a ``kind`` number >= ``low``, else a one-line usage error."""
    def check(text):
        if not kind(text) >= low:         # a ValueError reads "invalid int value: 'x'"
            raise argparse.ArgumentTypeError(f"expected a number >= {low}, got {text}")
        return kind(text)
    check.__name__ = kind.__name__
    return check


def json_path(path: str) -> str:
    """An argparse type: a file path whose folder exists, checked before the timing."""
    if not Path(path).resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"no folder {Path(path).parent} to write {path} in")
    return path


def parser(doc: str, timer: dict, device: str | None = "cuda: nanotie on CuPy",
           threads: int | None = None):
    """The options every benchmark takes: --quick, --json, --threads (default
    ``threads``; None: NumPy's BLAS's), --repeats, and --settle and --device where they
    apply. ``timer`` holds :func:`compare`'s keywords as (full run, --quick) pairs;
    :func:`timer_options` picks from them."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(timer=timer)
    p.add_argument("--quick", action="store_true",
                   help="fewer, shorter repeats (a smoke run; noisier ratios)")
    p.add_argument("--json", metavar="PATH", type=json_path,
                   help="also write the results as JSON")
    p.add_argument("--threads", type=at_least(1), default=threads,
                   help="BLAS threads, and PyTorch's where it runs (default: "
                        + (f"{threads})" if threads else "NumPy's BLAS's)"))
    full, quick = timer["repeats"]
    p.add_argument("--repeats", type=at_least(1), default=None,
                   help=f"timed repeats (default {full}, or {quick} with --quick)")
    if "settle" in timer:
        full, quick = timer["settle"]
        p.add_argument("--settle", type=at_least(0, float), default=None,
                       help=f"seconds to pause before each timed block so that worker "
                            f"threads left spinning by the last one go idle (default {full}, or "
                            f"{quick} with --quick; 0 turns it off)")
    if device:
        p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help=device)
    return p


def timer_options(args) -> dict:
    """:func:`compare`'s keywords for the parsed ``args`` (see :func:`parser`)."""
    chosen = {k: pair[int(bool(args.quick))] for k, pair in args.timer.items()}
    if args.repeats:
        chosen["repeats"] = args.repeats
    if getattr(args, "settle", None) is not None:
        chosen["settle"] = args.settle
    return chosen


def import_torch(script: str):
    """PyTorch, the yardstick; without it, say how to install it and exit with status 2."""
    try:
        import torch
    except ImportError:
        print(f"{script} compares nanotie with PyTorch, which is not installed.\n"
              "Install the CPU build, e.g. `pip install -e .[torch]`, and run it again.",
              file=sys.stderr)
        sys.exit(2)
    return torch


def cpu_name() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Versions, CPU and load average: the header of a run and the JSON's ``meta``."""
    import numpy as np

    import nanotie as nt

    return dict(nanotie=nt.__version__, numpy=np.__version__,
                python=platform.python_version(), machine=platform.machine(),
                cpu=cpu_name(), logical_cores=os.cpu_count(),
                load_average=os.getloadavg() if hasattr(os, "getloadavg") else None)


def write_json(path, report: dict) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")
