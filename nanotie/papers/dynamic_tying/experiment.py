"""Vanilla GPT against dynamic layer tying and the two controls of :mod:`.controls`, at
the same number of language-model steps, over several seeds (``python -m nanotie
reproduce dynamic-tying``).

The paper's claims are ``CLAIM_PPL`` and ``CLAIM_MEMORY`` below. Every method trains a
byte-level GPT on Python's own prose with the same batches, schedule and optimizer; the
agent's reward is minus the perplexity on one batch held out from the end of the train
split. A synthetic reward with a known best policy checks whether the agent can learn
at all in the run's number of episodes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ... import backend, protocol
from ...nn import GPTConfig, count_parameters
from ...nn.optim import AdamW, param_groups
from ...report import (claim_section, headline, minmax_yerr, plot_bands, plot_spread, publish,
                       pyplot, save_figure, spread_table, tuning_record, tuning_table)
from ...train import TrainConfig, evaluate
from ..gpt.experiment import prose_splits, unigram_bpb
from . import DIFFERENCES, DynamicTyingConfig
from .agent import TyingAgent, decay_to_floor
from .controls import (FixedSchedule, RandomSchedule, SyntheticReward, chance_train_share,
                       greedy_train_share)
from .loop import episode_count, held_out_batch, train_dynamic
from .tying import (DynamicTiedGPT, independent_layers, root_of, step_peak_bytes,
                    training_memory_bytes)

VERSION = 2          # bump when a change of code changes a run's figures

# A tiny byte-level model's per-byte perplexity stays above the authors' clip of 10 for
# much of the run, so most rewards would be -10 and the agent could learn nothing; a
# clip of 100 keeps the reward -perplexity informative at this scale.
REWARD_CLIP = 100.0

CLAIM_PPL = ("Dynamic layer tying modestly outperforms the baseline transformer in "
             "perplexity while training drastically fewer parameters.")
CLAIM_MEMORY = ("The memory consumption during training is up to one order of magnitude "
                "less than the conventional training method's.")
WHERE = "Abstract"

METHODS = ("vanilla", "dynamic", "random", "fixed")
SYNTHETIC_SEEDS = 10     # agents trained on the synthetic reward, per reward scale
LABELS = {"vanilla": "vanilla", "random": "random schedule", "fixed": "fixed pattern"}

# steps must be a multiple of (n_layer - 1) * lm_steps_per_decision (one episode).
# ``lrs``: the learning-rate grid judged on validation (one point: no tuning phase).
# ``floor_at``: the share of the episodes after which epsilon has reached its floor;
# ``fixed_switch``: the share of the episodes the fixed pattern trains every layer.
PROFILES = {
    # About 115 CPU-seconds: 4 methods x 3 seeds x 400 LM steps (20 episodes of 5
    # decisions). The rates (the controls take the dynamic run's) were chosen on
    # validation by the grid in QUICK_GRID below.
    "quick": dict(model=GPTConfig(vocab_size=256, context=32, d_model=32, n_layer=6,
                                  n_head=4),
                  train=TrainConfig(steps=400, batch_size=16, lr=3e-3, warmup_steps=40,
                                    eval_interval=80, eval_batches=8),
                  tying=DynamicTyingConfig(mode="official", lm_steps_per_decision=4,
                                          reward_clip=REWARD_CLIP, reward_norm="ema"),
                  modes=("official",), seeds=3, lrs=(3e-3,), grid_seeds=2,
                  rates={"vanilla": 1e-2, "dynamic": 3e-3},
                  floor_at=2 / 3, fixed_switch=1 / 3),
    # 8 layers, 20 episodes of 7 decisions, 5 seeds, both modes (shared: 3 seeds), and
    # a learning-rate grid for vanilla and dynamic on 2 seeds: 31 runs (9 vanilla at
    # 56 CPU-seconds, 22 with tying at 48, measured one thread each), about 1,560
    # CPU-seconds: 13 minutes on 2 idle cores with 2 workers (11 minutes since the prose
    # corpus keeps each paragraph once).
    "full": dict(model=GPTConfig(vocab_size=256, context=64, d_model=64, n_layer=8,
                                 n_head=4),
                 train=TrainConfig(steps=560, batch_size=16, lr=3e-3, warmup_steps=50,
                                   eval_interval=112, eval_batches=16),
                 tying=DynamicTyingConfig(mode="official", lm_steps_per_decision=4,
                                          reward_clip=REWARD_CLIP, reward_norm="ema"),
                 modes=("official", "shared"), seeds=5, shared_seeds=3,
                 lrs=(1e-3, 3e-3, 1e-2), grid_seeds=2, floor_at=2 / 3, fixed_switch=1 / 3),
}


# The grid that chose the quick profile's rates: validation perplexity per byte, mean
# over seeds 0 and 1 (VERSION 2, the prose corpus with each paragraph once), measured
# with the command below.
QUICK_GRID = {
    "command": 'run(quick=True, profile={**PROFILES["quick"], '
               '"lrs": (1e-3, 3e-3, 1e-2, 3e-2), "rates": {}})',
    "seeds": [0, 1],
    "ppl": {"vanilla": {1e-3: 14.184, 3e-3: 11.650, 1e-2: 10.506, 3e-2: 14.273},
            "dynamic": {1e-3: 14.715, 3e-3: 13.079, 1e-2: 14.968, 3e-2: 18.586}},
}
PROFILES["quick"]["earlier_grid"] = QUICK_GRID


def _label(method: str, mode: str) -> str:
    return f"dynamic ({mode})" if method == "dynamic" else LABELS[method]


# ---------------------------------------------------------------------- one run


def _param_memory(model, train_cfg) -> dict:
    """Parameter-side training memory of ``model`` as it stands: an optimizer synced to
    it, stepped once on zero gradients so its state exists: weights + grads + Adam."""
    opt = AdamW(param_groups(model, train_cfg.weight_decay), lr=0.0, weight_decay=0.0)
    for p in opt.parameters():
        p.grad = backend.xp_of(p.data).zeros_like(p.data)
    opt.step()
    opt.zero_grad()
    return training_memory_bytes(model, opt)


def _policy(method: str, settings: dict, tying_cfg, n_layer: int, seed: int):
    """The decision maker of ``method`` and the state the model starts from."""
    if method == "vanilla":
        return None, tuple(range(n_layer))
    if method == "dynamic":
        return TyingAgent(n_layer, tying_cfg, seed=seed), tying_cfg.initial(n_layer)
    if method == "random":
        return RandomSchedule(seed), tying_cfg.initial(n_layer)
    every = tuple(range(n_layer))                    # "fixed"
    return FixedSchedule(every, (0,) * n_layer, settings["fixed_switch"]), every


def dynamic_tying_run(settings: dict, seed: int, device: str) -> dict:
    """One method, one seed: train, then measure on the val and test splits.

    ``settings``: method, model, train and tying configs (as dicts), the fixed
    pattern's switch episode, the size of the held-out reward piece and the corpus
    hash. Returns ``{"val": {...}, "test": {...}, ...}`` with curves and diagnostics."""
    splits = prose_splits()
    protocol.check_corpus(splits, settings["corpus"], "dynamic_tying_run")
    model_cfg = GPTConfig(**settings["model"])
    train_cfg = TrainConfig(**{**settings["train"], "seed": seed})
    tying_cfg = DynamicTyingConfig(**settings["tying"])
    L, T = model_cfg.n_layer, model_cfg.context
    # The reward's batch is held out: the last ids of the train split, never trained on.
    n_reward = settings["reward_ids"]
    lm_ids, reward_ids = splits.train[:-n_reward], splits.train[-n_reward:]
    method = settings["method"]
    # Seed before the agent too: its Q-network's initial weights come from nanotie's
    # random stream, which must not depend on what this process ran before.
    backend.manual_seed(seed)
    policy, state = _policy(method, settings, tying_cfg, L, seed)

    backend.manual_seed(seed)                   # the same initial model for every method
    model = DynamicTiedGPT(model_cfg, mode=tying_cfg.mode, state=state).to(device)
    run = train_dynamic(model, lm_ids, splits.val, train_cfg, tying_cfg, agent=policy,
                        progress=False, desc=method, reward_data=reward_ids)
    h = run.history
    val = evaluate(model, splits.val, T, 32)                  # all of each split
    test = evaluate(model, splits.test, T, 32)
    itemsize = next(iter(model.parameters())).data.itemsize
    # weights (one array per trainable parameter) + gradients + Adam, at every step
    param_side = [2 * itemsize * n + b for n, b in zip(run.trainable, run.optimizer_bytes)]
    figures = {
        "val": {"ppl": math.exp(val), "bpb": val / math.log(2),
                # over the run's evaluations (the first eval_batches of val), as the
                # authors' logs report it, beside the last of them
                "ppl_best_in_run": math.exp(min(h.val_loss)),
                "ppl_last_in_run": math.exp(h.val_loss[-1])},
        "test": {"ppl": math.exp(test), "bpb": test / math.log(2)},
        "method": method, "mode": tying_cfg.mode,
        "trainable_final": count_parameters(model),
        "trainable_mean": float(np.mean(run.trainable)),
        "optimizer_bytes_mean": float(np.mean(run.optimizer_bytes)),
        "param_memory_mean": float(np.mean(param_side)),
        "param_memory_final": _param_memory(model, train_cfg),
        "final_state": list(model.tying_state),
        "final_roots": [root_of(model.tying_state, i) for i in range(L)],
        "independent_per_episode": [independent_layers(s) for s in run.episode_state],
        "epsilon_per_episode": run.episode_epsilon,
        "state_per_episode": run.episode_state,
        "val_bpb_curve": {"step": h.eval_step, "bpb": h.val_bpb},
        "trainable_curve": run.trainable,
        "rewards": [d["reward"] for d in run.decisions],
        "actions": [[d["layer"], d["action"]] for d in run.decisions],
        "rewards_clipped_fraction": float(np.mean(
            [abs(d["reward"]) > tying_cfg.reward_clip for d in run.decisions]))
        if run.decisions else None,
        "train_seconds": h.seconds,
    }
    if isinstance(policy, TyingAgent):
        figures["greedy_train_share"] = greedy_train_share(policy, L)
    # The whole step's peak (host memory only), on the reward batch's shape.
    figures["step_peak"] = None
    if device == "cpu":
        x, y = held_out_batch(reward_ids, T, train_cfg.batch_size)
        figures["step_peak"] = step_peak_bytes(model, x, y, train_cfg.weight_decay)
    return figures


# --------------------------------------------------------------------- the sweep


def _settings(method, mode, lr, profile, corpus, episodes) -> dict:
    model_cfg, train_cfg = profile["model"], profile["train"]
    tying = replace(profile["tying"], mode=mode,
                    epsilon_decay=decay_to_floor(max(1, round(profile["floor_at"] * episodes)),
                                                 profile["tying"].epsilon_start,
                                                 profile["tying"].epsilon_min))
    train = {k: v for k, v in asdict(replace(train_cfg, lr=lr)).items() if k != "seed"}
    return {"method": method, "model": asdict(model_cfg), "train": train,
            "tying": asdict(tying), "fixed_switch": round(profile["fixed_switch"] * episodes),
            "reward_ids": train_cfg.batch_size * model_cfg.context + 1, "corpus": corpus}


def synthetic_check(tying_cfg, n_layer: int, episodes: int, seeds) -> dict:
    """Can the agent learn a reward whose best policy is known (every trained layer
    is worth 1, noise 1) in the run's number of episodes? The share of layers whose
    greedy action at the all-train state is "train", per seed, for the authors' raw
    reward and the standardised one, against chance."""
    out = {"chance": chance_train_share(n_layer), "episodes": episodes}
    for norm in ("none", "ema"):
        shares = []
        for s in seeds:
            backend.manual_seed(s)
            agent = TyingAgent(n_layer, replace(tying_cfg, reward_norm=norm), seed=s)
            SyntheticReward(n_layer, seed=s + 1000).train(agent, episodes)
            shares.append(greedy_train_share(agent, n_layer))
        out[norm] = shares
    return out


def run(quick: bool = True, out_dir="runs/dynamic-tying", seed: int = 0,
        device: str = "cpu", profile: dict | None = None, runner=None) -> dict:
    """Every method over seeds, the plots, report.md and results.json. ``profile`` (a
    dict shaped like the entries of PROFILES) replaces the quick/full one, e.g. in a
    notebook. ``runner``: a :class:`nanotie.protocol.Runner` (None: this process, with
    the run cache next to ``out_dir``)."""
    out_dir, runner = protocol.open_runner(out_dir, device, runner)
    t0 = time.perf_counter()
    name = "quick" if quick else "full"
    profile = profile if profile is not None else PROFILES[name]
    model_cfg, train_cfg = profile["model"], profile["train"]
    L = model_cfg.n_layer
    episodes = episode_count(train_cfg.steps, L, profile["tying"].lm_steps_per_decision)
    splits = prose_splits()
    corpus = splits.hash()
    seeds = list(range(seed, seed + profile["seeds"]))
    main_mode = profile["modes"][0]
    lrs = tuple(profile["lrs"])

    def runs(method, mode, lr, run_seeds):
        return [protocol.Run("nanotie.papers.dynamic_tying.experiment:dynamic_tying_run",
                             _settings(method, mode, lr, profile, corpus, episodes), s,
                             device=device, version=VERSION,
                             label=f"{_label(method, mode)} lr {lr:g}") for s in run_seeds]

    # Phase 1, when there is a grid: vanilla and dynamic at every rate on the first
    # seeds, judged on val. Without one, everything goes in one sweep.
    rates = profile.get("rates", {})          # rates chosen earlier, per method
    lr_of = {m: rates.get(m, lrs[0]) for m in ("vanilla", "dynamic")}
    if len(lrs) > 1:
        grid = [r for m in lr_of for lr in lrs
                for r in runs(m, main_mode, lr, seeds[:profile["grid_seeds"]])]
        choice = _choose(runner.map(grid, desc="dynamic-tying grid"))
        lr_of = {m: choice[m]["best"] for m in lr_of}
    lr_of["random"] = lr_of["fixed"] = lr_of["dynamic"]   # the controls: dynamic's rate

    # Phase 2: every method at its rate on every seed (the grid's runs come from the cache).
    final_runs = [r for m in METHODS for r in runs(m, main_mode, lr_of[m], seeds)]
    for mode in profile["modes"][1:]:
        n = profile.get("shared_seeds", len(seeds))
        final_runs += runs("dynamic", mode, lr_of["dynamic"], seeds[:n])
    results_list = runner.map(final_runs, desc="dynamic-tying")
    if len(lrs) == 1:
        choice = _choose([r for r in results_list
                          if r.run.settings["method"] in ("vanilla", "dynamic")
                          and r.run.settings["tying"]["mode"] == main_mode])

    groups: dict = {}
    for r in results_list:
        label = _label(r.run.settings["method"], r.run.settings["tying"]["mode"])
        groups.setdefault(label, []).append(r)
    dyn_label = _label("dynamic", main_mode)
    dyn_tying = DynamicTyingConfig(**groups[dyn_label][0].run.settings["tying"])
    # cheap (no language model): more seeds than the runs, so chance shows as chance
    synthetic = synthetic_check(dyn_tying, L, episodes, range(seed, seed + SYNTHETIC_SEEDS))
    results = _summarise(groups, choice, synthetic, profile, name, episodes, seeds, splits,
                         device, model_cfg, train_cfg, dyn_label)
    results["seconds"] = time.perf_counter() - t0
    table = results["table"]
    curves = {f"{label} (n={len(rs)})": (rs[0].figures["val_bpb_curve"]["step"],
                                         [r.figures["val_bpb_curve"]["bpb"] for r in rs])
              for label, rs in groups.items()}                 # bpb: (seeds, evals)
    plots = [plot_spread({label: row["test_ppl"] for label, row in table.items()},
                         out_dir / "test_ppl.png", "test perplexity per byte (lower is better)",
                         "perplexity per byte"),
             plot_bands(curves, out_dir / "val_curves.png", "LM step", "val bits per byte",
                        "validation during training (band: min-max over seeds)",
                        figsize=(6.5, 3.8), legend_size=8),
             _plot_independent(groups, L, out_dir / "independent_layers.png", dyn_label),
             _plot_memory(table, out_dir / "memory.png"),
             _plot_pattern(groups[dyn_label][0].figures, L, out_dir / "tying_pattern.png",
                           dyn_label)]
    return publish(out_dir, "Dynamic layer tying (Hay & Wolf, 2024)", results,
                   _report_body(results, groups, plots))


def _choose(results) -> dict:
    return protocol.choose(results, method=lambda r: r.settings["method"],
                           setting=lambda r: r.settings["train"]["lr"], metric="ppl")


# ---------------------------------------------------------------- figures, verdicts


# The table's columns: a figure of one run (its spread over seeds per method) and its
# heading in the report (None: in results.json only).
COLUMNS = {
    "test_ppl": ("test ppl", lambda f: f["test"]["ppl"]),
    "test_bpb": ("test bits/byte", lambda f: f["test"]["bpb"]),
    "val_ppl": (None, lambda f: f["val"]["ppl"]),
    "val_ppl_best_in_run": ("val ppl, best in run", lambda f: f["val"]["ppl_best_in_run"]),
    "val_ppl_last_in_run": ("val ppl, last in run", lambda f: f["val"]["ppl_last_in_run"]),
    "trainable_final": ("trainable (end)", lambda f: f["trainable_final"]),
    "trainable_mean": (None, lambda f: f["trainable_mean"]),
    "param_mb_final": ("params+grads+Adam MB (end)",
                       lambda f: f["param_memory_final"]["total"] / 1e6),
    "param_mb_mean": ("params+grads+Adam MB (mean)", lambda f: f["param_memory_mean"] / 1e6),
    "step_peak_mb": ("whole step MB (peak)",                         # CPU runs only
                     lambda f: f["step_peak"]["total"] / 1e6),
}


def _summarise(groups, choice, synthetic, profile, name, episodes, seeds, splits,
               device, model_cfg, train_cfg, dyn_label) -> dict:
    t = {label: {key: protocol.spread([get(r.figures) for r in rs])
                 for key, (_, get) in COLUMNS.items()
                 if key != "step_peak_mb" or all(r.figures["step_peak"] for r in rs)}
         for label, rs in groups.items()}
    verdicts = {f"dynamic vs {other}": protocol.verdict(t[dyn_label]["test_ppl"].values,
                                                       t[other]["test_ppl"].values,
                                                       names=(dyn_label, other))
                for other in ("vanilla", "random schedule", "fixed pattern")}
    # Memory saved: the per-seed ratio vanilla / dynamic, judged against "up to 10x less"
    # by the ratios' own spread, not that of memory figures scaled by ten.
    totals = {"param_final": ("parameter-side", lambda f: f["param_memory_final"]["total"])}
    if "step_peak_mb" in t[dyn_label]:                  # the step's peak: CPU runs only
        totals["step_peak"] = ("whole-step", lambda f: f["step_peak"]["total"])
    pairs = list(zip(groups["vanilla"], groups[dyn_label]))
    ratios = {}
    for key, (what, total) in totals.items():
        ratios[key] = protocol.spread([total(v.figures) / total(d.figures) for v, d in pairs])
        verdicts[f"10x less {what} memory"] = protocol.verdict(
            ratios[key].values, [10.0] * ratios[key].n, lower_is_better=False,
            names=(f"vanilla / {dyn_label}, {what} memory", "the claimed ratio"))
    # The most a state can save: every layer a copy of layer 0.
    probe = DynamicTiedGPT(model_cfg, state=(0,) * model_cfg.n_layer)
    bound = (count_parameters(DynamicTiedGPT(model_cfg, state=tuple(range(model_cfg.n_layer))))
             / count_parameters(probe))
    results = {
        "profile": name if profile is PROFILES.get(name) else "custom",
        "model": asdict(model_cfg), "train": asdict(train_cfg),
        "tying": groups[dyn_label][0].run.settings["tying"],
        "episodes": episodes, "seeds": seeds, "splits": splits.sizes,
        "reward_ids": groups[dyn_label][0].run.settings["reward_ids"],
        "fixed_switch": groups[dyn_label][0].run.settings["fixed_switch"],
        "unigram_bpb": unigram_bpb(splits.train, splits.test),
        "device": device, "version": VERSION,
        "tuning": tuning_record(choice),
        "earlier_grid": profile.get("earlier_grid") if len(profile["lrs"]) == 1 else None,
        "learning_rates": {label: rs[0].run.settings["train"]["lr"]
                           for label, rs in groups.items()},
        "table": t,
        "verdicts": verdicts,
        "memory_ratio": ratios,
        "param_ratio_bound": bound,
        "synthetic": synthetic,
        "runs": {label: [{"seed": r.run.seed, "seconds": r.seconds, "cached": r.cached,
                          **r.figures} for r in rs] for label, rs in groups.items()},
    }
    step = ratios.get("step_peak")
    results["summary"] = {
        "test ppl (van/dyn/rand/fixed)": " / ".join(
            f"{t[k]['test_ppl'].mean:.2f}" for k in ("vanilla", dyn_label, "random schedule",
                                                      "fixed pattern")),
        "dyn vs random": verdicts["dynamic vs random schedule"].outcome,
        "memory saved (params/step)": f"{ratios['param_final'].mean:.2f}x / "
                                      + (f"{step.mean:.2f}x" if step else "n/a"),
    }
    results["headline"] = headline(
        CLAIM_PPL, WHERE, verdicts["dynamic vs vanilla"],
        f"dynamic {t[dyn_label]['test_ppl'].format(2)} vs vanilla "
        f"{t['vanilla']['test_ppl'].format(2)} test ppl/byte; random schedule "
        f"{t['random schedule']['test_ppl'].format(2)}")
    return results


def _earlier_grid(grid, runs: dict) -> str:
    """The grid that chose a profile's fixed rates, as the code records it (means only).
    The chosen rate's point is this run's figures at the grid's seeds (``runs``: method ->
    RunResults), so that the other rates are judged against its seed range."""
    if not grid:
        return ""
    choice = {}
    for method, ppl in grid["ppl"].items():
        best, points = min(ppl, key=ppl.get), {lr: protocol.spread([v]) for lr, v in ppl.items()}
        ran = [r.figures["val"]["ppl"] for r in runs.get(method, ())
               if r.run.seed in grid["seeds"] and r.run.settings["train"]["lr"] == best]
        if ran:
            points[best] = protocol.spread(ran)
        choice[method] = {"best": best, "grid": points}
    return (f"These rates were chosen by an earlier grid on seeds "
            f"{', '.join(map(str, grid['seeds']))}, `{grid['command']}` (it kept means; "
            "the chosen rates' figures are this run's at those seeds):\n\n"
            + tuning_table(choice, metric="ppl") + "\n")


def _bound_note(n_layer: int, bound: float) -> str:
    """What the most any state saves (every layer a copy of layer 0) allows of "10x"."""
    return (f"With {n_layer} layers no state saves more than {bound:.2f}x on the parameter "
            "side (every layer a copy of layer 0, the embeddings still train), so \"up to "
            f"10x\" {'cannot hold' if bound < 10 else 'is within reach'} at this depth; and a "
            "copy still runs, so its activations, most of the step's memory at this width, "
            "stay.")


def _policy_note(v) -> str:
    if v.outcome == protocol.HOLDS:
        return ("The agent's schedule beats a random one by more than the seed spread: "
                "at this scale its choices, not only tying itself, shape the result.")
    return ("The agent's schedule does not beat a random one by more than the seed spread: "
            "at this scale the experiment measures what tying costs, not what the "
            "learned policy buys.")


def _report_body(results, groups, plots) -> str:
    cfg, tcfg, tying = results["model"], results["train"], results["tying"]
    t, verdicts = results["table"], results["verdicts"]
    dyn_label = next(k for k in t if k.startswith("dynamic"))
    cols = {key: name for key, (name, _) in COLUMNS.items() if name}
    whole = "{0.mean:,.0f} ± {0.std:,.0f}"                      # parameters: whole numbers
    rows = [(label, {**{name: row.get(key, "n/a") for key, name in cols.items()},
                     "trainable (end)": whole.format(row["trainable_final"])})
            for label, row in t.items()]
    table = spread_table(rows, list(cols.values()), digits=3, seeds_of="test ppl")
    syn = results["synthetic"]
    other_modes = "".join(                     # the full profile's second mode
        f"\n- **{k}**: the same agent with the other tying mode (\"official\": a root's "
        "gradient is its own layer's alone; \"shared\": one Parameter, its gradient summed "
        "over the layers that use it); "
        f"seeds {', '.join(str(r.run.seed) for r in groups[k])}."
        for k in t if k.startswith("dynamic") and k != dyn_label)

    def shares(norm):      # judged against chance by the verdicts' rule (gap vs range)
        each = ", ".join(f"{v:.1f}" for v in syn[norm])
        v = protocol.verdict(syn[norm], [syn["chance"]], lower_is_better=False)
        return (f"{protocol.spread(syn[norm]).format(2)} (each: {each}; above chance: "
                f"**{v.outcome}**, gap {v.gap:+.2f}, range {v.noise:.2f})")

    dyn_runs = groups[dyn_label]
    share = protocol.spread([r.figures["greedy_train_share"] for r in dyn_runs])
    pattern = ", ".join(f"{i}<-{j}" if j != i else f"{i}:train"
                        for i, j in enumerate(dyn_runs[0].figures["final_state"]))
    clipped = np.mean([r.figures["rewards_clipped_fraction"] for r in dyn_runs])
    figs = "\n\n".join(f"![{p.stem}]({p.name})" for p in plots)
    ppl_section = claim_section(CLAIM_PPL, WHERE, [
        ("The claim: dynamic against vanilla, test perplexity", verdicts["dynamic vs vanilla"]),
        ("The control (is it the policy?): dynamic against the random schedule",
         verdicts["dynamic vs random schedule"]),
        ("Dynamic against the fixed pattern", verdicts["dynamic vs fixed pattern"]),
    ], note=_policy_note(verdicts["dynamic vs random schedule"]))
    mem_verdicts = [("Parameter side (weights + gradients + Adam, the paper's accounting)",
                     verdicts["10x less parameter-side memory"])]
    if "10x less whole-step memory" in verdicts:
        mem_verdicts.append(("The whole step's peak (tracemalloc: activations included)",
                             verdicts["10x less whole-step memory"]))
    same = all(r.figures["val"]["ppl_best_in_run"] == r.figures["val"]["ppl_last_in_run"]
               for rs in groups.values() for r in rs)
    same_note = ("here they are equal in every run: validation was still falling at the "
                 "end. " if same else "")
    return f"""
