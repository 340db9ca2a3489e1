"""The command line: ``python -m nanotie reproduce [NAME ...]`` and ``python -m nanotie list``.

A usage error prints one line to stderr and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import backend
from .papers import REGISTRY
from .report import summary_table


class UsageError(Exception):
    """A mistake in how the command was called."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):          # argparse would print the whole usage block
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m nanotie", description="nanotie: weight tying, in miniature")
    sub = p.add_subparsers(dest="command", metavar="{reproduce,list}")
    r = sub.add_parser("reproduce", help="run the papers' miniature reproductions")
    r.add_argument("names", nargs="*", metavar="NAME", help="experiments to run (default: all)")
    r.add_argument("--full", action="store_true", help="the longer profile instead of quick")
    r.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default: runs)")
    r.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="where to run (default: $NANOTIE_DEVICE or cpu)")
    r.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sub.add_parser("list", help="list the registered experiments")
    return p


def _reproduce(args) -> int:
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        known = ", ".join(REGISTRY) or "none registered yet"
        raise UsageError(f"unknown experiment(s): {', '.join(unknown)} (known: {known})")
    if not REGISTRY:
        print("No experiments are registered yet; nothing to reproduce.")
        return 0
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    if args.device == "cuda":
        if not backend.cuda_available():
            raise UsageError("--device cuda: " + backend._cupy_status()[1])
    try:
        device = args.device or backend.default_device()
    except backend.DeviceError as exc:          # NANOTIE_DEVICE names an unusable device
        raise UsageError(f"$NANOTIE_DEVICE: {exc}") from None
    profile = "full" if args.full else "quick"
    rows = []
    for name in args.names or list(REGISTRY):
        print(f"== {name} ({profile} profile, {device}) ==", flush=True)
        start = time.perf_counter()
        results = REGISTRY[name].run(quick=not args.full, out_dir=args.out / name,
                                     seed=args.seed, device=device)
        summary = dict(results.get("summary", {}))
        summary["time"] = f"{time.perf_counter() - start:.0f} s"
        rows.append((name, summary))
        print(f"   wrote {args.out / name}/report.md, results.json and plots", flush=True)
    print("\nSummary:\n" + summary_table(rows))
    return 0


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.command == "reproduce":
            return _reproduce(args)
        if args.command == "list":
            if not REGISTRY:
                print("No experiments are registered yet.")
            for exp in REGISTRY.values():
                print(f"{exp.name:16s} {exp.title}")
            return 0
        _parser().print_help()
        return 2
    except UsageError as exc:
        print(f"nanotie: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:      # checkpoints are atomic: a rerun resumes from the last
        print("nanotie: interrupted", file=sys.stderr)
        return 130
