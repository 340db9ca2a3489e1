"""The distillation part of the ``hyena`` experiment: Laughing Hyena in miniature.

:func:`distill_study` distils a trained Hyena or MultiHyena LM's filters at every swept
order and scores the distilled LMs on the TEST split; :func:`measure_throughput` times
generation against the context (``throughput.py``); :func:`over_seeds` and
:func:`report_section` turn the figures of every seed into verdicts, tables and plots.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ... import protocol
from ...autograd import no_grad
from ...report import finish_figure, minmax_yerr, pyplot, save_figure
from ...train import evaluate
from .reduction import ModalFilterBank, distill_filters, hankel_norm_ratio, \
    hankel_singular_values, one_blas_thread, order_sweep
from .distilled import DistilledHyenaLM
from .throughput import KINDS, LABELS as KIND_LABELS, generation_models, stepper_for, \
    time_steps

__all__ = ["DistillStudy", "STUDIES", "distill_study", "measure_throughput", "NAMES", "MARGIN",
           "over_seeds", "report_section", "plot_hankel", "plot_errors", "plot_bpb",
           "plot_throughput"]

NAMES = {"hyena": "Hyena", "multihyena": "MultiHyena"}     # the models whose filters distil
METHOD_LABELS = {"era": "ERA", "balanced": "balanced truncation", "modal": "modal fit"}


@dataclass
class DistillStudy:
    """The settings of the distillation part."""

    orders: tuple = (2, 4, 8, 16)         # real state sizes swept, for every filter
    tol: float = 1e-2                     # per filter: smallest swept order with rel. error <= tol
    contexts: tuple = (256, 1024, 4096)   # prompt lengths for the timing
    throughput_order: int = 16            # state size of the timed distilled models
    steps: int = 8                        # timed tokens per round (recurrent, caches)
    recompute_steps: int = 1              # timed tokens per round for Hyena recompute
    rounds: int = 3                       # interleaved timing rounds per context
    eval_batch: int = 32                  # sequences per batch when scoring the test split
    eval_batches: int = 8                 # batches of the test split scored per distilled model


# The quick study: four orders, the test split's first 8 x 32 windows for the
# distilled models, and timing to 4096 tokens (the full one goes to 16384).
STUDIES = {
    "quick": DistillStudy(),
    "full": DistillStudy(orders=(2, 4, 8, 16, 24, 32), eval_batches=64,
                         contexts=(256, 512, 1024, 2048, 4096, 8192, 16384), steps=16,
                         rounds=5),
}


# ------------------------------------------------------------------ measurements


def _banks(fits: list, pick, length: int) -> list:
    """Per-layer banks from order sweeps (``fits[i][c]``: the sweep of filter c of
    layer i), with ``pick(sweep)`` choosing each filter's fit."""
    return [ModalFilterBank.from_fits([pick(sweep) for sweep in layer], length)
            for layer in fits]


def _median_finite(values: np.ndarray) -> list:
    """Median over axis 0 of the finite entries (NaN where a column has none: an
    order at or above the Hankel matrix's rank has a zero bound, and no ratio)."""
    return [float(np.median(c[np.isfinite(c)])) if np.isfinite(c).any() else math.nan
            for c in np.asarray(values, dtype=np.float64).T]


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def _bpb(model, ids, study: DistillStudy) -> float:
    return evaluate(model, ids, model.config.context, study.eval_batch,
                    max_batches=study.eval_batches) / math.log(2)


