"""Vanilla GPT against dynamic layer tying, at the same number of language-model steps.

Both runs train a byte-level GPT on Python's own prose with the same batches, schedule
and optimizer (the vanilla one through the same loop with no agent, which equals
:func:`nanotie.train.train` bit for bit). The dynamic run starts with every layer a
copy of layer 0 and lets the Q-learning agent re-decide each layer once per episode.
Reported: validation perplexity and bits per byte on the whole split, trainable
parameters and optimizer-state bytes over training, the training memory at the end,
the final tying pattern and the number of independent layers per episode.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ... import backend
from ...nn import GPTConfig, count_parameters
from ...nn.optim import AdamW, param_groups
from ...report import plot_losses, pyplot, save_figure, write_report, write_results
from ...train import TrainConfig, evaluate
from ..gpt.experiment import corpus_splits, unigram_bpb
from . import DynamicTyingConfig
from .agent import TyingAgent
from .loop import train_dynamic
from .tying import DynamicTiedGPT, root_of, training_memory_bytes

# A tiny byte-level model's per-byte perplexity stays above the authors' clip of 10 for
# the whole run, so every reward would be -10 and the agent could learn nothing; a clip
# of 100 keeps the reward -perplexity informative at this scale.
REWARD_CLIP = 100.0

# steps must be a multiple of (n_layer - 1) * lm_steps_per_decision (one episode).
PROFILES = {
    # About a minute on 2 idle CPU cores: 2 x 360 LM steps, 18 episodes of 5 decisions.
    "quick": dict(model=GPTConfig(vocab_size=256, context=64, d_model=64, n_layer=6,
                                  n_head=4),
                  train=TrainConfig(steps=360, batch_size=16, lr=3e-3, warmup_steps=36,
                                    eval_interval=60, eval_batches=8),
                  tying=DynamicTyingConfig(mode="official", lm_steps_per_decision=4,
                                          reward_clip=REWARD_CLIP),
                  modes=("official",)),
    # 8 layers, 80 episodes; also the plain-aliasing ("shared") variant.
    "full": dict(model=GPTConfig(vocab_size=256, context=128, d_model=128, n_layer=8,
                                 n_head=4),
                 train=TrainConfig(steps=2240, batch_size=16, lr=2e-3, warmup_steps=100,
                                   eval_interval=224, eval_batches=16),
                 tying=DynamicTyingConfig(mode="official", lm_steps_per_decision=4,
                                          reward_clip=REWARD_CLIP),
                 modes=("official", "shared")),
}


def _memory(model, train_cfg) -> dict:
    """Training memory of ``model`` as it stands: an optimizer synced to it, stepped
    once on zero gradients so its state exists, measures weights + grads + Adam."""
    opt = AdamW(param_groups(model, train_cfg.weight_decay), lr=0.0, weight_decay=0.0)
    for p in opt.parameters():
        p.grad = backend.xp_of(p.data).zeros_like(p.data)
    opt.step()
    for p in opt.parameters():
        p.grad = None
    return training_memory_bytes(model, opt)


def _run_one(label, model_cfg, train_cfg, tying_cfg, state, agent, train_ids, val_ids,
             seed, device):
    backend.manual_seed(seed)
    model = DynamicTiedGPT(model_cfg, mode=tying_cfg.mode, state=state).to(device)
    run = train_dynamic(model, train_ids, val_ids, train_cfg, tying_cfg, agent=agent,
                        desc=label)
    val = evaluate(model, val_ids, model_cfg.context, 32)      # all of the split
    return model, run, {
        "mode": tying_cfg.mode if agent is not None else "vanilla",
        "val_loss_nats": val,
        "val_ppl": math.exp(val),                 # per byte
        "val_bpb": val / math.log(2),             # one token per byte
        "train_seconds": run.history.seconds,
        "trainable_final": count_parameters(model),
        "trainable_mean": float(np.mean(run.trainable)),
        "optimizer_bytes_final": run.optimizer_bytes[-1],
        "optimizer_bytes_mean": float(np.mean(run.optimizer_bytes)),
        "optimizer_bytes_peak": int(max(run.optimizer_bytes)),
        "memory_final": _memory(model, train_cfg),
        "final_state": list(model.tying_state),
        "final_roots": [root_of(model.tying_state, i) for i in range(model_cfg.n_layer)],
        "independent_per_episode": run.episode_independent,
        "epsilon_per_episode": run.episode_epsilon,
        "state_per_episode": run.episode_state,
        "val_bpb_curve": {"step": run.history.eval_step, "bpb": run.history.val_bpb},
        "trainable_curve": run.trainable,
        "optimizer_bytes_curve": run.optimizer_bytes,
        "decisions": run.decisions,
        # rewards beyond the clip all look alike to the agent
        "rewards_clipped_fraction": float(np.mean(
            [abs(dd["reward"]) > tying_cfg.reward_clip for dd in run.decisions]))
        if run.decisions else None,
    }


def run(quick: bool = True, out_dir="runs/dynamic-tying", seed: int = 0,
        device: str = "cpu", profile: dict | None = None, runner=None) -> dict:
    """Both runs, the plots, report.md and results.json. ``profile`` (a dict shaped
    like the entries of PROFILES) replaces the quick/full one, e.g. in a notebook."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    name = "quick" if quick else "full"
    profile = profile if profile is not None else PROFILES[name]
    model_cfg = profile["model"]
    train_cfg = replace(profile["train"], seed=seed)
    L = model_cfg.n_layer
    train_ids, val_ids = corpus_splits()

    runs, histories = {}, {}
    _, vrun, runs["vanilla"] = _run_one("vanilla", model_cfg, train_cfg, profile["tying"],
                                        tuple(range(L)), None, train_ids, val_ids, seed,
                                        device)
    histories["vanilla"] = vrun.history
    for mode in profile["modes"]:
        tying_cfg = replace(profile["tying"], mode=mode)
        label = f"dynamic ({mode})"
        agent = TyingAgent(L, tying_cfg, seed=seed, device=device)
        _, drun, runs[label] = _run_one(label, model_cfg, train_cfg, tying_cfg,
                                        tying_cfg.initial(L), agent, train_ids, val_ids,
                                        seed, device)
        histories[label] = drun.history
    main = f"dynamic ({profile['modes'][0]})"

    loss_png = plot_losses(histories, out_dir / "loss.png",
                           f"{L}-layer byte GPT: vanilla vs dynamic layer tying")
    ind_png = _plot_independent(runs, L, out_dir / "independent_layers.png")
    mem_png = _plot_memory(runs, out_dir / "memory.png")
    pat_png = _plot_pattern(runs[main], L, out_dir / "tying_pattern.png", main)

    v, d = runs["vanilla"], runs[main]
    results = {
        "profile": name if profile is PROFILES.get(name) else "custom",
        "model": asdict(model_cfg),
        "train": asdict(train_cfg),
        "tying": asdict(profile["tying"]),
        "lm_steps": train_cfg.steps,
        "episodes": len(d["independent_per_episode"]),
        "unigram_bpb": unigram_bpb(train_ids, val_ids),
        "device": device,
        "runs": runs,
        "trainable_ratio_final": v["trainable_final"] / d["trainable_final"],
        "memory_ratio_final": v["memory_final"]["total"] / d["memory_final"]["total"],
        "optimizer_ratio_mean": v["optimizer_bytes_mean"] / d["optimizer_bytes_mean"],
        "seconds": time.perf_counter() - t0,
    }
    results["summary"] = {
        "val ppl (vanilla/dyn)": f"{v['val_ppl']:.2f} / {d['val_ppl']:.2f}",
        "trainable": f"{v['trainable_final']:,} / {d['trainable_final']:,}",
        "Adam bytes (mean)": f"{v['optimizer_bytes_mean'] / 1e6:.2f} / "
                             f"{d['optimizer_bytes_mean'] / 1e6:.2f} MB",
    }
    write_results(out_dir, results)
    write_report(out_dir, "Dynamic layer tying (Hay & Wolf, 2024)",
                 _report_body(results, runs, model_cfg, train_cfg, main, len(train_ids),
                              len(val_ids), [loss_png, ind_png, mem_png, pat_png]))
    return results


