"""Associative recall: the synthetic task Hyena was designed to solve.

An episode binds keys to values, then asks for some keys again; the model must answer
each query with the value bound IN THIS EPISODE (bindings are drawn afresh every time,
so nothing can be memorised)::

    k1 v1 k2 v2 ... kP vP | q1 a1 q2 a2 ... qQ aQ        (a_j is the value of key q_j)

Only the answers are scored (every other target is ``IGNORE``); chance is 1 / n_values.
Answering needs a lookup over the whole context: attention's induction head, Hyena's
gates around a long convolution.

Training goes through :func:`nanotie.train.train`, whose sampler draws windows of a
1-D stream: here :func:`episode_stream`, each episode number repeated ``seq_len``
times, so a window's first entry names an episode and :func:`recall_loss` looks it up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import backend

__all__ = ["RecallConfig", "IGNORE", "recall_episodes", "episode_stream", "recall_loss",
           "recall_accuracy"]

IGNORE = -100     # cross_entropy's ignore_index: targets that are not scored


@dataclass
class RecallConfig:
    """The associative-recall task: its keys, values and pairs per episode."""
    n_keys: int = 16       # key tokens are 0 .. n_keys - 1
    n_values: int = 16     # value tokens are n_keys .. n_keys + n_values - 1
    n_pairs: int = 8       # distinct keys bound to values at the start of an episode
    n_queries: int = 8     # keys asked again (distinct while n_queries <= n_pairs)

    def __post_init__(self):    # otherwise an IndexError deep inside recall_episodes
        if not 1 <= self.n_pairs <= self.n_keys:
            raise ValueError(f"RecallConfig: need 1 <= n_pairs <= n_keys (distinct keys), "
                             f"got n_pairs={self.n_pairs}, n_keys={self.n_keys}")

    @property
    def seq_len(self) -> int:
        """Tokens per episode: a key and a value per pair and per query."""
        return 2 * (self.n_pairs + self.n_queries)

    @property
    def vocab_size(self) -> int:
        return self.n_keys + self.n_values


def recall_episodes(config: RecallConfig, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` episodes: inputs x (n, T) and targets y (n, T), int64, T = seq_len.
    y is IGNORE everywhere except at each query key, where it is the bound value."""
    rng = np.random.default_rng(seed)
    P, Q, K = config.n_pairs, config.n_queries, config.n_keys
    keys = np.argsort(rng.random((n, K)), axis=1)[:, :P]               # (n, P) distinct
    values = K + rng.integers(0, config.n_values, size=(n, P))          # (n, P)
    if Q <= P:
        asked = np.argsort(rng.random((n, P)), axis=1)[:, :Q]           # (n, Q) distinct
    else:
        asked = rng.integers(0, P, size=(n, Q))
    q_keys = np.take_along_axis(keys, asked, axis=1)                    # (n, Q)
    q_vals = np.take_along_axis(values, asked, axis=1)
    bind = np.stack([keys, values], axis=2).reshape(n, 2 * P)           # k1 v1 k2 v2 ...
    query = np.stack([q_keys, q_vals], axis=2).reshape(n, 2 * Q)        # q1 a1 q2 a2 ...
    x = np.concatenate([bind, query], axis=1).astype(np.int64)          # (n, T)
    y = np.full_like(x, IGNORE)
    y[:, 2 * P::2] = q_vals                                             # at q_j: a_j
    return x, y


def episode_stream(n: int, seq_len: int) -> np.ndarray:
    """Episode numbers 0..n-1, each repeated ``seq_len`` times (plus one entry, so the
    evaluation windows cover every episode): a window that starts at k * seq_len
    begins with k, and any window's first entry names one episode."""
    return np.append(np.repeat(np.arange(n), seq_len), n - 1)


def recall_loss(x_all: np.ndarray, y_all: np.ndarray):
    """A ``loss_fn`` for :func:`~nanotie.train.train`: the window's first entry picks
    the episode, and the loss is the cross-entropy on its answers."""
    def loss_fn(model, window, _next):
        ids = backend.asnumpy(window[:, 0]).astype(np.int64)             # (B,) episodes
        return model(x_all[ids], y_all[ids])[1]
    return loss_fn


def recall_accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """The fraction of answers whose arg-max prediction is the bound value."""
    correct = total = 0
    with model.evaluating():
        for s in range(0, len(x), batch_size):
            logits, _ = model(x[s:s + batch_size])
            pred = backend.asnumpy(logits.data).argmax(axis=-1)      # (b, T)
            scored = y[s:s + batch_size] != IGNORE
            correct += int((pred[scored] == y[s:s + batch_size][scored]).sum())
            total += int(scored.sum())
    return correct / max(total, 1)
