"""The Q-learning agent that picks, layer by layer, whether to train or to copy.

Action space. Layer i >= 1 has i + 1 actions: a < i copies layer a, a = i trains. So
the action IS the new s_i. One network scores every layer's actions at once:

    Q(s) = W_2 relu(W_1 s + b_1) + b_2,     s in Z^L as floats,  Q(s) in R^{L(L+1)/2}

and layer i's Q-values are the slice of length i + 1 that starts at i(i+1)/2
(layer 0 owns one unused entry, so the slices tile the output exactly).

Learning (one decision = one TD step, as in the authors' code):

    a   = argmax_a Q(s)[slice_i]         with probability 1 - eps, else uniform
    y   = clip(r, -c, c) + gamma * max_a' Q(s')[slice_i]       (no gradient through y)
    loss = (Q(s)[slice_i][a] - y)^2                            one AdamW step
    eps <- max(eps * decay, eps_min)                           after every episode

The reward r is minus the perplexity of the language model on one batch, after the
action and a few LM steps (in the experiment a fixed batch held out from training).

Reward scale. With gamma = 0.99 the fixed point of the TD update is near
r / (1 - gamma), a hundred times the reward, while one AdamW step at 1e-3 moves
Q by about a thousandth: in a few hundred updates the Q-values cannot get near it,
and the difference the action makes (a small change of perplexity) drowns in the
reward's size. ``reward_norm="ema"`` (not in the paper) feeds the TD update

    r~ = (r - m) / sqrt(v),      m, v: running mean and variance of the earlier rewards

so the Q-values learn how much better than usual an action is; the authors' raw
reward is ``reward_norm="none"``. :class:`~.controls.SyntheticReward` tests both on a
reward whose best policy is known.

There is no replay buffer and no target network, as in the authors' code: a target
network would replace ``self.q`` in :meth:`TyingAgent.td_target`; a replay buffer would
store the transitions :meth:`TyingAgent.update` receives and replay them through
:meth:`TyingAgent.td_loss`.
"""

from __future__ import annotations

import math

import numpy as np

from ... import backend
from ...autograd import Tensor, no_grad
from ...nn import Linear, Module
from ...nn.optim import AdamW
from ...ops import relu

__all__ = ["q_output_size", "action_offset", "n_actions", "QNetwork", "TyingAgent",
           "REWARD_NORMS", "decay_to_floor"]

REWARD_NORMS = ("none", "ema")


def decay_to_floor(episodes: int, start: float = 1.0, floor: float = 0.01) -> float:
    """The per-episode decay d with start * d^episodes = floor: epsilon reaches its
    floor after ``episodes`` episodes (the authors' 0.95 needs 90)."""
    if episodes < 1:
        raise ValueError(f"decay_to_floor: need episodes >= 1, got {episodes}")
    return (floor / start) ** (1.0 / episodes)


def q_output_size(n_layer: int) -> int:
    """L(L+1)/2: the Q-values of all layers' actions, side by side."""
    return n_layer * (n_layer + 1) // 2


def action_offset(layer: int) -> int:
    """Where layer i's Q-values start: 0 + 1 + ... + i = i(i+1)/2."""
    return layer * (layer + 1) // 2


def n_actions(layer: int) -> int:
    """Layer i chooses among i + 1 actions: copy 0, ..., copy i-1, train."""
    return layer + 1


class QNetwork(Module):
    """Linear(L, hidden) -> ReLU -> Linear(hidden, L(L+1)/2): state in, Q-values out."""

    def __init__(self, n_layer: int, hidden: int = 128):
        super().__init__()
        self.fc1 = Linear(n_layer, hidden)
        self.fc2 = Linear(hidden, q_output_size(n_layer))

    def forward(self, state) -> Tensor:
        xp = backend.xp_of(self.fc1.weight.data)
        s = Tensor(xp.asarray(state, dtype=self.fc1.weight.dtype))      # (L,)
        return self.fc2(relu(self.fc1(s)))                               # (L(L+1)/2,)


