"""Heads around a sequence core (TrellisNet, UntiedTCN or LSTM): a byte-level language
model, and a regressor for the adding problem, with the problem's data generator.

The language model embeds bytes, runs the core and decodes its output with a linear
layer; the decoder can be tied to the embedding (Press & Wolf), as in the reference
code. With ``aux_weight`` > 0, the SAME decoder also reads the core's intermediate
outputs (every ``aux_every`` levels of a TrellisNet) and their cross-entropy is added:

    loss = CE(decoder(z^(L))) + aux_weight * mean_k CE(decoder(z^(k)))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...autograd import Tensor
from ...nn import Embedding, Linear, Module
from ...nn import functional as F
from ...nn.layers import init_normal

__all__ = ["LMConfig", "SequenceLM", "AddingRegressor", "adding_problem"]


@dataclass
class LMConfig:
    """A byte language model around a sequence core: its vocabulary, width and context."""
    vocab_size: int = 256      # bytes
    d_embed: int = 32          # embedding width = the core's n_in
    context: int = 64          # training window (train() reads config.context)
    tie: bool = True           # decoder.weight IS embedding.weight (needs core n_out == d_embed)
    aux_weight: float = 0.0    # weight of the auxiliary loss on intermediate levels
    embed_std: float = 0.3     # embedding ~ N(0, embed_std^2); the reference: U(-0.1, 0.1)


class SequenceLM(Module):
    """bytes (B, T) -> logits (B, T, V); ``forward(idx, targets=None) -> (logits, loss)``."""

    def __init__(self, config: LMConfig, core: Module, n_out: int, dtype=None, device=None):
        super().__init__()
        self.config = config
        self.embedding = Embedding(config.vocab_size, config.d_embed, dtype, device)
        self.embedding.weight = init_normal((config.vocab_size, config.d_embed),
                                            config.embed_std, dtype, device)
        self.core = core
        self.decoder = Linear(n_out, config.vocab_size, True, dtype, device)
        if config.tie:
            if n_out != config.d_embed:
                raise ValueError(f"LMConfig: tie needs the core's n_out ({n_out}) to equal "
                                 f"d_embed ({config.d_embed})")
            self.decoder.weight = self.embedding.weight               # the tie: one Parameter

    def forward(self, idx, targets=None, history=None):
        h = self.core(self.embedding(idx), history)                  # SeqOutput, out (B, T, n_out)
        logits = self.decoder(h.out)                                  # (B, T, V)
        if targets is None:
            return logits, None
        # targets stay where they are (a NumPy or CuPy array, or a Tensor): cross_entropy
        # takes (B, T, V) logits and (B, T) ids, so nothing is copied to the host.
        loss = F.cross_entropy(logits, targets)
        if self.config.aux_weight > 0 and h.aux:
            aux = sum(F.cross_entropy(self.decoder(a), targets) for a in h.aux)
            loss = loss + aux * (self.config.aux_weight / len(h.aux))
        return logits, loss


class AddingRegressor(Module):
    """The adding problem's head: a linear read-out of the core's LAST output step."""

    def __init__(self, core: Module, n_out: int, dtype=None, device=None):
        super().__init__()
        self.core = core
        self.head = Linear(n_out, 1, True, dtype, device)

    def forward(self, x: Tensor) -> Tensor:                 # (B, T, 2) -> (B,)
        out = self.core(x).out                              # (B, T, n_out)
        return self.head(out[:, -1]).reshape(-1)


def adding_problem(batch: int, T: int, rng: np.random.Generator, dtype=np.float32):
    """The adding problem (Hochreiter & Schmidhuber, 1997), generated on the fly.

    Channel 0 holds T values ~ U(0, 1); channel 1 marks two of them, one in the first
    half and one in the second. The target is the sum of the two marked values, so the
    model must remember a value from up to T steps back. Predicting the mean, 1,
    scores an MSE of 1/6 ~ 0.167. Returns x (B, T, 2) and y (B,)."""
    values = rng.random((batch, T))
    marks = np.zeros((batch, T))
    rows = np.arange(batch)
    first = rng.integers(0, T // 2, batch)
    second = rng.integers(T // 2, T, batch)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    x = np.stack([values, marks], axis=-1).astype(dtype)
    y = (values[rows, first] + values[rows, second]).astype(dtype)
    return x, y