@one_blas_thread
def distill_study(model, test_ids, study: DistillStudy) -> dict:
    """Distil every filter of ``model`` at every order of the study; JSON-able figures:
    per order, medians over every filter of each method's relative error, of both
    bounds and of their ratios; every filter's error and bounds (for the plot); the
    test bits per byte of the distilled LMs and of the original on the same windows."""
    orders = list(study.orders)
    ops = model.mixers()
    fits, sigma, rows = [], [], []
    for op in ops:
        h = op.filter_array()                                     # (C, L) float64
        sigma.append(hankel_singular_values(h))
        fits.append([order_sweep(row, orders) for row in h])
        rows.extend(h)
    length = ops[0].max_len
    flat = [sw for layer in fits for sw in layer]                 # every filter's sweep
    norm = np.array([[max(f.norm, 1e-300)] for f in (sw[0] for sw in flat)])  # (C, 1)

    def per_filter(attr):
        return np.array([[getattr(f, attr) for f in sw] for sw in flat])        # (C, n_orders)

    err, era, bt = per_filter("error"), per_filter("era_error"), per_filter("bt_error")
    loose, tight = per_filter("bound"), per_filter("tight_bound")
    hankel = np.array([[hankel_norm_ratio(h, f.impulse_response(length), d)
                        for f, d in zip(sw, orders)] for h, sw in zip(rows, flat)])
    # per filter, the smallest swept order whose error meets tol (else the largest)
    chosen = _banks(fits, lambda s: next((f for f in s if f.rel_error <= study.tol), s[-1]),
                    length)
    chosen_orders = np.concatenate([b.orders for b in chosen])
    bpb = {"original": _bpb(model, test_ids, study),
           "by_order": [_bpb(DistilledHyenaLM(model, _banks(fits, lambda s: s[i], length)),
                             test_ids, study) for i in range(len(orders))],
           # The control: order 0 keeps only ĥ_0 (and Dskip), no memory of the past.
           "order_0": _bpb(DistilledHyenaLM(model, [distill_filters(op.filter_array(), order=0)
                                                    for op in ops]), test_ids, study),
           "chosen": _bpb(DistilledHyenaLM(model, chosen), test_ids, study),
           "chosen_mean_order": float(chosen_orders.mean())}
    layer1 = sigma[0] / np.maximum(sigma[0][:, :1], 1e-300)       # (C, n) normalised
    everything = np.concatenate([s / np.maximum(s[:, :1], 1e-300) for s in sigma])
    return {
        "orders": orders, "filters": len(flat), "filter_length": length,
        "median_rel_error": {"era": _median_finite(era / norm),
                             "balanced": _median_finite(bt / norm),
                             "modal": _median_finite(err / norm)},
        "median_rel_bound": {"loose": _median_finite(loose / norm),
                             "tight": _median_finite(tight / norm)},
        "fit_over_tight": _median_finite(_ratio(err, tight)),
        "fit_over_loose": _median_finite(_ratio(err, loose)),
        "tight_over_loose": _median_finite(_ratio(tight, loose)),
        "hankel_ratio": _median_finite(hankel),
        "hankel_ratio_min": float(np.nanmin(hankel)),
        "modal_over_balanced_max": float(np.nanmax(_ratio(err, bt))),
        "modal_over_era_max": float(np.nanmax(_ratio(err, era))),
        "bound_holds": bool(np.all(err >= tight * (1 - 1e-9))
                            and np.all(tight >= loose * (1 - 1e-9))),
        "rel_error": err / norm, "rel_tight": tight / norm, "rel_loose": loose / norm,
        "chosen_orders_hist": np.bincount(chosen_orders).tolist(),
        "chosen_met_tol": float(np.mean(np.concatenate([b.rel_errors for b in chosen])
                                        <= study.tol)),
        "bpb": bpb,
        "hankel_layer1": {"some": layer1[np.unique(np.linspace(0, len(layer1) - 1, 5)
                                                  .round().astype(int))].tolist(),
                          "median": np.median(everything, 0).tolist()},
    }


@one_blas_thread
def measure_throughput(base, study: DistillStudy, seed: int = 0, kinds=KINDS) -> dict:
    """Per-token seconds and per-sequence state bytes for each kind at each context,
    with untrained models of ``base``'s shape: each prefilled once, then timed side
    by side (``throughput.time_steps``)."""
    models = generation_models(base, max(study.contexts), study.throughput_order,
                               seed=seed, kinds=kinds)
    rng = np.random.default_rng(seed)
    out = {kind: {"context": list(study.contexts), "seconds": [], "tokens_per_second": [],
                  "prefill_seconds": [], "state_bytes": []} for kind in kinds}
    for L in study.contexts:
        prompt = rng.integers(0, base.vocab_size, (1, L))
        steppers = {kind: stepper_for(kind, models[kind]) for kind in kinds}
        for kind, stepper in steppers.items():
            t0 = time.perf_counter()
            with no_grad():
                stepper.prefill(prompt)
            out[kind]["prefill_seconds"].append(time.perf_counter() - t0)
            out[kind]["state_bytes"].append(stepper.state_bytes())
        timing = time_steps(steppers, study.steps, study.rounds, study.recompute_steps)
        for kind in kinds:
            out[kind]["seconds"].append(timing[kind]["median"])
            out[kind]["tokens_per_second"].append(1 / timing[kind]["median"])
    return out


