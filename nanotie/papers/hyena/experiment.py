"""Transformer vs Hyena vs MultiHyena: prose, associative recall, and distillation.

Three models of about the same size and the same skeleton (nanotie's GPT; only the
mixer in each block differs) are trained twice, over several seeds: as byte-level
language models on the prose corpus (train | val | test, ``gpt.prose_splits``), and
on the synthetic associative-recall task (three disjoint sets of episodes). Inside
each Hyena and MultiHyena LM run, every long filter is distilled (Laughing Hyena:
ERA, balanced truncation and the modal fit at several orders, against two lower
bounds) and the distilled LMs are scored on the test split. A last run times
generation per token against the context length, with the state each model keeps.

Each unit of work is a :class:`nanotie.protocol.Run` (:func:`lm_run`,
:func:`recall_run`, :func:`throughput_run`): run anywhere, cached, a rerun is instant.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ... import backend, data, protocol
from ...nn import GPT, GPTConfig, count_parameters
from ...report import (claim_section, headline, plot_bands, plot_spread, publish, pyplot,
                       save_figure, smooth, spread_table, tuning_record, tuning_table)
from ...train import TrainConfig, evaluate, train
from ..distillery.study import (MARGIN, NAMES as DISTILLED_NAMES, STUDIES, DistillStudy,
                                distill_study, measure_throughput, over_seeds,
                                plot_throughput, report_section)
from ..distillery.throughput import LABELS as KIND_LABELS
from ..gpt.experiment import prose_splits, unigram_bpb
from .model import HyenaConfig, HyenaLM
from .recall import RecallConfig, episode_stream, recall_accuracy, recall_episodes, recall_loss

__all__ = ["MODELS", "Profile", "PROFILES", "VERSION", "model_config", "build_model",
           "lm_run", "recall_run", "throughput_run", "recall_data", "energy_length", "run"]

# Bump when a change of the code changes the figures of a run (the cache key).
VERSION = 2      # 2: the filters' MLP no longer decays (HyenaLM.param_groups)

MODELS = ("transformer", "hyena", "multihyena")
LABELS = {"transformer": "Transformer", "hyena": "Hyena", "multihyena": "MultiHyena"}


@dataclass
class Profile:
    """The settings of one profile. ``model`` is the LM shape shared by the three
    models (the Transformer reads its GPTConfig fields; ``n_head`` is both its
    attention heads and MultiHyena's M); ``recall_model`` is the same for the recall
    task, whose vocabulary and length come from ``recall``. ``lr_grid``: learning
    rates tried per model and task, chosen on validation (one rate: no tuning)."""

    model: HyenaConfig
    train: TrainConfig
    recall: RecallConfig
    recall_model: HyenaConfig
    recall_train: TrainConfig
    n_recall_train: int = 20_000   # distinct training episodes
    n_recall_val: int = 1_000      # held-out episodes to choose settings on
    n_recall_test: int = 1_000     # held-out episodes to report
    seeds: int = 2                 # seeds per configuration: seed, seed + 1, ...
    lr_grid: tuple = ()            # LM learning rates to tune over (empty: train.lr)
    recall_lr_grid: tuple = ()     # the same for recall (empty: recall_train.lr)
    study: DistillStudy = field(default_factory=DistillStudy)


# The quick profile: 2 seeds x (3 LMs + 3 recall models) + one timing run, about
# 150 CPU-seconds in all, with no learning-rate grid (run --full for the sweep). The
# full one: 90 training runs whose steps alone come to about 18 CPU-hours (timed on one
# thread; not run yet), and the distillation study on top.
# The recall models use the reference code's filter defaults for synthetic tasks
# (emb_dim 3, omega 1); the LMs its language-modelling ones (33, 14).
PROFILES = {
    "quick": Profile(
        model=HyenaConfig(context=64, d_model=64, n_layer=2, n_head=8, filter_width=32),
        train=TrainConfig(steps=250, batch_size=16, lr=3e-3, warmup_steps=25,
                          eval_interval=50, eval_batches=4),
        recall=RecallConfig(n_keys=8, n_values=8, n_pairs=4, n_queries=4),
        recall_model=HyenaConfig(d_model=64, n_layer=2, n_head=8, filter_width=32,
                                 filter_emb_dim=3, filter_omega=1.0),
        recall_train=TrainConfig(steps=400, batch_size=32, lr=3e-3, warmup_steps=30,
                                 weight_decay=0.0, eval_interval=100, eval_batches=4),
        seeds=2, study=STUDIES["quick"]),
    "full": Profile(
        model=HyenaConfig(context=128, d_model=128, n_layer=4, n_head=16, filter_width=64),
        train=TrainConfig(steps=2000, batch_size=32, lr=2e-3, warmup_steps=100,
                          eval_interval=200, eval_batches=16),
        recall=RecallConfig(n_keys=16, n_values=16, n_pairs=8, n_queries=8),
        recall_model=HyenaConfig(d_model=128, n_layer=2, n_head=16, filter_width=64,
                                 filter_emb_dim=3, filter_omega=1.0),
        recall_train=TrainConfig(steps=2000, batch_size=32, lr=2e-3, warmup_steps=100,
                                 weight_decay=0.0, eval_interval=200, eval_batches=8),
        n_recall_train=50_000, seeds=5, lr_grid=(1e-3, 2e-3, 4e-3),
        recall_lr_grid=(1e-3, 2e-3, 4e-3), study=STUDIES["full"]),
}


def model_config(name: str, base: HyenaConfig):
    """The config of model ``name`` built on the shared shape ``base``."""
    if name == "transformer":
        return GPTConfig(**{f.name: getattr(base, f.name) for f in fields(GPTConfig)})
    if name not in MODELS:
        raise ValueError(f"model_config: unknown model {name!r}; expected one of {MODELS}")
    return replace(base, mixer=name)


def build_model(name: str, config):
    """A GPT for ``name == "transformer"``, a HyenaLM otherwise."""
    return GPT(config) if name == "transformer" else HyenaLM(config)


def _model(settings: dict, seed: int, device: str, base: HyenaConfig):
    backend.manual_seed(seed)
    return build_model(settings["model"], model_config(settings["model"], base)).to(device)


def energy_length(h: np.ndarray, fraction: float = 0.9) -> np.ndarray:
    """Per filter (rows of h), the number of taps that hold ``fraction`` of its energy
    sum h_t^2: a measure of how far back the filter reaches."""
    cum = np.cumsum(h ** 2, axis=-1)
    return 1 + (cum < fraction * cum[..., -1:]).sum(axis=-1)


def _filter_figures(model, n_show: int = 4) -> dict:
    """Filter counts and a few first-layer filters with their decay windows."""
    ops = model.mixers() if isinstance(model, HyenaLM) else []
    out = {"filters": sum(op.n_filters for op in ops),
           "filter_parameters": sum(count_parameters(op.filter) + op.dskip.numel()
                                    for op in ops),
           "mixer_parameters": sum(count_parameters(b.attn) for b in model.blocks)}
    if ops:
        h = ops[0].filter_array()                                            # (C, L)
        window = backend.asnumpy(ops[0].filter.window.data).T                # (C, L)
        show = np.unique(np.linspace(0, len(h) - 1, n_show).round().astype(int))
        out["median_90pct_energy_taps"] = float(np.median(np.concatenate(
            [energy_length(op.filter_array()) for op in ops])))
        out["layer1"] = {"index": show.tolist(), "h": h[show].tolist(),
                         "window": window[show].tolist()}
    return out


# ------------------------------------------------------------------------- runs


def lm_run(settings: dict, seed: int, device: str) -> dict:
    """Train one LM on the prose train split; bits per byte on val and test.

    settings: ``model`` (a name of MODELS), ``shape`` (HyenaConfig fields),
    ``train`` (TrainConfig fields), ``corpus`` (its hash), and ``distill`` (a
    DistillStudy's settings, or None): then every filter of a Hyena model is
    distilled too, and the distilled LMs are scored on the test split."""
    splits = prose_splits()
    protocol.check_corpus(splits, settings["corpus"], "lm_run")
    base = HyenaConfig(**settings["shape"])
    model = _model(settings, seed, device, base)
    history = train(model, splits.train, splits.val,
                    TrainConfig(**{**settings["train"], "seed": seed}), progress=False)
    context, tok = model.config.context, data.ByteTokenizer()
    out = {"val": {"bpb": evaluate(model, splits.val, context, 32) / math.log(2)},
           "test": {"bpb": evaluate(model, splits.test, context, 32) / math.log(2)},
           "parameters": count_parameters(model), "train_seconds": history.seconds,
           "curve": {"step": history.step, "train_loss": smooth(history.train_loss).tolist(),
                     "eval_step": history.eval_step, "val_bpb": history.val_bpb},
           "sample": tok.decode(model.generate(tok.encode("The ")[None], 80, temperature=0.8,
                                               top_k=40, seed=seed)[0]),
           "filters": _filter_figures(model)}
    if settings.get("distill") and isinstance(model, HyenaLM):
        out["distill"] = distill_study(model, splits.test, DistillStudy(**settings["distill"]))
    return out


def recall_data(config: RecallConfig, sizes, seed: int) -> dict:
    """Training, validation and test episodes of the recall task (``sizes``: how many
    of each), each from its own generator (so no held-out episode is a training one
    but by chance)."""
    out = {}
    for i, (split, n) in enumerate(zip(("train", "val", "test"), sizes)):
        out[f"x_{split}"], out[f"y_{split}"] = recall_episodes(config, n, 3 * seed + i)
    return out


def recall_run(settings: dict, seed: int, device: str) -> dict:
    """Train one model on associative recall; answer accuracy on val and test.

    settings: ``model``, ``shape``, ``train`` as for :func:`lm_run`, ``recall``
    (RecallConfig fields) and ``n`` (episodes per split: train, val, test)."""
    rc = RecallConfig(**settings["recall"])
    n_train, n_val, _ = settings["n"]
    d = recall_data(rc, settings["n"], seed)
    base = replace(HyenaConfig(**settings["shape"]), vocab_size=rc.vocab_size,
                   context=rc.seq_len)
    model = _model(settings, seed, device, base)
    cfg = TrainConfig(**{**settings["train"], "seed": seed, "block_size": rc.seq_len})
    loss_fn = recall_loss(np.concatenate([d["x_train"], d["x_val"]]),
                          np.concatenate([d["y_train"], d["y_val"]]))
    history = train(model, episode_stream(n_train, rc.seq_len),
                    episode_stream(n_val, rc.seq_len) + n_train, cfg, loss_fn=loss_fn,
                    progress=False)
    return {"val": {"accuracy": recall_accuracy(model, d["x_val"], d["y_val"])},
            "test": {"accuracy": recall_accuracy(model, d["x_test"], d["y_test"])},
            "parameters": count_parameters(model), "train_seconds": history.seconds,
            "curve": {"eval_step": history.eval_step, "val_loss": history.val_loss}}


def throughput_run(settings: dict, seed: int, device: str) -> dict:
    """Per-token generation time and per-sequence state against the context, for
    untrained models of the LM shape (``throughput.py``); BLAS on one thread."""
    return {"throughput": measure_throughput(HyenaConfig(**settings["shape"]),
                                             DistillStudy(**settings["study"]), seed)}


# ------------------------------------------------------------------------ plots


def _curves(by: dict, key: str) -> dict:
    """The validation curves ``key`` of each model over seeds, for ``plot_bands``."""
    return {LABELS[name]: (rs[0].figures["curve"]["eval_step"],
                           [r.figures["curve"][key] for r in rs])      # (seeds, evals)
            for name, rs in by.items()}


def plot_filters(figures: dict, path) -> Path:
    """A row per Hyena model: a few first-layer filters (scaled), and log |h| with
    the decay window (dashed). ``figures``: {name: lm_run()['filters']}."""
    plt = pyplot()
    fig, axes = plt.subplots(len(figures), 2, figsize=(10, 3.3 * len(figures)), squeeze=False)
    for (name, f), (ax1, ax2) in zip(figures.items(), axes):
        for c, h, w in zip(f["layer1"]["index"], f["layer1"]["h"], f["layer1"]["window"]):
            h, w = np.asarray(h), np.asarray(w)
            line, = ax1.plot(h / (np.abs(h).max() + 1e-30), label=f"filter {c}")
            ax2.semilogy(np.abs(h) + 1e-12, color=line.get_color())
            ax2.semilogy(w * np.abs(h).max(), "--", color=line.get_color(), alpha=0.6)
        ax1.set(title=f"{LABELS[name]}: layer-1 filters h_c(t) (scaled)", xlabel="t (taps)",
                ylabel="h_c(t) / max |h_c|")
        ax2.set(title=f"{LABELS[name]}: |h_c(t)| and the decay window (dashed)",
                xlabel="t (taps)", ylabel="|h_c(t)|")
        ax1.legend(fontsize=8)
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
    return save_figure(fig, path)


# -------------------------------------------------------------------------- run


def _settings(profile: Profile, corpus: str) -> dict:
    """The runs' settings, by kind (they key the run cache)."""
    return {"lm": {"shape": asdict(profile.model), "train": asdict(profile.train),
                   "corpus": corpus},
            "recall": {"shape": asdict(profile.recall_model),
                       "train": asdict(profile.recall_train), "recall": asdict(profile.recall),
                       "n": [profile.n_recall_train, profile.n_recall_val,
                             profile.n_recall_test]},
            "throughput": {"shape": asdict(profile.model), "study": asdict(profile.study)}}


def _with_lr(settings: dict, lr: float) -> dict:
    return {**settings, "train": {**settings["train"], "lr": lr}}


def run(quick: bool = True, out_dir="runs/hyena", seed: int = 0, device: str = "cpu",
        runner=None, profile: Profile | None = None) -> dict:
    """Train, distil and time; write report.md, results.json and the figures to
    ``out_dir`` and return the results (``profile`` overrides quick/full)."""
    t0 = time.perf_counter()
    out_dir, runner = protocol.open_runner(out_dir, device, runner)
    name_of_profile = "custom" if profile is not None else "quick" if quick else "full"
    profile = profile or PROFILES[name_of_profile]
    splits = prose_splits()
    base = _settings(profile, splits.hash())
    seeds = list(range(seed, seed + profile.seeds))
    lm_lrs = list(profile.lr_grid) or [profile.train.lr]
    rc_lrs = list(profile.recall_lr_grid) or [profile.recall_train.lr]
    tuned = len(lm_lrs) > 1

    def job(kind: str, settings: dict, s: int, label: str) -> protocol.Run:
        return protocol.Run(f"{__name__}:{kind}_run", settings, s, device=device,
                            version=VERSION, label=label)

    def lm(name, lr, s, distill: bool, label: str) -> protocol.Run:
        return job("lm", {**_with_lr(base["lm"], lr), "model": name,
                          "distill": asdict(profile.study) if distill else None}, s, label)

    # Phase 1: every independent run at once (the distillation rides along with the
    # Hyena LM runs when there is no grid to choose from first).
    lm_runs = [lm(n, lr, s, not tuned and n != "transformer", f"LM {n} lr {lr:g}")
               for n in MODELS for lr in lm_lrs for s in seeds]
    rc_runs = [job("recall", {**_with_lr(base["recall"], lr), "model": n}, s,
                   f"recall {n} lr {lr:g}") for n in MODELS for lr in rc_lrs for s in seeds]
    timing = job("throughput", base["throughput"], seed, "generation timing")
    results = runner.map(lm_runs + rc_runs + [timing], desc="hyena")
    lm_res, rc_res = results[:len(lm_runs)], results[len(lm_runs):-1]
    by = dict(method=lambda r: r.settings["model"], setting=lambda r: r.settings["train"]["lr"])
    lm_choice = protocol.choose(lm_res, **by, metric="bpb")
    rc_choice = protocol.choose(rc_res, **by, metric="accuracy", lower_is_better=False)
    lm_by = {n: c["runs"] for n, c in lm_choice.items()}     # {name: [RunResult per seed]}
    rc_by = {n: c["runs"] for n, c in rc_choice.items()}     # at the chosen learning rate
    if tuned:   # Phase 2: distil the Hyena models trained at their chosen rates
        phase2 = runner.map([lm(n, lm_choice[n]["best"], s, True, f"LM {n} distilled")
                             for n in DISTILLED_NAMES for s in seeds], desc="hyena distillation")
        lm_by.update({n: [r for r in phase2 if r.run.settings["model"] == n]
                      for n in DISTILLED_NAMES})
    return _report(out_dir, profile, name_of_profile, device, seeds, splits, lm_by, rc_by,
                   results[-1].figures["throughput"], lm_choice, rc_choice, tuned, t0)


# ----------------------------------------------------------------------- report


def _figures(by: dict, metric: str, short: str) -> dict:
    """Per model: the test and val ``metric`` over seeds, and the parameter count."""
    return {n: {f"{split}_{short}": protocol.spread_of(rs, metric, split)
                for split in ("test", "val")} | {"parameters": rs[0].figures["parameters"]}
            for n, rs in by.items()}


def _report(out_dir, profile, name_of_profile, device, seeds, splits, lm_by, rc_by, tp,
            lm_choice, rc_choice, tuned, t0) -> dict:
    lm, rc = _figures(lm_by, "bpb", "bpb"), _figures(rc_by, "accuracy", "acc")
    unigram = unigram_bpb(splits.train, splits.test)
    chance = 1.0 / profile.recall.n_values
    study, orders = profile.study, list(profile.study.orders)
    dist = {n: [r.figures["distill"] for r in lm_by[n]] for n in DISTILLED_NAMES}
    seen = over_seeds(dist, orders)
    bpb, v_dist, v_ctrl = seen["bpb"], seen["distilled"], seen["control"]
    top = orders[-1]

    # ----- verdicts
    v_mh_h, v_mh_t = (protocol.verdict(lm["multihyena"]["test_bpb"].values,
                                       lm[b]["test_bpb"].values, names=("MultiHyena", LABELS[b]))
                      for b in ("hyena", "transformer"))
    v_recall = protocol.verdict(rc["hyena"]["test_acc"].values,
                                rc["transformer"]["test_acc"].values, lower_is_better=False,
                                margin=0.05, names=("Hyena", "Transformer"))
    contexts = tp["distilled_hyena"]["context"]
    at = 4096 if 4096 in contexts else contexts[-1]
    i_at = contexts.index(at)
    speedup = {k: tp[k]["seconds"][i_at] / tp["distilled_hyena"]["seconds"][i_at] for k in tp}

    # ----- figures
    plots = {
        "loss": plot_bands(_curves(lm_by, "val_bpb"), out_dir / "loss.png", "step",
                           "validation bits per byte", "Byte-level LMs on pydoc prose"),
        "recall_loss": plot_bands(_curves(rc_by, "val_loss"), out_dir / "recall_loss.png",
                                  "step", "validation nats per answer", "Associative recall"),
        "spread": plot_spread({LABELS[n]: lm[n]["test_bpb"] for n in MODELS},
                              out_dir / "test_bpb.png", "Test bits per byte over seeds",
                              "bits per byte"),
        "filters": plot_filters({n: lm_by[n][0].figures["filters"] for n in DISTILLED_NAMES},
                                out_dir / "filters.png"),
        "throughput": plot_throughput(tp, out_dir / "distill_throughput.png"),
    }

    distill_md, distill_plots = report_section(dist, seen, study, profile.model.context,
                                               out_dir)
    plots.update(distill_plots)

    # ----- tables
    lm_rows = [(LABELS[n], {"test bpb": lm[n]["test_bpb"], "val bpb": lm[n]["val_bpb"],
                            "parameters": f"{lm[n]['parameters']:,}"}) for n in MODELS]
    rc_rows = [(LABELS[n], {"test accuracy": rc[n]["test_acc"], "val accuracy": rc[n]["val_acc"],
                            "parameters": f"{rc[n]['parameters']:,}"}) for n in MODELS]
    fil = {n: lm_by[n][0].figures["filters"] for n in MODELS}
    fil_rows = "\n".join(
        f"| {LABELS[n]} | {f['filters']} | {f['filter_parameters']:,} | {f['mixer_parameters']:,}"
        f" | {format(f['median_90pct_energy_taps'], '.0f') if f['filters'] else '-'} |"
        for n, f in fil.items())
    tp_rows = "\n".join(f"| {KIND_LABELS[k]} | " + " | ".join(
        f"{1e3 * s:.3f} ms, {b / 1024:,.0f} KiB" if k != "hyena_recompute" else f"{1e3 * s:.3f} ms"
        for s, b in zip(tp[k]["seconds"], tp[k]["state_bytes"])) + " |" for k in tp)
    cfg, rcfg, tc = profile.model, profile.recall, profile.train
    lm_lr = "at each model's rate chosen on val (below)" if tuned else f"lr {tc.lr:g}"
    if tuned:
        tuning = ("\n### Tuning (validation split)\n\n" + tuning_table(lm_choice, metric="bpb")
                  + "\n\n" + tuning_table(rc_choice, metric="accuracy") + "\n")
    else:
        tuning = (f"\nLearning rates are not tuned in the `{name_of_profile}` profile (no "
                  f"budget for a grid): LM {tc.lr:g}, recall {profile.recall_train.lr:g} for "
                  "every model. The full profile (`--full`) tunes each model over "
                  f"{list(PROFILES['full'].lr_grid)} on the validation split.\n")
    md = f"""
Profile `{name_of_profile}` on {device}; seeds {seeds[0]}..{seeds[-1]} ({len(seeds)} per
configuration). Every figure is reported on a TEST split that nothing was chosen on.

## Claims and verdicts

{claim_section("MultiHyena (filters tied across the channels of a head) reaches a lower "
               "pretraining loss than Hyena and than a Transformer of the same size.",
               "Laughing Hyena, abstract and Sec. 5 (MultiHyena pretrained on The Pile)",
               [("MultiHyena vs Hyena, test bits per byte", v_mh_h),
                ("MultiHyena vs Transformer, test bits per byte", v_mh_t)])}

{claim_section("Distilling the long filters into small modal SSMs keeps the model's "
               "quality while generation becomes O(1) per token.",
               "Laughing Hyena, abstract ('without any loss in quality after distillation')",
               [(f"{DISTILLED_NAMES[n]} distilled at d = {top} vs the original, test bits "
                 f"per byte, no worse by more than {MARGIN} (per-seed differences)", v_dist[n])
                for n in DISTILLED_NAMES]
               + [(f"control: {DISTILLED_NAMES[n]}'s long filters matter (original better than "
                   "d = 0, no memory of the past; per-seed differences)", v_ctrl[n])
                  for n in DISTILLED_NAMES])}

{claim_section("Hyena matches attention on associative recall.",
               "Hyena Hierarchy (Poli et al., arXiv 2302.10866), abstract (recall tasks)",
               [("Hyena vs Transformer, test accuracy, within 0.05", v_recall)])}

Generation at L = {at} (one timing run, below; the paper: 1.5x over Hyena, 10x over
Transformers at 1.3B parameters, abstract): the distilled Hyena is {speedup['hyena_cached']:.2f}x
faster per token than the cached Hyena, {speedup['transformer_kv']:.2f}x than the KV-cache
Transformer, {speedup['hyena_recompute']:.0f}x than Hyena recomputing. `python
benchmarks/bench_generation.py --out docs/results/hyena` times contexts to 16384 (its
`generation.md`).

What would change the verdicts: more seeds (a "within noise" may become either); the
full profile's larger, tuned models (the LM order may move). The smallest swept order
keeping every seed within {MARGIN} bits per byte of the original: {seen["lowest"]}; at
this size the filters' long memory is worth only the d = 0 gap, so a larger model with
longer context would test distillation harder.

## Language modelling (bytes of prose)

{cfg.n_layer} layers, d_model {cfg.d_model}, context {cfg.context}, {tc.steps} steps of
{tc.batch_size} sequences, AdamW {lm_lr} (weight decay {tc.weight_decay:g}); only the mixer
differs. Splits (bytes, each scored whole): train {len(splits.train):,}, val
{len(splits.val):,}, test {len(splits.test):,}; a unigram byte model scores {unigram:.3f} on test.

{spread_table(lm_rows, ["test bpb", "val bpb", "parameters"], seeds_of="test bpb")}
{tuning}
![test bits per byte]({plots['spread'].name})

![loss curves]({plots['loss'].name})

Sample of the first seed's models (temperature 0.8, top-k 40, prompt 'The '):

""" + "\n\n".join(f"{LABELS[n]}:\n```\n{lm_by[n][0].figures['sample']}\n```"
                  for n in MODELS) + f"""

## Associative recall

Each episode binds {rcfg.n_pairs} of {rcfg.n_keys} keys to values (of {rcfg.n_values}), then asks
for {rcfg.n_queries} of them ({rcfg.seq_len} tokens); only the answers are scored (chance
{chance:.3f}). {profile.n_recall_train:,} training episodes, {profile.recall_train.steps} steps;
{profile.n_recall_val:,} val and {profile.n_recall_test:,} test episodes, each set from its own
generator.

{spread_table(rc_rows, ["test accuracy", "val accuracy", "parameters"], seeds_of="test accuracy")}

![recall loss curves]({plots['recall_loss'].name})

## Filters

Hyena learns one long filter per channel, MultiHyena one per head, shared by the
head's {(cfg.d_model // cfg.n_head) ** 2} outer-product channels. The last column is the median
number of taps that hold 90% of a filter's energy (of {cfg.context}).

| model | long filters | filter + Dskip parameters | mixer parameters | 90% energy within |
|---|---|---|---|---|
{fil_rows}

![learned filters]({plots['filters'].name})

{distill_md}
## Generation: time and memory per token

Untrained models of the LM's shape (a step's time does not depend on the weights),
batch 1, greedy, BLAS on one thread, distilled at order {study.throughput_order}. Each cell: ms
per token (median of {study.rounds} interleaved rounds) and the state kept per sequence. Hyena
recompute re-runs the whole forward pass per token; the cached Hyena keeps the gated
inputs (O(L), like the KV cache), the distilled models their modal states (O(1)).

| model | {' | '.join(f'L = {L}' for L in contexts)} |
|---|{'---|' * len(contexts)}
{tp_rows}

![throughput]({plots['throughput'].name})

## Differences from the paper

- Byte-level miniatures ({cfg.n_layer} layers, d_model {cfg.d_model}, context {cfg.context}) on
  Python's docs, not 1.3B models on The Pile; CPU timing in NumPy, not GPU kernels.
- As in the reference, the filters' MLP gets no weight decay (``HyenaLM.param_groups``);
  unlike it, the filters share the model's learning rate and their positional features
  are a fixed buffer (the reference trains them at a tiny learning rate).
- Distillation orders are swept per model, not chosen per layer from the logits'
  error; the distilled models are scored on part of the test split.
"""
    claim_row = headline("A Hyena LM distilled into small modal SSMs keeps its quality and "
                    "generates in O(1) per token.", "Laughing Hyena, abstract",
                    v_dist["hyena"], f"Hyena d={top} {bpb['hyena']['by_order'][-1]} vs "
                    f"original {bpb['hyena']['original']} test bpb; "
                    f"{speedup['hyena_cached']:.1f}x cached Hyena @{at}")
    summary = {"test bpb T/H/MH": " / ".join(f"{lm[n]['test_bpb'].mean:.3f}" for n in MODELS),
               "recall T/H/MH": " / ".join(f"{rc[n]['test_acc'].mean:.2f}" for n in MODELS),
               f"distilled d={top}": f"{bpb['hyena']['by_order'][-1].mean:.3f} vs "
                                     f"{bpb['hyena']['original'].mean:.3f}",
               f"speed-up @{at}": f"{speedup['hyena_cached']:.1f}x cached H, "
                                  f"{speedup['transformer_kv']:.1f}x KV"}
    results = {
        "profile": name_of_profile, "device": device, "seeds": seeds,
        "splits": splits.sizes, "unigram_test_bpb": unigram, "recall_chance": chance,
        "lm": lm, "recall": rc,
        "filters": fil,
        "tuning": {"lm": tuning_record(lm_choice), "recall": tuning_record(rc_choice)},
        "distill": {"orders": orders, "per_seed": dist, "checks": seen["checks"],
                    "bpb": bpb},
        "throughput": tp, "throughput_context": at,
        "speedup": speedup,
        "verdicts": {"multihyena_vs_hyena": str(v_mh_h), "multihyena_vs_transformer": str(v_mh_t),
                     "distilled": {n: str(v) for n, v in v_dist.items()},
                     "control": {n: str(v) for n, v in v_ctrl.items()},
                     "recall": str(v_recall)},
        "figures": {k: p.name for k, p in plots.items()},
        "summary": summary, "headline": claim_row, "seconds": time.perf_counter() - t0,
    }
    return publish(out_dir, "Hyena, MultiHyena and their distillation (Laughing Hyena)",
                   results, md)


if __name__ == "__main__":
    print(run()["summary"])
