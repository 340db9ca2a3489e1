"""Adapt a prose-trained GPT to Python code with LoRA and the whole Tied-LoRA lattice.

The base is the ``gpt`` experiment's byte-level GPT, pretrained on English prose and
cached (:func:`nanotie.papers.gpt.experiment.pretrained_gpt`). For every rank of the
profile and every configuration of :func:`~nanotie.papers.tied_lora.lattice` (LoRA
and the fifteen tied ones), a fresh copy of the base gets adapters and trains them for
the same number of steps on the Python standard library's source; the base stays
frozen. The table gives each configuration's trainable parameters, their share of
LoRA's at the same rank, the validation loss on code (bits per byte) and the wall time
of its training. The plot puts validation loss against trainable parameters.

At a given rank, every configuration starts from the same random A and B (same
seed), sees the same batches and is evaluated on the same validation windows.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ... import backend, data
from ...nn import GPT, count_parameters
from ...report import pyplot, save_figure, write_report, write_results
from ...train import TrainConfig, evaluate, train
from ..gpt.experiment import pretrained_gpt
from . import PRESETS, TiedLoRAConfig, attach, lattice, trainable_count


@dataclass
class SweepProfile:
    ranks: tuple = (4, 16)        # the ranks r to sweep
    steps: int = 60               # adapter training steps per configuration
    batch_size: int = 8           # sequences per step
    block_size: int = 64          # bytes per sequence
    lr: float = 1e-3              # one peak learning rate for every configuration
    warmup_steps: int = 5         # linear warmup, then cosine decay to lr / 10
    eval_batches: int = 8         # validation batches (of batch_size windows) at the end
    code_bytes: int = 600_000     # how much of the code corpus to use (last 10%: validation)
    configs: tuple | None = None  # preset names or keys to run ("TL6", "tied:Bu"); None:
                                  # the whole lattice (LoRA and the 15 tied ones)

    def __post_init__(self):
        self.ranks = tuple(self.ranks)
        if not self.ranks or any(not isinstance(r, int) or r < 1 for r in self.ranks):
            raise ValueError(f"SweepProfile: ranks must be positive ints, got {self.ranks}")
        for name in ("steps", "batch_size", "block_size", "eval_batches", "code_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"SweepProfile: {name} must be >= 1, got "
                                 f"{getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"SweepProfile: lr must be > 0, got {self.lr}")
        if self.configs is not None:
            self.configs = tuple(self.configs)
            known = {c.key for c in lattice(1)}
            for key in self.configs:
                # from_key raises a ValueError naming a malformed key
                if TiedLoRAConfig.from_key(key).key not in known:
                    raise ValueError(f"SweepProfile: configs entry {key!r} is not in the "
                                     "lattice (LoRA and the tied configurations)")


# quick: two ranks, 16 configurations each, 60 steps (about 80 s on 2 idle cores once
# the base model is cached). full: the paper's sweep of ranks in miniature.
PROFILES = {
    "quick": SweepProfile(),
    "full": SweepProfile(ranks=(2, 8, 32, 128), steps=400, batch_size=16, block_size=128,
                         lr=5e-4, warmup_steps=20, eval_batches=32, code_bytes=2_000_000),
}


def code_splits(max_bytes: int):
    """The code corpus as byte ids, split 90/10 (the last tenth is validation)."""
    return data.train_val_split(data.code_corpus(max_bytes), val_fraction=0.1)


def adapt(base_state: dict, model_config, config, train_ids, val_ids, profile: SweepProfile,
          seed: int, device: str):
    """A fresh copy of the base with ``config``'s adapters, trained; returns
    ``(model, history)``."""
    model = GPT(model_config).to(device)
    model.load_state_dict(base_state)
    backend.manual_seed(seed)                   # the same A and B for every configuration
    attach(model, config)
    train_cfg = TrainConfig(steps=profile.steps, batch_size=profile.batch_size,
                            block_size=profile.block_size, lr=profile.lr,
                            warmup_steps=profile.warmup_steps, weight_decay=0.0,
                            eval_interval=profile.steps, eval_batches=profile.eval_batches,
                            seed=seed)
    history = train(model, train_ids, val_ids, train_cfg, progress=False,
                    desc=f"tied-lora {config.name} r={config.rank}")
    return model, history


def sweep(base, profile: SweepProfile, seed: int = 0, device: str = "cpu",
          progress: bool | None = None) -> list:
    """Train every configuration of the lattice at every rank; one row per run."""
    from tqdm.auto import tqdm

    train_ids, val_ids = code_splits(profile.code_bytes)
    state = base.state_dict()
    cfg = base.config
    wanted = profile.configs
    runs = [c for r in profile.ranks for c in lattice(r)
            if wanted is None or c.name in wanted or c.key in wanted]
    rows = []
    show = sys.stderr.isatty() if progress is None else progress
    for config in tqdm(runs, desc="tied-lora sweep", disable=not show, leave=False):
        model, history = adapt(state, cfg, config, train_ids, val_ids, profile, seed, device)
        params = count_parameters(model)
        lora = trainable_count(replace(config, tie_AB=False, train_A=True, train_B=True,
                                       train_u=False, train_v=False),
                               cfg.n_layer, cfg.d_model)
        rows.append({
            "config": config.name, "key": config.key, "rank": config.rank,
            "tie_AB": config.tie_AB, "trained": config.trained,
            "zero_start": config.zero_start,
            "trainable": params,
            "formula": trainable_count(config, cfg.n_layer, cfg.d_model),
            "pct_of_lora": 100.0 * params / lora,
            "val_loss": history.val_loss[-1],
            "val_bpb": history.val_bpb[-1],
            "seconds": history.seconds,
            "train_loss_curve": history.train_loss,
        })
    return rows


def plot_sweep(rows: list, base_bpb: float, path, title: str) -> Path:
    """Validation bpb against trainable parameters (log x): one marker shape per
    named configuration, one colour per rank, a dashed line for the frozen base.

    The corners without a zero start can land far above the rest; they are listed
    in a box instead of stretching the axis."""
    plt = pyplot()

    markers = {"LoRA": "s", "TL5": "^", "TL6": "*", "VeRA-style": "D"}
    ranks = sorted({r["rank"] for r in rows})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    shown = [r["val_bpb"] for r in rows if r["zero_start"]] + [base_bpb]
    pad = 0.1 * (max(shown) - min(shown)) + 1e-3
    low, high = min(shown) - pad, max(shown) + pad
    off_scale = []
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, rank in enumerate(ranks):
        color = colors[i % len(colors)]
        for row in (r for r in rows if r["rank"] == rank):
            x, y = row["trainable"], row["val_bpb"]
            if y > high:
                off_scale.append(f"{row['key']} r={rank}: {y:.2f}")
                continue
            named = row["config"] in markers
            ax.scatter(x, y, color=color, marker=markers.get(row["config"], "o"),
                       s=110 if named else 28, edgecolor="black" if named else "none",
                       zorder=3 if named else 2)
            if not named:
                ax.annotate(row["key"].split(":")[1], (x, y), fontsize=6, alpha=0.7,
                            xytext=(3, 2), textcoords="offset points")
        ax.scatter([], [], color=color, marker="o", label=f"r = {rank}")
    for name, m in markers.items():
        ax.scatter([], [], color="white", edgecolor="black", marker=m, s=80, label=name)
    ax.axhline(base_bpb, color="gray", ls="--", lw=1, label="base (no adapter)")
    if off_scale:
        ax.text(0.01, 0.02, "off scale (no zero start):\n" + "\n".join(off_scale),
                transform=ax.transAxes, fontsize=7, va="bottom",
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="gray"))
    ax.set_xscale("log")
    ax.set_ylim(low, high)
    ax.set(xlabel="trainable parameters (log scale)", ylabel="validation bits per byte",
           title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2, loc="center right")
    return save_figure(fig, path)


def _table(rows: list) -> str:
    lines = ["| r | configuration | trainable | % of LoRA | val bpb | wall s |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        name = r["key"] if r["config"] == r["key"] else f"**{r['config']}** ({r['key']})"
        flag = "" if r["zero_start"] else " (†)"
        lines.append(f"| {r['rank']} | {name}{flag} | {r['trainable']:,} | "
                     f"{r['pct_of_lora']:.1f} | {r['val_bpb']:.3f} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def _findings(rows: list, n_layer: int) -> list:
    """Per rank, how the measured order of the named corners compares with the paper's."""
    out = []
    for rank in sorted({r["rank"] for r in rows}):
        at = {r["config"]: r for r in rows if r["rank"] == rank}
        if not all(k in at for k in PRESETS):       # a sweep of a chosen subset
            continue
        lora, tl5, tl6, vera = (at[k] for k in ("LoRA", "TL5", "TL6", "VeRA-style"))
        best = min((r for r in at.values()), key=lambda r: r["val_bpb"])
        # The two ways to start at zero: v = 0 (v trained), or B = 0 (B trained, v frozen).
        tied = [r for r in at.values() if r["tie_AB"]]
        v_zero = [r["val_bpb"] for r in tied if "v" in r["trained"]]
        b_zero = [r["val_bpb"] for r in tied if "B" in r["trained"] and "v" not in r["trained"]]
        out.append({
            "rank": rank,
            "lora_bpb": lora["val_bpb"], "tl5_bpb": tl5["val_bpb"],
            "tl6_bpb": tl6["val_bpb"], "vera_bpb": vera["val_bpb"],
            "tl6_minus_lora": tl6["val_bpb"] - lora["val_bpb"],
            "tl6_pct_of_lora": tl6["pct_of_lora"], "tl5_pct_of_lora": tl5["pct_of_lora"],
            "tl5_is_1_over_L": tl5["trainable"] * n_layer == lora["trainable"],
            "paper_order_holds": lora["val_bpb"] <= tl6["val_bpb"] <= tl5["val_bpb"]
                                 < vera["val_bpb"],
            "best": best["config"],
            "tied_v_zero_start_bpb_range": [min(v_zero), max(v_zero)],
            "tied_b_zero_start_bpb_range": [min(b_zero), max(b_zero)],
        })
    return out


