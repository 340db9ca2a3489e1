"""The one training loop: batches, AdamW, schedule, clipping, evaluation, checkpoints.

Every experiment trains its language models through :func:`train_step` (and most
through :func:`train`), so the things that are easy to get subtly wrong are written once
(the adding-problem regressor and the linear probe have short loops of their own):

* the learning rate follows :func:`~nanotie.nn.optim.cosine_schedule` (warmup, then
  cosine decay) and gradients are clipped to a global norm;
* every ``eval_interval`` steps the model is evaluated on held-out data, in nats per
  token and in bits per byte (``bpb = loss * tokens / (bytes * ln 2)``);
* a checkpoint is ONE ``.npz`` file (no pickle) holding the model, the optimizer,
  the batch sampler, the dropout generator and the history, written atomically.
  Resuming from it continues the run exactly: on the CPU, the same seed and data give
  bitwise-identical weights whether or not the run was interrupted. (On a GPU the
  dropout generator is not saved, and kernels may round differently.)
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from . import backend
from .data import BatchSampler, iter_eval_batches
from .files import atomic_write
from .nn.optim import AdamW, clip_grad_norm, cosine_schedule, param_groups
from .report import progress_bar

__all__ = ["TrainConfig", "History", "train", "setup", "train_step", "evaluate", "save_checkpoint",
           "load_checkpoint", "CheckpointError", "DamagedCheckpointError", "default_loss"]


@dataclass
class TrainConfig:
    """The training recipe: steps, batch, schedule, optimizer and evaluation."""
    steps: int = 1000             # optimizer steps in the whole run
    batch_size: int = 16          # sequences per step (B)
    block_size: int | None = None # tokens per sequence (T); None: the model's context
    lr: float = 3e-3              # peak learning rate
    min_lr_ratio: float = 0.1     # the cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50        # linear warmup from ~0 to lr
    weight_decay: float = 0.1     # AdamW decay on matrices (not on biases and gains)
    betas: tuple = (0.9, 0.95)    # AdamW moment decay rates
    grad_clip: float = 1.0        # max global gradient norm (0: no clipping)
    eval_interval: int = 100      # evaluate every this many steps (and at the end)
    eval_batches: int = 8         # validation batches per evaluation
    checkpoint_interval: int = 0  # also checkpoint every this many steps (0: end only)
    seed: int = 0                 # batch order and dropout

    def __post_init__(self):
        bad = [f"{n}={getattr(self, n)}" for n in ("steps", "batch_size", "eval_interval",
                                                    "eval_batches") if getattr(self, n) < 1]
        if bad:
            raise ValueError(f"TrainConfig: {', '.join(bad)}: each must be >= 1")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup_steps < 0:
            raise ValueError("TrainConfig: need lr > 0, 0 <= min_lr_ratio <= 1 and "
                             "warmup_steps >= 0")
        if not self.grad_clip >= 0:       # a negative norm would flip the gradients
            raise ValueError(f"TrainConfig: grad_clip must be >= 0 (0: no clipping), got "
                             f"{self.grad_clip}")
        self.betas = tuple(self.betas)


@dataclass
class History:
    """What happened during training, for plots and reports."""

    step: list = field(default_factory=list)         # 1, 2, ... (one per optimizer step)
    train_loss: list = field(default_factory=list)   # nats per token, on that step's batch
    lr: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)    # before clipping
    eval_step: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)     # nats per token
    val_bpb: list = field(default_factory=list)      # bits per byte
    seconds: float = 0.0                             # training wall-clock time


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: damaged, or from another run or model.
    The message is one line that names the file."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint file that cannot be read at all (empty, truncated, not an .npz, or
    lacking parts): :func:`train` reports it in one line and trains from scratch."""


def default_loss(model, x, y):
    """Next-token cross-entropy of a model whose forward returns ``(logits, loss)``."""
    return model(x, y)[1]


def _device_of(model) -> str:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else backend.default_device()


def evaluate(model, data, block_size: int, batch_size: int, max_batches: int | None = None,
             loss_fn=default_loss) -> float:
    """Mean loss (nats per token) over consecutive windows of ``data``, in eval mode."""
    total, count = 0.0, 0
    device = _device_of(model)
    with model.evaluating():
        for x, y in iter_eval_batches(data, block_size, batch_size, max_batches):
            x, y = backend.to_device(x, device), backend.to_device(y, device)
            total += float(loss_fn(model, x, y).item()) * y.size
            count += y.size
    return total / count