class TyingAgent:
    """epsilon-greedy Q-learning over tying states (see the module docstring).

    Its numbers come from a :class:`~nanotie.papers.dynamic_tying.DynamicTyingConfig`
    (``q_hidden``, ``q_lr``, ``q_weight_decay``, ``gamma``, ``epsilon_*``,
    ``reward_clip``). ``seed`` drives the exploration coin and the random actions."""

    def __init__(self, n_layer: int, config, seed: int = 0, device: str = "cpu"):
        self.config = config
        self.q = QNetwork(n_layer, config.q_hidden).to(device)
        # PyTorch's AdamW defaults with the authors' weight decay, as in their code.
        self.optimizer = AdamW(self.q.parameters(), lr=config.q_lr, betas=(0.9, 0.999),
                               weight_decay=config.q_weight_decay)
        self.epsilon = config.epsilon_start
        self.rng = np.random.default_rng(seed)
        self.reward_mean, self.reward_var, self.rewards_seen = 0.0, 0.0, 0

    def shape(self, reward: float) -> float:
        """The reward the TD update sees: clip(r, -c, c), then, with
        ``reward_norm="ema"``, (r - m) / sqrt(v) with the running mean m and variance v
        of the rewards before this one (0 for the first two), which then take r in:

            w = max(1 - reward_ema, 1 / n),  m <- m + w (r - m),
            v <- (1 - w) (v + w (r - m_old)^2)

        (w = 1/n is the exact mean and variance of the first n rewards; later the
        older rewards fade, so the scale follows a perplexity that keeps falling)."""
        c = self.config.reward_clip
        r = float(np.clip(reward, -c, c))
        if self.config.reward_norm == "none":
            return r
        shaped = (r - self.reward_mean) / math.sqrt(self.reward_var) if self.reward_var > 0 \
            else 0.0
        self.rewards_seen += 1
        w = max(1.0 - self.config.reward_ema, 1.0 / self.rewards_seen)
        delta = r - self.reward_mean
        self.reward_mean += w * delta
        self.reward_var = (1.0 - w) * (self.reward_var + w * delta * delta)
        return shaped

    def q_values(self, state, layer: int) -> np.ndarray:
        """Layer i's i + 1 Q-values at ``state`` (no graph)."""
        with no_grad():
            q = self.q(state)
        start = action_offset(layer)
        return backend.asnumpy(q.data[start:start + n_actions(layer)]).astype(np.float64)

    def act(self, state, layer: int) -> int:
        """epsilon-greedy: a uniform action with probability eps, else the best one."""
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(0, n_actions(layer)))
        return int(np.argmax(self.q_values(state, layer)))

    def td_target(self, reward: float, next_state, layer: int) -> float:
        """y = r + gamma max_a' Q(s')[slice_i], with r the reward as :meth:`shape` gave
        it (the clip itself is applied here too, so a raw reward may be passed when
        ``reward_norm="none"``). (A target network goes here.)"""
        c = self.config.reward_clip
        return float(np.clip(reward, -c, c)) + self.config.gamma * float(
            self.q_values(next_state, layer).max())

    def td_loss(self, state, layer: int, action: int, target: float) -> Tensor:
        """(Q(s)[slice_i][a] - y)^2, with a graph into the Q-network."""
        q = self.q(state)[action_offset(layer) + action]
        diff = q - target
        return diff * diff

    def update(self, state, layer: int, action: int, reward: float, next_state) -> float:
        """One TD step on the transition (s, i, a, r, s'); returns the squared TD error."""
        target = self.td_target(self.shape(reward), next_state, layer)
        loss = self.td_loss(state, layer, action, target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.item())

    def end_episode(self) -> float:
        """eps <- max(eps * decay, eps_min); returns the new eps."""
        self.epsilon = max(self.epsilon * self.config.epsilon_decay, self.config.epsilon_min)
        return self.epsilon