## Set-up

A byte-level GPT ({cfg['n_layer']} layers, d_model {cfg['d_model']}, {cfg['n_head']} heads,
context {cfg['context']}) trained for {tcfg['steps']} language-model steps (batch
{tcfg['batch_size']}, AdamW, warmup + cosine) on Python's own help text, cut into
train | val | test ({results['splits']['train']:,} / {results['splits']['val']:,} /
{results['splits']['test']:,} bytes); the last {results['reward_ids']:,} bytes of train are
held out as the agent's reward batch and never trained on. Settings are chosen on val,
figures are on test; {len(results['seeds'])} seeds ({', '.join(map(str, results['seeds']))})
per method, the same batches for every method at a given seed, on {results['device']}.

- **vanilla**: every layer trains.
- **{dyn_label}**: starts with every layer a copy of layer 0; {results['episodes']} episodes of
  {cfg['n_layer'] - 1} decisions, each followed by {tying['lm_steps_per_decision']} LM steps
  and a reward (minus the perplexity on the held-out batch, clipped to
  [-{tying['reward_clip']:g}, {tying['reward_clip']:g}], standardised by its running mean
  and std: `reward_norm="{tying['reward_norm']}"`); epsilon decays by
  {tying['epsilon_decay']:.3f} per episode and reaches its floor {tying['epsilon_min']:g}
  within the run; gamma {tying['gamma']:g}.