def _load_average():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):      # not available on this platform
        return None


def run(quick: bool = True, out_dir="runs/tied-lora", seed: int = 0,
        device: str = "cpu", runner=None) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    profile = PROFILES["quick" if quick else "full"]
    base, base_history = pretrained_gpt(quick, seed, device,
                                        cache_dir=out_dir.parent / "cache")
    t_base = time.perf_counter() - t0
    cfg = base.config
    if profile.block_size > cfg.context:
        raise ValueError(f"tied-lora: block_size {profile.block_size} exceeds the base "
                         f"model's context {cfg.context}")
    _, val_ids = code_splits(profile.code_bytes)
    base_loss = evaluate(base, val_ids, profile.block_size, profile.batch_size,
                         profile.eval_batches)
    base_bpb = base_loss / math.log(2)
    load_before = _load_average()
    t1 = time.perf_counter()
    rows = sweep(base, profile, seed, device)
    sweep_seconds = time.perf_counter() - t1
    findings = _findings(rows, cfg.n_layer)
    plot = plot_sweep(rows, base_bpb, out_dir / "loss_vs_params.png",
                      f"Prose GPT adapted to Python code ({profile.steps} steps)")
    results = {
        "profile": "quick" if quick else "full",
        "sweep": asdict(profile),
        "base_model": asdict(cfg),
        "base_prose_val_bpb": base_history.val_bpb[-1] if base_history.val_bpb else None,
        "base_code_val_bpb": base_bpb,
        "rows": rows,
        "findings": findings,
        "base_seconds": t_base,           # loading (or, cold, training) the base model
        "sweep_seconds": sweep_seconds,
        "seconds": time.perf_counter() - t0,
        "device": device,
        "cpu_count": os.cpu_count(),
        # the machine's 1-minute load average before and after the sweep: wall times
        # from a busy machine are longer than from an idle one
        "load_average": [load_before, _load_average()],
    }
    results["summary"] = {"sweep s": f"{sweep_seconds:.0f}"}
    if findings:
        top = findings[-1]
        results["summary"] = {
            f"r={top['rank']} LoRA bpb": f"{top['lora_bpb']:.3f}",
            "TL6 bpb": f"{top['tl6_bpb']:.3f} ({top['tl6_pct_of_lora']:.0f}% params)",
            "TL5 / VeRA bpb": f"{top['tl5_bpb']:.3f} / {top['vera_bpb']:.3f}",
            **results["summary"],
        }
    write_results(out_dir, results)
    write_report(out_dir, "Tied-LoRA: adapting a prose GPT to Python code",
                 _report_body(results, plot, cfg))
    return results


