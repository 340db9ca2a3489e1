"""Mutation testing: change one small thing in a line of nanotie, and see whether a test fails.

    python scripts/mutants.py map                       which tests run each line (minutes;
                                                        again after adding tests)
    python scripts/mutants.py run FILE... [--jobs 2]    every mutant of FILEs, resumable
    python scripts/mutants.py report                    the mutants no test noticed

A mutant is the library with one change: an operator swapped (``+`` for ``-``, ``<`` for
``<=``, ``and`` for ``or``), a ``not`` or a minus dropped, a constant moved (``1`` to
``2``, ``True`` to ``False``) or a statement replaced by ``pass``. It runs against the
tests that executed its line, fixtures included (``map`` records them with
``coverage``, one context per test), fastest first, stopping at the first failure. A
mutant that survives is one of three things, and only reading it tells which:

* a property no test checks (write the test);
* code that does nothing (cut it);
* an equivalent change: a shortcut that only saves time (``if a.shape == shape: return
  a``), an extra copy, a GPU-only branch on a machine without one.

A line that only runs at import (a default argument, a module constant) has no test
context, and its mutants are counted as uncovered.

Each mutant runs in a forked child of one warm process, in a copy of the committed tree
(``git archive HEAD``: commit first) under ``.mutants/``, where everything this script
writes goes. ``map`` needs ``coverage``
(``pip install coverage``); the rest needs the test extras. Pin BLAS to one thread per
job: ``OPENBLAS_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutants"
MAX_TESTS = 60     # the fastest tests of a line: a mutant that survives them all is
                   # rerun against every test of its line before it is reported

SWAPS = {ast.Add: ["+", "-"], ast.Sub: ["-", "+"], ast.Mult: ["*", "/"], ast.Div: ["/", "*"],
         ast.FloorDiv: ["//", "/"], ast.Pow: ["**", "*"], ast.Mod: ["%", "//"],
         ast.MatMult: ["@", "*"],
         ast.Lt: ["<", "<="], ast.LtE: ["<=", "<"], ast.Gt: [">", ">="], ast.GtE: [">=", ">"],
         ast.Eq: ["==", "!="], ast.NotEq: ["!=", "=="], ast.Is: ["is", "is not"],
         ast.IsNot: ["is not", "is"], ast.In: ["in", "not in"], ast.NotIn: ["not in", "in"],
         ast.And: ["and", "or"], ast.Or: ["or", "and"]}
SKIPPED_STATEMENTS = (ast.Pass, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                      ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.Return)


# -------------------------------------------------------------------- the mutants


def mutants(source: str) -> list:
    """``[(line, description, mutated source)]`` for one file's source."""
    code = source.encode()                       # ast's columns count UTF-8 bytes
    starts = [0]
    for line in code.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    at = lambda line, col: starts[line - 1] + col                        # noqa: E731
    found = []

    def swap_between(node, left, right, op, suffix=""):
        """Swap the operator written between ``left`` and ``right``."""
        old, new = (s + suffix for s in SWAPS[type(op)])
        a, b = at(left.end_lineno, left.end_col_offset), at(right.lineno, right.col_offset)
        gap = code[a:b].decode()
        m = re.search(rf"(?<![<>=!*/@%\w]){re.escape(old)}(?![=*/<>\w])", gap)
        if m:
            gap = gap[:m.start()] + new + gap[m.end():]
            found.append((node.lineno, f"{old} -> {new}", code[:a] + gap.encode() + code[b:]))

    tree = ast.parse(source)
    docstrings = {id(n.body[0]) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and type(node.op) in SWAPS:
            swap_between(node, node.left, node.right, node.op)
        elif isinstance(node, ast.AugAssign) and type(node.op) in SWAPS:
            swap_between(node, node.target, node.value, node.op, suffix="=")
        elif isinstance(node, ast.BoolOp):
            swap_between(node, node.values[0], node.values[1], node.op)
        elif isinstance(node, ast.Compare):
            for left, op, right in zip([node.left, *node.comparators], node.ops,
                                       node.comparators):
                swap_between(node, left, right, op)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            a = at(node.lineno, node.col_offset)
            b = at(node.operand.lineno, node.operand.col_offset)
            found.append((node.lineno, f"drop {'not' if isinstance(node.op, ast.Not) else '-'}",
                          code[:a] + code[b:]))
        elif isinstance(node, ast.Constant) and type(node.value) in (bool, int, float):
            v = node.value
            new = not v if isinstance(v, bool) else v + 1 if isinstance(v, int) else 2 * v or 1.0
            a = at(node.lineno, node.col_offset)
            b = at(node.end_lineno, node.end_col_offset)
            found.append((node.lineno, f"{v!r} -> {new!r}",
                          code[:a] + repr(new).encode() + code[b:]))
        if isinstance(node, (ast.FunctionDef, ast.For, ast.While, ast.If, ast.With, ast.Try)):
            for body in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                for st in body:
                    if id(st) in docstrings or isinstance(st, SKIPPED_STATEMENTS):
                        continue
                    a, b = at(st.lineno, 0), at(st.end_lineno, st.end_col_offset)
                    indent = code[a:at(st.lineno, st.col_offset)]
                    if not indent.strip():       # not a statement after a ';'
                        keep = b"\n" * (st.end_lineno - st.lineno)   # same line numbers
                        found.append((st.lineno, f"{type(st).__name__} -> pass",
                                      code[:a] + indent + b"pass" + keep + code[b:]))
    ok = []
    for line, what, mutated in found:
        try:            # compile, not parse: a `nonlocal x` whose `x = ...` is gone
            compile(mutated, "<mutant>", "exec")
        except SyntaxError:
            continue
        if mutated != code:
            ok.append((line, what, mutated))
    return ok


# -------------------------------------------------------------- which tests run where


def map_lines() -> None:
    """Run the suite (notebooks and the site aside) under coverage with one context per
    test; write ``{file: {line: [test ids]}}`` and the tests' durations."""
    WORK.mkdir(exist_ok=True)
    rc = WORK / "coveragerc"
    # patch = subprocess: a `python -m nanotie` that a test starts is measured too (its
    # data file suffixed, hence parallel, then combined), as part of that test; and
    # concurrency = multiprocessing: so is a process multiprocessing starts (a worker)
    rc.write_text(f"[run]\nsource = nanotie\ndata_file = {WORK / 'coverage'}\n"
                  "parallel = true\npatch = subprocess\n"
                  "concurrency = multiprocessing,thread\n")
    for old in WORK.glob("coverage.*"):
        old.unlink()
    log = WORK / "durations.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "scripts"), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as out:       # -n 0: coverage and the plugin see one process
        suite = subprocess.run([sys.executable, "-m", "coverage", "run", f"--rcfile={rc}",
                                "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                                "-p", "mutants", "--durations=0",
                                "--ignore=tests/test_notebooks.py",
                                "--ignore=tests/test_site.py"], cwd=ROOT, stdout=out, env=env)
    if suite.returncode:              # a mutant is judged by tests that pass without it
        sys.exit(f"the suite did not pass (pytest exit {suite.returncode}; its output is in "
                 f"{log}): fix it, then map again")
    subprocess.run([sys.executable, "-m", "coverage", "combine", "-q", f"--rcfile={rc}"],
                   cwd=ROOT, check=True)
    import coverage

    data = coverage.CoverageData(basename=str(WORK / "coverage"))
    data.read()
    lines = {}
    for path in data.measured_files():
        tests = {line: sorted(c for c in contexts if c.startswith("tests/"))
                 for line, contexts in data.contexts_by_lineno(path).items()}
        lines[str(Path(path).relative_to(ROOT))] = {k: v for k, v in tests.items() if v}
    seconds = {}
    for row in log.read_text().splitlines():
        m = re.match(r"([0-9.]+)s (?:call|setup|teardown)\s+([^\[\s]+)", row)
        if m:
            seconds[m.group(2)] = seconds.get(m.group(2), 0.0) + float(m.group(1))
    (WORK / "lines.json").write_text(json.dumps({"lines": lines, "seconds": seconds}))


def pytest_runtest_protocol(item, nextitem):
    """(``map`` loads this module as a pytest plugin.) Credit each line to the test whose
    set-up, call or tear-down runs it. Coverage's own per-test context names only the
    test function on the stack, so a line that only a fixture runs (a tokenizer trained
    once for a whole module) would be credited to no test, and its mutants would survive
    tests that they fail. A module's fixture is credited to its first test. A process
    the test starts (``python -m nanotie ...``, an exercise's checker, a worker) records its
    lines under the same name."""
    import copy

    import coverage

    cov = coverage.Coverage.current()
    if cov is not None:
        context = item.nodeid.split("[")[0]                 # a test's parameters run together
        cov.switch_context(context)
        child = copy.copy(cov.config)
        child.context = context
        os.environ["COVERAGE_PROCESS_CONFIG"] = child.serialize()
        # a forked multiprocessing child reads its settings from COVERAGE_RCFILE
        rc = WORK / "coveragerc-test"
        rc.write_text((WORK / "coveragerc").read_text() + f"context = {context}\n")
        os.environ["COVERAGE_RCFILE"] = str(rc)


# ----------------------------------------------------------------------- running


def run_one(tree: Path, rel: str, mutated: bytes, tests: list) -> str:
    """'killed', 'survived' or 'timeout': the tests on ``tree`` with ``rel`` mutated."""
    import pytest

    target = tree / rel
    original = target.read_bytes()
    target.write_bytes(mutated)
    try:
        pid = os.fork()
        if pid == 0:                              # the child: pytest on the mutated tree
            os.setsid()                           # a group of its own, ended with it below
            os.chdir(tree)
            sys.path.insert(0, str(tree))
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1), os.dup2(null, 2)
            try:
                # -n 0: in this process, on the mutated tree (a worker would import HEAD's)
                os.environ["PYTHONPATH"] = str(tree)   # and so would `python -m nanotie`
                code = pytest.main(["-x", "-q", "-n", "0", "-p", "no:cacheprovider",
                                    "-W", "ignore", *tests])
                if code == 0:                     # (a mutant may break the import itself)
                    import nanotie
                    code = code if nanotie.__file__.startswith(str(tree)) else 99
            except BaseException:                 # noqa: BLE001
                code = 98
            os._exit(int(code))
        limit, t0 = 120 + 5 * len(tests), time.monotonic()
        try:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    code = os.waitstatus_to_exitcode(status)
                    if code in (98, 99):
                        raise RuntimeError(f"the harness failed on {rel} (exit status {code})")
                    # 4 or 5 (a test not found): the mutant broke a test module's import,
                    # as run() checked that every test of the map is there
                    return "survived" if code == 0 else "killed"
                if time.monotonic() - t0 > limit:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    return "timeout"
                time.sleep(0.02)
        finally:       # what the mutant left running (a checker it no longer stops)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        target.write_bytes(original)


