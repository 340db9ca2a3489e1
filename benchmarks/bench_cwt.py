"""Training-step throughput of Contrastive Weight Tying against a softmax head.

Run it from the repository root:

    python benchmarks/bench_cwt.py              # the full run, a few minutes
    python benchmarks/bench_cwt.py --quick      # fewer repeats, about a minute
    python benchmarks/bench_cwt.py --vocab 8192 --json out.json

What is timed: ONE full training step (forward, backward, gradient clipping, AdamW)
of two models with the same shapes and the same parameters, on the same batch of
B x T random token ids:

* ``CE``   nanotie's GPT with its tied head: (K, V) logits, K = B T, and the fused
           softmax cross-entropy over all V ids;
* ``CWT``  :class:`~nanotie.papers.headless.HeadlessGPT`: the K outputs scored
           against the input embeddings of the K targets, a (K, K) matrix.

for each vocabulary size V (default 1024, 4096, 8192 and 16384). The paper's
Table 6 reports CWT at x2.13 the throughput of CE for BERT-small; the goal here is
at least x2 at V = 8192. The ratio depends on how large the head is next to the
body: for this model (d = 128, 4 layers) the head's matrix products cost d V per
token against about 12 d^2 per layer, so V = 8192 puts them near the share they have
in BERT-small (V = 30522, d = 512, 4 layers).

Both models are timed interleaved in one process (``benchmarks/_timing.py``): trust
the ratio column more than the milliseconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))        # for _timing
from _timing import (at_least, blas_threads, compare, machine, parser,  # noqa: E402,I001
                     timer_options, write_json)

import nanotie as nt  # noqa: E402
from nanotie.nn import GPTConfig, count_parameters  # noqa: E402
from nanotie.papers.headless.throughput import make_models, step_function  # noqa: E402

VOCABS = (1024, 4096, 8192, 16384)
MODEL = dict(context=64, d_model=128, n_layer=4, n_head=4)
BATCH = 16
PAPER_RATIO = 2.13


def matmul_macs_per_token(V: int, K: int) -> dict:
    """Multiply-adds per token of the step's matrix products (forward + 2 backward),
    for the body, the CE head and the CWT scores: a rough expectation for the ratio."""
    d, L, T = MODEL["d_model"], MODEL["n_layer"], MODEL["context"]
    body = 3 * L * (12 * d * d + 2 * T * d)           # qkv, proj, mlp; q k^T and P v
    return {"body": body, "ce_head": 3 * d * V, "cwt_scores": 3 * d * K + d}


def main(argv=None) -> int:
    p = parser(__doc__, dict(repeats=(7, 3), warmup=(2, 1), min_time=(0.5, 0.2),
                             settle=(0.0, 0.0)), device="cuda: both models on CuPy")
    p.add_argument("--vocab", default=",".join(map(str, VOCABS)),
                   help="comma-separated vocabulary sizes (default: %(default)s)")
    p.add_argument("--batch", type=at_least(1), default=BATCH,
                   help="sequences per step (default: %(default)s)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not nt.cuda_available():
        p.error("--device cuda needs CuPy on a machine with a GPU")
    try:
        vocabs = [int(v) for v in args.vocab.split(",") if v.strip()]
    except ValueError:
        vocabs = []
    if not vocabs or min(vocabs) < 1:
        p.error(f"--vocab: expected comma-separated integers >= 1, got {args.vocab!r}")
    threads, how = blas_threads(limit=args.threads)
    nt.backend.keep_freed_memory()
    timer = timer_options(args)
    repeats = timer["repeats"]
    T = MODEL["context"]
    K = args.batch * T
    meta = machine()
    print(f"nanotie {meta['nanotie']} (NumPy {meta['numpy']}), float32, Python "
          f"{meta['python']}, device {args.device}, {threads} BLAS threads ({how})")
    print(f"model: GPT {MODEL}, batch {args.batch} x {T} = {K} target positions per step")
    print(f"timer: median of {repeats} interleaved repeats, each >= {timer['min_time']} s\n")

    # Every model is built first and all of them are timed in the same interleaved
    # rounds, so that a change of load shifts every V alike, not just one.
    rng = np.random.default_rng(0)
    steps, losses, params = {}, {}, {}
    for V in vocabs:
        ce, cwt = make_models(GPTConfig(vocab_size=V, **MODEL), 0, args.device)
        params[V] = count_parameters(ce)
        x, y = rng.integers(0, V, (args.batch, T)), rng.integers(0, V, (args.batch, T))
        steps[f"CE V={V}"] = step_function(ce, x, y)
        steps[f"CWT V={V}"] = step_function(cwt, x, y)
    for name, fn in steps.items():
        losses[name] = float(fn().item())
    t = compare(steps, **timer)
    rows = []
    for V in vocabs:
        ce_t, cwt_t = t[f"CE V={V}"], t[f"CWT V={V}"]
        macs = matmul_macs_per_token(V, K)
        rows.append(dict(
            vocab_size=V, parameters=params[V],
            ce_ms=ce_t["median"] * 1e3, cwt_ms=cwt_t["median"] * 1e3,
            ce_tokens_per_s=K / ce_t["median"], cwt_tokens_per_s=K / cwt_t["median"],
            ratio=ce_t["median"] / cwt_t["median"], ratio_min=ce_t["min"] / cwt_t["min"],
            matmul_ratio=(macs["body"] + macs["ce_head"]) / (macs["body"] + macs["cwt_scores"]),
            ce_times_ms=[s * 1e3 for s in ce_t["times"]],
            cwt_times_ms=[s * 1e3 for s in cwt_t["times"]],
            finite_losses=bool(np.isfinite(losses[f"CE V={V}"])
                               and np.isfinite(losses[f"CWT V={V}"]))))

    print("| V | params | CE ms/step | CWT ms/step | CE tokens/s | CWT tokens/s | "
          "CWT / CE (median) | (min) | matmul-only expectation |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['vocab_size']} | {r['parameters']:,} | {r['ce_ms']:.1f} | "
              f"{r['cwt_ms']:.1f} | {r['ce_tokens_per_s']:,.0f} | "
              f"{r['cwt_tokens_per_s']:,.0f} | **x{r['ratio']:.2f}** | x{r['ratio_min']:.2f} | "
              f"x{r['matmul_ratio']:.2f} |")
    at_8k = [r for r in rows if r["vocab_size"] == 8192]
    if at_8k:
        verdict = "meets" if at_8k[0]["ratio"] >= 2.0 else "misses"
        print(f"\nAt V = 8192 CWT runs x{at_8k[0]['ratio']:.2f} as many tokens/s as CE "
              f"({verdict} the x2 goal; the paper's Table 6: x{PAPER_RATIO}).")
    bad = [r["vocab_size"] for r in rows if not r["finite_losses"]]
    if bad:
        print(f"(!) non-finite loss at V = {bad}")
    if args.json:
        meta.update(threads=threads, threads_how=how, device=args.device, model=MODEL,
                    batch=args.batch, quick=args.quick, timer=timer,
                    statistic="median per-step time over interleaved repeats")
        write_json(args.json, dict(meta=meta, paper_ratio=PAPER_RATIO, results=rows))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