def _report_body(results: dict, plot: Path, cfg) -> str:
    p = results["sweep"]
    verdicts = []
    for f in results["findings"]:
        order = "holds" if f["paper_order_holds"] else "does not hold"
        verdicts.append(
            f"- r = {f['rank']}: LoRA {f['lora_bpb']:.3f}, TL6 {f['tl6_bpb']:.3f} "
            f"({f['tl6_minus_lora']:+.3f} bpb vs LoRA, with {f['tl6_pct_of_lora']:.1f}% of "
            f"its parameters), TL5 {f['tl5_bpb']:.3f} ({f['tl5_pct_of_lora']:.1f}% = 1/L: "
            f"{f['tl5_is_1_over_L']}), VeRA-style {f['vera_bpb']:.3f}. The paper's order "
            f"LoRA <= TL6 <= TL5 < VeRA-style {order}; lowest loss: {f['best']}. "
            "Tied configurations that start at zero through v = 0 span "
            f"{_span(f['tied_v_zero_start_bpb_range'])} bpb; through B = 0 (v frozen), "
            f"{_span(f['tied_b_zero_start_bpb_range'])}.")
    load = results["load_average"]
    busy = (f" The machine's 1-minute load average was {load[0]:.1f} before the sweep "
            f"and {load[1]:.1f} after, on {results['cpu_count']} cores: wall times from a "
            "busy machine run long." if None not in load else "")
    return f"""
The base is a byte-level GPT ({cfg.n_layer} layers, d_model {cfg.d_model}) trained on
English prose (validation {results['base_prose_val_bpb']:.3f} bits per byte on prose). It
is frozen and scores **{results['base_code_val_bpb']:.3f}** bits per byte on Python code.
Every configuration below adds adapters to the fused qkv projection of all
{cfg.n_layer} layers and trains them for {p['steps']} steps (batch {p['batch_size']} x
{p['block_size']} bytes, AdamW, peak lr {p['lr']}, no weight decay) on the standard
library's source; validation is {p['eval_batches']} batches of held-out code, the same
windows for every row. Configurations are named by their tie and the parts they
train (A, B, u, v); bold names are the paper's. (†) marks the corners with v and B
both frozen: nothing in them starts at zero, so they start away from the base model.

With L = {cfg.n_layer} layers tying can save at most a factor {cfg.n_layer} (the
paper's L = 32 gives 32), so TL6 costs a larger share of LoRA than the paper's 12.5%.

{_table(results['rows'])}

![validation loss against trainable parameters]({plot.name})

How this compares with the paper (TL6 close to LoRA with about 13% of its
parameters; TL5 at 1/L of LoRA):

{chr(10).join(verdicts)}

In a run this short, v = 0 gates the gradients of A, B and u (they are multiplied by
v), so configurations that train v move mostly through v at first; the paper trains
for far longer.

The sweep took {results['sweep_seconds']:.0f} s on {results['device']} (the base model
{results['base_seconds']:.0f} s to load or train).{busy} One seed and one learning rate
for every configuration; the seed-to-seed spread was not measured, so read differences
of a hundredth of a bit per byte with caution.
"""


def _span(pair) -> str:
    return f"{pair[0]:.3f}-{pair[1]:.3f}"


if __name__ == "__main__":
    print(json.dumps(run()["summary"], indent=2))
