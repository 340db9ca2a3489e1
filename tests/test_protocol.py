"""The experiment protocol: disjoint splits, selection blind to the test split,
parallel = sequential, cache and resume, the verdict rule, a Dask cluster."""

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from nanotie import protocol as P
from nanotie.papers import REGISTRY

FIT = "protocol_runs:fit"


# ------------------------------------------------------------------ splits


@pytest.mark.parametrize("n,val,test", [(1000, 0.1, 0.1), (37, 0.2, 0.3), (10, 0.1, 0.1)])
def test_splits_are_disjoint_and_cover_the_sequence(n, val, test):
    ids = np.arange(n)                       # every id marks its position
    s = P.split(ids, val, test)
    parts = [set(s.train), set(s.val), set(s.test)]
    assert all(parts), "every split is non-empty"
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert np.array_equal(np.concatenate([s.train, s.val, s.test]), ids)
    assert s.train.max() < s.val.min() and s.val.max() < s.test.min()   # contiguous, in order


def test_split_of_bytes_and_copies():
    data = bytes(range(200))
    s = P.split(data)
    assert s.train.dtype == np.uint8 and sum(s.sizes.values()) == 200
    ids = np.arange(50)
    s = P.split(ids)
    s.train[0] = 99
    assert ids[0] == 0


@pytest.mark.parametrize("val,test", [(0, 0.1), (0.1, 0), (0.5, 0.5), (0.1, -0.1)])
def test_split_refuses_bad_fractions(val, test):
    with pytest.raises(ValueError, match="need 0 < val_fraction"):       # ours, not a later one
        P.split(np.arange(100), val, test)


def test_split_refuses_too_short():
    with pytest.raises(ValueError, match="non-empty"):
        P.split(np.arange(3), 0.1, 0.1)


def test_the_hash_of_the_splits_sees_where_they_are_cut():
    """The same ids cut at another place are other splits: another hash."""
    ids = np.arange(100)
    a = P.Splits(ids[:80], ids[80:90], ids[90:])
    assert a.hash() == P.Splits(ids[:80], ids[80:90], ids[90:]).hash()
    assert a.hash() != P.Splits(ids[:81], ids[81:90], ids[90:]).hash()


def test_check_corpus_stops_a_run_set_up_for_another_corpus():
    s = P.split(np.arange(100))
    P.check_corpus(s, P.split(np.arange(100)).hash(), "run")     # the same pieces pass
    P.check_corpus(s.hash(), s.hash(), "run")
    with pytest.raises(P.CorpusError, match="run: the corpus differs"):
        P.check_corpus(P.split(np.arange(1, 101)), s.hash(), "run")


# ------------------------------------------------------------------ selection


class _NoTest(dict):
    """Figures whose test split must never be read."""

    def __getitem__(self, key):
        if key == "test":
            raise AssertionError("selection read the test split")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key == "test":
            raise AssertionError("selection read the test split")
        return super().get(key, default)


def _result(method, lr, seed, val, test):
    run = P.Run(FIT, {"method": method, "lr": lr}, seed)
    return P.RunResult(run, _NoTest(val={"bpb": val}, test={"bpb": test}), 0.0)


def test_choose_picks_best_mean_validation_and_never_reads_test():
    results = [_result("a", 1e-3, 0, 3.0, 0.0), _result("a", 1e-3, 1, 3.2, 0.0),
               _result("a", 3e-3, 0, 2.9, 9.9), _result("a", 3e-3, 1, 3.0, 9.9),
               _result("b", 1e-3, 0, 5.0, 0.0), _result("b", 3e-3, 0, 4.0, 0.0)]
    c = P.choose(results, lambda r: r.settings["method"], lambda r: r.settings["lr"], "bpb")
    assert c["a"]["best"] == 3e-3 and c["b"]["best"] == 3e-3
    assert c["a"]["grid"][1e-3].values == (3.0, 3.2)
    assert c["a"]["runs"] == results[2:4] and c["b"]["runs"] == results[5:]
    assert P.spread_of(c["a"]["runs"], "bpb", "val") == c["a"]["grid"][3e-3]
    hi = P.choose(results, lambda r: r.settings["method"], lambda r: r.settings["lr"], "bpb",
                  lower_is_better=False)
    assert hi["a"]["best"] == 1e-3 and hi["b"]["best"] == 1e-3