def setup(model, train_data, config: TrainConfig) -> tuple:
    """The optimizer (AdamW; matrices decay, vectors do not) and the batch sampler of a
    run, with the dropout generator seeded: ``(optimizer, sampler)``."""
    backend.keep_freed_memory()     # reuse freed activation memory (see its docstring)
    cfg = config
    block = cfg.block_size or getattr(getattr(model, "config", None), "context", None)
    if block is None:
        raise ValueError("train: set TrainConfig.block_size; this model has no "
                         "config.context to take the sequence length from")
    # A model may say which of its matrices decay (Hyena keeps its filters undecayed).
    groups = (model.param_groups(cfg.weight_decay) if hasattr(model, "param_groups")
              else param_groups(model, cfg.weight_decay))
    opt = AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    sampler = BatchSampler(train_data, block, cfg.batch_size, seed=cfg.seed)
    backend.manual_seed(cfg.seed)
    return opt, sampler


def train_step(model, opt, sampler, step: int, config: TrainConfig, history: History,
               val_data, loss_fn=default_loss, bytes_per_token: float = 1.0) -> bool:
    """Optimizer step ``step`` (from 0) on one batch of ``sampler``, recorded in
    ``history``: set the scheduled rate, backward, clip, step. Every ``eval_interval``
    steps and at the last one, evaluate on ``val_data``; return whether it did."""
    cfg = config
    lr = cosine_schedule(step, cfg.lr, cfg.steps, cfg.warmup_steps, cfg.lr * cfg.min_lr_ratio)
    for g in opt.param_groups:
        g["lr"] = lr
    device = _device_of(model)
    x, y = sampler.sample()
    loss = loss_fn(model, backend.to_device(x, device), backend.to_device(y, device))
    opt.zero_grad()
    loss.backward()
    norm = clip_grad_norm(opt.parameters(), cfg.grad_clip) if cfg.grad_clip else math.nan
    opt.step()
    history.step.append(step + 1)
    history.train_loss.append(float(loss.item()))
    history.lr.append(lr)
    history.grad_norm.append(norm)
    if (step + 1) % cfg.eval_interval and step + 1 != cfg.steps:
        return False
    val = evaluate(model, val_data, sampler.block_size, cfg.batch_size, cfg.eval_batches,
                   loss_fn)
    history.eval_step.append(step + 1)
    history.val_loss.append(val)
    history.val_bpb.append(val / (bytes_per_token * math.log(2)))   # nats/token -> bits/byte
    return True


def train(model, train_data, val_data, config: TrainConfig, checkpoint=None,
          bytes_per_token: float = 1.0, loss_fn=default_loss, progress: bool | None = None,
          desc: str = "train") -> History:
    """Train ``model`` on ``train_data`` (1-D token ids); return the :class:`History`.

    ``checkpoint`` (a path) makes the run resumable: if the file exists the run
    continues from it (a finished run returns at once: that is the cache), and it is
    rewritten at the end and every ``checkpoint_interval`` steps. The file is checked
    against the model and ``config``, not against the data or ``loss_fn``: name it by
    everything else that decides the weights (the gpt experiment puts the corpus hash,
    its code version and the device in the name). ``bytes_per_token``
    (the mean bytes a token stands for: 1 for the byte tokenizer, about 3-4 for a BPE)
    converts the validation loss to bits per byte, loss / (bytes_per_token ln 2).
    ``progress``: a tqdm bar (None: only when stderr is a terminal).
    """
    cfg = config
    opt, sampler = setup(model, train_data, cfg)
    history = History()
    if checkpoint is not None and Path(checkpoint).exists():
        try:
            history = load_checkpoint(checkpoint, model, opt, sampler, cfg)
        except DamagedCheckpointError as exc:     # nothing was changed: start afresh
            print(f"nanotie: {exc}; training from scratch (the file will be replaced)",
                  file=sys.stderr, flush=True)
    start = len(history.step)
    bar = progress_bar(cfg.steps, desc, progress, initial=start)
    t0 = time.perf_counter() - history.seconds
    model.train()
    for step in range(start, cfg.steps):
        if train_step(model, opt, sampler, step, cfg, history, val_data, loss_fn,
                      bytes_per_token):
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}",
                            val_bpb=f"{history.val_bpb[-1]:.3f}")
        elif step % 10 == 0:
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}")
        bar.update(1)
        history.seconds = time.perf_counter() - t0
        if checkpoint is not None and (step + 1 == cfg.steps or (
                cfg.checkpoint_interval and (step + 1) % cfg.checkpoint_interval == 0)):
            save_checkpoint(checkpoint, model, opt, sampler, history, cfg)
    bar.close()
    return history


# ------------------------------------------------------------------ checkpoints


