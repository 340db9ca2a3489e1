"""Train the baseline GPT on English prose and report bits per byte and a sample.

The trained checkpoint is cached under ``<out>/cache/``, keyed by the model and
training settings, the corpus and the seed: a second run (or another experiment
that needs the base model, through :func:`pretrained_gpt`) loads it instead of
training again.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ... import backend, data, protocol
from ...nn import GPT, GPTConfig, count_parameters, tie_report
from ...report import plot_losses, write_report, write_results
from ...train import TrainConfig, evaluate, train

# The quick profile trains for about a minute on 2 CPU cores; --full for longer.
# Checkpoints every few hundred steps: an interrupted run resumes where it stopped.
PROFILES = {
    "quick": (GPTConfig(vocab_size=256, context=64, d_model=128, n_layer=4, n_head=4),
              TrainConfig(steps=500, batch_size=32, lr=3e-3, warmup_steps=50,
                          eval_interval=50, eval_batches=8, checkpoint_interval=100)),
    "full": (GPTConfig(vocab_size=256, context=128, d_model=192, n_layer=6, n_head=6,
                       dropout=0.1),
             TrainConfig(steps=3000, batch_size=32, lr=2e-3, warmup_steps=100,
                         eval_interval=250, eval_batches=32, checkpoint_interval=250)),
}


def corpus_splits():
    """The prose corpus as byte ids, split 90/10 (the last tenth is validation)."""
    return data.train_val_split(data.prose_corpus(), val_fraction=0.1)


def prose_splits() -> protocol.Splits:
    """The prose corpus as byte ids, cut 80 / 10 / 10 into train | val | test: the
    split every prose experiment uses (settings are chosen on val, test is reported)."""
    return protocol.split(data.prose_corpus(), val_fraction=0.1, test_fraction=0.1)


def unigram_bpb(train_ids: np.ndarray, val_ids: np.ndarray) -> float:
    """Bits per byte of the best context-free model: byte frequencies counted on the
    training split (add-one smoothed), scored on validation. A language model that
    uses context must beat it."""
    counts = np.bincount(train_ids, minlength=256) + 1.0
    logp = np.log2(counts / counts.sum())
    return float(-logp[val_ids].mean())


def _cache_path(cache_dir, profile: str, model_cfg, train_cfg, corpus: bytes, seed: int):
    key = json.dumps({"model": asdict(model_cfg), "train": asdict(train_cfg), "seed": seed,
                      "corpus": hashlib.sha256(corpus).hexdigest()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"gpt-{profile}-{digest}.npz"


def pretrained_gpt(quick: bool = True, seed: int = 0, device: str = "cpu",
                   cache_dir="runs/cache", progress=None):
    """The trained baseline ``(model, history)``: loaded from the cache if there,
    trained (and cached) otherwise."""
    profile = "quick" if quick else "full"
    model_cfg, train_cfg = PROFILES[profile]
    train_cfg = TrainConfig(**{**asdict(train_cfg), "seed": seed})
    train_ids, val_ids = corpus_splits()
    path = _cache_path(cache_dir, profile, model_cfg, train_cfg, train_ids.tobytes(), seed)
    backend.manual_seed(seed)
    model = GPT(model_cfg).to(device)
    history = train(model, train_ids, val_ids, train_cfg, checkpoint=path,
                    progress=progress, desc=f"gpt ({profile})")
    return model, history


def run(quick: bool = True, out_dir="runs/gpt", seed: int = 0, device: str = "cpu",
        runner=None) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, history = pretrained_gpt(quick, seed, device, cache_dir=out_dir.parent / "cache")
    prompt = "The "
    sample = model.generate(data.ByteTokenizer().encode(prompt)[None], 300,
                            temperature=0.8, top_k=40, seed=seed)
    text = data.ByteTokenizer().decode(sample[0])
    train_ids, val_ids = corpus_splits()
    baseline = unigram_bpb(train_ids, val_ids)
    # The curve estimates the loss on a prefix of the validation split; the headline
    # figure is the loss on all of it.
    val_loss = evaluate(model, val_ids, model.config.context, 32)
    plot = plot_losses({"GPT (tied)": history}, out_dir / "loss.png",
                       "Byte-level GPT on pydoc prose")
    cfg = model.config
    results = {
        "profile": "quick" if quick else "full",
        "model": asdict(cfg),
        "parameters": count_parameters(model),
        "parameters_if_untied": count_parameters(model) + cfg.vocab_size * cfg.d_model,
        "steps": history.step[-1],
        "train_seconds": history.seconds,
        "val_loss_nats": val_loss,
        "val_bpb": val_loss / math.log(2),      # one token per byte
        "unigram_bpb": baseline,
        "corpus_bytes": {"train": len(train_ids), "val": len(val_ids)},
        "python": platform.python_version(),   # the corpus is this Python's own help text
        "device": device,
        "val_bpb_curve": {"step": history.eval_step, "bpb": history.val_bpb},
        "sample": text,
        "seconds": time.perf_counter() - t0,
    }
    results["summary"] = {"val bpb": f"{results['val_bpb']:.3f}",
                          "params": f"{results['parameters']:,}",
                          "train s": f"{history.seconds:.0f}"}
    write_results(out_dir, results)
    write_report(out_dir, "Baseline GPT (tied embeddings)", f"""
A byte-level GPT ({cfg.n_layer} layers, d_model {cfg.d_model}, {cfg.n_head} heads, context
{cfg.context}) trained for {results['steps']} steps on the prose that ships with Python
(`pydoc_data.topics` of Python {results['python']}: {len(train_ids):,} bytes to train on,
the last {len(val_ids):,} to validate; other Python versions ship slightly other
text), on {device}.

| figure | value |
|---|---|
| validation loss (all of the split) | {results['val_loss_nats']:.4f} nats/byte |
| validation bits per byte | **{results['val_bpb']:.3f}** |
| a unigram byte model (no context), for scale | {baseline:.3f} |
| uniform guessing over 256 bytes | 8.000 |
| parameters (unique) | {results['parameters']:,} |
| parameters if the head were untied | {results['parameters_if_untied']:,} |
| training time | {history.seconds:.0f} s |

![loss curves]({plot.name})

```
{tie_report(model)}
```

Sample (temperature 0.8, top-k 40, prompt {prompt!r}):

```
{text}
```
""")
    return results


if __name__ == "__main__":
    print(json.dumps(run()["summary"], indent=2))