def run(files: list, jobs: int) -> None:
    """Every mutant of ``files``, ``jobs`` at a time; results appended to results.jsonl,
    so an interrupted run resumes."""
    mapped = json.loads((WORK / "lines.json").read_text())
    seconds = mapped["seconds"]
    results = WORK / "results.jsonl"
    done = {(r["file"], r["index"]) for r in map(json.loads, results.open())} \
        if results.exists() else set()
    todo = []
    for rel in files:
        for index, (line, what, mutated) in enumerate(mutants((ROOT / rel).read_text())):
            tests = sorted(mapped["lines"].get(rel, {}).get(str(line), []),
                           key=lambda t: seconds.get(t, 1.0))
            if (rel, index) not in done:
                todo.append((rel, index, line, what, mutated, tests))
    wanted = sorted({t for *_, tests in todo for t in tests})
    if wanted and subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                                  "-n", "0", "-p", "no:cacheprovider", *wanted], cwd=ROOT,
                                 capture_output=True).returncode:
        sys.exit("a test of the map is gone (or the suite does not collect): run `map` again")
    print(f"{len(todo)} mutants to run", flush=True)
    os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    sys.dont_write_bytecode = True                # a mutant's bytecode must not be cached
    for warm in ("numpy", "scipy.fft", "scipy.linalg", "scipy.signal", "pytest",
                 "matplotlib.pyplot"):       # imported once, before the children fork
        __import__(warm)
    children = []
    for job in range(jobs):
        pid = os.fork()
        if pid == 0:
            tree = WORK / f"tree{job}"
            shutil.rmtree(tree, ignore_errors=True)
            tree.mkdir(parents=True)
            subprocess.run(f"git archive HEAD | tar -x -C {tree}", shell=True, cwd=ROOT,
                           check=True)
            with results.open("a") as out:
                for rel, index, line, what, mutated, tests in todo[job::jobs]:
                    status = "uncovered" if not tests else run_one(
                        tree, rel, mutated, tests[:MAX_TESTS])
                    if status == "survived" and len(tests) > MAX_TESTS:
                        status = run_one(tree, rel, mutated, tests)
                    out.write(json.dumps({"file": rel, "index": index, "line": line,
                                          "mutant": what, "tests": len(tests),
                                          "status": status}) + "\n")
                    out.flush()
            os._exit(0)
        children.append(pid)
    if any([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]):
        sys.exit("a job stopped early (its error is above): the mutants it left are not run")