def _report_body(results, runs, cfg, tcfg, main, n_train, n_val, plots) -> str:
    rows = "\n".join(
        f"| {label} | {r['val_ppl']:.3f} | {r['val_bpb']:.3f} | {r['trainable_final']:,} | "
        f"{r['trainable_mean']:,.0f} | {r['optimizer_bytes_mean'] / 1e6:.3f} | "
        f"{r['optimizer_bytes_peak'] / 1e6:.3f} | {r['memory_final']['total'] / 1e6:.3f} | "
        f"{r['train_seconds']:.0f} |"
        for label, r in runs.items())
    d = runs[main]
    pattern = ", ".join(f"{i}<-{j}" if j != i else f"{i}:train"
                        for i, j in enumerate(d["final_state"]))
    figs = "\n\n".join(f"![{p.stem}]({p.name})" for p in plots)
    return f"""
A byte-level GPT ({cfg.n_layer} layers, d_model {cfg.d_model}, {cfg.n_head} heads, context
{cfg.context}) trained for {tcfg.steps} language-model steps (batch {tcfg.batch_size}) on
Python's own help text ({n_train:,} bytes to train, the last {n_val:,} to validate), on
{results['device']}. The dynamic run starts from s = 0 (every layer a copy of layer 0)
and makes {results['episodes']} episodes of {cfg.n_layer - 1} decisions, each followed by
{results['tying']['lm_steps_per_decision']} LM steps; both runs see the same batches.

| run | val ppl (per byte) | val bits/byte | trainable (end) | trainable (mean) | Adam MB (mean) | Adam MB (peak) | train memory MB (end) | train s |
|---|---|---|---|---|---|---|---|---|
{rows}

A unigram byte model scores {results['unigram_bpb']:.3f} bits per byte. At the end the
vanilla model trains {results['trainable_ratio_final']:.2f}x as many parameters and needs
{results['memory_ratio_final']:.2f}x the training memory (weights + gradients + Adam);
over the whole run it held {results['optimizer_ratio_mean']:.2f}x the Adam state on
average.

Final tying pattern of {main}: {pattern}. The rewards of
{d['rewards_clipped_fraction']:.0%} of its decisions were beyond the clip of
{results['tying']['reward_clip']:g} (a per-byte perplexity above it), where every action
looks alike to the agent. The paper's claims, for comparison: "modestly better
perplexity", drastically fewer trainable parameters, up to 10x less training memory.

{figs}
"""


