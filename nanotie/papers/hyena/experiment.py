"""Transformer vs Hyena vs MultiHyena: prose, associative recall, and the filters.

Three models of about the same size and the same skeleton (nanotie's GPT; only the
mixer in each block differs) are trained twice: as byte-level language models on
the prose corpus, and on the synthetic associative-recall task. The report gives
held-out bits per byte, recall accuracy, the number of long filters each needs
(MultiHyena: M per layer, Hyena: D), the loss curves, and plots of learned filters
and their decay.

Building on it. :func:`trained_models` returns the trained models, each loaded from
the checkpoint cache under ``<out>/../cache`` when it is there (as ``pretrained_gpt``
does), and the report is a list of sections, :data:`SECTIONS`: functions
``section(ctx) -> (results, markdown, summary)`` that share one :class:`Context`
(which trains or loads each set of models once). A further study of the same
models, such as distilling their filters, is one more section appended to the list.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ... import backend, data
from ...nn import GPT, GPTConfig, count_parameters
from ...report import plot_losses, pyplot, save_figure, write_report, write_results
from ...train import TrainConfig, evaluate, train
from ..gpt.experiment import corpus_splits, unigram_bpb
from .distill_experiment import distillation
from .model import HyenaConfig, HyenaLM
from .operator import HyenaOperator
from .recall import RecallConfig, episode_stream, recall_accuracy, recall_episodes, recall_loss

__all__ = ["MODELS", "Profile", "PROFILES", "model_config", "build_model", "trained_models",
           "Context", "SECTIONS", "run"]

MODELS = ("transformer", "hyena", "multihyena")
LABELS = {"transformer": "Transformer", "hyena": "Hyena", "multihyena": "MultiHyena"}


@dataclass
class Profile:
    """The settings of one profile. ``model`` is the LM shape shared by the three
    models (the Transformer reads its GPTConfig fields; ``n_head`` is both its
    attention heads and MultiHyena's M); ``recall_model`` is the same for the recall
    task, whose vocabulary and length come from ``recall``."""

    model: HyenaConfig
    train: TrainConfig
    recall: RecallConfig
    recall_model: HyenaConfig
    recall_train: TrainConfig
    n_recall_train: int = 20_000   # distinct training episodes
    n_recall_val: int = 1_000      # held-out episodes for the accuracy


# The quick profile trains six small models in about a minute on 2 idle CPU cores.
# The recall models use the reference code's filter defaults for synthetic tasks
# (emb_dim 3, omega 1); the LMs its language-modelling ones (33, 14).
PROFILES = {
    "quick": Profile(
        model=HyenaConfig(context=64, d_model=64, n_layer=2, n_head=8, filter_width=32),
        train=TrainConfig(steps=300, batch_size=16, lr=3e-3, warmup_steps=30,
                          eval_interval=50, eval_batches=4),
        recall=RecallConfig(n_keys=8, n_values=8, n_pairs=4, n_queries=4),
        recall_model=HyenaConfig(d_model=64, n_layer=2, n_head=8, filter_width=32,
                                 filter_emb_dim=3, filter_omega=1.0),
        recall_train=TrainConfig(steps=600, batch_size=32, lr=3e-3, warmup_steps=30,
                                 weight_decay=0.0, eval_interval=50, eval_batches=4)),
    "full": Profile(
        model=HyenaConfig(context=128, d_model=128, n_layer=4, n_head=16, filter_width=64),
        train=TrainConfig(steps=2000, batch_size=32, lr=2e-3, warmup_steps=100,
                          eval_interval=200, eval_batches=16, checkpoint_interval=200),
        recall=RecallConfig(n_keys=16, n_values=16, n_pairs=8, n_queries=8),
        recall_model=HyenaConfig(d_model=128, n_layer=2, n_head=16, filter_width=64,
                                 filter_emb_dim=3, filter_omega=1.0),
        recall_train=TrainConfig(steps=2000, batch_size=32, lr=2e-3, warmup_steps=100,
                                 weight_decay=0.0, eval_interval=200, eval_batches=8,
                                 checkpoint_interval=200),
        n_recall_train=50_000),
}


def model_config(name: str, base: HyenaConfig):
    """The config of model ``name`` built on the shared shape ``base``."""
    if name == "transformer":
        return GPTConfig(**{f.name: getattr(base, f.name) for f in fields(GPTConfig)})
    if name not in MODELS:
        raise ValueError(f"model_config: unknown model {name!r}; expected one of {MODELS}")
    return replace(base, mixer=name)


def build_model(name: str, config):
    return GPT(config) if name == "transformer" else HyenaLM(config)


def _cache_path(cache_dir, task: str, name: str, profile: str, model_cfg, train_cfg,
                content: bytes, seed: int) -> Path:
    key = json.dumps({"model": asdict(model_cfg), "train": asdict(train_cfg), "seed": seed,
                      "name": name, "data": hashlib.sha256(content).hexdigest()},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"hyena-{task}-{name}-{profile}-{digest}.npz"


def recall_data(profile: Profile, seed: int) -> dict:
    """Training and held-out episodes of the recall task (the held-out ones come from
    another generator, so none is seen in training)."""
    rc = profile.recall
    x_train, y_train = recall_episodes(rc, profile.n_recall_train, seed=2 * seed)
    x_val, y_val = recall_episodes(rc, profile.n_recall_val, seed=2 * seed + 1)
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}


def trained_models(quick: bool = True, seed: int = 0, device: str = "cpu",
                   cache_dir="runs/cache", task: str = "lm", progress=None,
                   profile: Profile | None = None) -> dict:
    """``{name: (model, history)}`` for the Transformer, Hyena and MultiHyena, trained
    on ``task`` ("lm": bytes of prose; "recall": associative recall), each from the
    same seed. A finished checkpoint in ``cache_dir`` is loaded instead of training.
    ``profile`` overrides the quick/full settings (a notebook uses a smaller one).

    For the Hyena models, ``model.mixers()`` lists the operators, and each gives its
    filters as ``op.filter_array(L)`` (n_filters, L) and ``op.dskip_array()``."""
    if task not in ("lm", "recall"):
        raise ValueError(f"trained_models: task must be 'lm' or 'recall', got {task!r}")
    name_of_profile = "custom" if profile is not None else "quick" if quick else "full"
    profile = profile or PROFILES[name_of_profile]
    if task == "lm":
        base, train_cfg = profile.model, profile.train
        train_ids, val_ids = corpus_splits()
        content, loss_fn = train_ids.tobytes(), None
    else:
        rc = profile.recall
        base = replace(profile.recall_model, vocab_size=rc.vocab_size, context=rc.seq_len)
        train_cfg = replace(profile.recall_train, block_size=rc.seq_len)
        d = recall_data(profile, seed)
        train_ids = episode_stream(profile.n_recall_train, rc.seq_len)
        val_ids = episode_stream(profile.n_recall_val, rc.seq_len)
        content = d["x_train"].tobytes() + d["x_val"].tobytes()
        loss_fn = recall_loss(np.concatenate([d["x_train"], d["x_val"]]),
                              np.concatenate([d["y_train"], d["y_val"]]))
        val_ids = val_ids + profile.n_recall_train   # the held-out episodes' numbers
    train_cfg = replace(train_cfg, seed=seed)
    out = {}
    for name in MODELS:
        cfg = model_config(name, base)
        path = _cache_path(cache_dir, task, name, name_of_profile, cfg, train_cfg, content,
                           seed)
        backend.manual_seed(seed)
        model = build_model(name, cfg).to(device)
        kwargs = {} if loss_fn is None else {"loss_fn": loss_fn}
        history = train(model, train_ids, val_ids, train_cfg, checkpoint=path,
                        progress=progress, desc=f"{name} ({task}, {name_of_profile})",
                        **kwargs)
        out[name] = (model, history)
    return out


@dataclass
class Context:
    """What the sections share: the settings, and each task's models, trained or
    loaded once on first use."""

    quick: bool
    seed: int
    device: str
    out_dir: Path
    cache_dir: Path
    custom: Profile | None = None         # instead of PROFILES["quick"/"full"]
    _models: dict = field(default_factory=dict)

    @property
    def profile(self) -> Profile:
        return self.custom or PROFILES["quick" if self.quick else "full"]

    def models(self, task: str) -> dict:
        if task not in self._models:
            self._models[task] = trained_models(self.quick, self.seed, self.device,
                                                self.cache_dir, task, profile=self.custom)
        return self._models[task]


# -------------------------------------------------------------------- sections


def _fmt(values: dict, spec: str = ".3f") -> str:
    return " / ".join(format(values[name], spec) for name in MODELS)


def language_modelling(ctx: Context):
    """Held-out bits per byte on prose, parameter counts, curves, a sample each."""
    models = ctx.models("lm")
    train_ids, val_ids = corpus_splits()
    res = {}
    for name, (model, history) in models.items():
        # The curve estimates the loss on a prefix of the split; this is all of it.
        loss = evaluate(model, val_ids, model.config.context, 32)
        sample = model.generate(data.ByteTokenizer().encode("The ")[None], 120,
                                temperature=0.8, top_k=40, seed=ctx.seed)
        res[name] = {"val_bpb": loss / math.log(2), "parameters": count_parameters(model),
                     "train_seconds": history.seconds, "steps": history.step[-1],
                     "val_bpb_curve": {"step": history.eval_step, "bpb": history.val_bpb},
                     "sample": data.ByteTokenizer().decode(sample[0])}
    baseline = unigram_bpb(train_ids, val_ids)
    plot = plot_losses({LABELS[n]: h for n, (_, h) in models.items()},
                       ctx.out_dir / "loss.png", "Byte-level LMs on pydoc prose")
    cfg = ctx.profile.model
    rows = "\n".join(f"| {LABELS[n]} | **{r['val_bpb']:.3f}** | {r['parameters']:,} | "
                     f"{r['train_seconds']:.0f} s |" for n, r in res.items())
    samples = "\n\n".join(f"{LABELS[n]}:\n```\n{r['sample']}\n```" for n, r in res.items())
    md = f"""
## Language modelling (bytes of prose)

{cfg.n_layer} layers, d_model {cfg.d_model}, context {cfg.context}, {ctx.profile.train.steps}
steps of {ctx.profile.train.batch_size} sequences; the same blocks, MLPs and tied
embedding in all three, only the mixer differs (attention has a learned position
embedding; the Hyena filters encode position). Bits per byte on all of the held-out
split; a unigram byte model scores {baseline:.3f}.

| model | val bits per byte | parameters | training |
|---|---|---|---|
{rows}

![loss curves]({plot.name})

Samples (temperature 0.8, top-k 40, prompt 'The '):

{samples}
"""
    summary = {"bpb T/H/MH": _fmt({n: r["val_bpb"] for n, r in res.items()})}
    return {"lm": res, "unigram_bpb": baseline}, md, summary


def associative_recall(ctx: Context):
    """Accuracy on held-out recall episodes."""
    models = ctx.models("recall")
    profile = ctx.profile
    d = recall_data(profile, ctx.seed)
    chance = 1.0 / profile.recall.n_values
    res = {name: {"accuracy": recall_accuracy(model, d["x_val"], d["y_val"]),
                  "parameters": count_parameters(model), "train_seconds": history.seconds}
           for name, (model, history) in models.items()}
    plot = plot_losses({LABELS[n]: h for n, (_, h) in models.items()},
                       ctx.out_dir / "recall_loss.png", "Associative recall",
                       metric="val_loss", ylabel="nats per answer")
    rc = profile.recall
    rows = "\n".join(f"| {LABELS[n]} | **{r['accuracy']:.3f}** | {r['parameters']:,} |"
                     for n, r in res.items())
    md = f"""
## Associative recall

Each episode binds {rc.n_pairs} of {rc.n_keys} keys to values (of {rc.n_values}), then
asks for {rc.n_queries} of them: `k1 v1 ... k{rc.n_pairs} v{rc.n_pairs} q1 a1 ...`
({rc.seq_len} tokens); only the answers are scored. Bindings are fresh in every
episode, so the model must look them up in its context. {profile.n_recall_train:,}
training episodes, {profile.recall_train.steps} steps; accuracy on
{profile.n_recall_val:,} held-out episodes (chance {chance:.3f}).

| model | accuracy | parameters |
|---|---|---|
{rows}

![recall loss curves]({plot.name})
"""
    summary = {"recall T/H/MH": _fmt({n: r["accuracy"] for n, r in res.items()}, ".2f")}
    return {"recall": res, "recall_chance": chance}, md, summary


def energy_length(h: np.ndarray, fraction: float = 0.9) -> np.ndarray:
    """Per filter (rows of h), the number of taps that hold ``fraction`` of its energy
    sum h_t^2: a measure of how far back the filter reaches."""
    cum = np.cumsum(h ** 2, axis=-1)
    return 1 + (cum < fraction * cum[..., -1:]).sum(axis=-1)


def filters(ctx: Context):
    """Filter counts, and plots of the learned LM filters and their decay."""
    models = ctx.models("lm")
    res = {}
    for name, (model, _) in models.items():
        ops = model.mixers() if isinstance(model, HyenaLM) else []
        res[name] = {"filters": sum(op.n_filters for op in ops),
                     "filters_per_layer": [op.n_filters for op in ops],
                     "filter_parameters": sum(count_parameters(op.filter) + op.dskip.numel()
                                              for op in ops),
                     "mixer_parameters": sum(count_parameters(b.attn) for b in model.blocks)}
        if ops:
            lengths = np.concatenate([energy_length(op.filter_array()) for op in ops])
            res[name]["median_90pct_energy_taps"] = float(np.median(lengths))
    plot = plot_filters({n: models[n][0] for n in ("hyena", "multihyena")},
                        ctx.out_dir / "filters.png")
    cfg = ctx.profile.model
    rows = "\n".join(
        f"| {LABELS[n]} | {r['filters']} | {r['filter_parameters']:,} | "
        f"{r['mixer_parameters']:,} | "
        f"{format(r['median_90pct_energy_taps'], '.0f') if r['filters'] else '-'} |"
        for n, r in res.items())
    md = f"""
## Filters

Long filters per model ({cfg.n_layer} layers, D = {cfg.d_model}, M = {cfg.n_head} heads):
Hyena learns one per channel, MultiHyena one per head, shared by the head's
{(cfg.d_model // cfg.n_head) ** 2} outer-product channels. The last column is the
median number of taps that hold 90% of a filter's energy (of {cfg.context}).

| model | long filters | filter + Dskip parameters | mixer parameters | 90% energy within |
|---|---|---|---|---|
{rows}

![learned filters]({plot.name})

Left: a few learned filters of the first layer, from the slowest-decaying channel
(the decay window's) to the fastest, each scaled to its largest tap. Right: their
magnitude on a log scale with the decay window exp(-t |delta_c|) dashed: the MLP
shapes the filter and the window bounds how far back it reaches.
"""
    summary = {"filters H/MH": f"{res['hyena']['filters']} / {res['multihyena']['filters']}"}
    return {"filters": res}, md, summary


def plot_filters(models: dict, path, n_show: int = 4) -> Path:
    """A row per model: a few first-layer filters (scaled), and log |h| with windows."""
    plt = pyplot()

    fig, axes = plt.subplots(len(models), 2, figsize=(10, 3.3 * len(models)), squeeze=False)
    for (name, model), (ax1, ax2) in zip(models.items(), axes):
        op: HyenaOperator = model.mixers()[0]
        h = op.filter_array()                                    # (C, L)
        window = backend.asnumpy(op.filter.window.data).T        # (C, L)
        show = np.unique(np.linspace(0, op.n_filters - 1, n_show).round().astype(int))
        for c in show:
            line, = ax1.plot(h[c] / (np.abs(h[c]).max() + 1e-30), label=f"filter {c}")
            ax2.semilogy(np.abs(h[c]) + 1e-12, color=line.get_color())
            ax2.semilogy(window[c] * np.abs(h[c]).max(), "--", color=line.get_color(),
                         alpha=0.6)
        ax1.set(title=f"{LABELS[name]}: layer-1 filters h_c(t) (scaled)", xlabel="t (taps)")
        ax2.set(title=f"{LABELS[name]}: |h_c(t)| and the decay window (dashed)",
                xlabel="t (taps)")
        ax1.legend(fontsize=8)
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
    return save_figure(fig, path)


# A section: ctx -> (results to merge, a Markdown part of the report, summary figures).
SECTIONS = [language_modelling, associative_recall, filters, distillation]


def run(quick: bool = True, out_dir="runs/hyena", seed: int = 0, device: str = "cpu",
        profile: Profile | None = None, runner=None) -> dict:
    """Every section in turn; writes report.md, results.json and the figures to
    ``out_dir`` and returns the results (``profile`` overrides quick/full)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ctx = Context(quick, seed, device, out_dir, out_dir.parent / "cache", profile)
    results = {"profile": "custom" if profile else "quick" if quick else "full",
               "device": device, "seed": seed}
    parts, summary = [], {}
    for section in SECTIONS:
        res, md, figures = section(ctx)
        results.update(res)
        parts.append(md.strip())
        summary.update(figures)
    results["seconds"] = time.perf_counter() - t0
    results["summary"] = summary
    write_results(out_dir, results)
    write_report(out_dir, "Hyena and MultiHyena vs a Transformer",
                 f"Profile `{results['profile']}` on {device}, seed {seed}; "
                 f"{results['seconds']:.0f} s in all (training included unless cached)."
                 "\n\n" + "\n\n".join(parts))
    return results


if __name__ == "__main__":
    print(json.dumps(run()["summary"], indent=2))