# ------------------------------------------------------------------ over seeds

# A distilled model "keeps its quality" if it loses at most this many bits per byte.
MARGIN = 0.01


def over_seeds(dist: dict, orders) -> dict:
    """The verdicts of ``dist`` = {name: [distill_study() of each seed]}: test bits per
    byte as Spreads over seeds (``bpb``), distilled at the largest order vs the original
    (``distilled``), the d = 0 control (``control``), the smallest order within MARGIN
    of the original on every seed (``lowest``), and the checks on every filter."""
    def spread(n, key, i=None):      # one bpb figure of model n over its seeds
        return protocol.spread([d["bpb"][key] if i is None else d["bpb"][key][i]
                                for d in dist[n]])

    bpb = {n: {**{key: spread(n, key) for key in ("original", "order_0", "chosen")},
               "by_order": [spread(n, "by_order", i) for i in range(len(orders))]}
           for n in dist}

    # Distilled and original share their seed (the distilled model IS the trained one
    # with other filters), so these verdicts judge the per-seed DIFFERENCES against no
    # difference: the spread between seeds of the models themselves is not noise here.
    def paired(a, b):
        return [x - y for x, y in zip(a.values, b.values)]

    def zeros(n):
        return [0.0] * len(bpb[n]["original"].values)

    lowest = {n: next((d for d, sp in zip(orders, bpb[n]["by_order"])
                       if max(paired(sp, bpb[n]["original"])) <= MARGIN), None) for n in dist}
    return {
        "bpb": bpb,
        "distilled": {n: protocol.verdict(paired(bpb[n]["by_order"][-1], bpb[n]["original"]),
                                          zeros(n), margin=MARGIN,
                                          names=(f"distilled d={orders[-1]} − original",
                                                 "no change")) for n in dist},
        "control": {n: protocol.verdict(paired(bpb[n]["original"], bpb[n]["order_0"]),
                                        zeros(n), names=("original − (d = 0)", "no change"))
                    for n in dist},
        "lowest": ", ".join(f"{NAMES[n]} d = {d}" if d is not None else
                            f"{NAMES[n]} none of {list(orders)}" for n, d in lowest.items()),
        "checks": {n: {"bound_holds": all(d["bound_holds"] for d in dist[n]),
                       "hankel_ratio_min": min(d["hankel_ratio_min"] for d in dist[n]),
                       "modal_over_balanced_max": max(d["modal_over_balanced_max"]
                                                      for d in dist[n])} for n in dist},
    }


