"""Per-token generation time and per-sequence memory against context length: Hyena
recomputing, Hyena with a cache, a KV-cache Transformer, and the distilled (Laughing
Hyena) recurrence.

Run it from the repository root:

    python benchmarks/bench_generation.py            # contexts 256 .. 16384, a few minutes
    python benchmarks/bench_generation.py --quick    # contexts 256 .. 4096, under a minute
    python benchmarks/bench_generation.py --json out.json --out docs/results/hyena

What is timed: ONE generated token (batch 1, greedy) once a context of L tokens has
been seen, for models of the same shape (by default the ``hyena`` experiment's
quick LM shape: d_model 64, 2 layers, 8 heads; untrained, since the time of a step
does not depend on the weights):

* ``hyena_recompute``       HyenaLM re-running its forward pass (filter MLP and FFT
                            convolutions included) over the whole context, as
                            ``HyenaLM.generate`` does: the naive row
* ``hyena_cached``          the same HyenaLM keeping the gated inputs of the past
                            (``generate.ConvCache``): one dot product per channel per
                            token, O(L), like a KV cache. The fair baseline
* ``transformer_kv``        nanotie's GPT with a preallocated KV cache
* ``distilled_hyena``       the Hyena LM distilled at a fixed order (ERA), stepping
                            its modal states (``nanotie.papers.distillery.generate``)
* ``distilled_multihyena``  the same for MultiHyena (one set of poles per head)

Each model is prefilled once per context (not timed), then ``--repeats`` rounds of
``--steps`` single-token steps run with the models interleaved (a, b, c, d, a, b,
...), so a burst of load from a neighbour slows every model rather than one. The
figure is the median over the rounds of each round's median step. BLAS is pinned to
ONE thread by default (``--threads`` to change it): on a shared machine a
multi-threaded BLAS made the recompute step 15x slower, not faster. Read the RATIOS,
measured side by side in one process.

With ``--out DIR`` it writes ``DIR/generation.md`` (the tables and the goals, for the
hyena results page) and two plots: per-token time against L, and the bytes of state
each model keeps per sequence against L (the paper's throughput gain at large batch
comes from that memory). The goals are reported as measured; nothing is asserted.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))        # for _timing
from _timing import (at_least, blas_threads, machine, markdown_table, parser,  # noqa: E402,I001
                     timer_options, write_json)

from nanotie.autograd import no_grad  # noqa: E402
from nanotie.papers.distillery.throughput import (KINDS, LABELS, generation_models,  # noqa: E402
                                                  stepper_for, time_steps)
from nanotie.papers.hyena.experiment import PROFILES  # noqa: E402
from nanotie.report import pyplot, save_figure  # noqa: E402

FULL_CONTEXTS = (256, 512, 1024, 2048, 4096, 8192, 16384)
QUICK_CONTEXTS = (256, 1024, 4096)


def measure(base, contexts, order: int, steps: int, repeats: int, kinds=KINDS) -> dict:
    """Per kind: per-token seconds (median, min), prefill seconds and state bytes per
    context. Prints one line per context."""
    t0 = time.perf_counter()
    models = generation_models(base, max(contexts), order, kinds=kinds)
    print(f"built and distilled the models in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(0)
    results = {kind: {"context": [], "seconds": [], "min": [], "prefill_seconds": [],
                      "state_bytes": []} for kind in kinds}
    for L in contexts:
        prompt = rng.integers(0, base.vocab_size, (1, L))
        steppers = {}
        for kind in kinds:
            stepper = stepper_for(kind, models[kind])
            t0 = time.perf_counter()
            with no_grad():
                stepper.prefill(prompt)
            results[kind]["prefill_seconds"].append(time.perf_counter() - t0)
            results[kind]["state_bytes"].append(stepper.state_bytes())
            steppers[kind] = stepper
        timing = time_steps(steppers, steps, repeats)       # Hyena recompute: 1 per round
        for kind in kinds:
            results[kind]["context"].append(L)
            results[kind]["seconds"].append(timing[kind]["median"])
            results[kind]["min"].append(timing[kind]["min"])
        print(f"  L = {L:6d}: " + ", ".join(f"{kind} {1e3 * timing[kind]['median']:.3f} ms"
                                            for kind in kinds), flush=True)
    return results


def goals_of(results: dict, contexts) -> list:
    """(goal, target, measured, met) rows: the plan's targets, measured here (met is
    None for a row given for scale, which has no target)."""
    dist = results["distilled_hyena"]["seconds"]
    at = 4096 if 4096 in contexts else contexts[-1]
    i = contexts.index(at)
    over = {k: [s / d for s, d in zip(results[k]["seconds"], dist)] for k in results}
    flat = dist[-1] / dist[0]
    cached = over["hyena_cached"]
    growing = all(b >= a * 0.95 for a, b in zip(cached[i:], cached[i + 1:]))
    return [
        ("distilled per-token time, flat", "<= 1.2x from L = 256 to 16384",
         f"{flat:.2f}x from L = {contexts[0]} to {contexts[-1]}", flat <= 1.2),
        (f"distilled vs cached Hyena at L = {at}", ">= 1.5x at 4096 (the paper's factor)",
         f"{cached[i]:.2f}x", cached[i] >= 1.5),
        ("distilled vs cached Hyena, beyond", "growing with L",
         " -> ".join(f"{r:.2f}x" for r in cached[i:]), growing),
        (f"distilled vs KV cache at L = {at}", ">= 2x at 4096",
         f"{over['transformer_kv'][i]:.2f}x", over["transformer_kv"][i] >= 2),
        (f"distilled vs Hyena recompute at L = {at}", "(the naive way, for scale)",
         f"{over['hyena_recompute'][i]:.0f}x", None),
    ]


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def tables(results: dict, contexts) -> str:
    """The per-token times, the speed-ups and the state sizes as Markdown tables."""
    head = ["model"] + [f"L = {L}" for L in contexts]
    dist = results["distilled_hyena"]["seconds"]
    time_rows = [[LABELS[k]] + [f"{1e3 * s:.3f}" for s in results[k]["seconds"]]
                 for k in results]
    ratio_rows = [[LABELS[k]] + [f"{s / d:.2f}x" for s, d in zip(results[k]["seconds"], dist)]
                  for k in results if k != "distilled_hyena"]
    mem_rows = [[LABELS[k]] + [_fmt_bytes(b) for b in results[k]["state_bytes"]]
                for k in results]
    return (f"Per-token time (ms, median of round medians):\n\n{markdown_table(head, time_rows)}"
            f"\n\nHow many times longer a token takes than with the distilled Hyena:\n\n"
            f"{markdown_table(head, ratio_rows)}\n\nState kept per sequence (bytes in use "
            f"after the prefill; recompute: the token ids it re-reads):\n\n"
            f"{markdown_table(head, mem_rows)}")


def plot(results: dict, out_dir: Path) -> list:
    """Per-token time and per-sequence state against L, log-log, one line per model."""
    plt = pyplot()
    paths = []
    for key, ylabel, name, scale in (("seconds", "ms per generated token", "time", 1e3),
                                     ("state_bytes", "bytes of state per sequence",
                                      "memory", 1.0)):
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for kind, r in results.items():
            if key == "state_bytes" and kind == "hyena_recompute":
                continue                       # it keeps only the ids; it recomputes
            ax.loglog(r["context"], [scale * v for v in r[key]], "o-", label=LABELS[kind])
        ax.set(xlabel="context length L (tokens already seen)", ylabel=ylabel,
               title=f"Generation, one sequence: {ylabel}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, out_dir / f"generation_{name}.png"))
    return paths


def main(argv=None) -> int:
    # one thread: more only slow these small products down when shared
    p = parser(__doc__, dict(repeats=(5, 3), steps=(16, 8)), device=None, threads=1)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write DIR/generation.md and the two plots (e.g. docs/results/hyena)")
    p.add_argument("--contexts", default=None,
                   help=f"comma-separated context lengths (default {FULL_CONTEXTS}, or "
                        f"{QUICK_CONTEXTS} with --quick)")
    p.add_argument("--order", type=at_least(0), default=16,
                   help="real state size of every distilled filter (default 16)")
    p.add_argument("--steps", type=at_least(1), default=None,
                   help="timed steps per round (Hyena recompute: 1 per round)")
    p.add_argument("--d-model", type=at_least(1), default=None)
    p.add_argument("--n-layer", type=at_least(1), default=None)
    args = p.parse_args(argv)

    try:
        contexts = tuple(sorted(int(c) for c in args.contexts.split(","))) if args.contexts \
            else QUICK_CONTEXTS if args.quick else FULL_CONTEXTS
    except ValueError:
        contexts = (0,)
    if min(contexts) < 1:
        p.error(f"--contexts: expected comma-separated integers >= 1, got {args.contexts!r}")
    timer = timer_options(args)
    steps, repeats = args.steps or timer["steps"], timer["repeats"]
    if steps * repeats > 255:     # the models end 256 positions past the longest context
        p.error(f"--steps {steps} x --repeats {repeats}: at most 255 timed steps fit")
    base = PROFILES["quick"].model
    try:
        base = replace(base, d_model=args.d_model or base.d_model,
                       n_layer=args.n_layer or base.n_layer)
    except ValueError as exc:                     # e.g. d_model not divisible by n_head
        p.error(f"--d-model, --n-layer: {exc}")
    threads, how = blas_threads(args.threads)
    meta = machine()

    setup = (f"nanotie {meta['nanotie']} (NumPy {meta['numpy']}), {meta['machine']}, "
             f"Python {meta['python']}; {threads} BLAS thread(s) ({how}); "
             f"models: d_model {base.d_model}, {base.n_layer} layers, {base.n_head} heads, "
             f"vocab {base.vocab_size}, untrained; distilled at order {args.order} (ERA, "
             f"first 256 taps); timer: {repeats} interleaved rounds of {steps} steps "
             f"(Hyena recompute: 1), median of round medians; load average "
             f"{meta['load_average'][0]:.1f} on {meta['logical_cores']} cores at the start")
    print(setup + "\n")
    results = measure(base, contexts, args.order, steps, repeats)
    text = tables(results, contexts)
    print("\n" + text)
    goals = goals_of(results, contexts)
    goal_table = markdown_table(["goal", "target", "measured", "met"],
                                [[g, t, m, "-" if ok is None else "yes" if ok else "no"]
                                 for g, t, m, ok in goals],
                                text_columns=4)
    print("\nGoals (measured here; the paper's GPU figures at 1.3B were 1.5x over Hyena "
          "and 10x over Transformers):\n")
    print(goal_table)
    if contexts[0] != 256 or contexts[-1] != 16384:
        print(f"\n(the flatness target spans 256 to 16384; this run covered "
              f"{contexts[0]} to {contexts[-1]})")

    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        time_png, mem_png = plot(results, out)
        command = "python benchmarks/bench_generation.py" + (
            f" {' '.join(argv)}" if argv else " " + " ".join(sys.argv[1:]))
        (out / "generation.md").write_text(f"""## Generation: time and memory per token

Measured by `{command.strip()}` on {time.strftime('%Y-%m-%d')}. {setup}.

{text}

![per-token time against context]({time_png.name})

![state per sequence against context]({mem_png.name})

Goals (the paper's figures, at 1.3B parameters on a GPU, were 1.5x over Hyena and
10x over Transformers in throughput):

{goal_table}
""")
        print(f"\nwrote {out / 'generation.md'}, {time_png.name}, {mem_png.name}")
    if args.json:
        write_json(args.json, {
            "contexts": list(contexts), "order": args.order, "steps": steps,
            "repeats": repeats, "threads": threads,
            "model": {"d_model": base.d_model, "n_layer": base.n_layer, "n_head": base.n_head},
            "results": results,
            "goals": [{"goal": g, "target": t, "measured": m, "met": ok}
                      for g, t, m, ok in goals]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
