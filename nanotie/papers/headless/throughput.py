"""Training-step throughput of cross-entropy and CWT, side by side.

A step of the tied GPT scores every target position against every vocabulary id:
the logits are a (K, V) matrix, K = B T, made by a K x D x V matrix product in the
forward pass and two more in the backward, plus a softmax over K V numbers. A step
of the headless model scores the K positions against the K targets: a (K, K)
matrix. The rest of the step (embedding, blocks, AdamW on the same parameters) is
identical, so the ratio of the two step times shows what the softmax head costs.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import replace

import numpy as np

from ... import backend
from ...nn import GPT, GPTConfig
from ...nn.optim import AdamW, clip_grad_norm, param_groups
from . import HeadlessConfig, HeadlessGPT

__all__ = ["make_models", "step_function", "throughput_vs_vocab"]


def make_models(config: GPTConfig, seed: int = 0, device: str = "cpu"):
    """The two contenders with the same shapes: a tied GPT (cross-entropy) and a
    HeadlessGPT (CWT). Same parameter count: the CE head IS the input embedding."""
    backend.manual_seed(seed)
    fields = {k: getattr(config, k) for k in GPTConfig.__dataclass_fields__}
    ce = GPT(GPTConfig(**{**fields, "tie_embeddings": True})).to(device)
    backend.manual_seed(seed)
    cwt = HeadlessGPT(HeadlessConfig(**{**fields, "tie_embeddings": True})).to(device)
    return ce, cwt


def step_function(model, x, y, lr: float = 1e-3):
    """A zero-argument callable that runs one full training step of ``model`` on the
    batch ``(x, y)``: forward, backward, gradient clipping, AdamW."""
    opt = AdamW(param_groups(model, 0.1), lr=lr, betas=(0.9, 0.95))
    device = model.wte.weight.device
    x, y = backend.to_device(x, device), backend.to_device(y, device)

    def step():
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        clip_grad_norm(opt.parameters(), 1.0)
        opt.step()
        if device != "cpu":
            backend.synchronize()                    # GPU work is asynchronous
        return loss

    return step


def throughput_vs_vocab(config: GPTConfig, vocab_sizes, batch_size: int,
                        n_steps: int = 3, repeats: int = 3, seed: int = 0,
                        device: str = "cpu") -> list:
    """Tokens per second of a CE step and a CWT step for each vocabulary size.

    All the models are built first, take one untimed step, and are then timed in the
    same ``repeats`` interleaved rounds of ``n_steps`` steps (every V and both
    objectives in each round), so that a change of load on the machine shifts every
    point alike. The batch is uniform random ids (the cost of a step does not depend on
    which ids they are). Returns one dict per V: the median step time of the rounds,
    and each round's as one sample of the spread."""
    rng = np.random.default_rng(seed)
    T = config.context
    steps = {}
    for V in vocab_sizes:
        ce, cwt = make_models(replace(config, vocab_size=int(V)), seed, device)
        x = rng.integers(0, V, (batch_size, T))
        y = rng.integers(0, V, (batch_size, T))
        steps[("ce", V)] = step_function(ce, x, y)
        steps[("cwt", V)] = step_function(cwt, x, y)
    for fn in steps.values():
        fn()
    each = {k: [] for k in steps}                 # seconds per step, one value per round
    gc.collect()
    for _ in range(repeats):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            for _ in range(n_steps):
                fn()
            each[k].append((time.perf_counter() - t0) / n_steps)
    t = {k: statistics.median(v) for k, v in each.items()}
    tokens = batch_size * T
    return [{"vocab_size": int(V), "ce_step_s": t[("ce", V)], "cwt_step_s": t[("cwt", V)],
             "ce_tokens_per_s": tokens / t[("ce", V)],
             "cwt_tokens_per_s": tokens / t[("cwt", V)],
             "ratio": t[("ce", V)] / t[("cwt", V)],
             "ce_tokens_per_s_each": [tokens / x for x in each[("ce", V)]],
             "cwt_tokens_per_s_each": [tokens / x for x in each[("cwt", V)]]}
            for V in vocab_sizes]
