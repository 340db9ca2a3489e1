"""Training with an agent in the loop: episodes of decisions, each followed by a few
language-model steps.

The language-model step is the house loop's (:func:`nanotie.train.train_step`): the
same AdamW groups, warmup + cosine schedule, gradient clipping, batches and evaluations.
Without an agent (``agent=None``) the tying state never changes and the run is
exactly what ``train`` would do, which the tests check bit for bit; that is how the
vanilla baseline runs, so both models see the same batches at the same learning
rates. With an agent, each decision re-wires the layers, then
:func:`~nanotie.papers.dynamic_tying.tying.sync_optimizer` drops the Adam moments of
layers that became copies and starts fresh ones for layers that were untied.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ... import backend
from ...data import BatchSampler, iter_eval_batches
from ...nn import count_parameters
from ...report import progress_bar
from ...train import History, TrainConfig, setup, train_step
from .tying import (independent_layers, optimizer_state_bytes, sync_optimizer,
                    with_action)

__all__ = ["DynamicRun", "train_dynamic", "episode_count", "reward_of", "held_out_batch"]


@dataclass
class DynamicRun:
    """What a run recorded, besides the usual :class:`~nanotie.train.History`."""

    history: History = field(default_factory=History)
    trainable: list = field(default_factory=list)        # per LM step, after the step
    optimizer_bytes: list = field(default_factory=list)  # per LM step, after the step
    episode_epsilon: list = field(default_factory=list)  # eps used during each episode
    episode_state: list = field(default_factory=list)    # s at the end of each episode
    decisions: list = field(default_factory=list)        # dicts: episode, layer, action,
    #                                                       state, reward, td_loss


def episode_count(steps: int, n_layer: int, k: int) -> int:
    """The episodes in ``steps`` LM steps: each is n_layer - 1 decisions of ``k`` steps,
    and the steps must fill whole episodes."""
    per_episode = (n_layer - 1) * k
    if n_layer < 2 or steps % per_episode:
        raise ValueError(f"steps={steps} must be a multiple of (n_layer - 1) * "
                         f"lm_steps_per_decision = {per_episode} (n_layer >= 2)")
    return steps // per_episode


def reward_of(model, x, y) -> float:
    """r = -exp(mean CE) = minus the perplexity on one batch, in eval mode (no dropout,
    no graph); the agent clips it."""
    with model.evaluating():
        loss = float(model(x, y)[1].item())
    return -math.exp(min(loss, 50.0))        # exp(50) is already far past any clip


def held_out_batch(data, block: int, batch_size: int):
    """One fixed batch: the first full batch of consecutive windows of ``data``, as
    :func:`~nanotie.data.iter_eval_batches` gives it: ``x`` (B, block) and ``y`` = ``x``
    shifted by one byte."""
    need = batch_size * block + 1
    if len(data) < need:
        raise ValueError(f"held_out_batch: {batch_size} windows of {block} need {need} ids, "
                         f"got {len(data)}")
    return next(iter_eval_batches(data, block, batch_size))


def train_dynamic(model, train_data, val_data, config: TrainConfig, tying, agent=None,
                  progress: bool | None = None, desc: str = "dynamic tying",
                  reward_data=None) -> DynamicRun:
    """Train ``model`` (a :class:`~.tying.DynamicTiedGPT`) for ``config.steps`` LM steps.

    ``tying`` is a :class:`~nanotie.papers.dynamic_tying.DynamicTyingConfig`. With an
    ``agent`` (a :class:`~.agent.TyingAgent`, or a control of ``controls.py``), the steps
    are grouped into episodes of L - 1 decisions with ``tying.lm_steps_per_decision``
    steps each, so ``config.steps`` must fill whole episodes (:func:`episode_count`).
    The reward's batch: with ``reward_data`` (ids the model never trains on), always its
    first windows (:func:`held_out_batch`); without it, a fresh random batch of
    ``train_data`` each time (the authors' code)."""
    cfg, k = config, tying.lm_steps_per_decision
    L = model.config.n_layer
    episodes = 0 if agent is None else episode_count(cfg.steps, L, k)
    opt, sampler = setup(model, train_data, cfg)       # train()'s optimizer and batches
    block, device = sampler.block_size, next(iter(model.parameters())).device
    # The rewards' batches come from a sampler of their own, so the LM batches are the
    # same as in a run without an agent.
    reward_sampler = BatchSampler(train_data, block, cfg.batch_size, seed=cfg.seed + 1)
    fixed = None if reward_data is None else held_out_batch(reward_data, block, cfg.batch_size)
    run = DynamicRun()
    h = run.history
    bar = progress_bar(cfg.steps, desc, progress)
    t0 = time.perf_counter()
    model.train()

    def lm_step(step: int) -> None:            # train()'s step, and what tying changes
        if train_step(model, opt, sampler, step, cfg, h, val_data):
            bar.set_postfix(loss=f"{h.train_loss[-1]:.3f}", val_bpb=f"{h.val_bpb[-1]:.3f}",
                            layers=independent_layers(model.tying_state))
        run.trainable.append(count_parameters(model))
        run.optimizer_bytes.append(optimizer_state_bytes(opt))
        bar.update(1)
        h.seconds = time.perf_counter() - t0

    step = 0
    for episode in range(episodes):
        run.episode_epsilon.append(agent.epsilon)
        for layer in range(1, L):
            state = model.tying_state
            action = agent.act(state, layer)
            next_state = model.set_tying(with_action(state, layer, action))
            sync_optimizer(opt, model)           # tied layers lose their Adam moments
            for _ in range(k):
                lm_step(step)
                step += 1
            x, y = reward_sampler.sample() if fixed is None else fixed
            reward = reward_of(model, backend.to_device(x, device),
                               backend.to_device(y, device))
            td = agent.update(state, layer, action, reward, next_state)
            run.decisions.append({"episode": episode, "layer": layer, "action": action,
                                  "state": list(next_state), "reward": reward,
                                  "td_loss": td})
        agent.end_episode()
        run.episode_state.append(list(model.tying_state))
    for step in range(step, cfg.steps):          # without an agent: every step, untouched
        lm_step(step)
    bar.close()
    return run