- **random schedule** (control): the same decisions and rewards, each action uniform
  over the layer's choices (what the agent's exploration draws from), no learning.
- **fixed pattern** (control): every layer trains for the first {results['fixed_switch']}
  episodes, then every layer is a copy of layer 0.{other_modes}

## Results

{table}

A unigram byte model scores {results['unigram_bpb']:.3f} bits per byte on test.
"best in run" and "last in run" are the validation perplexity at the run's evaluations
(the first {tcfg['eval_batches']} batches of val; the authors' logs report the best);
{same_note}Test perplexity is per byte, on the whole split, at the end.

Learning rates (the controls use the dynamic run's rate):

{tuning_table(results["tuning"], metric="ppl")}

{_earlier_grid(results.get("earlier_grid"), {"vanilla": groups["vanilla"], "dynamic": dyn_runs})}
{ppl_section}

Is the agent learning? On a synthetic reward where every trained layer lowers the
perplexity by 1 (noise 1), so that "train" is always right, the share of layers whose
greedy action at the all-train state is "train" after {syn['episodes']} episodes (chance
{syn['chance']:.2f}; {len(syn['ema'])} agents each) is {shares('none')} with the
authors' raw reward, {shares('ema')} with the standardised one. In the language model
runs, the final agents' share is {share.format(2)}. Final pattern of {dyn_label}, seed
{dyn_runs[0].run.seed}: {pattern}. {clipped:.0%} of its rewards were beyond the clip.

More seeds, longer runs (more episodes for the agent to learn in) or the paper's scale
(where patterns differ by more than the noise of one held-out batch) could change the
verdicts.

## Memory

{claim_section(CLAIM_MEMORY, WHERE, mem_verdicts)}

{_bound_note(cfg['n_layer'], results['param_ratio_bound'])}

## Plots

{figs}

## Differences from the paper

{DIFFERENCES}
"""


# ------------------------------------------------------------------------- plots


def _plot_independent(groups, n_layer, path, dyn_label) -> Path:
    fig, ax = pyplot().subplots(figsize=(6.5, 3.6))
    for label, rs in groups.items():
        ind = np.array([r.figures["independent_per_episode"] for r in rs], dtype=float)
        if ind.size == 0:                             # vanilla: no episodes
            continue
        ep = np.arange(1, ind.shape[1] + 1)
        ax.errorbar(ep, ind.mean(0), yerr=ind.std(0, ddof=1) if len(rs) > 1 else None,
                    capsize=2, label=label, drawstyle="steps-mid")
    ax.axhline(n_layer, color="gray", ls="--", lw=1, label="vanilla (all layers train)")
    ax.set(xlabel="episode", ylabel="independent layers at episode end",
           ylim=(0, n_layer + 0.5), title="Layers that train (mean ± std over seeds)")
    eps = groups[dyn_label][0].figures["epsilon_per_episode"]    # the same in each mode
    ax2 = ax.twinx()
    ax2.plot(np.arange(1, len(eps) + 1), eps, color="k", alpha=0.35, lw=1)
    ax2.set(ylabel="agent's epsilon (grey)", ylim=(0, 1.05))
    ax.legend(loc="lower left", fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _plot_memory(table, path) -> Path:
    """Parameter-side memory at the end and the whole step's peak, with spread."""
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.6))
    labels = list(table)
    for ax, key, title in ((axes[0], "param_mb_final", "weights + gradients + Adam (end)"),
                           (axes[1], "step_peak_mb", "whole step's peak (tracemalloc)")):
        for i, sp in enumerate(table[label].get(key) for label in labels):
            if sp is None:                                  # no peak measured off the CPU
                continue
            ax.bar(i, sp.mean, color=f"C{i}", alpha=0.6)
            ax.errorbar(i, sp.mean, yerr=minmax_yerr(sp.mean, sp.min, sp.max), color="k",
                        capsize=4)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set(ylabel="MB", title=title)
        ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def _plot_pattern(r, n_layer, path, label) -> Path:
    """Left: the final pattern, row i = layer, a dot at the column of the layer whose
    weights it uses (the diagonal: trains), a ring at the agent's literal choice s_i
    when that is a copy of a copy. Right: s_i at the end of every episode."""
    fig, (a1, a2) = pyplot().subplots(1, 2, figsize=(10, 3.8),
                                      gridspec_kw={"width_ratios": [1, 2]})
    a1.imshow(np.eye(n_layer)[r["final_roots"]], cmap="Blues", vmin=0, vmax=1.3)   # row i: r(i)
    for i, (s, root) in enumerate(zip(r["final_state"], r["final_roots"])):
        a1.text(root, i, "train" if root == i else "copy", ha="center", va="center",
                fontsize=7)
        if s != root:
            a1.scatter([s], [i], s=160, facecolors="none", edgecolors="k")
    a1.set(xticks=range(n_layer), yticks=range(n_layer), xlabel="weights of layer j",
           ylabel="layer i", title=f"final pattern, {label}")
    states = np.asarray(r["state_per_episode"]).T                    # (L, episodes)
    im = a2.imshow(states, aspect="auto", cmap="viridis", vmin=0, vmax=n_layer - 1,
                   interpolation="nearest")
    for i, e in zip(*np.nonzero(states == np.arange(n_layer)[:, None])):     # s_i = i
        a2.text(e, i, "T", ha="center", va="center", fontsize=6, color="w")
    a2.set(xlabel="episode", ylabel="layer i", yticks=range(n_layer),
           title="s_i at each episode's end (T: trains)")
    fig.colorbar(im, ax=a2, label="s_i (layer copied)")
    return save_figure(fig, path)


if __name__ == "__main__":
    print(json.dumps(run()["summary"], indent=2))
