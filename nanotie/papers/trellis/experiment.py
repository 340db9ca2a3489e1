"""The TrellisNet in miniature: the equivalence, a byte-level LM, the adding problem,
and quality against depth at a fixed parameter count.

1. **Equivalence.** Random LSTMs (float64) converted by :func:`from_lstm` against the
   brute-force M-truncated LSTM: one layer with biases, two layers without, two layers
   with biases (the documented caveat, and its exact "staircase" explanation), and
   history repackaging over segments no longer than M against the full LSTM.
2. **Byte-level LM** on Python's own prose: TrellisNet, a two-layer LSTM and an untied
   TCN (separate weights per level), at about the same parameter count, in bits per byte.
3. **Adding problem**, generated on the fly: TrellisNet with dilations, the untied TCN,
   the LSTM, and a TrellisNet without dilation whose receptive field is too short.
4. **Depth at a fixed parameter count**: TrellisNets of 1, 2, 4, 8 levels all have the
   same parameters; the untied TCN with the same budget must get narrower as it deepens.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ... import backend
from ...autograd import Tensor, no_grad
from ...nn import count_parameters
from ...nn import functional as F
from ...nn.optim import AdamW, clip_grad_norm, cosine_schedule, param_groups
from ...report import plot_losses, pyplot, save_figure, write_report, write_results
from ...train import TrainConfig, evaluate, train
from ..gpt.experiment import corpus_splits, unigram_bpb
from .convert import from_lstm
from .lstm import LSTM, LSTMConfig, truncated_lstm
from .models import AddingRegressor, LMConfig, SequenceLM, adding_problem
from .trellisnet import TrellisConfig, TrellisNet, UntiedTCN, trellis_parameters


@dataclass
class Profile:
    # byte-level language model
    context: int = 32                      # training window T
    d_embed: int = 16                      # embedding = n_in = n_out (tied decoder)
    hidden: int = 64                       # H = n_hid + n_out of the TrellisNet
    levels: int = 4                        # depth of the main TrellisNet and TCN
    depths: tuple = (1, 2, 4)              # the depth sweep (fixed parameter budget)
    lm_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=600, batch_size=16, lr=5e-3, warmup_steps=20, eval_interval=100,
        eval_batches=4, weight_decay=0.0))
    final_eval_batches: int | None = 8     # validation batches for the headline (None: all)
    # adding problem
    adding_T: int = 16                     # sequence length
    adding_dilations: tuple = (1, 1, 2, 4, 8)   # receptive field 1 + 16 = 17 >= T
    adding_hidden: int = 24                # H of the TrellisNet on the adding problem
    adding_init_std: float = 0.3           # conv init; 0.01 learns far slower at this size
    adding_steps: int = 400
    adding_batch: int = 32
    adding_lr: float = 2e-2
    adding_eval: int = 512                 # held-out sequences


PROFILES = {
    "quick": Profile(),
    "full": Profile(context=64, d_embed=32, hidden=128, levels=8, depths=(1, 2, 4, 8),
                    lm_train=TrainConfig(steps=2000, batch_size=32, lr=3e-3, warmup_steps=100,
                                         eval_interval=100, eval_batches=8, weight_decay=0.0),
                    final_eval_batches=None, adding_T=50,
                    adding_dilations=(1, 1, 2, 4, 8, 16, 32), adding_hidden=32,
                    adding_steps=2000, adding_batch=64, adding_lr=1e-2, adding_eval=1024),
}


# ------------------------------------------------------------ model builders


def trellis_config(n_io: int, H: int, levels: int, dilations=None, n_out=None,
                   init_std: float = 0.01) -> TrellisConfig:
    """A TrellisNet core with n_io input channels (and n_out = n_io output channels
    unless given) whose z has H channels."""
    n_out = n_io if n_out is None else min(n_out, H)
    return TrellisConfig(n_in=n_io, n_hid=H - n_out, n_out=n_out, n_levels=levels,
                         dilations=dilations, init_std=init_std)


def tcn_width(budget: int, n_in: int, levels: int) -> int:
    """The widest H whose ``levels`` untied convolutions fit ``budget`` parameters:
    levels * 4H (2 n_in + 2H + 1) <= budget."""
    a, b = 8.0, 4.0 * (2 * n_in + 1)
    return int((-b + math.sqrt(b * b + 4 * a * budget / levels)) / (2 * a))


def lstm_sizes(budget: int, n_in: int, r_top: int) -> tuple:
    """Two layers (r1, r_top) whose parameters come closest to ``budget``."""
    def count(r1):
        return 4 * r1 * (n_in + r1 + 1) + 4 * r_top * (r1 + r_top + 1)
    return (min(range(1, 2000), key=lambda r1: abs(count(r1) - budget)), r_top)


def build_core(kind: str, n_in: int, budget: int, H: int, levels: int, dilations=None,
               n_out=None, init_std: float = 0.01, device="cpu"):
    """One sequence core: "trellis" (width H, any depth; ``budget`` unused), "tcn"
    (untied, as wide as ``budget`` allows at this depth) or "lstm" (two layers, the top
    one n_out wide, as close to ``budget`` as possible)."""
    n_out = n_in if n_out is None else n_out
    if kind == "trellis":
        return TrellisNet(trellis_config(n_in, H, levels, dilations, n_out, init_std),
                          device=device)
    if kind == "tcn":
        width = max(tcn_width(budget, n_in, levels), n_out)
        return UntiedTCN(trellis_config(n_in, width, levels, dilations, n_out, init_std),
                         device=device)
    if kind == "lstm":
        return LSTM(LSTMConfig(n_in, lstm_sizes(budget, n_in, n_out)), device=device)
    raise ValueError(f"build_core: kind must be 'trellis', 'tcn' or 'lstm', got {kind!r}")


def describe(core) -> str:
    if isinstance(core, LSTM):
        return f"LSTM, layers {core.config.hidden_sizes}"
    cfg = core.config
    kind = "untied TCN" if isinstance(core, UntiedTCN) else "TrellisNet"
    dil = "" if cfg.dilations is None else f", dilations {cfg.dilations}"
    return f"{kind}, H {cfg.hidden}, {cfg.n_levels} levels{dil}"


# ---------------------------------------------------------- 1. equivalence


def equivalence_demo(seed: int = 0, n_in: int = 6, T: int = 20, M: int = 6) -> dict:
    """Max |TrellisNet - truncated LSTM| for each case, in float64."""
    rng = np.random.default_rng(seed)
    backend.manual_seed(seed)
    x = Tensor(rng.standard_normal((3, T, n_in)))
    out = {}
    cases = {"one layer, biases": ((10,), True), "two layers, no biases": ((10, 7), False),
             "two layers, biases": ((10, 7), True)}
    for name, (sizes, bias) in cases.items():
        lstm = LSTM(LSTMConfig(n_in, sizes, bias)).double()
        net = from_lstm(lstm, M)
        with no_grad():
            y = net(x).out.numpy()
            ref = truncated_lstm(lstm, x, M).numpy()
            stair = truncated_lstm(lstm, x, M, staircase=True).numpy()
        out[name] = {"levels": net.config.n_levels, "H": net.config.hidden,
                     "max_abs_diff": float(np.abs(y - ref).max()),
                     "max_abs_diff_staircase": float(np.abs(y - stair).max()),
                     "lstm_parameters": count_parameters(lstm),
                     "trellis_parameters": count_parameters(net)}
    # History repackaging: segments of length <= M, each continuing from the last
    # top-level (h, c), reproduce the FULL (untruncated) one-layer LSTM.
    lstm = LSTM(LSTMConfig(n_in, (10,), True)).double()
    net = from_lstm(lstm, M)
    with no_grad():
        full = lstm(x).out.numpy()
        history, pieces = None, []
        for start in range(0, T, M):
            step = net(x[:, start:start + M], history)
            history = step.history
            pieces.append(step.out.numpy())
        no_history = np.concatenate([net(x[:, s:s + M]).out.numpy() for s in range(0, T, M)], 1)
    out["repackaged segments vs full LSTM"] = {
        "segment": M, "max_abs_diff": float(np.abs(np.concatenate(pieces, 1) - full).max()),
        "max_abs_diff_without_history": float(np.abs(no_history - full).max())}
    return out


# ---------------------------------------------------------------- 2. the LM


def train_lm(kind, prof: Profile, levels: int, budget: int, seed: int, device: str,
             train_ids, val_ids, progress=None):
    backend.manual_seed(seed)
    core = build_core(kind, prof.d_embed, budget, prof.hidden, levels, device=device)
    model = SequenceLM(LMConfig(d_embed=prof.d_embed, context=prof.context), core,
                       prof.d_embed, device=device)
    cfg = TrainConfig(**{**asdict(prof.lm_train), "seed": seed})
    history = train(model, train_ids, val_ids, cfg, progress=progress,
                    desc=f"{kind} L={levels}")
    val = evaluate(model, val_ids, prof.context, 32, prof.final_eval_batches)
    return {"kind": kind, "levels": levels, "model": describe(core),
            "parameters": count_parameters(model), "core_parameters": count_parameters(core),
            "val_bpb": val / math.log(2), "train_seconds": history.seconds,
            "curve": {"step": history.eval_step, "bpb": history.val_bpb}}, history


# ------------------------------------------------------- 3. adding problem


def train_adding(core, prof: Profile, seed: int, device: str, desc: str, progress=None):
    """Train a regressor on fresh adding-problem batches; MSE on a fixed held-out set."""
    from tqdm.auto import tqdm

    backend.manual_seed(seed)
    n_out = core.config.hidden_sizes[-1] if isinstance(core, LSTM) else core.config.n_out
    model = AddingRegressor(core, n_out, device=device)
    rng = np.random.default_rng(seed)
    x_val, y_val = adding_problem(prof.adding_eval, prof.adding_T, np.random.default_rng(10**6))
    x_val = backend.to_device(x_val, device)
    opt = AdamW(param_groups(model, 0.0), lr=prof.adding_lr)
    curve = {"step": [], "mse": []}
    t0 = time.perf_counter()
    show = sys.stderr.isatty() if progress is None else progress
    every = max(prof.adding_steps // 10, 1)
    for step in tqdm(range(prof.adding_steps), desc=desc, disable=not show, leave=False):
        for g in opt.param_groups:
            g["lr"] = cosine_schedule(step, prof.adding_lr, prof.adding_steps, 20,
                                      prof.adding_lr * 0.1)
        x, y = adding_problem(prof.adding_batch, prof.adding_T, rng)
        loss = F.mse_loss(model(Tensor(backend.to_device(x, device))),
                          backend.to_device(y, device))
        opt.zero_grad()
        loss.backward()
        clip_grad_norm(opt.parameters(), 1.0)
        opt.step()
        if (step + 1) % every == 0 or step + 1 == prof.adding_steps:
            model.eval()
            with no_grad():
                pred = backend.asnumpy(model(Tensor(x_val)).data)
            model.train()
            curve["step"].append(step + 1)
            curve["mse"].append(float(np.mean((pred - y_val) ** 2)))
    return {"model": describe(core), "parameters": count_parameters(model),
            "final_mse": curve["mse"][-1], "curve": curve,
            "train_seconds": time.perf_counter() - t0}


def adding_suite(prof: Profile, seed: int, device: str, progress=None) -> dict:
    H, dil, L = prof.adding_hidden, prof.adding_dilations, len(prof.adding_dilations)
    common = dict(n_in=2, n_out=8, init_std=prof.adding_init_std, device=device)
    budget = trellis_parameters(trellis_config(2, H, L, dil, 8))
    out = {}
    for name, kind, dilations in (("TrellisNet (dilated)", "trellis", dil),
                                  ("untied TCN (dilated)", "tcn", dil),
                                  ("LSTM", "lstm", None),
                                  ("TrellisNet, no dilation", "trellis", None)):
        backend.manual_seed(seed)
        core = build_core(kind, budget=budget, H=H, levels=L, dilations=dilations, **common)
        res = train_adding(core, prof, seed, device, name, progress)
        rf = None if kind == "lstm" else core.config.receptive_field()
        out[name] = {**res, "receptive_field": rf}
    return out


# ------------------------------------------------------------------ plots


def plot_depth(sweep: dict, path: Path, title: str) -> Path:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for kind, style in (("trellis", "o-"), ("tcn", "s--")):
        rows = sweep[kind]
        label = "TrellisNet (tied across depth)" if kind == "trellis" else "untied TCN"
        ax1.plot([r["levels"] for r in rows], [r["val_bpb"] for r in rows], style, label=label)
        ax2.plot([r["levels"] for r in rows], [r["core_parameters"] for r in rows], style,
                 label=label)
    ax1.set(xscale="log", xlabel="levels", ylabel="validation bits per byte",
            title="quality against depth")
    ax2.set(xscale="log", xlabel="levels", ylabel="core parameters",
            title="parameters (the budget is fixed)")
    for ax in (ax1, ax2):
        ax.set_xticks([r["levels"] for r in sweep["trellis"]])
        ax.set_xticklabels([str(r["levels"]) for r in sweep["trellis"]])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_adding(adding: dict, path: Path, title: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, res in adding.items():
        ax.plot(res["curve"]["step"], res["curve"]["mse"], "o-", label=name)
    ax.axhline(1 / 6, color="gray", ls=":", label="predict the mean (1/6)")
    ax.set(yscale="log", xlabel="step", ylabel="held-out MSE", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_equivalence(eq: dict, path: Path) -> Path:
    plt = pyplot()
    names = list(eq)
    vals = [max(eq[n]["max_abs_diff"], 1e-300) for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    bars = ax.barh(range(len(names)), [max(v, 1e-20) for v in vals], color="tab:blue")
    for bar, v in zip(bars, vals):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.1e}",
                va="center", fontsize=8)
    ax.axvline(np.finfo(np.float64).eps, color="gray", ls=":", label="float64 epsilon")
    ax.set(xscale="log", yticks=range(len(names)), yticklabels=names,
           xlabel="max |TrellisNet - truncated LSTM| (0 drawn at 1e-20)",
           title="LSTM -> TrellisNet, float64")
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


# -------------------------------------------------------------------- run


def run(quick: bool = True, out_dir="runs/trellis", seed: int = 0, device: str = "cpu",
        progress=None, runner=None) -> dict:
    prof = PROFILES["quick" if quick else "full"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings = {}

    eq = equivalence_demo(seed)
    timings["equivalence"] = time.perf_counter() - t0

    # 2 + 4: the LM runs. The budget is the TrellisNet's core; every depth of the sweep
    # and every other model is held to it.
    t1 = time.perf_counter()
    train_ids, val_ids = corpus_splits()
    budget = trellis_parameters(trellis_config(prof.d_embed, prof.hidden, prof.levels))
    sweep = {"trellis": [], "tcn": []}
    histories = {}
    for levels in prof.depths:
        res, hist = train_lm("trellis", prof, levels, budget, seed, device, train_ids,
                             val_ids, progress)
        sweep["trellis"].append(res)
        if levels == prof.levels:
            histories["TrellisNet"] = hist
        if levels == 1:          # one level: tied and untied are the same network
            sweep["tcn"].append({**res, "kind": "tcn", "model": "(one level: the same network)"})
            continue
        res, hist = train_lm("tcn", prof, levels, budget, seed, device, train_ids, val_ids,
                             progress)
        sweep["tcn"].append(res)
        if levels == prof.levels:
            histories["untied TCN"] = hist
    lstm_res, histories["LSTM"] = train_lm("lstm", prof, prof.levels, budget, seed, device,
                                           train_ids, val_ids, progress)
    main = {"TrellisNet": next(r for r in sweep["trellis"] if r["levels"] == prof.levels),
            "LSTM": lstm_res,
            "untied TCN": next(r for r in sweep["tcn"] if r["levels"] == prof.levels)}
    timings["language_model"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    adding = adding_suite(prof, seed, device, progress)
    timings["adding"] = time.perf_counter() - t2

    plots = {
        "lm": plot_losses({f"{k} ({v['parameters']:,} params)": histories[k]
                           for k, v in main.items()}, out_dir / "lm_loss.png",
                          "Byte-level LM on pydoc prose, similar parameter counts"),
        "depth": plot_depth(sweep, out_dir / "depth.png",
                            f"Depth at a fixed budget of {budget:,} core parameters"),
        "adding": plot_adding(adding, out_dir / "adding.png",
                              f"Adding problem, T = {prof.adding_T}"),
        "equivalence": plot_equivalence(eq, out_dir / "equivalence.png"),
    }
    baseline = unigram_bpb(train_ids, val_ids)
    results = {
        "profile": "quick" if quick else "full",
        "settings": asdict(prof),
        "equivalence": eq,
        "lm": main,
        "lm_budget_core_parameters": budget,
        "unigram_bpb": baseline,
        "depth_sweep": sweep,
        "adding": adding,
        "device": device,
        "timings_seconds": timings,
        "seconds": time.perf_counter() - t0,
    }
    best_adding = min(adding, key=lambda k: adding[k]["final_mse"])
    results["summary"] = {
        "bpb trellis/lstm/tcn": "/".join(f"{main[k]['val_bpb']:.2f}" for k in main),
        "equiv max err": f"{eq['one layer, biases']['max_abs_diff']:.0e}",
        "adding best": f"{best_adding} {adding[best_adding]['final_mse']:.3f}",
    }
    write_results(out_dir, results)
    write_report(out_dir, "Trellis Networks (tied across depth)", _report(results, prof, plots))
    return results


def _report(r: dict, prof: Profile, plots: dict) -> str:
    eq_rows = "\n".join(
        f"| {name} | {v.get('levels', v.get('segment'))} | {v['max_abs_diff']:.1e} | "
        f"{v.get('max_abs_diff_staircase', v.get('max_abs_diff_without_history')):.1e} |"
        for name, v in r["equivalence"].items())
    lm_rows = "\n".join(f"| {k} | {v['model']} | {v['parameters']:,} | **{v['val_bpb']:.3f}** | "
                        f"{v['train_seconds']:.0f} s |" for k, v in r["lm"].items())
    depth_rows = "\n".join(
        f"| {t['levels']} | {t['core_parameters']:,} | {t['val_bpb']:.3f} | "
        f"{c['model']} | {c['core_parameters']:,} | {c['val_bpb']:.3f} |"
        for t, c in zip(r["depth_sweep"]["trellis"], r["depth_sweep"]["tcn"]))
    add_rows = "\n".join(f"| {k} | {v['model']} | {v['parameters']:,} | "
                         f"{v['receptive_field'] or 'all'} | {v['final_mse']:.4f} |"
                         for k, v in r["adding"].items())
    steps = prof.lm_train.steps
    return f"""
