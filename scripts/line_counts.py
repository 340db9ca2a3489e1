"""Lines of code per area of the tree, now and at an earlier commit.

    python scripts/line_counts.py                 # the working tree
    python scripts/line_counts.py --against REV   # REV's counts beside it, and the change

Counts every line (`wc -l`) of the ``.py`` files in each area; notebooks are counted by
their jupytext ``.py`` sources.
"""

from __future__ import annotations

import argparse
import subprocess
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

AREAS = [   # (name, glob patterns relative to the root)
    ("engine", ["nanotie/autograd.py", "nanotie/backend.py", "nanotie/gradcheck.py",
                "nanotie/ops/*.py"]),
    ("nn", ["nanotie/nn/*.py"]),
    ("training and data", ["nanotie/train.py", "nanotie/data.py"]),
    ("protocol, reports, CLI", ["nanotie/protocol.py", "nanotie/report.py",
                                "nanotie/pages.py", "nanotie/cli.py", "nanotie/files.py",
                                "nanotie/__init__.py", "nanotie/__main__.py"]),
    ("papers", ["nanotie/papers/*.py", "nanotie/papers/*/*.py"]),
    ("exercises", ["nanotie/exercises/*.py"]),
    ("notebooks", ["notebooks/*.py"]),
    ("benchmarks", ["benchmarks/*.py"]),
    ("course site", ["docs/*.py", "docs/_ext/*.py"]),
    ("tests", ["tests/*.py", "tests/*/*.py"]),
]
LIBRARY = "nanotie/*"


def tracked(rev: str | None) -> dict:
    """``{path: line count}`` of the tracked .py files, at ``rev`` or in the tree."""
    if rev is None:
        paths = subprocess.run(["git", "ls-files", "--cached", "--others",
                                "--exclude-standard", "*.py"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.split()
        return {p: len((ROOT / p).read_text().splitlines()) for p in paths
                if (ROOT / p).exists()}
    paths = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    return {p: len(subprocess.run(["git", "show", f"{rev}:{p}"], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout.splitlines())
            for p in paths if p.endswith(".py")}


def totals(counts: dict) -> dict:
    out = {name: sum(n for p, n in counts.items() if any(fnmatch(p, g) for g in globs))
           for name, globs in AREAS}
    out["library (nanotie/)"] = sum(n for p, n in counts.items() if fnmatch(p, LIBRARY))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", metavar="REV", help="an earlier commit to compare with")
    args = ap.parse_args()
    now = totals(tracked(None))
    if args.against is None:
        print("| area | lines |\n|---|---:|")
        for name, n in now.items():
            print(f"| {name} | {n:,} |")
        return
    try:
        then = totals(tracked(args.against))
    except subprocess.CalledProcessError as exc:
        ap.error(f"--against {args.against}: {exc.stderr.strip().splitlines()[-1]}")
    print(f"| area | {args.against} | now | change |\n|---|---:|---:|---:|")
    for name, n in now.items():
        change = f"{100 * (n - then[name]) / then[name]:+.0f}%" if then[name] else "new"
        print(f"| {name} | {then[name]:,} | {n:,} | {change} |")


if __name__ == "__main__":
    main()