@pytest.mark.parametrize("diverged", [float("nan"), float("inf")])
def test_choose_never_picks_a_diverged_setting(diverged):
    results = [_result("a", 3e-1, 0, diverged, 0.0), _result("a", 1e-2, 0, 2.5, 0.0),
               _result("a", 3e-2, 0, 2.4, 0.0)]
    for lower in (True, False):
        c = P.choose(results, lambda r: r.settings["method"], lambda r: r.settings["lr"],
                     "bpb", lower_is_better=lower)
        assert c["a"]["best"] == (3e-2 if lower else 1e-2)


# ------------------------------------------------------------------ spread, verdict


def test_spread_is_sample_std_and_keeps_every_value():
    s = P.spread([1.0, 2.0, 4.0])
    assert s.mean == pytest.approx(7 / 3) and s.n == 3
    assert s.std == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert (s.min, s.max, s.values) == (1.0, 4.0, (1.0, 2.0, 4.0))
    assert P.spread([5.0]).std == 0.0
    assert str(P.spread([5.0])) == "5.000 (1 seed)" and str(s) == "2.333 ± 1.528"
    with pytest.raises(ValueError, match="no values"):
        P.spread([])


@pytest.mark.parametrize("a,b,lower,margin,outcome", [
    ([1.0, 1.1], [2.0, 2.1], True, 0.0, P.HOLDS),            # A clearly lower
    ([2.0, 2.1], [1.0, 1.1], True, 0.0, P.DOES_NOT_HOLD),    # A clearly higher
    ([1.0, 1.5], [1.2, 1.3], True, 0.0, P.WITHIN_NOISE),     # gap 0 < range 0.5
    ([1.0, 1.1], [1.05, 1.15], True, 0.0, P.WITHIN_NOISE),   # gap 0.05 < range 0.1
    ([2.0, 2.1], [1.0, 1.1], False, 0.0, P.HOLDS),           # higher is better
    ([1.0, 1.1], [2.0, 2.1], False, 0.0, P.DOES_NOT_HOLD),   # ... and A is lower
    ([1.0, 1.5], [1.5, 2.0], True, 0.0, P.WITHIN_NOISE),     # gap 0.5 = range 0.5: not beyond
    ([1.5, 2.0], [1.0, 1.5], True, 0.0, P.WITHIN_NOISE),     # ... nor -0.5 = -range
    ([1.3, 1.31], [1.0, 1.01], True, 0.5, P.HOLDS),          # parity within a margin
    ([1.3, 1.31], [1.0, 1.01], True, 0.1, P.DOES_NOT_HOLD),  # worse by more than the margin
    ([1.0], [1.2], True, 0.0, P.HOLDS),                      # one seed: no spread to hide in
])
def test_verdict_rule(a, b, lower, margin, outcome):
    v = P.verdict(a, b, lower_is_better=lower, margin=margin, names=("X", "Y"))
    assert v.outcome == outcome
    assert v.noise == pytest.approx(max(np.ptp(a), np.ptp(b)))
    favours_a = np.mean(b) - np.mean(a) if lower else np.mean(a) - np.mean(b)
    assert v.gap == pytest.approx(favours_a + margin)
    assert "X" in v.reason and "Y" in v.reason and outcome in str(v)


def test_a_verdict_by_default_takes_lower_as_better_and_no_margin():
    """What every experiment's plain ``verdict(a, b)`` relies on."""
    assert P.verdict([1.0, 1.0], [1.1, 1.1]).outcome == P.HOLDS
    assert P.verdict([1.1, 1.1], [1.0, 1.0]).outcome == P.DOES_NOT_HOLD


