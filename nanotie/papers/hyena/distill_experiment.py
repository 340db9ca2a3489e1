"""The distillation section of the ``hyena`` experiment: Laughing Hyena in miniature.

For the trained Hyena and MultiHyena LMs of the experiment (``ctx.models("lm")``):

1. every long filter is distilled at each order of a sweep (ERA + modal
   refinement, ``distill.order_sweep``), and its Hankel spectrum is computed;
2. the l2 error of every filter at every order is set against the lower bound
   σ_{d+1}/sqrt(n);
3. the distilled LMs (every filter at one order, and every filter at the smallest
   swept order that meets a tolerance) are scored on the held-out prose, next to
   the undistilled model: the quality after distillation;
4. generation time per token is measured against the context length for Hyena
   recomputing its convolutions, a Transformer with a KV cache, and the distilled
   recurrences (``throughput.py``; untrained models of the same shape, since the
   trained ones only reach their training context).

:func:`distillation` is the section appended to ``experiment.SECTIONS``;
:func:`distillation_section` makes one with other settings (the notebook's).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...autograd import no_grad
from ...report import pyplot, save_figure
from ...train import evaluate
from ..gpt.experiment import corpus_splits
from .distill import DistillConfig, ModalFilterBank, distill_filters, \
    hankel_singular_values, order_sweep
from .distilled import DistilledHyenaLM, banks_at_order
from .throughput import KINDS, LABELS as KIND_LABELS, generation_models, stepper_for, \
    time_steps

__all__ = ["DistillStudy", "STUDIES", "distillation_section", "distillation",
           "sweep_model", "measure_throughput"]

DISTILLED = ("hyena", "multihyena")
NAMES = {"hyena": "Hyena", "multihyena": "MultiHyena"}


@dataclass
class DistillStudy:
    """The settings of the distillation section."""

    orders: tuple = (2, 4, 8, 16)         # real state sizes swept, for every filter
    tol: float = 1e-2                     # per-filter choice: smallest swept order with rel. error <= tol
    contexts: tuple = (256, 512, 1024, 2048, 4096)   # prompt lengths for the timing
    throughput_order: int = 16            # state size of the timed distilled models
    steps: int = 8                        # timed tokens per round (recurrent, KV cache)
    recompute_steps: int = 2              # timed tokens per round for Hyena recompute
    rounds: int = 3                       # interleaved timing rounds per context
    eval_batch: int = 32                  # sequences per batch when scoring held-out prose

    def __post_init__(self):
        if not self.orders or list(self.orders) != sorted(set(self.orders)) or \
                self.orders[0] < 1:
            raise ValueError(f"DistillStudy.orders must be ascending distinct ints >= 1, "
                             f"got {self.orders}")
        if not self.tol > 0:
            raise ValueError(f"DistillStudy.tol must be > 0, got {self.tol}")
        if not self.contexts or min(self.contexts) < 2:
            raise ValueError(f"DistillStudy.contexts must be lengths >= 2, got {self.contexts}")
        for name in ("throughput_order", "steps", "recompute_steps", "rounds", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"DistillStudy.{name} must be >= 1, got {getattr(self, name)}")


# The quick study keeps the section to about half a minute on two idle cores; the
# timing stops at 4096 tokens there (the Transformer's prefill and Hyena's
# recomputation grow fast beyond it), and goes to 16384 in the full one.
STUDIES = {
    "quick": DistillStudy(),
    "full": DistillStudy(orders=(2, 4, 8, 16, 24, 32),
                         contexts=(256, 512, 1024, 2048, 4096, 8192, 16384), steps=32),
}


# ------------------------------------------------------------------ measurements


def sweep_model(model, orders, progress=None) -> dict:
    """Distil every filter of every layer at each order of ``orders``.

    Returns ``fits`` (per layer, per filter: one ModalFit per order), the Hankel
    singular values ``sigma`` (per layer: (n_filters, n)), and the filter length."""
    from tqdm.auto import tqdm

    cfg = DistillConfig()
    fits, sigma = [], []
    ops = model.mixers()
    for i, op in enumerate(ops):
        h = op.filter_array()                                     # (C, L) float64
        sigma.append(hankel_singular_values(h))
        # progress None: a bar only on a terminal, like train()'s
        rows = tqdm(h, desc=f"distil layer {i + 1}/{len(ops)}", leave=False,
                    disable=None if progress is None else not progress)
        fits.append([order_sweep(row, orders, cfg) for row in rows])
    return {"fits": fits, "sigma": sigma, "length": ops[0].max_len}


def _chosen_banks(fits: list, tol: float, length: int) -> list:
    """Per filter, the fit at the smallest swept order whose relative error meets
    tol (the largest order if none does), as per-layer banks."""
    def pick(sweep):
        return next((f for f in sweep if f.rel_error <= tol), sweep[-1])
    return [ModalFilterBank.from_fits([pick(s) for s in layer], length) for layer in fits]


def _median_where_defined(values: np.ndarray) -> np.ndarray:
    """Median over axis 0 of the finite entries (NaN where a column has none: an
    order above the Hankel matrix's rank has a zero bound, and no ratio)."""
    return np.array([np.median(c[np.isfinite(c)]) if np.isfinite(c).any() else np.nan
                     for c in values.T])


def _bpb(model, val_ids, batch: int) -> float:
    return evaluate(model, val_ids, model.config.context, batch) / math.log(2)


def measure_throughput(base, study: DistillStudy, seed: int = 0, kinds=KINDS) -> dict:
    """Per-token seconds for each kind at each context, with models of ``base``'s
    shape: each prefilled once, then timed side by side (``throughput.time_steps``)."""
    models = generation_models(base, max(study.contexts), study.throughput_order,
                               seed=seed, kinds=kinds)
    rng = np.random.default_rng(seed)
    out = {kind: {"context": [], "seconds": [], "prefill_seconds": []} for kind in kinds}
    for L in study.contexts:
        prompt = rng.integers(0, base.vocab_size, (1, L))
        steppers = {}
        for kind in kinds:
            steppers[kind] = stepper_for(kind, models[kind])
            t0 = time.perf_counter()
            with no_grad():
                steppers[kind].prefill(prompt)
            out[kind]["prefill_seconds"].append(time.perf_counter() - t0)
        timing = time_steps(steppers, study.steps, study.rounds, study.recompute_steps)
        for kind in kinds:
            out[kind]["context"].append(L)
            out[kind]["seconds"].append(timing[kind]["median"])
    for kind in kinds:
        out[kind]["tokens_per_second"] = [1 / s for s in out[kind]["seconds"]]
    return out


# ------------------------------------------------------------------------- plots


def _plain_ticks(ax, axis: str, values) -> None:
    """Ticks at ``values`` with plain labels, and no minor labels, on a log axis."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(FixedLocator(list(values)))
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())
    (ax.set_xticklabels if axis == "x" else ax.set_yticklabels)([str(v) for v in values])


def plot_hankel(sigma: dict, path, n_show: int = 5) -> Path:
    """Normalised Hankel singular values of a few first-layer filters per model (from
    channel 0, the slowest-decaying window, to the last, the fastest), and the
    median over every filter of the model."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(sigma), figsize=(5.2 * len(sigma), 3.6), squeeze=False)
    for ax, (name, layers) in zip(axes[0], sigma.items()):
        s = layers[0] / np.maximum(layers[0][:, :1], 1e-300)          # (C, n)
        for c in np.unique(np.linspace(0, len(s) - 1, n_show).round().astype(int)):
            ax.semilogy(np.arange(1, s.shape[1] + 1), s[c], ".-", ms=3, lw=1,
                        label=f"layer 1, filter {c}")
        everything = np.concatenate([lay / np.maximum(lay[:, :1], 1e-300) for lay in layers])
        ax.semilogy(np.arange(1, s.shape[1] + 1), np.median(everything, 0), "k-", lw=2.5,
                    label="median, all filters")
        ax.set(title=f"{NAMES[name]}: Hankel singular values", xlabel="index i",
               ylabel="σ_i / σ_1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_errors(errors: dict, orders, path) -> Path:
    """Relative l2 error against order for EVERY filter (thin lines) and its lower
    bound (thin dashed), with the medians in bold."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(errors), figsize=(5.2 * len(errors), 3.8), squeeze=False,
                             sharey=True)
    for ax, (name, e) in zip(axes[0], errors.items()):
        err, bound = np.asarray(e["rel_error"]), np.asarray(e["rel_bound"])   # (C, n_orders)
        floor = 1e-8
        for row_e, row_b in zip(err, bound):
            ax.semilogy(orders, np.maximum(row_e, floor), color="C0", alpha=0.12, lw=0.8)
            ax.semilogy(orders, np.maximum(row_b, floor), color="C3", alpha=0.12, lw=0.8,
                        ls="--")
        ax.semilogy(orders, np.median(err, 0), "o-", color="C0", lw=2.5,
                    label="achieved error (median)")
        ax.semilogy(orders, np.median(bound, 0), "s--", color="C3", lw=2.5,
                    label="lower bound σ_{d+1}/√n (median)")
        ax.set(title=f"{NAMES[name]}: all {len(err)} filters", xlabel="order d",
               xticks=list(orders))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set(ylabel="relative ℓ2 error ‖h − ĥ‖ / ‖h‖")
    return save_figure(fig, path)


def plot_bpb(bpb: dict, orders, path) -> Path:
    """Held-out bits per byte of the distilled LMs against the order, with the
    undistilled model as a horizontal line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (name, r) in enumerate(bpb.items()):
        line, = ax.plot(orders, r["by_order"], "o-", color=f"C{i}",
                        label=f"{NAMES[name]}, distilled")
        ax.axhline(r["original"], color=line.get_color(), ls="--", alpha=0.7,
                   label=f"{NAMES[name]}, original")
        ax.axhline(r["order_0"], color=line.get_color(), ls=":", alpha=0.7,
                   label=f"{NAMES[name]}, no long memory (d = 0)")
        ax.plot([r["chosen_mean_order"]], [r["chosen"]], "*", ms=12, color=line.get_color(),
                label=f"{NAMES[name]}, order per filter (tol)")
    ax.set(xlabel="order d (every filter)", ylabel="held-out bits per byte",
           title="Quality after distillation", xscale="log")
    _plain_ticks(ax, "x", orders)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return save_figure(fig, path)


def plot_throughput(tp: dict, path) -> Path:
    """Generated tokens per second against the context length (log-log)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for kind, r in tp.items():
        ax.loglog(r["context"], r["tokens_per_second"], "o-", label=KIND_LABELS[kind])
    contexts = next(iter(tp.values()))["context"]
    ax.set(xlabel="context length L (tokens already seen)", ylabel="tokens / s",
           title="Generation throughput, one sequence")
    _plain_ticks(ax, "x", contexts)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# ----------------------------------------------------------------------- section


def distillation_section(study: DistillStudy | None = None):
    """A section ``ctx -> (results, markdown, summary)`` with these settings (None:
    STUDIES["quick"] or ["full"], following ctx.quick)."""

    def distillation(ctx):
        s = study or STUDIES["quick" if ctx.quick else "full"]
        return _run(ctx, s)

    return distillation


distillation = distillation_section()


def _run(ctx, study: DistillStudy):
    models = ctx.models("lm")
    _, val_ids = corpus_splits()
    orders = list(study.orders)
    res = {"orders": orders, "tol": study.tol, "models": {}}
    sigma, errors, bpb = {}, {}, {}
    for name in DISTILLED:
        model = models[name][0]
        sweep = sweep_model(model, orders)
        flat = [sw for layer in sweep["fits"] for sw in layer]           # every filter
        rel = np.array([[f.rel_error for f in sw] for sw in flat])       # (C, n_orders)
        norm = np.array([[max(f.norm, 1e-300) for f in sw] for sw in flat])
        bound = np.array([[f.bound for f in sw] for sw in flat]) / norm
        era = np.array([[f.era_error for f in sw] for sw in flat]) / norm
        chosen = _chosen_banks(sweep["fits"], study.tol, sweep["length"])
        chosen_orders = np.concatenate([b.orders for b in chosen])
        chosen_bounds = np.concatenate([b.bounds for b in chosen])
        chosen_ratio = (np.concatenate([b.errors for b in chosen])[chosen_bounds > 0]
                        / chosen_bounds[chosen_bounds > 0])      # a zero bound: exact rank
        by_order = [_bpb(DistilledHyenaLM(model, banks_at_order(sweep["fits"], i,
                                                                  sweep["length"])),
                         val_ids, study.eval_batch) for i in range(len(orders))]
        # A control: order 0 keeps only ĥ_0 (and Dskip), no memory of the past at all.
        memoryless = [distill_filters(op.filter_array(), order=0) for op in model.mixers()]
        bpb[name] = {"original": _bpb(model, val_ids, study.eval_batch), "by_order": by_order,
                     "order_0": _bpb(DistilledHyenaLM(model, memoryless), val_ids,
                                     study.eval_batch),
                     "chosen": _bpb(DistilledHyenaLM(model, chosen), val_ids, study.eval_batch),
                     "chosen_mean_order": float(chosen_orders.mean())}
        errors[name] = {"rel_error": rel, "rel_bound": bound, "rel_era_error": era}
        sigma[name] = sweep["sigma"]
        ratio = np.where(bound > 0, rel / np.where(bound > 0, bound, 1), np.nan)
        res["models"][name] = {
            "filters": len(flat), "filter_length": sweep["length"],
            "rel_error": rel, "rel_bound": bound, "rel_era_error": era,
            "median_rel_error": np.median(rel, 0), "median_rel_bound": np.median(bound, 0),
            "error_over_bound_median": _median_where_defined(ratio),
            "refined_over_era_median": np.median(rel / np.maximum(era, 1e-300), 0),
            "chosen_orders": chosen_orders, "chosen_met_tol": float(np.mean(
                np.concatenate([b.rel_errors for b in chosen]) <= study.tol)),
            "chosen_error_over_bound": {
                "median": float(np.median(chosen_ratio)) if chosen_ratio.size else np.nan,
                "max": float(np.max(chosen_ratio)) if chosen_ratio.size else np.nan},
            "hankel_sigma_layer1": sweep["sigma"][0],
            "bpb": bpb[name]}
    tp = measure_throughput(ctx.profile.model, study, ctx.seed)
    res["throughput"] = tp
    res["throughput_order"] = study.throughput_order
    figures = {"hankel": plot_hankel(sigma, ctx.out_dir / "distill_hankel.png"),
               "error_vs_order": plot_errors(errors, orders,
                                             ctx.out_dir / "distill_error_vs_order.png"),
               "bpb_vs_order": plot_bpb(bpb, orders, ctx.out_dir / "distill_bpb.png"),
               "throughput": plot_throughput(tp, ctx.out_dir / "distill_throughput.png")}
    res["figures"] = {k: p.name for k, p in figures.items()}
    res["goals"] = _goals(tp, res["models"])
    md = _markdown(ctx, study, res, figures)
    summary = {"distilled speed-up": _speedup_summary(tp)}
    return {"distill": res}, md, summary


def _ratio_at(tp: dict, slow: str, fast: str, L: int) -> float:
    """How many times faster ``fast`` makes a token than ``slow`` at context L."""
    if slow not in tp or fast not in tp or L not in tp[fast]["context"]:
        return float("nan")
    i = tp[fast]["context"].index(L)
    return tp[slow]["seconds"][i] / tp[fast]["seconds"][i]


def _goals(tp: dict, models: dict) -> dict:
    """The targets of the reproduction, measured (None where a context was not run)."""
    d = tp["distilled_hyena"]
    first, last = d["context"][0], d["context"][-1]
    L = 4096 if 4096 in d["context"] else last
    return {
        "flatness": {"target": "<= 1.2 from 256 to 16384", "from": first, "to": last,
                     "value": d["seconds"][-1] / d["seconds"][0]},
        "vs_hyena_recompute": {"target": ">= 10 at 4096", "context": L,
                               "value": _ratio_at(tp, "hyena_recompute", "distilled_hyena", L)},
        "vs_kv_cache": {"target": ">= 2 at 4096", "context": L,
                        "value": _ratio_at(tp, "transformer_kv", "distilled_hyena", L)},
        "error_over_bound": {"target": "<= 2 at the chosen orders",
                             "value": {n: m["chosen_error_over_bound"]["median"]
                                       for n, m in models.items()}},
    }


def _speedup_summary(tp: dict) -> str:
    L = tp["distilled_hyena"]["context"][-1]
    return (f"{_ratio_at(tp, 'hyena_recompute', 'distilled_hyena', L):.0f}x Hyena, "
            f"{_ratio_at(tp, 'transformer_kv', 'distilled_hyena', L):.1f}x KV @{L}")


def _markdown(ctx, study: DistillStudy, res: dict, figures: dict) -> str:
    orders, tp, goals = res["orders"], res["throughput"], res["goals"]
    m = res["models"]
    head = " | ".join(f"d = {d}" for d in orders)
    bpb_rows = "\n".join(
        f"| {NAMES[n]} | {r['bpb']['original']:.3f} | {r['bpb']['order_0']:.3f} | "
        + " | ".join(f"{b:.3f}" for b in r["bpb"]["by_order"])
        + f" | {r['bpb']['chosen']:.3f} (mean d {r['bpb']['chosen_mean_order']:.1f}, "
          f"{100 * r['chosen_met_tol']:.0f}% meet tol) |"
        for n, r in m.items())
    err_rows = "\n".join(
        f"| {NAMES[n]} ({r['filters']} filters) | "
        + " | ".join(f"{e:.3g} / {b:.3g} ({q:.1f}x)" for e, b, q in zip(
            r["median_rel_error"], r["median_rel_bound"], r["error_over_bound_median"]))
        + " |" for n, r in m.items())
    refine_rows = ", ".join(
        f"{NAMES[n]} " + " / ".join(f"{x:.2f}" for x in r["refined_over_era_median"])
        for n, r in m.items())
    contexts = tp["distilled_hyena"]["context"]
    tp_rows = "\n".join(
        f"| {KIND_LABELS[k]} | " + " | ".join(f"{1 / s:,.0f}" for s in tp[k]["seconds"]) + " |"
        for k in tp)
    ratio_rows = "\n".join(
        f"| distilled Hyena vs {KIND_LABELS[k]} | "
        + " | ".join(f"{_ratio_at(tp, k, 'distilled_hyena', L):.1f}x" for L in contexts) + " |"
        for k in ("hyena_recompute", "transformer_kv"))
    g = goals
    eob = ", ".join(f"{NAMES[n]} {v:.1f}" for n, v in g["error_over_bound"]["value"].items())
    cfg = ctx.profile.model
    return f"""
## Distillation (Laughing Hyena)

Every long filter of the trained LMs above (length {m['hyena']['filter_length']}) is
distilled into a modal SSM, ĥ_t = Re Σ_k R_k λ_k^(t-1), by ERA plus modal least-squares
refinement, at each order d of {orders} (d = real state size). The distilled model keeps
every other weight of the original (the same Parameter objects) and runs either in
parallel (FFT with ĥ) or as a recurrence with O(1) work per token.

**Hankel spectra** of some first-layer filters (and the median over all filters): how
many states each filter needs.

![Hankel spectra]({figures['hankel'].name})

**Error against order, every filter**, with the lower bound σ_(d+1)/√n that no
order-d system can beat. Medians of the relative ℓ2 error / of the bound (and of
their ratio):

| model | {head} |
|---|{'---|' * len(orders)}
{err_rows}

![error vs order]({figures['error_vs_order'].name})

Refinement over ERA (median refined/ERA error per order): {refine_rows}.

**Quality after distillation**: held-out bits per byte, undistilled vs every filter
at order d, and vs each filter at the smallest swept order with relative error
≤ {study.tol:g} (the last column; mean order in brackets, and the share of filters
that meet the tolerance by the largest swept order). The control d = 0 keeps
only ĥ_0 and Dskip: the long convolutions forget the past entirely, so the gap
between it and the original is what the long filters are worth to this model.

| model | original | d = 0 (control) | {head} | order per filter |
|---|---|---|{'---|' * len(orders)}---|
{bpb_rows}

![bits per byte vs order]({figures['bpb_vs_order'].name})

**Generation throughput** (tokens/s, batch 1, greedy) against the context already
seen, for untrained models of the same shape (d_model {cfg.d_model}, {cfg.n_layer} layers,
{cfg.n_head} heads; the timing does not depend on the weights, and the trained filters
only reach {cfg.context} taps). Hyena re-runs its forward pass over the context for each
token (as `HyenaLM.generate` does); the Transformer keeps a KV cache; the distilled
models (order {res['throughput_order']}, ERA) step their modal states. Each point: the
median over {study.rounds} interleaved rounds of the median of {study.steps} timed tokens
({study.recompute_steps} for Hyena recompute); the machine may be shared, so read the ratios.

| model | {' | '.join(f'L = {L}' for L in contexts)} |
|---|{'---|' * len(contexts)}
{tp_rows}
{ratio_rows}

![throughput]({figures['throughput'].name})

| goal | target | measured |
|---|---|---|
| distilled per-token time, L = {g['flatness']['from']} → {g['flatness']['to']} | {g['flatness']['target']} | {g['flatness']['value']:.2f}x |
| distilled vs Hyena recompute at L = {g['vs_hyena_recompute']['context']} | {g['vs_hyena_recompute']['target']} | {g['vs_hyena_recompute']['value']:.0f}x |
| distilled vs KV cache at L = {g['vs_kv_cache']['context']} | {g['vs_kv_cache']['target']} | {g['vs_kv_cache']['value']:.1f}x |
| achieved error / lower bound (median, chosen orders) | {g['error_over_bound']['target']} | {eob} |
"""
