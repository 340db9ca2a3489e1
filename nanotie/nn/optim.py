"""Optimizers (SGD, AdamW), gradient clipping and a learning-rate schedule.

An optimizer keeps a list of UNIQUE Parameters (by identity). A tied weight passed
twice, or reached through two modules, is stepped once, with its summed gradient;
stepping it twice would apply the update twice. State exists only for parameters
that require grad, and a parameter with no ``.grad`` is left alone.

Updates run in place on the raw arrays, so NumPy and CuPy share the code.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from .module import Module, Parameter

__all__ = ["Optimizer", "SGD", "AdamW", "clip_grad_norm", "cosine_schedule",
           "param_groups"]


def _unique(params) -> list:
    params = list(params)
    for p in params:
        if not isinstance(p, Parameter):
            raise TypeError(f"optimizers take Parameters, got {type(p).__name__}")
    return list(dict.fromkeys(params))    # by identity: a tied weight listed twice, once


def param_groups(model: Module, weight_decay: float, no_decay=()) -> list:
    """Two groups: matrices (Linear and Embedding weights) decay; vectors (biases,
    norm gains) do not, since shrinking them toward 0 only hurts, nor do the
    Parameters in ``no_decay``."""
    exempt = {id(p) for p in no_decay}
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2 and id(p) not in exempt]
    rest = [p for p in params if p.ndim < 2 or id(p) in exempt]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0}]


class Optimizer:
    """Holds parameter groups (dicts of ``params`` and hyper-parameters) and state."""

    state_names: tuple = ()     # the per-parameter state a subclass keeps

    def __init__(self, params, defaults: dict):
        if isinstance(params, Module):
            raise TypeError("pass model.parameters() (or param groups), not the model")
        params = list(params)
        groups = [dict(g) for g in params] if params and isinstance(params[0], dict) \
            else [{"params": params}]
        seen = set()
        self.param_groups = []
        for g in groups:
            unknown = set(g) - set(defaults) - {"params"}
            if unknown:
                raise TypeError(f"{type(self).__name__}: unknown option(s) {sorted(unknown)}")
            # de-duplicate within and across groups: each weight belongs to one group
            ps = [p for p in _unique(g["params"]) if id(p) not in seen]
            seen.update(id(p) for p in ps)
            self.param_groups.append({**defaults, **g, "params": ps})
        self.state = {}       # id(param) -> dict of arrays
        self.step_count = 0

    def parameters(self):
        for g in self.param_groups:
            yield from g["params"]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def step(self) -> None:
        self.step_count += 1
        for g in self.param_groups:
            for p in g["params"]:
                if p.requires_grad and p.grad is not None:
                    self._update(p, p.grad, g, self.state.setdefault(id(p), {}))

    def _update(self, p, grad, group, state) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not define _update()")

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Plain arrays: ``step``, every group's ``lr``, and ``{i}.{name}`` for the
        state of the i-th parameter (in group order)."""
        out = {"step": np.array(self.step_count, dtype=np.int64),
               "lr": np.array([g["lr"] for g in self.param_groups], dtype=np.float64)}
        for i, p in enumerate(self.parameters()):
            for name, value in self.state.get(id(p), {}).items():
                out[f"{i}.{name}"] = backend.asnumpy(value).copy()
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; checks everything before changing anything."""
        params = list(self.parameters())
        problems, new_state, names_seen = [], {}, {}
        lrs = np.asarray(state.get("lr", []))
        if lrs.shape != (len(self.param_groups),):
            problems.append("missing 'lr'" if "lr" not in state else
                            f"'lr' has shape {lrs.shape}, expected ({len(self.param_groups)},)")
        step_shape = np.asarray(state["step"]).shape if "step" in state else None
        if step_shape != ():
            problems.append("missing 'step'" if step_shape is None else
                            f"'step' has shape {step_shape}, expected ()")
        for key, value in state.items():
            index, _, name = key.partition(".")
            if key in ("step", "lr"):
                continue
            if not index.isdigit() or int(index) >= len(params) or name not in self.state_names:
                problems.append(f"unexpected key '{key}' ({type(self).__name__} keeps "
                                f"{list(self.state_names)} for {len(params)} parameters)")
                continue
            p, value = params[int(index)], np.asarray(value)
            names_seen.setdefault(int(index), set()).add(name)
            want = () if name == "step" else p.shape     # a step count is a scalar
            if value.shape != want:
                problems.append(f"'{key}': shape {value.shape} != expected shape {want}")
                continue
            # the step counter stays on the host; moments go where the parameter is (a 0-d
            # parameter's too)
            new_state.setdefault(id(p), {})[name] = (
                value.copy() if name == "step" else backend.to_device(value.copy(), p.device))
        problems += [f"parameter {i}: state has {sorted(names)}, expected "
                     f"{sorted(self.state_names)}" for i, names in sorted(names_seen.items())
                     if names != set(self.state_names)]
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict:\n  - "
                             + "\n  - ".join(problems))
        self.step_count = int(state["step"])
        for g, lr in zip(self.param_groups, lrs.tolist()):
            g["lr"] = lr
        self.state = new_state


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (PyTorch's form):

        g  <- g + weight_decay * p
        b  <- momentum * b + g            (b = g on the first step)
        p  <- p - lr * b
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError("SGD: lr, momentum and weight_decay must be >= 0")
        super().__init__(params, {"lr": lr, "momentum": momentum,
                                  "weight_decay": weight_decay})

    state_names = ("momentum",)

    def _update(self, p, grad, group, state) -> None:
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        if group["momentum"]:
            if "momentum" not in state:
                state["momentum"] = backend.xp_of(p.data).array(grad)   # 0-d: not a scalar
            else:
                buf = state["momentum"]
                buf *= group["momentum"]
                buf += grad
            grad = state["momentum"]
        p.data -= p.dtype.type(group["lr"]) * grad


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as in PyTorch:

        p  <- p - lr * wd * p                      (decay, outside the gradient)
        m  <- b1 m + (1 - b1) g                    (first moment)
        v  <- b2 v + (1 - b2) g^2                  (second moment)
        p  <- p - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)

    Use :func:`param_groups` to exempt biases and norm gains from the decay.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        if lr < 0 or eps <= 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError("AdamW: need lr >= 0, eps > 0, weight_decay >= 0, "
                             f"0 <= betas < 1; got lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay})

    state_names = ("step", "m", "v")

    def _update(self, p, grad, group, state) -> None:
        xp = backend.xp_of(p.data)
        b1, b2 = group["betas"]
        lr = group["lr"]
        if "m" not in state:
            state["step"] = np.zeros((), dtype=np.int64)
            state["m"] = xp.zeros_like(p.data)
            state["v"] = xp.zeros_like(p.data)
        state["step"] = state["step"] + 1       # per parameter: a frozen one does not age
        t = int(state["step"])
        m, v = state["m"], state["v"]
        cast = p.dtype.type
        if group["weight_decay"]:
            p.data *= cast(1.0 - lr * group["weight_decay"])
        # One scratch array, updated in place, instead of a new array per operation.
        m *= cast(b1)
        buf = xp.asarray(grad * cast(1.0 - b1))             # an array, also for a 0-d p
        m += buf                                             # m = b1 m + (1 - b1) g
        v *= cast(b2)
        xp.multiply(grad, grad, out=buf)
        buf *= cast(1.0 - b2)
        v += buf                                             # v = b2 v + (1 - b2) g^2
        xp.sqrt(v, out=buf)
        buf *= cast(1.0 / math.sqrt(1.0 - b2 ** t))
        buf += cast(group["eps"])                            # sqrt(v / (1 - b2^t)) + eps
        xp.divide(m, buf, out=buf)
        buf *= cast(lr / (1.0 - b1 ** t))
        p.data -= buf


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients so their joint L2 norm is at most ``max_norm``.

    The norm is sqrt(sum over UNIQUE parameters of |g|^2): a tied weight counts once.
    Returns the norm before clipping."""
    if not max_norm >= 0:             # a negative one would flip the gradients (and NaN)
        raise ValueError(f"clip_grad_norm: max_norm must be >= 0, got {max_norm}")
    grads = [p.grad for p in _unique(params) if p.grad is not None]
    if not grads:
        return 0.0
    total = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= g.dtype.type(scale)
    return total


def cosine_schedule(step: int, max_lr: float, total_steps: int, warmup_steps: int = 0,
                    min_lr: float = 0.0) -> float:
    """Linear warmup to ``max_lr``, then a cosine decay to ``min_lr`` at ``total_steps``:

        lr(s) = max_lr (s + 1) / warmup                                 s < warmup
        lr(s) = min_lr + (max_lr - min_lr) (1 + cos(pi r)) / 2,  r = (s - warmup) /
                                                                     (total - warmup)
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    r = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * r))
