"""Five small models at an equal training budget: where do the parameters go, and
what does cutting them cost in bits per byte?

    (a) BPE tokens, untied embedding and head
    (b) BPE tokens, tied (the head IS the embedding)
    (c) BPE tokens, tied, plus one FFN shared by all layers
    (d) byte-level embedder with pooling and a byte decoder (no (V, d) table)
    (e) byte-level, plus FFN sharing

All five see the same token windows in the same order (same steps, batch and
context), on the prose that ships with Python, split 90/10. The BPE tokenizer is
trained on the training split only.

Bits per byte is the one fair metric across tokenizations:

    BPE models:   bpb = sum_t -log p(token_t) / (ln 2 * bytes of those tokens)
    byte models:  bpb = (sum -log p(byte) over the predicted bytes
                         + sum_t -log q(len_t)) / (ln 2 * predicted bytes)

The decoder's loss ignores the pads, so it never says where a token ends; ``q`` is a
unigram model of the window lengths (counted on the training split, add-one), and
adding its cost makes the byte model's figure a true code length, comparable with
the BPE models'. The bytes-only figure (without it) is reported too. Bytes that the
window cuts off are never predicted and not counted; their share is reported.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ... import backend, data
from ...autograd import no_grad
from ...nn import functional as F
from ...nn.module import count_parameters
from ...report import plot_losses, pyplot, save_figure, write_report, write_results
from ...train import TrainConfig, default_loss, train
from .byte_windows import ByteWindows
from .model import STLM, STLMConfig, byte_cross_entropy
from .params import (PAPER_FIGURES, measured_split, millions, paper_configs,
                     parameter_budget)

# Quick: about a minute on 2 idle CPU cores for all five models; --full for longer.
# The core is paper-shaped in miniature: SwiGLU FFN of width 3 d, RMSNorm, no biases.
PROFILES = {
    "quick": (STLMConfig(vocab_size=2048, context=32, d_model=64, n_layer=4, n_head=4,
                         ffn_hidden=192, byte_window=12, byte_dim=16, byte_heads=2),
              TrainConfig(steps=200, batch_size=16, lr=4e-3, warmup_steps=20,
                          eval_interval=50, eval_batches=4)),
    "full": (STLMConfig(vocab_size=4096, context=64, d_model=128, n_layer=6, n_head=4,
                        ffn_hidden=384, byte_window=12, byte_dim=32, byte_heads=4),
             TrainConfig(steps=2000, batch_size=32, lr=2e-3, warmup_steps=100,
                         eval_interval=250, eval_batches=16, checkpoint_interval=250)),
}

VARIANTS = {
    "(a) BPE, untied": dict(embedder="token", tie_embeddings=False),
    "(b) BPE, tied": dict(embedder="token", tie_embeddings=True),
    "(c) BPE, tied + FFN sharing": dict(embedder="token", tie_embeddings=True,
                                        share_ffn=True),
    "(d) byte-level pooling": dict(embedder="byte", tie_embeddings=False),
    "(e) byte-level + FFN sharing": dict(embedder="byte", tie_embeddings=False,
                                         share_ffn=True),
}


# ------------------------------------------------------------------------- data


def prepare_data(vocab_size: int, window: int, max_bytes: int | None = None) -> dict:
    """The prose corpus split 90/10, a BPE tokenizer trained on the training part,
    both parts as token ids, and the byte windows of the tokens."""
    train_bytes, val_bytes = data.train_val_split(data.prose_corpus(max_bytes), 0.1)
    tok = data.BPETokenizer.train(train_bytes.tobytes(), vocab_size)
    train_ids, val_ids = tok.encode(train_bytes.tobytes()), tok.encode(val_bytes.tobytes())
    return {"tokenizer": tok, "windows": ByteWindows(tok, window),
            "train_ids": train_ids, "val_ids": val_ids,
            "train_bytes": len(train_bytes), "val_bytes": len(val_bytes)}


def length_code(windows: ByteWindows, train_ids) -> np.ndarray:
    """-ln q(k) for window lengths k = 0..W: a unigram model of how many bytes a
    token's window holds, counted on the training tokens (add-one smoothed)."""
    counts = np.bincount(windows.kept[np.asarray(train_ids)],
                         minlength=windows.window + 1)[1:] + 1.0   # k = 1..W
    nats = np.full(windows.window + 1, np.inf)
    nats[1:] = -np.log(counts / counts.sum())
    return nats