def _plot_independent(runs, n_layer, path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for label, r in runs.items():
        if r["mode"] == "vanilla":
            continue
        ep = np.arange(1, len(r["independent_per_episode"]) + 1)
        ax.step(ep, r["independent_per_episode"], where="mid", label=label)
    ax.axhline(n_layer, color="gray", ls="--", lw=1, label="vanilla (all layers train)")
    ax.set(xlabel="episode", ylabel="independent layers at episode end",
           ylim=(0, n_layer + 0.5), title="Layers the agent keeps training")
    first = next(r for r in runs.values() if r["mode"] != "vanilla")
    ax2 = ax.twinx()
    ax2.plot(np.arange(1, len(first["epsilon_per_episode"]) + 1),
             first["epsilon_per_episode"], color="k", alpha=0.35, lw=1)
    ax2.set(ylabel="exploration epsilon (grey)", ylim=(0, 1.05))
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _plot_memory(runs, path) -> Path:
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, r in runs.items():
        steps = np.arange(1, len(r["trainable_curve"]) + 1)
        a1.plot(steps, r["trainable_curve"], label=label)
        a2.plot(steps, np.asarray(r["optimizer_bytes_curve"]) / 1e6, label=label)
    a1.set(xlabel="LM step", ylabel="trainable parameters", title="trainable parameters")
    a2.set(xlabel="LM step", ylabel="MB", title="AdamW state (m, v, step)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
        a.set_ylim(bottom=0)
    return save_figure(fig, path)


def _plot_pattern(r, n_layer, path, label) -> Path:
    """Left: the final pattern, row i = layer, a dot at the column of the layer whose
    weights it uses (the diagonal: trains), a ring at the agent's literal choice s_i
    when that is a copy of a copy. Right: s_i at the end of every episode."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8),
                                 gridspec_kw={"width_ratios": [1, 2]})
    grid = np.zeros((n_layer, n_layer))
    for i, root in enumerate(r["final_roots"]):
        grid[i, root] = 1.0
    a1.imshow(grid, cmap="Blues", vmin=0, vmax=1.3)
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
    for e in range(states.shape[1]):
        for i in range(n_layer):
            if states[i, e] == i:
                a2.text(e, i, "T", ha="center", va="center", fontsize=6, color="w")
    a2.set(xlabel="episode", ylabel="layer i", yticks=range(n_layer),
           title="s_i at each episode's end (T: trains)")
    fig.colorbar(im, ax=a2, label="s_i (layer copied)")
    return save_figure(fig, path)


if __name__ == "__main__":
    print(json.dumps(run()["summary"], indent=2))