Profile **{r['profile']}** on {r['device']}, {r['seconds']:.0f} s in all.

## 1. A truncated LSTM is a TrellisNet (float64)

The M-truncated LSTM (M = 6), computed by brute force, against the TrellisNet that
`from_lstm` builds. Last column: the difference with the "staircase" reference (upper
layers start one step early on a zero input), or, for the segments, without history.

| case | levels / segment | max abs diff | staircase / no history |
|---|---|---|---|
{eq_rows}

![equivalence]({plots['equivalence'].name})

## 2. Byte-level LM ({steps} steps, context {prof.context})

| model | core | parameters | val bits per byte | train time |
|---|---|---|---|---|
{lm_rows}

A unigram byte model scores {r['unigram_bpb']:.3f} bits per byte.

![LM curves]({plots['lm'].name})

## 3. Depth at a fixed parameter count

| levels | TrellisNet core params | TrellisNet bpb | untied TCN at the same budget | its params | its bpb |
|---|---|---|---|---|---|
{depth_rows}

![depth]({plots['depth'].name})

## 4. Adding problem (T = {prof.adding_T}, {prof.adding_steps} steps)

| model | core | parameters | receptive field | held-out MSE |
|---|---|---|---|---|
{add_rows}

Predicting the mean scores 1/6 = 0.167.

![adding]({plots['adding'].name})
"""


if __name__ == "__main__":
    print(json.dumps(run()["summary"], indent=2))