def byte_loss_fn(windows: ByteWindows):
    """``train``'s loss for a byte model: token ids -> byte windows -> the model."""
    def loss_fn(model, x, y):
        return model(windows(x), windows(y))[1]
    return loss_fn


# --------------------------------------------------------------------- metrics


def heldout_bpb(model, val_ids, windows: ByteWindows, length_nats: np.ndarray,
                batch_size: int = 32) -> dict:
    """Bits per byte on the validation split (consecutive windows of the context).

    ``bpb`` scores the target tokens that FIT the byte window, the same bytes for
    every model (a byte model never sees what the window cuts off); for byte models
    it includes the length code. ``bpb_bytes_only`` leaves the length code out (BPE
    models: equal to bpb). ``bpb_all_tokens`` (BPE models only) scores every token."""
    cfg = model.config
    byte = cfg.embedder == "byte"
    device = next(iter(model.parameters())).device
    nats = len_nats = nats_all = 0.0
    n_tok = n_bytes = n_bytes_all = 0
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for x, y in data.iter_eval_batches(val_ids, cfg.context, batch_size):
                fit = windows.full[y] <= windows.window                      # (B, T)
                xd, yd = backend.to_device(x, device), backend.to_device(y, device)
                if byte:
                    logits, _ = model(windows(xd))
                    per_slot = byte_cross_entropy(logits, windows(yd), "none")  # (B, T, W)
                    per_token = backend.asnumpy(per_slot.data).sum(axis=-1)
                    len_nats += float(length_nats[windows.kept[y]][fit].sum())
                else:
                    logits, _ = model(xd)
                    per_token = backend.asnumpy(
                        F.cross_entropy(logits, yd, reduction="none").data)  # (B, T)
                nats += float(per_token[fit].sum())
                n_bytes += int(windows.full[y][fit].sum())
                n_tok += int(fit.sum())
                nats_all += float(per_token.sum())
                n_bytes_all += int(windows.full[y].sum())
    finally:
        model.train(was_training)
    ln2 = math.log(2)
    return {"bpb": (nats + len_nats) / (n_bytes * ln2),
            "bpb_bytes_only": nats / (n_bytes * ln2),
            "bpb_all_tokens": None if byte else nats_all / (n_bytes_all * ln2),
            "tokens": n_tok, "bytes": n_bytes}


# ------------------------------------------------------------------ the runs


