"""Per-token generation time against context length: Hyena, a KV-cache Transformer,
and the distilled (Laughing Hyena) recurrence.

Run it from the repository root:

    python benchmarks/bench_generation.py            # contexts 256 .. 16384, a few minutes
    python benchmarks/bench_generation.py --quick    # contexts 256 .. 4096, well under a minute
    python benchmarks/bench_generation.py --json out.json

What is timed: ONE generated token (batch 1, greedy) once a context of L tokens has
been seen, for four models of the same shape (by default the ``hyena`` experiment's
quick LM shape: d_model 64, 2 layers, 8 heads; untrained, since the time of a step
does not depend on the weights):

* ``hyena_recompute``       HyenaLM re-running its forward pass (FFT convolutions
                            included) over the whole context, as ``HyenaLM.generate``
* ``transformer_kv``        nanotie's GPT with its KV cache (``GPT.generate``)
* ``distilled_hyena``       the Hyena LM distilled at a fixed order (ERA), stepping
                            its modal states (``nanotie.papers.hyena.generate``)
* ``distilled_multihyena``  the same for MultiHyena (one set of poles per head)

Each model is prefilled once per context (not timed), then ``--repeats`` rounds of
``--steps`` single-token steps run with the models interleaved (a, b, c, d, a, b,
...), so a burst of load from a neighbour slows every model rather than one. The
figure is the median over the rounds of each round's median step. The context grows
by one token per step, a few dozen at most. The machine may be shared and noisy:
read the RATIOS, measured side by side in one process.

The goals (from the reproduction's plan) are checked at the end and reported as
measured; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))        # for _timing
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # nanotie from a checkout

import nanotie as nt  # noqa: E402
from nanotie.autograd import no_grad  # noqa: E402
from nanotie.papers.hyena.experiment import PROFILES  # noqa: E402
from nanotie.papers.hyena.throughput import (KINDS, LABELS, generation_models,  # noqa: E402
                                             stepper_for, time_steps)

from _timing import blas_threads, markdown_table  # noqa: E402

FULL_CONTEXTS = (256, 512, 1024, 2048, 4096, 8192, 16384)
QUICK_CONTEXTS = (256, 1024, 4096)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"contexts {QUICK_CONTEXTS} and fewer steps (a short run)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--contexts", default=None,
                        help="comma-separated context lengths (overrides the default list)")
    parser.add_argument("--order", type=int, default=16,
                        help="real state size of every distilled filter (default 16)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per round (Hyena recompute: 1 per round)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--d-model", type=int, default=None)
    parser.add_argument("--n-layer", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="limit NumPy's BLAS threads (needs threadpoolctl; otherwise "
                             "set OPENBLAS_NUM_THREADS before starting Python)")
    args = parser.parse_args(argv)

    contexts = tuple(int(c) for c in args.contexts.split(",")) if args.contexts else \
        QUICK_CONTEXTS if args.quick else FULL_CONTEXTS
    steps = args.steps or (8 if args.quick else 16)
    repeats = args.repeats or (3 if args.quick else 5)
    base = PROFILES["quick"].model
    base = replace(base, d_model=args.d_model or base.d_model,
                   n_layer=args.n_layer or base.n_layer)
    threads, how = blas_threads(args.threads)

    print(f"nanotie {nt.__version__} (NumPy {np.__version__}), {platform.machine()}, "
          f"Python {platform.python_version()}")
    print(f"threads: {threads} for NumPy's BLAS ({how})")
    print(f"models: d_model {base.d_model}, {base.n_layer} layers, {base.n_head} heads, "
          f"vocab {base.vocab_size}; distilled at order {args.order} (ERA, first 256 taps)")
    print(f"timer: {repeats} interleaved rounds of {steps} steps (Hyena recompute: 1), "
          f"median of round medians\n")

    t0 = time.perf_counter()
    models = generation_models(base, max(contexts), args.order)
    print(f"built and distilled the models in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(0)
    results = {kind: {"context": [], "seconds": [], "min": [], "prefill_seconds": []}
               for kind in KINDS}
    for L in contexts:
        prompt = rng.integers(0, base.vocab_size, (1, L))
        steppers = {}
        for kind in KINDS:
            stepper = stepper_for(kind, models[kind])
            t0 = time.perf_counter()
            with no_grad():
                stepper.prefill(prompt)
            results[kind]["prefill_seconds"].append(time.perf_counter() - t0)
            steppers[kind] = stepper
        timing = time_steps(steppers, steps, repeats)       # Hyena recompute: 1 per round
        for kind in KINDS:
            results[kind]["context"].append(L)
            results[kind]["seconds"].append(timing[kind]["median"])
            results[kind]["min"].append(timing[kind]["min"])
        print(f"  L = {L:6d}: " + ", ".join(f"{kind} {1e3 * timing[kind]['median']:.3f} ms"
                                            for kind in KINDS), flush=True)

    print("\nPer-token time (ms, median) and tokens/s:\n")
    rows = [[LABELS[k]] + [f"{1e3 * s:.3f} ({1 / s:,.0f}/s)" for s in results[k]["seconds"]]
            for k in KINDS]
    print(markdown_table(["model"] + [f"L = {L}" for L in contexts], rows))

    dist = results["distilled_hyena"]["seconds"]
    ratios = {k: [s / d for s, d in zip(results[k]["seconds"], dist)]
              for k in ("hyena_recompute", "transformer_kv", "distilled_multihyena")}
    print("\nHow many times faster the distilled Hyena makes a token:\n")
    print(markdown_table(["vs"] + [f"L = {L}" for L in contexts],
                    [[LABELS[k]] + [f"{r:.2f}x" for r in ratios[k]] for k in ratios]))

    at = 4096 if 4096 in contexts else contexts[-1]
    i = contexts.index(at)
    flat = dist[-1] / dist[0]
    goals = [
        ("distilled per-token time, flat", "<= 1.2x from L = 256 to 16384",
         f"{flat:.2f}x from L = {contexts[0]} to {contexts[-1]}", flat <= 1.2),
        (f"distilled vs Hyena recompute at L = {at}", ">= 10x at 4096",
         f"{ratios['hyena_recompute'][i]:.1f}x", ratios["hyena_recompute"][i] >= 10),
        (f"distilled vs attention with KV cache at L = {at}", ">= 2x at 4096",
         f"{ratios['transformer_kv'][i]:.1f}x", ratios["transformer_kv"][i] >= 2),
    ]
    print("\nGoals (measured here; the paper's GPU figures at 1.3B were 1.5x over Hyena "
          "and 10x over Transformers):\n")
    print(markdown_table(["goal", "target", "measured", "met"],
                    [[g, t, m, "yes" if ok else "no"] for g, t, m, ok in goals]))
    if contexts[0] != 256 or contexts[-1] != 16384:
        print(f"\n(the flatness target spans 256 to 16384; this run covered "
              f"{contexts[0]} to {contexts[-1]})")

    if args.json:
        report = {"contexts": list(contexts), "order": args.order, "steps": steps,
                  "repeats": repeats, "threads": threads,
                  "model": {"d_model": base.d_model, "n_layer": base.n_layer,
                            "n_head": base.n_head},
                  "results": results, "ratios_vs_distilled_hyena": ratios,
                  "goals": [{"goal": g, "target": t, "measured": m, "met": ok}
                            for g, t, m, ok in goals]}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