def report_section(dist: dict, seen: dict, study: DistillStudy, context: int, out_dir
                   ) -> tuple[str, dict]:
    """The report's distillation section (``seen``: :func:`over_seeds`) and its plots."""
    orders, bpb, checks = list(study.orders), seen["bpb"], seen["checks"]
    first = {n: dist[n][0] for n in dist}                       # the plots show seed 0
    plots = {"hankel": plot_hankel(first, out_dir / "distill_hankel.png"),
             "error_vs_order": plot_errors(first, out_dir / "distill_error_vs_order.png"),
             "bpb_vs_order": plot_bpb(bpb, orders, out_dir / "distill_bpb.png")}

    def med(n, key, sub=None):   # a per-order median figure, mean over seeds
        vals = np.array([(d[key] if sub is None else d[key][sub]) for d in dist[n]], float)
        return np.nanmean(vals, axis=0)

    def order_rows(items, fmt):  # a row per model and figure, a column per order
        return "\n".join(f"| {NAMES[n]} | {label} | "
                         + " | ".join(format(x, fmt) for x in med(n, *key)) + " |"
                         for n in dist for key, label in items)

    def per_model(key):          # one check for each model: yes / NO, or a ratio
        return ", ".join(f"{NAMES[n]} " + (("yes" if c[key] else "NO") if key == "bound_holds"
                                           else f"{c[key]:.3f}") for n, c in checks.items())

    head, sep = " | ".join(f"d = {d}" for d in orders), "---|" * len(orders)
    small = [i for i, d in enumerate(orders) if d <= 8]
    goal_text = ", ".join(f"{NAMES[n]} " + " / ".join(f"{med(n, 'fit_over_tight')[i]:.2f}"
                                                      for i in small) for n in dist)
    bpb_rows = "\n".join(
        f"| {NAMES[n]} | {bpb[n]['original']} | {bpb[n]['order_0']} | "
        + " | ".join(str(s) for s in bpb[n]["by_order"])
        + f" | {bpb[n]['chosen']} (mean d "
          f"{np.mean([d['bpb']['chosen_mean_order'] for d in dist[n]]):.1f}) |" for n in dist)
    bpb_seeds = "\n".join(
        f"| {NAMES[n]} | original: {bpb[n]['original'].seeds()}; d = {orders[-1]}: "
        f"{bpb[n]['by_order'][-1].seeds()}; d = 0: {bpb[n]['order_0'].seeds()} |" for n in dist)
    md = f"""## Distillation (Laughing Hyena)

Every long filter of every trained Hyena and MultiHyena LM (each seed) is distilled
at each order d of {orders} (real state size) by ERA (Ho-Kalman on the Hankel SVD),
balanced truncation (the textbook model-order reduction) and the modal fit (least
squares on poles and residues from the better of those starts). No order-d system
beats the loose bound σ_(d+1)/√n or the tight max_m √(Σ_(i>d) σ_i(H_m)²)/√m (its
m-row Hankel block has rank ≤ d and holds each tap at most m times).

![Hankel spectra]({plots['hankel'].name})

Median relative ℓ2 error ‖h − ĥ‖/‖h‖ over every filter (mean over seeds):

| model | method | {head} |
|---|---|{sep}
{order_rows([(("median_rel_error", m), label) for m, label in METHOD_LABELS.items()]
           + [(("median_rel_bound", "tight"), "tight bound"),
              (("median_rel_bound", "loose"), "loose bound σ_(d+1)/√n")], ".3g")}

Medians of the ratios (mean over seeds); the Hankel-norm ratio is ≥ 1 for any
order-d fit (Eckart-Young), 1 being the best possible in that norm:

| model | ratio | {head} |
|---|---|{sep}
{order_rows([(("fit_over_tight",), "modal fit / tight bound"),
             (("fit_over_loose",), "modal fit / loose bound"),
             (("tight_over_loose",), "tight / loose bound"),
             (("hankel_ratio",), "‖H(h) − H(ĥ)‖₂ / σ_(d+1)")], ".2f")}

![error vs order]({plots['error_vs_order'].name})

Checks on every filter of every seed: the modal fit is never below the tight bound,
the tight bound never below the loose one: {per_model("bound_holds")};
the smallest Hankel-norm ratio: {per_model("hankel_ratio_min")};
the largest modal / balanced-truncation error: {per_model("modal_over_balanced_max")}
(≤ 1: the modal fit is never worse). Goal fit / tight bound ≤ 2 at d ≤ 8: {goal_text}
(d = {', '.join(str(orders[i]) for i in small)}).

**Quality after distillation**: test bits per byte on the test split's first
{study.eval_batches * study.eval_batch} windows of {context} bytes (the same for every variant):
undistilled, every filter at order d, each filter at its smallest swept order with
relative error ≤ {study.tol:g} (last column), and the control d = 0 (only ĥ_0 and
Dskip: no memory of the past).

| model | original | d = 0 (control) | {head} | order per filter |
|---|---|---|{sep}---|
{bpb_rows}

*mean ± sample standard deviation over seeds*; every seed:

| model | values |
|---|---|
{bpb_seeds}

![bits per byte vs order]({plots['bpb_vs_order'].name})
"""
    return md, plots


# ------------------------------------------------------------------------- plots


def _plain_xticks(ax, values) -> None:
    """Ticks at ``values`` with plain labels, and no minor ticks, on a log x axis."""
    from matplotlib.ticker import NullLocator

    ax.set_xticks(list(values), [str(v) for v in values])
    ax.xaxis.set_minor_locator(NullLocator())


