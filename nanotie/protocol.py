"""One protocol for every reproduction: splits, runs, seeds, tuning and verdicts.

A miniature reproduction is evidence only if a learner can tell its result from noise.
Every experiment in nanotie follows the same five rules, written once here:

1. **Three disjoint splits.** A corpus is cut into contiguous pieces, train | val | test
   (:func:`split`). Settings are chosen on ``val`` only; ``test`` is only reported.
2. **A run** is a function, its settings and a seed (:class:`Run`); it returns a dict of
   figures, ``{"val": {...}, "test": {...}, ...}``. Runs are independent, so
   :func:`run_many` executes them on any ``concurrent.futures.Executor`` (a local process
   pool by default, a Dask cluster's executor for big sweeps), each with its BLAS pinned
   to one thread. A one-thread run gives the same bits wherever it runs, so a parallel
   sweep is bitwise equal to the same runs done one after another. (One exception: the
   Hyena distillation's least-squares errors can differ in their last bit, because
   SciPy's solver rounds differently where its scratch arrays land in memory.)
3. **Cache and resume.** Each finished run is stored under ``<out>/cache/runs/`` keyed by
   its function, settings (less the folders they name), seed, device and the experiment's
   ``version`` (bumped when its code changes results); the corpus enters through the settings (its
   :meth:`Splits.hash`, which the run compares with :func:`check_corpus`). A rerun is
   instant and an interrupted sweep resumes where it stopped. An unreadable entry is
   reported in one line and recomputed.
4. **Tuning and seeds.** :func:`choose` picks, per method, the setting with the best mean
   validation figure; it never looks at ``test``. Reported figures are the mean and the
   sample standard deviation over seeds, with every seed's value (:class:`Spread`).
5. **Verdicts.** :func:`verdict` turns two methods' per-seed figures into *holds*, *does
   not hold* or *within noise*: the gap between the means must exceed the seed spread.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .backend import usable_cores
from .data import contiguous_split
from .files import write_text
from .report import _plain, progress_bar

__all__ = ["Splits", "split", "check_corpus", "CorpusError", "Run", "RunResult", "run_many",
           "Runner", "dask_executor", "choose", "Spread", "spread", "spread_of", "verdict",
           "Verdict", "open_runner", "HOLDS", "DOES_NOT_HOLD", "WITHIN_NOISE"]


# ------------------------------------------------------------------------ splits


@dataclass(frozen=True)
class Splits:
    """Three contiguous, non-overlapping pieces of one token sequence."""

    train: np.ndarray      # the first 1 - val - test of the sequence
    val: np.ndarray        # the next piece: used only to choose settings
    test: np.ndarray       # the last piece: used only to report

    @property
    def sizes(self) -> dict:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def hash(self) -> str:
        """A short hash of the three pieces: put it in the settings of the runs that read
        them, so that another corpus (another Python's help text, say) never hits a stale
        cache entry."""
        h = hashlib.sha256()
        for a in (self.train, self.val, self.test):
            a = np.ascontiguousarray(a)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
        return h.hexdigest()[:16]


def split(ids, val_fraction: float = 0.1, test_fraction: float = 0.1) -> Splits:
    """Cut ``ids`` (bytes or a 1-D integer array) into train | val | test, in that order:
    contiguous copies, not shuffled (see :func:`~nanotie.data.contiguous_split`)."""
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"split: need 0 < val_fraction, 0 < test_fraction and "
                         f"val + test < 1; got {val_fraction} and {test_fraction}")
    return Splits(*contiguous_split(ids, [val_fraction, test_fraction],
                                    ("train", "val", "test")))


class CorpusError(ValueError):
    """A run's corpus is not the one its settings were made for."""


def check_corpus(corpus, expected: str, who: str) -> None:
    """Stop ``who``, a run whose settings were made for the corpus hashing to
    ``expected``, when ``corpus`` (its :class:`Splits` or their hash) is another one:
    another Python ships other text, and its figures would be filed under a stale key."""
    found = corpus.hash() if isinstance(corpus, Splits) else corpus
    if found != expected:
        raise CorpusError(f"{who}: the corpus differs from the one these settings were "
                         f"made for (it hashes to {found}, not {expected}: another "
                         "Python's text?)")


# -------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    """One independent unit of work: ``fn(settings, seed, device) -> figures``.

    ``fn`` is named as ``"package.module:function"`` so that any worker process, on this
    machine or another, can import it. ``settings`` must be JSON-serialisable: they
    key the cache, except a key ending in ``_dir`` (at any depth): where files are kept
    decides no figure, so a moved output folder still finds its runs. ``label`` is what
    the progress line calls the run."""

    fn: str
    settings: dict
    seed: int = 0
    device: str = "cpu"
    version: int = 1          # bump when the function's code changes its results
    label: str = ""

    def key(self) -> str:
        """A digest of everything that decides the run's figures."""
        spec = json.dumps({"fn": self.fn, "settings": _without_dirs(self.settings),
                           "seed": self.seed, "device": self.device, "version": self.version},
                          sort_keys=True, default=str)
        return hashlib.sha256(spec.encode()).hexdigest()[:20]

    def describe(self) -> str:
        return f"{self.label or self.fn.rpartition(':')[2]} seed {self.seed}"


def _without_dirs(settings):
    """``settings`` without its folders: the keys ending in ``_dir``, at any depth."""
    if not isinstance(settings, dict):
        return settings
    return {k: _without_dirs(v) for k, v in settings.items() if not str(k).endswith("_dir")}


@dataclass
class RunResult:
    """One run's figures, how long it took and whether it came from the cache."""
    run: Run
    figures: dict             # what fn returned
    seconds: float            # wall-clock time of the computation (not of the cache hit)
    cached: bool = False

    def record(self, **extra) -> dict:
        """One line of ``results.json``'s list of runs."""
        return {"label": self.run.label, "seed": self.run.seed, "cached": self.cached,
                "seconds": self.seconds, **extra}


def _execute(run: Run) -> tuple[dict, float]:
    """Run one ``Run`` with BLAS pinned to one thread (in whatever process this is)."""
    from threadpoolctl import threadpool_limits

    module, _, name = run.fn.partition(":")
    fn = getattr(importlib.import_module(module), name)
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        figures = fn(dict(run.settings), run.seed, run.device)
    if not isinstance(figures, dict):
        raise TypeError(f"{run.fn} returned {type(figures).__name__}; a run returns a dict")
    return _plain(figures, nan_as_null=False), time.perf_counter() - t0


# ------------------------------------------------------------------------- cache


def _cache_file(cache_dir: Path, run: Run) -> Path:
    stem = run.fn.rpartition(":")[2]
    return cache_dir / f"{stem}-{run.key()}.json"


def _load_cached(path: Path, run: Run) -> RunResult | None:
    """The cached result of ``run``, or None. A broken entry is reported and ignored."""
    if not path.exists():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry["key"] != run.key():
            raise ValueError("it belongs to another run")
        if not isinstance(entry["figures"], dict):
            raise TypeError("its figures are not a dict")
        return RunResult(run, entry["figures"], float(entry["seconds"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"nanotie: cache entry {path} is unreadable ({type(exc).__name__}: {exc}); "
              "recomputing it", file=sys.stderr, flush=True)
        return None


def _store(path: Path, result: RunResult) -> None:
    entry = {"key": result.run.key(), **asdict(result.run), "seconds": result.seconds,
             "figures": result.figures}
    write_text(path, json.dumps(entry, default=str))       # never half an entry


# ---------------------------------------------------------------------- executors


def dask_executor(address: str, timeout: float = 10.0) -> Executor:
    """The ``concurrent.futures`` executor of the Dask cluster at ``address`` (needs the
    ``cluster`` extra: ``pip install -e ".[cluster]"``). An unreachable scheduler
    raises ``OSError`` after ``timeout`` seconds."""
    try:
        from distributed import Client
    except ImportError:
        raise RuntimeError("a Dask scheduler needs the cluster extra: "
                           "pip install -e \".[cluster]\"") from None
    return Client(address, timeout=timeout).get_executor()


def _headline(figures: dict) -> str:
    """A few validation figures for the one-line progress report."""
    val = figures.get("val")
    if not isinstance(val, dict):
        return ""
    return ", ".join(f"val {k} {v:.4g}" for k, v in list(val.items())[:2]
                     if isinstance(v, (int, float)) and not isinstance(v, bool))


def run_many(runs, cache_dir=None, executor: Executor | None = None, progress=None,
             desc: str = "runs") -> list[RunResult]:
    """Execute ``runs`` and return their results in the same order.

    Cached runs are loaded (and counted in a line on stderr unless ``progress`` is False);
    the others go to ``executor`` (None: this process, one after another), and each is
    cached the moment it finishes (the module's rules 2 and 3).
    ``progress``: a bar over runs (None: only on a terminal; off a terminal, one line
    per finished run on stderr).
    """
    runs = list(runs)
    cache_dir = None if cache_dir is None else Path(cache_dir)
    results = [_load_cached(_cache_file(cache_dir, run), run) if cache_dir else None
               for run in runs]                                # a RunResult, or None: to do
    todo = [i for i, hit in enumerate(results) if hit is None]
    done = len(runs) - len(todo)
    if done and progress is not False:          # a rerun's figures are the cached ones
        print(f"  {desc}: {done} of {len(runs)} runs from the cache in {cache_dir}",
              file=sys.stderr, flush=True)
    bar = progress_bar(len(runs), desc, progress, initial=done, unit="run")
    lines = bar.disable and progress is None       # off a terminal: one line per run

    def finish(i, figures, seconds):
        nonlocal done
        results[i] = RunResult(runs[i], figures, seconds)
        if cache_dir is not None:
            _store(_cache_file(cache_dir, runs[i]), results[i])
        done += 1
        bar.update(1)
        if lines:
            head = _headline(figures)
            print(f"  [{done}/{len(runs)}] {desc}: {runs[i].describe()} "
                  f"({seconds:.0f} s){': ' + head if head else ''}", file=sys.stderr,
                  flush=True)

    try:
        if executor is None:
            for i in todo:
                finish(i, *_execute(runs[i]))
        else:
            from concurrent.futures import as_completed

            futures = {executor.submit(_execute, runs[i]): i for i in todo}
            try:
                for fut in as_completed(futures):
                    finish(futures[fut], *fut.result())
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    finally:
        bar.close()
    return results


@dataclass
class Runner:
    """How an experiment's runs are executed: where they are cached, on which executor,
    on which device, and with or without a progress bar. The CLI builds one and passes it
    to every experiment; ``Runner()`` runs in this process without a cache."""

    cache_dir: Path | None = None
    executor: Executor | None = None
    device: str = "cpu"
    progress: bool | None = None
    owned: list = field(default_factory=list, repr=False)   # executors to shut down

    @classmethod
    def local(cls, cache_dir=None, workers: int | None = None, device: str = "cpu",
              progress=None) -> "Runner":
        """Runs on a pool of ``workers`` local processes (None: one per core, or one on a
        GPU, which the processes would share); one worker runs them in this process."""
        if workers is None:
            workers = usable_cores() if device == "cpu" else 1
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if workers == 1:
            return cls(cache_dir, None, device, progress)
        import multiprocessing

        # "spawn": a fresh interpreter per worker, never a fork of a process whose BLAS
        # threads are running (which can deadlock).
        ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        return cls(cache_dir, ex, device, progress, owned=[ex])

    def map(self, runs, desc: str = "runs") -> list[RunResult]:
        return run_many(runs, self.cache_dir, self.executor, self.progress, desc)

    def close(self, abort: bool = False) -> None:
        """Shut the pools down. ``abort`` (an error or Ctrl-C): stop the runs still going
        instead of waiting for them; every finished run is already in the cache."""
        for ex in self.owned:
            if abort:       # a pool has no public way to stop a running call
                for process in list((getattr(ex, "_processes", None) or {}).values()):
                    process.terminate()
            ex.shutdown(wait=True, cancel_futures=True)
        self.owned.clear()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(abort=exc_type is not None)


def open_runner(out_dir, device: str = "cpu", runner: Runner | None = None) -> tuple[Path, Runner]:
    """An experiment's start: make ``out_dir``, and when no runner is given, the
    in-process one with its run cache beside it (``<out_dir>/../cache/runs``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if runner is None:
        runner = Runner(cache_dir=out_dir.parent / "cache" / "runs", device=device)
    return out_dir, runner


# ------------------------------------------------------------------ seeds, tuning


@dataclass(frozen=True)
class Spread:
    """Figures of one configuration over seeds: mean, sample std, min, max, each value."""

    mean: float
    std: float            # sample standard deviation (n - 1); 0 for one seed
    min: float
    max: float
    values: tuple

    @property
    def n(self) -> int:
        return len(self.values)

    def format(self, digits: int = 3) -> str:
        """``mean ± std`` (the sample standard deviation over n seeds)."""
        if self.n == 1:
            return f"{self.mean:.{digits}f} (1 seed)"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"

    __str__ = format

    def seeds(self, digits: int = 3) -> str:
        return ", ".join(f"{v:.{digits}f}" for v in self.values)

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                "n": self.n, "values": list(self.values)}


def spread(values) -> Spread:
    """The :class:`Spread` of per-seed figures."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    if v.size == 0:
        raise ValueError("spread: no values")
    with np.errstate(invalid="ignore"):          # a diverged run (inf): std is nan
        std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return Spread(float(v.mean()), std, float(v.min()), float(v.max()), tuple(v.tolist()))


def spread_of(results, key: str, split: str = "test") -> Spread:
    """The :class:`Spread` of ``figures[split][key]`` over ``results`` (one per seed)."""
    return spread([r.figures[split][key] for r in results])


def choose(results, method, setting, metric: str, lower_is_better: bool = True) -> dict:
    """Per method, the setting whose mean VALIDATION ``metric`` over seeds is best.

    ``results``: :class:`RunResult` s; ``method(run)`` and ``setting(run)`` name a run's
    method and its tuned setting (e.g. ``lambda r: r.settings["lr"]``). Only
    ``figures["val"][metric]`` is read: the test split never decides anything. Returns
    ``{method: {"best": setting, "grid": {setting: Spread}, "runs": [RunResult]}}``,
    ``runs`` being the method's results at the best setting, in the order given.
    """
    table: dict = {}
    for r in results:
        table.setdefault(method(r.run), {}).setdefault(setting(r.run), []).append(r)
    out = {}
    for m, by_setting in table.items():
        grid = {s: spread([r.figures["val"][metric] for r in rs])
                for s, rs in by_setting.items()}
        sign = 1.0 if lower_is_better else -1.0
        # A diverged setting (an inf or nan mean) is the worst, never the best.
        best = min(grid, key=lambda s: (not np.isfinite(grid[s].mean), sign * grid[s].mean))
        out[m] = {"best": best, "grid": grid, "runs": by_setting[best]}
    return out


# ------------------------------------------------------------------------ verdicts

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
WITHIN_NOISE = "within noise"


@dataclass(frozen=True)
class Verdict:
    """Whether A beats B beyond the seed noise, by how much, and why."""
    outcome: str          # HOLDS, DOES_NOT_HOLD or WITHIN_NOISE
    gap: float            # how much better A is than B (positive: A better), plus margin
    noise: float          # the larger of the two seed ranges (max - min)
    reason: str

    def __str__(self) -> str:
        return f"**{self.outcome}**: {self.reason}"

    as_dict = asdict      # {"outcome", "gap", "noise", "reason"}


def verdict(a, b, lower_is_better: bool = True, margin: float = 0.0,
            names: tuple = ("A", "B")) -> Verdict:
    """Does the claim "A is at least as good as B, give or take ``margin``" hold?

    ``a`` and ``b`` are per-seed figures. Let ``gap`` be how much better A's mean is
    than B's (sign-corrected so that positive favours A) plus ``margin``, and ``noise``
    the larger of the two groups' ranges (max - min over seeds). Then

    * ``gap >  noise``: **holds**;
    * ``gap < -noise``: **does not hold**;
    * otherwise: **within noise** (the seeds disagree more than the methods do).

    ``margin = 0`` tests "A beats B"; a positive margin tests "A is no worse than B by
    more than margin" (a claim of parity, as in "matches with fewer parameters").
    With one seed each the range is 0, so any gap decides: run more seeds. A group with
    a diverged run (inf or nan) loses to one without; two such groups are within noise.
    """
    sa, sb = spread(a), spread(b)
    better = (sb.mean - sa.mean) if lower_is_better else (sa.mean - sb.mean)
    gap = better + margin
    noise = max(sa.max - sa.min, sb.max - sb.min)
    na, nb = names
    how = "lower" if lower_is_better else "higher"
    detail = (f"{na} {sa.mean:.4g} vs {nb} {sb.mean:.4g} ({how} is better"
              f"{f', margin {margin:.3g}' if margin else ''}): gap {better:+.3g}"
              f"{f', {gap:+.3g} with the margin' if margin else ''}, "
              f"seed spread {noise:.3g} (n = {sa.n}, {sb.n})")
    finite_a, finite_b = np.isfinite(sa.mean), np.isfinite(sb.mean)
    if finite_a and finite_b:
        outcome = HOLDS if gap > noise else DOES_NOT_HOLD if gap < -noise else WITHIN_NOISE
    else:                                   # a diverged run: the finite group wins
        outcome = WITHIN_NOISE if finite_a == finite_b else HOLDS if finite_a else DOES_NOT_HOLD
    return Verdict(outcome, gap, noise, detail)
