"""Controls that tell a learned tying policy from chance, and a reward whose best
policy is known.

A dynamic run changes two things at once: WHICH layers train (the policy) and THAT
some layers are copies (tying itself). To credit the agent with a result, it must
beat schedules that tie just as much without learning anything: uniform actions
(:class:`RandomSchedule`, what the agent's exploration draws from) and a pattern
decided in advance (:class:`FixedSchedule`). Both speak the agent's language
(``epsilon``, ``act``, ``update``, ``end_episode``), so the training loop runs them in
the agent's place, with the same decisions, rewards and optimizer syncs.

:class:`SyntheticReward` is a stand-in for the language model where the right answer
is known: each layer that trains lowers the "perplexity" by ``gain``,

    r(s') = -(base - gain * #{i : s'_i = i}) + noise,   noise ~ N(0, noise^2),

so the best policy trains every layer; :func:`greedy_train_share` reads how much of
that an agent learned.
"""

from __future__ import annotations

import math

import numpy as np

from .agent import n_actions
from .tying import independent_layers, validate_state, with_action

__all__ = ["RandomSchedule", "FixedSchedule", "SyntheticReward", "greedy_train_share",
           "chance_train_share"]


class RandomSchedule:
    """Uniform random actions for every decision (layer i: each of its i + 1 actions
    with probability 1 / (i + 1)); no learning (epsilon stays 1)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.epsilon = 1.0

    def act(self, state, layer: int) -> int:
        return int(self.rng.integers(0, n_actions(layer)))

    def update(self, state, layer, action, reward, next_state) -> float:
        return math.nan                          # nothing to learn

    def end_episode(self) -> float:
        return self.epsilon


class FixedSchedule:
    """``before`` for the first ``switch`` episodes, ``after`` from then on (the
    experiment: (0, 1, ..., L-1), then (0, ..., 0)). Each decision sets s_i to the
    pattern's s_i, so layer by layer, like the agent."""

    def __init__(self, before, after, switch: int):
        self.before = validate_state(before, len(before))
        self.after = validate_state(after, len(before))
        self.switch, self.episode, self.epsilon = switch, 0, 0.0

    def act(self, state, layer: int) -> int:
        return (self.before if self.episode < self.switch else self.after)[layer]

    def update(self, state, layer, action, reward, next_state) -> float:
        return math.nan

    def end_episode(self) -> float:
        self.episode += 1
        return self.epsilon


class SyntheticReward:
    """The module docstring's r(s'): training every layer is the best policy."""

    def __init__(self, n_layer: int, base: float = 20.0, gain: float = 1.0,
                 noise: float = 1.0, seed: int = 0):
        self.n_layer, self.base, self.gain, self.noise = n_layer, base, gain, noise
        self.rng = np.random.default_rng(seed)

    def __call__(self, next_state) -> float:
        mean = -(self.base - self.gain * independent_layers(next_state))
        return float(mean + self.noise * self.rng.normal())

    def train(self, policy, episodes: int) -> list:
        """``episodes`` episodes of L - 1 decisions each from s = 0, as the training loop
        makes them (act, apply, reward, update; end_episode after each). Returns the mean
        reward of every episode."""
        means = []
        for _ in range(episodes):
            state = (0,) * self.n_layer
            rewards = []
            for layer in range(1, self.n_layer):
                action = policy.act(state, layer)
                next_state = with_action(state, layer, action)
                reward = self(next_state)
                policy.update(state, layer, action, reward, next_state)
                rewards.append(reward)
                state = next_state
            policy.end_episode()
            means.append(float(np.mean(rewards)))
        return means


def greedy_train_share(agent, n_layer: int) -> float:
    """The share of layers 1..L-1 whose greedy action at the all-train state is
    "train" (action i for layer i)."""
    state = tuple(range(n_layer))
    picks = [int(np.argmax(agent.q_values(state, i))) == i for i in range(1, n_layer)]
    return float(np.mean(picks))


def chance_train_share(n_layer: int) -> float:
    """What :func:`greedy_train_share` expects from a uniform random choice:
    the mean over i = 1..L-1 of 1 / (i + 1)."""
    return float(np.mean([1.0 / n_actions(i) for i in range(1, n_layer)]))