@pytest.mark.parametrize("diverged", [float("nan"), float("inf")])
def test_a_diverged_group_loses_and_two_are_within_noise(diverged):
    ok, bad = [2.5, 2.6], [diverged, 2.4]
    assert P.verdict(bad, ok).outcome == P.DOES_NOT_HOLD
    assert P.verdict(ok, bad).outcome == P.HOLDS
    assert P.verdict(bad, ok, lower_is_better=False).outcome == P.DOES_NOT_HOLD
    assert P.verdict(bad, bad).outcome == P.WITHIN_NOISE


def test_a_verdicts_reason_gives_the_means_gap_and_the_gap_with_its_margin():
    """GPT 3.069 against unigram 4.689, by more than 1 bit, read "gap +0.621": the
    margin was added to the means' gap without a word."""
    v = P.verdict([3.0, 3.2], [4.6], margin=-1.0, names=("X", "Y"))
    assert "(lower is better, margin -1): gap +1.5, +0.5 with the margin, seed" in v.reason
    assert "gap +1.5, seed" in P.verdict([3.0, 3.2], [4.6], names=("X", "Y")).reason


def test_verdict_is_antisymmetric_when_clear():
    a, b = [1.0, 1.1], [2.0, 2.2]
    assert P.verdict(a, b).outcome == P.HOLDS
    assert P.verdict(b, a).outcome == P.DOES_NOT_HOLD


# ------------------------------------------------------------------ runs


def _runs(tmp_path=None, seeds=(0, 1, 2), lrs=(0.05, 0.1), **extra):
    log = {"log": str(tmp_path / "log.txt")} if tmp_path else {}
    return [P.Run(FIT, {"lr": lr, **log, **extra}, s, label=f"lr {lr}")
            for lr in lrs for s in seeds]


def _core(results):
    return [(r.figures["val"], r.figures["test"], r.figures["w"]) for r in results]


def test_parallel_equals_sequential_bitwise():
    runs = _runs()
    seq = P.run_many(runs, progress=False)
    with P.Runner.local(workers=2, progress=False) as runner:
        par = runner.map(runs)
    assert _core(seq) == _core(par)          # exact equality of every float
    assert {r.figures["pid"] for r in par} != {os.getpid()}   # really other processes
    assert not runner.owned                  # leaving the block shut the pool down
    with pytest.raises(RuntimeError):
        runner.executor.submit(os.getpid)


