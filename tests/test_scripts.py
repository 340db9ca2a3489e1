"""The benchmarks and maintenance scripts: bad options refused in one line, this checkout's
nanotie imported wherever they run from, ratios in the direction their headers say."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ["bench_ops.py", "bench_train_step.py", "bench_cwt.py", "bench_generation.py",
              "bench_workers.py"]


def run(script, *args, env=None):
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env={**os.environ, **(env or {})})


@pytest.fixture
def wrong_nanotie(tmp_path):
    """A folder whose ``nanotie`` refuses to load, for PYTHONPATH."""
    (tmp_path / "other" / "nanotie").mkdir(parents=True)
    (tmp_path / "other" / "nanotie" / "__init__.py").write_text("raise ImportError('other')\n")
    return str(tmp_path / "other")


@pytest.mark.parametrize("script", BENCHMARKS)
def test_each_benchmark_imports_the_nanotie_of_its_checkout(script, wrong_nanotie):
    r = run(f"benchmarks/{script}", "--help", env={"PYTHONPATH": wrong_nanotie})
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("script, args", [
    ("bench_ops.py", ["--repeats", "0"]), ("bench_ops.py", ["--settle", "-1"]),
    ("bench_ops.py", ["--threads", "0"]), ("bench_ops.py", ["--json", "no/such/dir/x.json"]),
    ("bench_train_step.py", ["--profile-steps", "0"]), ("bench_cwt.py", ["--batch", "0"]),
    ("bench_cwt.py", ["--vocab", "0"]), ("bench_generation.py", ["--contexts", "64,x"]),
    ("bench_generation.py", ["--steps", "-1"]), ("bench_workers.py", ["--steps", "0"]),
    ("bench_generation.py", ["--steps", "100", "--repeats", "3", "--contexts", "64"]),
    ("bench_generation.py", ["--d-model", "60"]), ("bench_generation.py", ["--n-layer", "0"]),
    ("bench_generation.py", ["--order", "-1"])])
def test_a_benchmark_refuses_a_bad_option_in_one_line_before_timing(script, args):
    r = run(f"benchmarks/{script}", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "error:" in r.stderr.splitlines()[-1] and args[0] in r.stderr


def test_line_counts_refuses_an_unknown_revision_in_one_line():
    r = run("scripts/line_counts.py", "--against", "no-such-revision")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "no-such-revision" in r.stderr.splitlines()[-1]


def load(name, folder="scripts"):
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_runs_its_programs_on_this_checkout_from_any_folder(tmp_path, wrong_nanotie,
                                                                   monkeypatch):
    probe = load("probe_bad_inputs")
    monkeypatch.setenv("PYTHONPATH", wrong_nanotie)
    code = (f"import nanotie, pathlib; print(pathlib.Path(nanotie.__file__).resolve()"
            f".parents[1] == pathlib.Path({str(ROOT)!r}))")
    outcome, detail = probe.python(code, 0, cwd=tmp_path)
    assert (outcome, detail) == ("clean", "exit 0: True"), detail
    with pytest.raises(SystemExit) as exit_:
        probe.main(["-k", "no case is called this"])     # not "tried 0", exit status 0
    assert exit_.value.code == 2


def test_bench_ops_overhead_table_gives_its_ratios_in_the_direction_its_header_says(tmp_path):
    pytest.importorskip("torch")
    r = run("benchmarks/bench_ops.py", "--ops", "none", "--quick", "--repeats", "1",
            "--settle", "0", "--json", str(tmp_path / "ops.json"))
    us = json.loads((tmp_path / "ops.json").read_text())["overhead"]["us_per_op"]
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| contender"))
    assert header.split("|")[4].strip() == "nanotie / this", header
    for name in ("numpy", "torch"):
        row = next(line for line in lines if line.startswith(f"| {name} |")).split("|")
        assert float(row[4]) == pytest.approx(us["nanotie"] / us[name], abs=0.006), row


def test_blas_threads_says_so_when_threadpoolctl_sees_no_blas(monkeypatch):
    """Old threadpoolctl releases do not see NumPy 2's OpenBLAS: a benchmark then stops
    in one line that says why, not with "max() arg is an empty sequence"."""
    timing = load("_timing", "benchmarks")
    assert timing.blas_threads()[0] >= 1
    monkeypatch.setattr(timing.threadpoolctl, "threadpool_info", lambda: [])
    with pytest.raises(SystemExit, match="sees no BLAS library.*>= 3.5"):
        timing.blas_threads()