def plot_hankel(studies: dict, path):
    """Normalised Hankel singular values of a few first-layer filters per model, and
    the median over every filter. ``studies``: {name: distill_study figures}."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(studies), figsize=(5.2 * len(studies), 3.6), squeeze=False)
    for ax, (name, st) in zip(axes[0], studies.items()):
        some, median = st["hankel_layer1"]["some"], st["hankel_layer1"]["median"]
        i = np.arange(1, len(median) + 1)
        for k, s in enumerate(some):
            ax.semilogy(i, s, ".-", ms=3, lw=1, label=f"layer 1, filter {k + 1} of {len(some)}")
        ax.semilogy(i, median, "k-", lw=2.5, label="median, all filters")
        ax.set(title=f"{NAMES[name]}: Hankel singular values", xlabel="index i",
               ylabel="σ_i / σ_1")
    return finish_figure(fig, axes[0], path, legend_size=7)


def plot_errors(studies: dict, path):
    """Relative l2 error against order: every filter's modal fit (thin), the medians
    of ERA, balanced truncation and the modal fit, and of both lower bounds."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(studies), figsize=(5.4 * len(studies), 4), squeeze=False,
                             sharey=True)
    for ax, (name, st) in zip(axes[0], studies.items()):
        orders = st["orders"]
        for row in np.asarray(st["rel_error"]):
            ax.semilogy(orders, np.maximum(row, 1e-8), color="C0", alpha=0.08, lw=0.8)
        for (m, label), style in zip(METHOD_LABELS.items(), ("^-", "v-", "o-")):
            ax.semilogy(orders, st["median_rel_error"][m], style, lw=2, label=f"{label} (median)")
        ax.semilogy(orders, st["median_rel_bound"]["tight"], "s--", color="C3", lw=2,
                    label="tight bound max_m √(Σ_{i>d} σ_i²(H_m)/m)")
        ax.semilogy(orders, st["median_rel_bound"]["loose"], "s:", color="C7", lw=2,
                    label="loose bound σ_{d+1}/√n")
        ax.set(title=f"{NAMES[name]}: all {st['filters']} filters", xlabel="order d",
               xticks=list(orders))
    axes[0][0].set(ylabel="relative ℓ2 error ‖h − ĥ‖ / ‖h‖")
    return finish_figure(fig, axes[0], path, legend_size=7)


def plot_bpb(bpb: dict, orders, path):
    """Test bits per byte of the distilled LMs against the order (mean, min-max over
    seeds), with the undistilled model and the d = 0 control as bands.
    ``bpb``: {name: {"by_order": [Spread per order], "original": Spread, ...}}."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, (name, r) in enumerate(bpb.items()):
        color = f"C{i}"
        means = [s.mean for s in r["by_order"]]
        yerr = minmax_yerr(means, [s.min for s in r["by_order"]], [s.max for s in r["by_order"]])
        ax.errorbar(orders, means, yerr=yerr, fmt="o-", color=color, capsize=4,
                    label=f"{NAMES[name]}, distilled")
        for s, ls, what in ((r["original"], "--", "original"),
                            (r["order_0"], ":", "d = 0 control")):
            ax.axhline(s.mean, color=color, ls=ls, alpha=0.8, label=f"{NAMES[name]}, {what}")
            ax.axhspan(s.min, s.max, color=color, alpha=0.08)
    ax.set(xlabel="order d (every filter)", ylabel="test bits per byte",
           title="Quality after distillation (mean, min-max over seeds)", xscale="log")
    _plain_xticks(ax, orders)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return save_figure(fig, path)


def plot_throughput(tp: dict, path):
    """Per-token time and per-sequence state against the context length (log-log)."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for kind, r in tp.items():
        line, = ax1.loglog(r["context"], [1e3 * s for s in r["seconds"]], "o-",
                           label=KIND_LABELS[kind])
        if kind != "hyena_recompute":
            ax2.loglog(r["context"], r["state_bytes"], "o-", color=line.get_color(),
                       label=KIND_LABELS[kind])
    contexts = next(iter(tp.values()))["context"]
    ax1.set(xlabel="context length L", ylabel="ms per generated token",
            title="Time per token, one sequence")
    ax2.set(xlabel="context length L", ylabel="bytes of state per sequence",
            title="Memory per sequence")
    for ax in (ax1, ax2):
        _plain_xticks(ax, contexts)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return save_figure(fig, path)
