"""Two one-thread workers against one two-thread process, for nanotie's small runs.

The protocol (``nanotie/protocol.py``) runs an experiment's independent runs in worker
processes, each with its BLAS pinned to one thread. The alternative is to run them one
after another in a single process whose BLAS uses every core. For small models the
first wins: NumPy's elementwise passes run on one thread anyway, and small matrix
products gain little from a second BLAS thread. This benchmark measures by how much,
on N identical short GPT training runs:

* ``sequential``: one process, the runs one after another, BLAS at ``cores`` threads;
* ``workers``: ``Runner.local(workers=cores)``, each run with BLAS at one thread.

    python benchmarks/bench_workers.py            # 4 runs of 60 steps
    python benchmarks/bench_workers.py --runs 6 --steps 100

Read the ratio; absolute seconds depend on the machine and its neighbours.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # nanotie from a checkout
from nanotie import backend, protocol  # noqa: E402

RUN = "bench_workers:tiny_gpt_run"


def tiny_gpt_run(settings, seed, device):
    """``settings["steps"]`` AdamW steps of a 4-layer byte GPT on prose: one run."""
    from nanotie import backend
    from nanotie.nn import GPT, GPTConfig
    from nanotie.papers.gpt.experiment import prose_splits
    from nanotie.train import TrainConfig, evaluate, train

    s = prose_splits()
    backend.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=256, context=64, d_model=128, n_layer=4, n_head=4))
    train(model, s.train, s.val, TrainConfig(steps=settings["steps"], batch_size=32,
                                             eval_interval=10**6, seed=seed),
          progress=False)
    loss = evaluate(model, s.val, 64, 32, max_batches=4)
    return {"val": {"loss": loss}, "test": {}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=4, help="identical runs (default 4)")
    p.add_argument("--steps", type=int, default=60, help="steps per run (default 60)")
    args = p.parse_args(argv)
    if args.runs < 1 or args.steps < 1:
        p.error("--runs and --steps must be at least 1")
    cores = backend.usable_cores()
    runs = [protocol.Run(RUN, {"steps": args.steps}, seed) for seed in range(args.runs)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    t0 = time.perf_counter()
    with threadpool_limits(limits=cores):
        seq = [tiny_gpt_run(r.settings, r.seed, "cpu") for r in runs]
    t_seq = time.perf_counter() - t0

    t0 = time.perf_counter()
    with protocol.Runner.local(workers=cores, progress=False) as runner:
        par = runner.map(runs)
    t_par = time.perf_counter() - t0            # includes starting the workers

    blas = ", ".join(f"{i['internal_api']} {i.get('architecture', '')}"
                     for i in threadpool_info() if i["user_api"] == "blas")
    print(f"{args.runs} runs x {args.steps} steps, {cores} cores, BLAS: {blas}, "
          f"load before {load:.2f}")
    print(f"| how | wall s | runs/min |\n|---|---:|---:|")
    print(f"| one process, BLAS at {cores} threads, one run after another | {t_seq:.1f} | "
          f"{60 * args.runs / t_seq:.1f} |")
    print(f"| {cores} worker processes, BLAS at 1 thread each | {t_par:.1f} | "
          f"{60 * args.runs / t_par:.1f} |")
    ratio = t_seq / t_par
    print(f"\nworkers are {ratio:.2f}x faster" if ratio >= 1
          else f"\nworkers are {1 / ratio:.2f}x slower")
    close = all(abs(a["val"]["loss"] - b.figures["val"]["loss"]) < 1e-3 * abs(a["val"]["loss"])
                for a, b in zip(seq, par))
    print("same losses (to 0.1%; BLAS thread counts differ, so not bitwise):",
          "yes" if close else "NO")
    return 0 if close else 1


if __name__ == "__main__":
    sys.exit(main())