def report() -> None:
    rows = [json.loads(r) for r in (WORK / "results.jsonl").open()]
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for r in sorted(rows, key=lambda r: (r["file"], r["line"])):
        if r["status"] == "survived":
            print(f"{r['file']}:{r['line']}  {r['mutant']}  ({r['tests']} tests)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("map", help="record which tests run each line")
    r = sub.add_parser("run", help="run every mutant of FILEs")
    r.add_argument("files", nargs="+", help="library files, e.g. nanotie/autograd.py")
    r.add_argument("--jobs", type=int, default=2)
    sub.add_parser("report", help="the mutants that survived")
    args = ap.parse_args()
    if args.command != "map" and not (WORK / "lines.json").exists():
        ap.error("run `python scripts/mutants.py map` first")
    if args.command == "report" and not (WORK / "results.jsonl").exists():
        ap.error("no results yet: run `python scripts/mutants.py run FILE...` first")
    if args.command == "run" and args.jobs < 1:
        ap.error(f"--jobs {args.jobs}: need at least 1")
    if args.command == "map":
        map_lines()
    elif args.command == "run":
        missing = [f for f in args.files if not (ROOT / f).is_file()]
        if missing:
            ap.error(f"no such file: {', '.join(missing)}")
        run(args.files, args.jobs)
    else:
        report()


if __name__ == "__main__":
    main()