def test_an_interrupted_pool_stops_its_runs_at_once(tmp_path):
    """Ctrl-C during a sweep: leaving the block stops the running and queued runs instead
    of waiting for them (a --full run can take hours)."""
    runs = _runs(tmp_path, seeds=(0, 1, 2), lrs=(0.1,), sleep=60)
    runner = P.Runner.local(workers=2, progress=False)
    with pytest.raises(KeyboardInterrupt), runner:
        futures = [runner.executor.submit(P._execute, r) for r in runs]
        deadline = time.monotonic() + 120                 # workers start slowly under load
        while not (tmp_path / "log.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)                              # until a run has started
        interrupted = time.monotonic()
        raise KeyboardInterrupt
    assert time.monotonic() - interrupted < 30            # not the 60 s of a run
    assert not runner.owned and all(f.done() for f in futures)


def test_cache_makes_a_rerun_instant_and_keys_on_settings(tmp_path, capsys):
    runs = _runs(tmp_path, seeds=(0, 1), lrs=(0.1,))
    start = time.perf_counter()
    first = P.run_many(iter(runs), str(tmp_path / "cache"), progress=False)  # any iterable
    assert all(0 < r.seconds < time.perf_counter() - start for r in first)
    assert capsys.readouterr().err == ""     # an empty cache is no broken entry
    again = P.run_many(runs, tmp_path / "cache", progress=False)
    assert _core(first) == _core(again) and all(r.cached for r in again)
    assert len((tmp_path / "log.txt").read_text().splitlines()) == 2     # ran once each
    other = [P.Run(r.fn, r.settings, r.seed, version=2) for r in runs]   # code changed
    P.run_many(other, tmp_path / "cache", progress=False)
    assert len((tmp_path / "log.txt").read_text().splitlines()) == 4


def test_a_run_computes_with_one_blas_thread():
    """Rule 2's pin: with threadpoolctl before 3.5 it found no BLAS under NumPy 2 and
    did nothing. In a fresh process whose BLAS may use two threads."""
    code = ("from nanotie import protocol as P; from protocol_runs import blas_threads; "
            "run = P.Run('protocol_runs:blas_threads', {}); "
            "print(blas_threads({}, 0, 'cpu')['blas_threads'], "
            "P.run_many([run], progress=False)[0].figures['blas_threads'])")
    here = os.path.dirname(__file__)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2",
           "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, cwd=here)
    assert out.returncode == 0, out.stderr
    outside, inside = map(int, out.stdout.split())
    if outside < 2:
        pytest.skip("this machine's BLAS runs one thread: nothing to pin")
    assert inside == 1


def test_a_nan_figure_stays_nan_fresh_and_from_the_cache(tmp_path):
    run = P.Run("protocol_runs:blas_threads", {})
    for cached in (False, True):
        result, = P.run_many([run], tmp_path, progress=False)
        assert result.cached == cached and math.isnan(result.figures["nan"])


def test_a_gpu_runner_runs_in_this_process_by_default():
    """The workers would share one GPU: by default there is one, this process."""
    with P.Runner.local(device="cuda") as runner:
        assert runner.executor is None
    with P.Runner.local(workers=2) as runner:
        assert runner.executor is not None


def test_a_runs_key_is_its_settings_not_their_order_or_label():
    a = P.Run(FIT, {"lr": 0.1, "depth": {"n": 2, "d": 8}}, 3, label="first")
    b = P.Run(FIT, {"depth": {"d": 8, "n": 2}, "lr": 0.1}, 3, label="other name")
    assert a.key() == b.key()
    assert a.key() != P.Run(FIT, {"lr": 0.1, "depth": {"n": 2, "d": 8}}, 4).key()


def test_where_files_are_kept_does_not_key_a_run():
    """A copied or moved runs folder used to recompute gpt's, Tied-LoRA's and headless's
    runs: their settings name the folder of their checkpoints."""
    def run(lr, folder):
        return P.Run(FIT, {"lr": lr, "checkpoint_dir": folder, "base": {"cache_dir": folder}})
    assert run(0.1, "runs/cache").key() == run(0.1, "/elsewhere/cache").key()
    assert run(0.1, "runs/cache").key() != run(0.2, "runs/cache").key()
    from nanotie.papers.gpt.experiment import base_run
    assert base_run(True, 0, "runs/cache").key() == base_run(True, 0, "/x/runs/cache").key()


def test_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    flag = tmp_path / "interrupt"
    flag.touch()
    log = tmp_path / "log.txt"
    runs = [P.Run(FIT, {"lr": 0.1, "log": str(log), "stop_at_seed_2_while": str(flag)}, s)
            for s in range(4)]
    with pytest.raises(KeyboardInterrupt):
        P.run_many(runs, tmp_path / "cache", progress=False)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2      # seeds 0 and 1 kept
    flag.unlink()
    log.write_text("")
    res = P.run_many(runs, tmp_path / "cache", progress=False)
    assert [r.cached for r in res] == [True, True, False, False]
    assert sorted(line.split()[0] for line in log.read_text().splitlines()) == ["2", "3"]
    assert _core(res) == _core(P.run_many(runs, progress=False))


@pytest.mark.parametrize("content", [b"", b"{not json", b"\x00\xff garbage",
                                     b'{"key": "other", "figures": {}, "seconds": 1}'])
def test_corrupt_cache_entry_is_reported_and_recomputed(tmp_path, capsys, content):
    runs = _runs(tmp_path, seeds=(0,), lrs=(0.1,))
    good = P.run_many(runs, tmp_path / "cache", progress=False)
    (entry,) = (tmp_path / "cache").glob("*.json")
    entry.write_bytes(content)
    capsys.readouterr()
    again = P.run_many(runs, tmp_path / "cache", progress=False)
    err = capsys.readouterr().err
    assert str(entry) in err and "recomputing" in err and len(err.strip().splitlines()) == 1
    assert not again[0].cached and _core(again) == _core(good)
    assert P.run_many(runs, tmp_path / "cache", progress=False)[0].cached   # repaired


def test_a_cache_entry_of_this_run_without_figures_is_recomputed(tmp_path, capsys):
    runs = _runs(tmp_path, seeds=(0,), lrs=(0.1,))
    good = P.run_many(runs, tmp_path / "cache", progress=False)
    (entry,) = (tmp_path / "cache").glob("*.json")
    entry.write_text(json.dumps({"key": runs[0].key(), "figures": None, "seconds": 1}))
    again = P.run_many(runs, tmp_path / "cache", progress=False)
    assert "figures are not a dict" in capsys.readouterr().err
    assert not again[0].cached and _core(again) == _core(good)


def test_progress_lines_off_a_terminal(capsys):
    P.run_many(_runs(seeds=(0, 1), lrs=(0.1,)), progress=None, desc="demo")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[-1].startswith("  [2/2] demo: lr 0.1 seed 1")
    assert "val mse" in err[-1]


def test_a_rerun_says_its_runs_come_from_the_cache(tmp_path, capsys):
    """A rerun printed nothing: its figures looked freshly computed."""
    runs = _runs(tmp_path, seeds=(0, 1), lrs=(0.1,))
    P.run_many(runs[:1], tmp_path / "cache", progress=None, desc="demo")
    capsys.readouterr()
    P.run_many(runs, tmp_path / "cache", progress=None, desc="demo")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"  demo: 1 of 2 runs from the cache in {tmp_path / 'cache'}"
    assert len(err) == 2 and err[1].startswith("  [2/2] demo: lr 0.1 seed 1")


def test_a_run_must_return_a_dict():
    with pytest.raises(TypeError, match="returns a dict"):
        P.run_many([P.Run("protocol_runs:not_a_dict", {}, 0)], progress=False)


def test_local_runner_validates_workers():
    assert P.Runner.local(workers=1).executor is None
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        P.Runner.local(workers=0)


def test_dask_local_cluster_runs_two_runs():
    distributed = pytest.importorskip("distributed")
    runs = _runs(seeds=(0, 1), lrs=(0.1,))
    seq = P.run_many(runs, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        executor = P.dask_executor(cluster.scheduler_address)
        try:
            res = P.run_many(runs, executor=executor, progress=False)
        finally:
            executor._client.close()
    assert _core(res) == _core(seq)


def test_unreachable_scheduler_is_an_oserror():
    pytest.importorskip("distributed")
    with pytest.raises(OSError):
        P.dask_executor("tcp://127.0.0.1:1", timeout=0.5)


@pytest.mark.parametrize("argv,message", [
    (["--workers", "0"], "--workers 0"),
    (["--workers", "2", "--scheduler", "tcp://x:1"], "give one"),
    (["--seed", "-1"], "--seed -1"),
    (["--out", ""], "--out"),
    (["--scheduler", "tcp://127.0.0.1:1"], "cannot connect"),
])
def test_cli_protocol_options_fail_in_one_line(argv, message, tmp_path, capsys, monkeypatch):
    from nanotie import cli

    def refuse(address):
        raise OSError("timed out")

    monkeypatch.setattr(cli, "dask_executor", refuse)
    if "--out" not in argv:
        argv = argv + ["--out", str(tmp_path / "o")]
    assert cli.main(["reproduce", "gpt"] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()          # a usage error leaves nothing behind


def test_cli_finds_an_unwritable_out_before_training(tmp_path, capsys):
    from nanotie import cli

    blocker = tmp_path / "file"
    blocker.write_text("x")                   # a folder below a file cannot be made
    assert cli.main(["reproduce", "gpt", "--out", str(blocker / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0]


def test_open_runner_makes_the_folder_and_caches_beside_it(tmp_path):
    out, runner = P.open_runner(tmp_path / "exp" / "name")
    assert out.is_dir() and runner.cache_dir == tmp_path / "exp" / "cache" / "runs"
    given = P.Runner()
    assert P.open_runner(tmp_path / "other", runner=given)[1] is given


def test_verdicts_and_spreads_reach_the_json_as_their_dicts():
    from nanotie.report import _plain
    v = P.verdict([1.0, 1.1], [2.0, 2.1])
    assert _plain({"k": v})["k"] == {"outcome": v.outcome, "gap": v.gap, "noise": v.noise,
                                     "reason": v.reason}
    assert _plain([P.spread([1.0, 3.0])]) == [{"mean": 2.0, "std": 2 ** 0.5, "min": 1.0,
                                               "max": 3.0, "n": 2, "values": [1.0, 3.0]}]


def test_publish_writes_results_and_report(tmp_path):
    from nanotie import report
    results = {"figure": np.float64(1.5), "headline": report.headline(
        "c", "Sec. 1", P.verdict([1.0], [2.0]), "1.5 vs 2")}
    returned = report.publish(tmp_path, "Title", results, "body")
    import json
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["headline"]["verdict"] == P.HOLDS and returned == saved
    assert (tmp_path / "report.md").read_text().startswith("# Title\n\nbody")


def test_tuning_table_warns_of_a_choice_at_an_end_of_its_grid():
    from nanotie import report
    grid = {1e-3: P.spread([3.0]), 3e-3: P.spread([2.0]), 1e-2: P.spread([2.5])}
    inside = {"A": {"best": 3e-3, "grid": grid}}
    assert "end of the grid" not in report.tuning_table(inside)
    edge = {"A": {"best": 3e-3, "grid": grid}, "B": {"best": 1e-2, "grid": grid}}
    table = report.tuning_table(edge)
    assert "**0.01: 2.500**" in table and "end of the grid: B." in table
    record = report._plain(report.tuning_record(edge))
    assert record["B"]["best"] == 1e-2 and record["B"]["grid"]["0.001"]["mean"] == 3.0


def test_tuning_table_warns_of_a_choice_within_the_seeds_noise():
    """A point whose mean is within the larger seed range of the chosen one's is named:
    the choice there rests on the seeds (one unstable seed at 0.03, say)."""
    from nanotie import report
    clear = {1e-2: P.spread([4.04, 4.11]), 3e-2: P.spread([4.30, 4.35])}
    tied = {1e-2: P.spread([4.04, 4.11]), 3e-2: P.spread([3.81, 4.35])}
    one_seed = {1e-2: P.spread([4.07]), 3e-2: P.spread([4.08])}
    assert "noise" not in report.tuning_table({"LSTM": {"best": 1e-2, "grid": clear}})
    assert "noise" not in report.tuning_table({"LSTM": {"best": 1e-2, "grid": one_seed}})
    table = report.tuning_table({"LSTM": {"best": 1e-2, "grid": tied}})
    assert "Within the seeds' noise of the choice: LSTM (0.03)." in table


class _StopAtTheFirstMap(P.Runner):
    """A runner that records the first batch of runs and stops the experiment there."""

    def map(self, runs, desc="runs"):
        self.runs = list(runs)
        raise StopIteration


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_experiment_sends_its_runs_to_the_device_asked_for(name, tmp_path):
    """The device is part of each run's cache key: a run keyed "cpu" but asked for on
    "cuda" would train on the CPU and be reused as a GPU result."""
    spy = _StopAtTheFirstMap()
    with pytest.raises(StopIteration):
        REGISTRY[name].run(quick=True, out_dir=tmp_path / name, device="cuda", runner=spy)
    assert spy.runs and {r.device for r in spy.runs} == {"cuda"}