def save_checkpoint(path, model, optimizer, sampler, history: History,
                    config: TrainConfig) -> None:
    """Write everything a resume needs to ``path`` atomically (temp file + rename)."""
    arrays = {"meta/config": np.array(json.dumps(asdict(config), sort_keys=True))}
    arrays.update({f"model/{k}": v for k, v in model.state_dict().items()})
    arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    arrays.update({f"sampler/{k}": np.asarray(v) for k, v in sampler.state_dict().items()})
    arrays.update({f"history/{f.name}": np.asarray(getattr(history, f.name), dtype=np.float64)
                   for f in fields(History)})
    rng = backend.generator(_device_of(model))
    if isinstance(rng, np.random.Generator):   # dropout's; CuPy's state is not saved
        arrays["rng/state"] = np.array(json.dumps(rng.bit_generator.state))
    with atomic_write(path) as f:           # a crash never leaves half a checkpoint
        np.savez(f, **arrays)


def _history_from(arrays: dict) -> History:
    h = History(**{f.name: np.asarray(arrays[f.name]).tolist() for f in fields(History)})
    h.step, h.eval_step = [int(s) for s in h.step], [int(s) for s in h.eval_step]
    h.seconds = float(h.seconds)
    return h


def load_checkpoint(path, model, optimizer, sampler, config: TrainConfig) -> History:
    """Restore a :func:`save_checkpoint` file into the given objects.

    Everything is read and checked before anything changes. A file that opens but
    cannot be read raises :class:`DamagedCheckpointError`; one from a run with another
    configuration or model raises :class:`CheckpointError`. Both messages are one line
    naming the file."""
    groups = {}
    for key, value in _read_npz(path).items():
        head, _, rest = key.partition("/")
        groups.setdefault(head, {})[rest] = value
    missing = {"meta", "model", "optim", "sampler", "history"} - set(groups)
    if missing:
        raise DamagedCheckpointError(f"checkpoint {path} is damaged: it lacks "
                                     f"{', '.join(sorted(missing))}")
    try:
        saved = json.loads(str(groups["meta"]["config"]))
        if not isinstance(saved, dict):
            raise TypeError(f"the configuration is a {type(saved).__name__}")
        history = _history_from(groups["history"])
        rng_state = json.loads(str(groups["rng"]["state"])) if "rng" in groups else None
        if rng_state is not None:                 # checked now, set after the loads
            np.random.PCG64().state = rng_state
    except (KeyError, ValueError, TypeError) as exc:
        raise DamagedCheckpointError(f"checkpoint {path} is damaged: its configuration, "
                                     f"history or generator cannot be read ({type(exc).__name__}: "
                                     f"{_one_line(exc)})") from None
    now = json.loads(json.dumps(asdict(config), sort_keys=True))
    diff = [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}"
            for k in now if saved.get(k) != now[k]]
    if diff:
        raise CheckpointError(f"checkpoint {path} was made with another TrainConfig "
                              f"({'; '.join(diff)}): delete it or restore the settings")
    # A refusal anywhere restores all three (the sampler's may come half-way through).
    objects = (model, optimizer, sampler)
    snapshots = [o.state_dict() for o in objects]
    try:
        for o, part in zip(objects, ("model", "optim", "sampler")):
            o.load_state_dict(groups[part])
    except (ValueError, KeyError, TypeError) as exc:
        for o, snapshot in zip(objects, snapshots):
            o.load_state_dict(snapshot)
        raise CheckpointError(f"checkpoint {path} does not fit this model or optimizer "
                              f"(delete it, or build what it was made for): "
                              f"{_one_line(exc)}") from None
    rng = backend.generator(_device_of(model))
    if rng_state is not None and isinstance(rng, np.random.Generator):
        rng.bit_generator.state = rng_state
    return history


def _read_npz(path) -> dict:
    """Every array of the .npz at ``path``; :class:`DamagedCheckpointError` (with the
    likely cause, not NumPy's advice to unpickle) when what it holds cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:          # noqa: BLE001  (any way a file can be broken)
        with open(path, "rb") as f:   # one that cannot be opened is not damaged: its
            head = f.read(2)          # OSError stops the run, and the file is kept
        if head == b"":
            why = "the file is empty"
        elif head != b"PK":           # every .npz is a zip: "PK..."
            why = "it is not an .npz archive"
        else:
            why = f"{type(exc).__name__}: {_one_line(exc)}"
        raise DamagedCheckpointError(f"checkpoint {path} is damaged ({why})") from None


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (StateDictError lists problems on several)."""
    parts = [part.strip(" -") for part in str(exc).splitlines() if part.strip()]
    return "".join(p + ("" if i == len(parts) - 1 else " " if p.endswith(":") else "; ")
                   for i, p in enumerate(parts))