def _cache_path(cache_dir, name, model_cfg, train_cfg, corpus_ids, seed, val_scale):
    key = json.dumps({"model": asdict(model_cfg), "train": asdict(train_cfg), "seed": seed,
                      "corpus": hashlib.sha256(corpus_ids.tobytes()).hexdigest(),
                      "val_scale": val_scale}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"stlm-{name[1]}-{digest}.npz"


def compare(base: STLMConfig, train_cfg: TrainConfig, seed: int = 0, device: str = "cpu",
            cache_dir=None, progress=None, variants=None, max_bytes: int | None = None) -> dict:
    """Train every variant on the same data and budget; measure parameters and bpb.

    Returns ``{"data": ..., "variants": {name: figures}, "histories": {name: History},
    "models": {name: model}}``; ``cache_dir`` makes finished runs reload."""
    variants = VARIANTS if variants is None else variants
    d = prepare_data(base.vocab_size, base.byte_window, max_bytes)
    windows, train_ids, val_ids = d["windows"], d["train_ids"], d["val_ids"]
    length_nats = length_code(windows, train_ids)
    bytes_per_token = float(windows.full[val_ids].sum()) / len(val_ids)
    train_cfg = replace(train_cfg, seed=seed)
    out = {"variants": {}, "histories": {}, "models": {}}
    for name, overrides in variants.items():
        cfg = replace(base, **overrides)
        backend.manual_seed(seed)
        model = STLM(cfg).to(device)
        byte = cfg.embedder == "byte"
        # A byte model's loss is already per (predicted) byte; a BPE token stands for
        # bytes_per_token bytes.
        scale = 1.0 if byte else bytes_per_token
        ckpt = (None if cache_dir is None else
                _cache_path(cache_dir, name, cfg, train_cfg, train_ids, seed, scale))
        history = train(model, train_ids, val_ids, train_cfg, checkpoint=ckpt,
                        bytes_per_token=scale,
                        loss_fn=byte_loss_fn(windows) if byte else default_loss,
                        progress=progress, desc=f"stlm {name[:3]}")
        split = measured_split(model)
        budget = parameter_budget(cfg)
        metrics = heldout_bpb(model, val_ids, windows, length_nats, train_cfg.batch_size)
        out["variants"][name] = {
            "config": overrides, "parameters": split["total"],
            "embedding+head": split["embedding+head"], "core": split["core"],
            "analytic_parameters": budget["total"],
            "counted_parameters": count_parameters(model),
            "val_bpb": metrics["bpb"], "val_bpb_bytes_only": metrics["bpb_bytes_only"],
            "val_bpb_all_tokens": metrics["bpb_all_tokens"],
            "val_bytes_scored": metrics["bytes"], "train_seconds": history.seconds}
        out["histories"][name] = history
        out["models"][name] = model
    val_lost = windows.lost_byte_rate(val_ids)
    out["data"] = {
        "vocab_size": d["tokenizer"].vocab_size, "window": windows.window,
        "train_tokens": len(train_ids), "val_tokens": len(val_ids),
        "train_bytes": d["train_bytes"], "val_bytes": d["val_bytes"],
        "bytes_per_token_val": bytes_per_token,
        "truncation_rate_train": windows.truncation_rate(train_ids),
        "truncation_rate_val": windows.truncation_rate(val_ids),
        "lost_byte_rate_val": val_lost,
        "length_code_bits_per_token": float(
            np.exp(-length_nats[1:]) @ length_nats[1:] / math.log(2)),
        "longest_tokens": [t.decode("utf-8", "replace") for t in sorted(
            {windows.tokenizer.vocab[i] for i in np.flatnonzero(windows.full > windows.window)},
            key=len, reverse=True)[:5]],
    }
    return out


def paper_counts() -> dict:
    """The analytic count at the paper's configurations, beside its quoted figures."""
    b = {name: parameter_budget(cfg) for name, cfg in paper_configs().items()}
    byte = b["byte-level"]["embedding+head"]
    ours = {"tied": millions(b["tied"]["total"]), "untied": millions(b["untied"]["total"]),
            "tied + FFN sharing": millions(b["tied + FFN sharing"]["total"]),
            "embedding (tied)": millions(b["tied"]["embedding+head"]),
            "byte embedder + decoder": millions(byte),
            "fewer than tied": f"{100 * (1 - byte / b['tied']['embedding+head']):.1f}%",
            "fewer than untied": f"{100 * (1 - byte / b['untied']['embedding+head']):.1f}%"}
    return {"formula": ours, "paper": dict(PAPER_FIGURES),
            "exact": {name: x["total"] for name, x in b.items()}}


# --------------------------------------------------------------------- plots


def plot_params_vs_bpb(variants: dict, path, title: str) -> Path:
    """Held-out bits per byte against parameters: total (left), embedding+head (right).

    Byte-level models show the fair figure (filled) and the bytes-only one (hollow)."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, xlabel in ((axes[0], "parameters", "parameters (unique, total)"),
                            (axes[1], "embedding+head", "parameters in embedding + head")):
        for i, (name, v) in enumerate(variants.items()):
            color = f"C{i}"
            ax.scatter(v[key], v["val_bpb"], s=60, color=color, label=name, zorder=3)
            if v["val_bpb_bytes_only"] != v["val_bpb"]:
                ax.scatter(v[key], v["val_bpb_bytes_only"], s=60, facecolors="none",
                           edgecolors=color, zorder=3)
                ax.plot([v[key]] * 2, [v["val_bpb"], v["val_bpb_bytes_only"]], ":",
                        color=color)
            ax.annotate(name[:3], (v[key], v["val_bpb"]), textcoords="offset points",
                        xytext=(6, 4) if i % 2 else (6, -12))   # (b)/(c) share an x
        ax.set(xscale="log", xlabel=xlabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("held-out bits per byte (lower is better)")
    axes[1].legend(fontsize=8, title="hollow: bytes only, no length code",
                   title_fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


# ------------------------------------------------------------------------ run


def run(quick: bool = True, out_dir="runs/stlm", seed: int = 0, device: str = "cpu",
        runner=None) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    profile = "quick" if quick else "full"
    base, train_cfg = PROFILES[profile]
    res = compare(base, train_cfg, seed, device, cache_dir=out_dir.parent / "cache")
    v, dd = res["variants"], res["data"]
    a, b, c, dl, e = (v[k] for k in VARIANTS)
    paper = paper_counts()
    cut_tied = 1 - dl["embedding+head"] / b["embedding+head"]
    cut_untied = 1 - dl["embedding+head"] / a["embedding+head"]
    plot = plot_params_vs_bpb(v, out_dir / "params_vs_bpb.png",
                              f"STLM variants on pydoc prose ({profile} profile, "
                              f"{train_cfg.steps} steps each)")
    curves = plot_losses({k[:3] + (" (bytes only)" if "byte" in k else ""): h
                          for k, h in res["histories"].items()}, out_dir / "loss.png",
                         "Training loss (nats per token; per predicted byte for (d), (e)) "
                         "and validation bpb (estimate on a prefix)")
    results = {
        "profile": profile, "model": asdict(base), "train": asdict(train_cfg),
        "device": device, "data": dd, "variants": v,
        "embedding_head_reduction": {"vs tied": cut_tied, "vs untied": cut_untied},
        "ffn_sharing_saves": {"BPE": b["parameters"] - c["parameters"],
                              "byte": dl["parameters"] - e["parameters"]},
        "paper_counts": paper,
        "seconds": time.perf_counter() - t0,
    }
    results["summary"] = {
        "bpb a/b/c/d/e": "/".join(f"{x['val_bpb']:.2f}" for x in (a, b, c, dl, e)),
        "emb+head cut": f"{100 * cut_tied:.0f}%/{100 * cut_untied:.0f}% (paper 90%/95%)",
        "truncated": f"{100 * dd['truncation_rate_val']:.1f}% of tokens"}
    write_results(out_dir, results)
    rows = "\n".join(
        f"| {k} | {x['parameters']:,} | {x['embedding+head']:,} | {x['core']:,} | "
        f"**{x['val_bpb']:.3f}** | {x['val_bpb_bytes_only']:.3f} | "
        + ("-" if x["val_bpb_all_tokens"] is None else f"{x['val_bpb_all_tokens']:.3f}")
        + f" | {x['train_seconds']:.0f} s |" for k, x in v.items())
    paper_rows = "\n".join(f"| {k} | {paper['paper'][k]} | {paper['formula'][k]} |"
                           for k in paper["paper"])
    best = min(v, key=lambda k: v[k]["val_bpb"])
    write_report(out_dir, "Super Tiny Language Models: byte pooling, tying, FFN sharing", f"""
Five models trained for {train_cfg.steps} steps each (batch {train_cfg.batch_size},
context {base.context} tokens, the same batches for all) on Python's own prose
({dd['train_bytes']:,} bytes to train on, {dd['val_bytes']:,} to validate), with a BPE
tokenizer of {dd['vocab_size']} tokens trained on the training split
({dd['bytes_per_token_val']:.2f} bytes per token on validation). Core: d_model
{base.d_model}, {base.n_layer} layers, SwiGLU FFN of width {base.ffn_hidden}, RMSNorm,
no biases. Byte path: window {base.byte_window}, byte width {base.byte_dim}. Device:
{device}.

| variant | parameters | embedding + head | core | val bpb | bytes only | all tokens | train time |
|---|---|---|---|---|---|---|---|
{rows}

"val bpb" is held-out bits per byte over the validation tokens that fit the byte
window ({v[best]['val_bytes_scored']:,} bytes, the same for every model; "all tokens"
scores the BPE models on every byte). For the byte-level models it includes the cost
of coding each token's length ({dd['length_code_bits_per_token']:.2f} bits per token on
average, under the length model itself), which the decoder's pad-ignoring loss does
not model; "bytes only" leaves that out and is therefore not a complete code length.
Lowest val bpb: {best}. Train times are wall-clock on a machine shared with other jobs.

![parameters vs bits per byte]({plot.name})

**Parameters.** The byte embedder + decoder holds {dl['embedding+head']:,} parameters
against {b['embedding+head']:,} for the tied and {a['embedding+head']:,} for the untied
embedding: {100 * cut_tied:.1f}% / {100 * cut_untied:.1f}% fewer at this size (the
paper: 90.0% / 95.0% at hidden 512 with GPT-2's 50,257 tokens; the saving grows with
the vocabulary, which is {base.vocab_size} here). FFN sharing removes
{results['ffn_sharing_saves']['BPE']:,} parameters ({base.n_layer - 1} FFNs).

**Truncation.** {100 * dd['truncation_rate_val']:.2f}% of the validation tokens are longer
than the {base.byte_window}-byte window and lose their tail, {100 * dd['lost_byte_rate_val']:.2f}%
of the bytes; those bytes are never predicted and not counted. The longest tokens:
{', '.join(repr(t) for t in dd['longest_tokens'])}.

**The paper's counts**, from the same formula that matches every built model here:

| figure | paper | formula |
|---|---|---|
{paper_rows}

![training curves]({curves.name})
""")
    return results


if __name__ == "__main__":
    print(json.dumps(run()["summary"], indent=2))
