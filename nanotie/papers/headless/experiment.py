"""Headless vs softmax language modelling on Python's help text, in miniature.

What runs, in order:

1. A byte-level BPE with a vocabulary of a few thousand ids is trained on the
   training part of the prose corpus (so that the softmax over V costs something).
2. Two causal GPTs with the same shapes, the same initial weights and the same
   batches are trained for the same number of steps: one with the tied softmax head
   and cross-entropy (CE), one headless with CWT.
3. The training step of each is timed side by side (tokens/s, and their ratio).
4. Held-out bits per byte of: CE; CWT read through the zero-shot head o E^T;
   CWT with an untied head cloned from E and fine-tuned with CE, on the whole model
   and on the head alone (the paper's Table 3 pattern). CE is also read at the
   compute CWT spent on pretraining plus fine-tuning (equal compute).
5. A linear probe on frozen features (which help topic a passage comes from) for the
   CE model, the CWT model and an untrained model (the floor): the stand-in for GLUE.
6. Tokens/s of both steps against the vocabulary size.

Compute is counted as training steps times the median step time measured side by
side in step 3 (less noisy on a shared machine than the wall clock of each run).

The pretrained models are cached under ``<out>/../cache/`` (keyed by settings,
tokenizer and seed); a second run loads them.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ... import backend, data
from ...nn import GPT, GPTConfig, count_parameters
from ...nn import functional as F
from ...report import pyplot, save_figure, write_report, write_results
from ...train import TrainConfig, evaluate, train
from . import HeadlessGPT, freeze_all_but_head, lm_from_headless
from .probe import (PROBE_TOPICS, effective_rank, linear_probe, pooled_features,
                    topic_passages)
from .throughput import make_models, throughput_vs_vocab

# The paper's figures this experiment echoes (arXiv:2309.08351).
PAPER = {
    "table6_throughput_ratio": 2.13,        # BERT-small, CWT vs CE training throughput
    "table6_glue": {"ce": 82.45, "cwt": 83.37},
    "table3_lambada": {"vanilla": 19.52, "headless_E_T": 18.26, "headless_ft": 22.2},
}


@dataclass
class Profile:
    vocab_size: int                    # BPE vocabulary (256 bytes + merges)
    model: GPTConfig                   # shapes of both models (vocab_size is overwritten)
    pretrain: TrainConfig              # the same budget for CE and CWT
    finetune: TrainConfig              # CE on a cloned head (whole model or head alone)
    cwt_lr: float | None = None        # CWT's peak learning rate (None: pretrain.lr)
    sweep: tuple = (1024, 4096, 8192, 16384)   # vocabulary sizes for tokens/s vs V
    sweep_steps: int = 2               # timed steps per repeat in the sweep
    sweep_repeats: int = 3             # interleaved repeats (median kept)
    probe_window: int = 32             # tokens per probe passage
    probe_per_class: int = 96          # passages per topic (half train, half test)
    probe_steps: int = 300             # full-batch AdamW steps of the linear probe
    final_eval_batches: int | None = None   # None: all of the validation split

    def __post_init__(self):
        if self.vocab_size < 257:
            raise ValueError(f"Profile: vocab_size must exceed 256, got {self.vocab_size}")
        if any(v < 2 for v in self.sweep):
            raise ValueError(f"Profile: sweep vocabulary sizes must be >= 2, got {self.sweep}")
        for name in ("sweep_steps", "sweep_repeats", "probe_window", "probe_per_class",
                     "probe_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"Profile: {name} must be >= 1, got {getattr(self, name)}")


PROFILES = {
    # About a minute of compute on an idle 2-core CPU (estimated; see the report).
    "quick": Profile(
        vocab_size=4096,
        model=GPTConfig(context=64, d_model=128, n_layer=4, n_head=4),
        pretrain=TrainConfig(steps=200, batch_size=16, lr=1e-3, warmup_steps=20,
                             eval_interval=40, eval_batches=6),
        # Each objective at the better of lr 1e-3 and 3e-3 (a two-point sweep on this
        # profile): CE 1e-3 (3e-3 gave 2.26 bits/byte), CWT 3e-3 (1e-3: 2.26 after FT).
        cwt_lr=3e-3,
        finetune=TrainConfig(steps=20, batch_size=16, lr=1e-3, warmup_steps=2,
                             eval_interval=10, eval_batches=6, seed=1),
        sweep_steps=2, sweep_repeats=2),
    "full": Profile(
        vocab_size=8192,
        model=GPTConfig(context=128, d_model=128, n_layer=4, n_head=4),
        pretrain=TrainConfig(steps=1000, batch_size=16, lr=2e-3, warmup_steps=50,
                             eval_interval=100, eval_batches=8, checkpoint_interval=250),
        finetune=TrainConfig(steps=100, batch_size=16, lr=1e-3, warmup_steps=10,
                             eval_interval=25, eval_batches=8, seed=1),
        sweep_steps=3, sweep_repeats=5, probe_per_class=128),
}

# A few seconds: checks that everything runs (the notebook's quick mode), shows nothing.
SMOKE = Profile(
    vocab_size=1024, model=GPTConfig(context=32, d_model=64, n_layer=2, n_head=2),
    pretrain=TrainConfig(steps=30, batch_size=8, lr=3e-3, warmup_steps=3, eval_interval=10,
                         eval_batches=4),
    finetune=TrainConfig(steps=10, batch_size=8, lr=1e-3, warmup_steps=1, eval_interval=5,
                         eval_batches=4, seed=1),
    sweep=(1024, 4096), sweep_steps=1, sweep_repeats=1, probe_per_class=24, probe_steps=100,
    final_eval_batches=8)


# ----------------------------------------------------------------------- data


def corpus(vocab_size: int):
    """The tokenizer (trained on the training bytes only) and the token ids of the
    training and validation parts, with the validation bytes-per-token ratio."""
    train_bytes, val_bytes = data.train_val_split(data.prose_corpus(), val_fraction=0.1)
    train_bytes, val_bytes = train_bytes.tobytes(), val_bytes.tobytes()
    tok = data.BPETokenizer.train(train_bytes, vocab_size)
    train_ids, val_ids = tok.encode(train_bytes), tok.encode(val_bytes)
    return tok, train_ids, val_ids, len(val_bytes) / len(val_ids)


def unigram_bpb(train_ids, val_ids, vocab_size: int, bytes_per_token: float) -> float:
    """Bits per byte of the best context-free model over the same tokens (add-one
    smoothed counts from the training part): a language model must beat it."""
    counts = np.bincount(train_ids, minlength=vocab_size) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[val_ids].mean() / (bytes_per_token * math.log(2)))


def _cache_path(cache_dir, kind: str, model_cfg, train_cfg, tok, seed: int) -> Path:
    key = json.dumps({"kind": kind, "model": asdict(model_cfg), "train": asdict(train_cfg),
                      "merges": tok.merges, "seed": seed}, sort_keys=True)
    return Path(cache_dir) / f"headless-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"


# ------------------------------------------------------------------ the losses


def zero_shot_loss(model: HeadlessGPT, x, y):
    """CWT while training; while evaluating, the cross-entropy of the zero-shot head
    o E^T / tau, so that the validation curve of the CWT run is in bits per byte."""
    outputs, loss = model(x, y if model.training else None)
    if model.training:
        return loss
    logits = outputs @ model.wte.weight.T / model.config.temperature       # (B, T, V)
    return F.cross_entropy(logits, y)


# ----------------------------------------------------------------------- run


def _interp(x_at: float, xs, ys) -> float:
    return float(np.interp(x_at, np.asarray(xs, float), np.asarray(ys, float)))


def run(quick: bool = True, out_dir="runs/headless", seed: int = 0,
        device: str = "cpu", profile: Profile | None = None, runner=None) -> dict:
    """Run the experiment and write report.md, results.json and two plots to
    ``out_dir``. ``profile`` overrides the quick/full choice (e.g. :data:`SMOKE`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = out_dir.parent / "cache"
    t_start = time.perf_counter()
    phases = {}                                  # wall-clock seconds of each part

    def lap(name):
        phases[name] = time.perf_counter() - t_start - sum(phases.values())

    # 1. The tokenizer and the token ids.
    prof = profile or PROFILES["quick" if quick else "full"]
    tok, train_ids, val_ids, bpt = corpus(prof.vocab_size)
    V = tok.vocab_size
    base = GPTConfig(**{**asdict(prof.model), "vocab_size": V})
    pre = TrainConfig(**{**asdict(prof.pretrain), "seed": seed})
    to_bpb = 1.0 / (bpt * math.log(2))         # nats per token -> bits per byte

    lap("tokenizer")

    # 2. Same init, same batches, same number of steps.
    ce, cwt = make_models(base, seed, device)
    h_ce = train(ce, train_ids, val_ids, pre, bytes_per_token=bpt,
                 checkpoint=_cache_path(cache, "ce", base, pre, tok, seed), desc="CE")
    pre_cwt = TrainConfig(**{**asdict(pre), "lr": prof.cwt_lr or pre.lr})
    h_cwt = train(cwt, train_ids, val_ids, pre_cwt, bytes_per_token=bpt,
                  loss_fn=zero_shot_loss,
                  checkpoint=_cache_path(cache, "cwt", base, pre_cwt, tok, seed), desc="CWT")

    lap("pretraining")

    # 3 and 6. Step times side by side, for each V of the sweep (fresh models; the
    # trained ones stay as they are). The experiment's own V is timed in the sweep.
    sizes = sorted(set(prof.sweep) | {V})
    sweep = throughput_vs_vocab(base, sizes, pre.batch_size, prof.sweep_steps,
                                prof.sweep_repeats, seed, device)
    at_V = next(r for r in sweep if r["vocab_size"] == V)
    step_s = {"ce": at_V["ce_step_s"], "cwt": at_V["cwt_step_s"]}
    tokens_per_step = pre.batch_size * base.context

    lap("throughput")

    # 4. Bits per byte on the validation split.
    def val_bpb(lm) -> float:
        return evaluate(lm, val_ids, base.context, pre.batch_size,
                        prof.final_eval_batches) * to_bpb

    def finetune(lm, desc):
        return train(lm, train_ids, val_ids, ft_cfg, bytes_per_token=bpt, desc=desc)

    ft_cfg = TrainConfig(**{**asdict(prof.finetune), "seed": seed + 1})
    bpb = {"ce": val_bpb(ce), "cwt_zero_shot": val_bpb(lm_from_headless(cwt, "tied"))}
    ft_lm = lm_from_headless(cwt, "clone")                 # untied head, a copy of E
    h_ft = finetune(ft_lm, "CWT+FT")
    bpb["cwt_finetuned"] = val_bpb(ft_lm)
    head_lm = freeze_all_but_head(lm_from_headless(cwt, "clone"))
    h_head = finetune(head_lm, "CWT+head")
    bpb["cwt_head_only"] = val_bpb(head_lm)
    # The control: the CE model gets the same fine-tuning (cloned head, same steps),
    # so "CWT + FT" and "CE + FT" have seen the same tokens.
    ce_ft = lm_from_headless(ce, "clone")
    h_ce_ft = finetune(ce_ft, "CE+FT")
    bpb["ce_finetuned"] = val_bpb(ce_ft)

    # Compute: steps x measured step time; a fine-tuning step costs a CE step.
    c_ce = [s * step_s["ce"] for s in h_ce.eval_step]
    c_cwt = [s * step_s["cwt"] for s in h_cwt.eval_step]
    c_ft = [pre.steps * step_s["cwt"] + s * step_s["ce"] for s in h_ft.eval_step]
    c_ce_ft = [pre.steps * step_s["ce"] + s * step_s["ce"] for s in h_ce_ft.eval_step]
    c_equal = c_ft[-1]                                      # all that CWT + FT spent
    ce_curve_c, ce_curve_bpb = c_ce + c_ce_ft, h_ce.val_bpb + h_ce_ft.val_bpb
    ce_at_equal = _interp(c_equal, ce_curve_c, ce_curve_bpb)

    lap("evaluation and fine-tuning")

    # 5. The probe, on frozen mean-pooled features.
    window = min(prof.probe_window, base.context)
    xtr, ytr, xte, yte = topic_passages(tok, window, prof.probe_per_class, seed=seed)
    backend.manual_seed(seed)
    untrained = GPT(base).to(device)
    probe = {}
    for name, model in (("ce", ce), ("cwt", cwt), ("untrained", untrained)):
        f_train, f_test = pooled_features(model, xtr), pooled_features(model, xte)
        probe[name] = linear_probe(f_train, ytr, f_test, yte, steps=prof.probe_steps,
                                   seed=seed)
        probe[name]["effective_rank"] = effective_rank(f_train)

    lap("probe")
    plots = [_plot_compute(out_dir / "loss_vs_compute.png", h_ce, h_cwt, h_ft, h_ce_ft,
                           c_ce, c_cwt, c_ft, c_ce_ft),
             _plot_sweep(out_dir / "throughput_vs_vocab.png", sweep, V)]

    results = {
        "profile": "custom" if profile else "quick" if quick else "full",
        "device": device,
        "vocab_size": V,
        "bytes_per_token_val": bpt,
        "tokens": {"train": len(train_ids), "val": len(val_ids)},
        "model": asdict(base),
        "pretrain": asdict(pre),
        "cwt_lr": pre_cwt.lr,
        "finetune": asdict(ft_cfg),
        "parameters": {"ce": count_parameters(ce), "cwt": count_parameters(cwt),
                       "cwt_finetuned": count_parameters(ft_lm)},
        "step_seconds": step_s,
        "tokens_per_second": {k: tokens_per_step / v for k, v in step_s.items()},
        "throughput_ratio": step_s["ce"] / step_s["cwt"],
        "train_wall_seconds": {"ce": h_ce.seconds, "cwt": h_cwt.seconds,
                               "cwt_finetune": h_ft.seconds, "cwt_head_only": h_head.seconds,
                               "ce_finetune": h_ce_ft.seconds},
        "val_bpb": bpb,
        "unigram_bpb": unigram_bpb(train_ids, val_ids, V, bpt),
        "equal_compute": {
            "compute_seconds": c_equal,
            "ce_val_bpb": ce_at_equal,
            "cwt_finetuned_val_bpb": h_ft.val_bpb[-1],
            "note": "CE's curve (pretraining, then its own fine-tuning) read at the "
                    "compute CWT pretraining + fine-tuning spent; both on the "
                    "validation prefix the curves use"},
        "curves": {"ce": {"step": h_ce.eval_step, "compute_s": c_ce, "val_bpb": h_ce.val_bpb,
                          "train_loss": h_ce.train_loss},
                   "cwt": {"step": h_cwt.eval_step, "compute_s": c_cwt,
                           "zero_shot_val_bpb": h_cwt.val_bpb,
                           "train_cwt_loss": h_cwt.train_loss},
                   "cwt_finetune": {"step": h_ft.eval_step, "compute_s": c_ft,
                                    "val_bpb": h_ft.val_bpb},
                   "ce_finetune": {"step": h_ce_ft.eval_step, "compute_s": c_ce_ft,
                                   "val_bpb": h_ce_ft.val_bpb}},
        "probe": {"task": f"help topic of a {window}-token passage, "
                          f"{len(PROBE_TOPICS)} topics", "topics": list(PROBE_TOPICS),
                  **probe},
        "throughput_vs_vocab": sweep,
        "paper": PAPER,
        "plots": [p.name for p in plots],
    }
    lap("plots")
    results["phase_seconds"] = phases
    results["seconds"] = time.perf_counter() - t_start
    results["summary"] = {
        "CWT/CE tokens/s": f"x{results['throughput_ratio']:.2f}",
        "bpb CE / E^T / FT": f"{bpb['ce']:.2f} / {bpb['cwt_zero_shot']:.2f} / "
                             f"{bpb['cwt_finetuned']:.2f}",
        "probe acc CE / CWT": f"{probe['ce']['test_accuracy']:.2f} / "
                              f"{probe['cwt']['test_accuracy']:.2f}",
    }
    write_results(out_dir, results)
    _write_report(out_dir, results, plots)
    return results


# ---------------------------------------------------------------------- plots


def _plot_compute(path, h_ce, h_cwt, h_ft, h_ce_ft, c_ce, c_cwt, c_ft, c_ce_ft) -> Path:
    from ...report import smooth

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    line, = ax1.plot(c_ce, h_ce.val_bpb, "o-", label="CE (tied softmax head)")
    ax1.plot([c_ce[-1]] + c_ce_ft, [h_ce.val_bpb[-1]] + h_ce_ft.val_bpb, "o--",
             color=line.get_color(), label="CE + the same fine-tuning")
    line, = ax1.plot(c_cwt, h_cwt.val_bpb, "s-", label="CWT, read with the E^T head")
    ax1.plot([c_cwt[-1]] + c_ft, [h_cwt.val_bpb[-1]] + h_ft.val_bpb, "^--",
             color=line.get_color(), label="CWT + cloned head fine-tuned (CE)")
    ax1.set(xlabel="training compute (s = steps x measured step time)",
            ylabel="validation bits per byte (prefix)", title="Language modelling vs compute")
    step_ce, step_cwt = c_ce[-1] / h_ce.eval_step[-1], c_cwt[-1] / h_cwt.eval_step[-1]
    ax2.plot(np.asarray(h_ce.step) * step_ce, smooth(h_ce.train_loss), label="CE loss")
    ax2.plot(np.asarray(h_cwt.step) * step_cwt, smooth(h_cwt.train_loss),
             label="CWT loss (in-batch, K x K)")
    ax2.set(xlabel="training compute (s)", ylabel="training loss (nats, smoothed)",
            title="The two objectives (different losses)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _plot_sweep(path, sweep, V) -> Path:
    plt = pyplot()
    vs = [r["vocab_size"] for r in sweep]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(vs, [r["ce_tokens_per_s"] for r in sweep], "o-", label="CE (softmax over V)")
    ax1.plot(vs, [r["cwt_tokens_per_s"] for r in sweep], "s-", label="CWT (K x K)")
    ax1.set(xscale="log", xlabel="vocabulary size V", ylabel="training tokens / s",
            title="Training throughput")
    ax1.set_ylim(bottom=0)
    ax2.plot(vs, [r["ratio"] for r in sweep], "o-", color="C2")
    ax2.axhline(PAPER["table6_throughput_ratio"], color="gray", ls="--",
                label=f"paper, BERT-small: x{PAPER['table6_throughput_ratio']}")
    ax2.axhline(1.0, color="black", lw=0.8)
    ax2.set(xscale="log", xlabel="vocabulary size V", ylabel="CWT / CE tokens per s",
            title="Speed-up of CWT")
    for ax in (ax1, ax2):
        ax.axvline(V, color="gray", ls=":", lw=1)
        ax.set_xticks(vs, [str(v) for v in vs])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


# --------------------------------------------------------------------- report


def _write_report(out_dir, r, plots) -> None:
    b, p, m, eq = r["val_bpb"], r["probe"], r["model"], r["equal_compute"]
    pre, ft, V = r["pretrain"], r["finetune"], r["vocab_size"]
    K = pre["batch_size"] * m["context"]
    sweep_rows = "\n".join(
        f"| {s['vocab_size']} | {s['ce_tokens_per_s']:,.0f} | {s['cwt_tokens_per_s']:,.0f} | "
        f"x{s['ratio']:.2f} |" for s in r["throughput_vs_vocab"])
    probe_rows = "\n".join(
        f"| {label} | {p[k]['train_accuracy']:.3f} | {p[k]['test_accuracy']:.3f} | "
        f"{p[k]['effective_rank']:.1f} |"
        for k, label in (("ce", "CE model"), ("cwt", "CWT model"),
                         ("untrained", "untrained model (floor)")))
    lam, glue = PAPER["table3_lambada"], PAPER["table6_glue"]
    write_report(out_dir, "Headless language models (Contrastive Weight Tying)", f"""
Two causal GPTs ({m['n_layer']} layers, d_model {m['d_model']}, context {m['context']};
{r['parameters']['ce']:,} parameters each, since the CE head IS the input embedding and
the headless model has no head) trained for {pre['steps']} steps of {pre['batch_size']} x
{m['context']} tokens (peak learning rate: CE {pre['lr']:g}, CWT {r['cwt_lr']:g}), on the
same batches from the same initial weights, on Python's help
text with a BPE vocabulary of {V} ids ({r['tokens']['train']:,} training tokens,
{r['bytes_per_token_val']:.2f} bytes per token), on {r['device']}.

## Throughput (paper, Table 6: CWT x{PAPER['table6_throughput_ratio']} on BERT-small)

One full training step, the two models timed interleaved:

| objective | tokens / s | step time |
|---|---:|---:|
| CE (softmax over V = {V}) | {r['tokens_per_second']['ce']:,.0f} | {r['step_seconds']['ce'] * 1e3:.0f} ms |
| CWT (in-batch, K = {K}) | {r['tokens_per_second']['cwt']:,.0f} | {r['step_seconds']['cwt'] * 1e3:.0f} ms |
| **CWT / CE** | **x{r['throughput_ratio']:.2f}** | |

Against the vocabulary size (same model, random ids):

| V | CE tokens/s | CWT tokens/s | CWT / CE |
|---:|---:|---:|---:|
{sweep_rows}

![throughput]({plots[1].name})

## Language modelling (paper, Table 3: the E^T head is poor, a fine-tuned head is not)

Paper (LAMBADA accuracy, Pythia-70M): vanilla {lam['vanilla']}%, headless read with
E^T {lam['headless_E_T']}%, headless with a fine-tuned head {lam['headless_ft']}%. Here,
bits per byte on the validation split (lower is better):

| model | val bits per byte |
|---|---:|
| CE, {pre['steps']} steps | {b['ce']:.3f} |
| CWT, {pre['steps']} steps, zero-shot head o E^T | {b['cwt_zero_shot']:.3f} |
| CWT + cloned head, whole model fine-tuned {ft['steps']} steps with CE | {b['cwt_finetuned']:.3f} |
| CWT + cloned head, head alone fine-tuned {ft['steps']} steps | {b['cwt_head_only']:.3f} |
| CE + the same {ft['steps']}-step fine-tuning (control, same tokens as CWT + FT) | {b['ce_finetuned']:.3f} |
| a unigram model of the same tokens (no context), for scale | {r['unigram_bpb']:.3f} |

At equal compute ({eq['compute_seconds']:.1f} s, what CWT pretraining and fine-tuning
cost as steps x measured step time), on the validation prefix the curves use: CE
{eq['ce_val_bpb']:.3f}, CWT + fine-tuned head {eq['cwt_finetuned_val_bpb']:.3f}.

![loss vs compute]({plots[0].name})

## Downstream probe (stands in for GLUE; paper, Table 6: CE {glue['ce']}, CWT {glue['cwt']})

Task: the {p['task']} ({', '.join(p['topics'])}). A linear classifier on frozen,
mean-pooled final hidden states; {p['ce']['n_train']} training and {p['ce']['n_test']}
test passages; chance is {1 / p['ce']['classes']:.3f}. The effective rank of the
features (exp of the entropy of their normalised singular values) tells how many
directions they use.

| features from | train accuracy | test accuracy | effective rank |
|---|---:|---:|---:|
{probe_rows}

Wall-clock of the training runs (these include evaluations): CE
{r['train_wall_seconds']['ce']:.0f} s, CWT {r['train_wall_seconds']['cwt']:.0f} s (as recorded
when they were trained: a cached model keeps its time); this run took {r['seconds']:.0f} s ({', '.join(
    f"{k} {v:.0f} s" for k, v in r['phase_seconds'].items())}).
""")


if __name__ == "__main__":
    print(json.dumps(run()["summary"], indent=2))
