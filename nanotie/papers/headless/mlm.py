"""The masked-LM variant: a bidirectional encoder trained with CWT on masked positions.

    L_MLM-CWT = -(1/K) sum_{k in S} log softmax_m (o_k . e(x_m) / tau)[k],  K = |S|

S is the set of positions picked for corruption; the model must recover the ORIGINAL
token there, and only there. Two recipes pick and corrupt (:class:`MaskingConfig`):

* ``"authors"`` (the default, what the authors' code does): 10% of ALL positions get a
  uniform random id; then EXACTLY ceil(15% T) positions are picked per row, 80% of
  them become [MASK], the rest keep what the first pass left. (Their CE baseline takes
  its labels after the random pass; nanotie scores the original ids for both.)
* ``"bert"`` (Devlin et al. 2019): each position is picked with probability 15%; of
  those, 80% become [MASK], 10% a random id, 10% stay. Nothing outside S is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ... import backend
from ...autograd import Tensor
from ...nn import GPT
from ...nn import functional as F
from ...nn.transformer import CausalSelfAttention
from . import HeadlessConfig, cwt_loss

__all__ = ["MaskingConfig", "picked_per_row", "mask_tokens",
           "BidirectionalSelfAttention", "MaskedLM", "mlm_loss_fn", "IGNORE_INDEX"]

IGNORE_INDEX = -100          # label of the positions outside S (not in the loss), as in PyTorch


@dataclass
class MaskingConfig:
    """Which positions a masked LM predicts and how they are corrupted."""
    select_prob: float = 0.15   # share of the positions that enter the loss (S)
    mask_prob: float = 0.8      # of the selected: replaced by [MASK]
    random_prob: float = 0.1    # "bert": of the selected, replaced by a random id (the
                                # remaining 1 - 0.8 - 0.1 = 10% stay unchanged);
                                # "authors": of ALL positions, before the selection
    recipe: str = "authors"     # "authors" (their code) or "bert" (Devlin et al.)

    def __post_init__(self):
        if self.recipe not in ("authors", "bert"):
            raise ValueError(f"MaskingConfig: recipe must be 'authors' or 'bert', got "
                             f"{self.recipe!r}")


def picked_per_row(T: int, config: MaskingConfig) -> int:
    """The "authors" recipe's |S| per row of T tokens: ceil(select_prob T). With B rows,
    CWT scores each picked position against the B ceil(select_prob T) of the batch."""
    return math.ceil(config.select_prob * T - 1e-9)


def mask_tokens(ids, mask_id: int, n_random: int, config: MaskingConfig | None = None,
                rng: np.random.Generator | None = None):
    """Corrupt a (B, T) batch of token ids with ``config.recipe`` (see the module).

    Returns ``(inputs, labels)``: ``inputs`` are the corrupted ids (random ids are
    drawn from [0, n_random), so never ``mask_id`` when ``n_random <= mask_id``);
    ``labels`` hold the ORIGINAL id at the selected positions and ``IGNORE_INDEX``
    elsewhere. Both are int64 NumPy arrays of the shape of ``ids``."""
    config = config or MaskingConfig()
    rng = rng if rng is not None else np.random.default_rng()
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError(f"mask_tokens: expected (B, T) ids, got shape {ids.shape}")
    inputs = ids.copy()
    if config.recipe == "authors":
        randomised = rng.random(ids.shape) < config.random_prob     # (B, T), anywhere
        inputs[randomised] = rng.integers(0, n_random, int(randomised.sum()))
        k = picked_per_row(ids.shape[1], config)
        order = np.argsort(rng.random(ids.shape), axis=1)[:, :k]    # (B, k) distinct
        selected = np.zeros(ids.shape, dtype=bool)
        np.put_along_axis(selected, order, True, axis=1)            # S
        to_mask = selected & (rng.random(ids.shape) < config.mask_prob)
    else:
        selected = rng.random(ids.shape) < config.select_prob      # S
        u = rng.random(ids.shape)                                  # which corruption
        to_mask = selected & (u < config.mask_prob)
        to_random = selected & (u >= config.mask_prob) & (u < config.mask_prob +
                                                          config.random_prob)
        inputs[to_random] = rng.integers(0, n_random, int(to_random.sum()))
    inputs[to_mask] = mask_id
    return inputs, np.where(selected, ids, IGNORE_INDEX)


class BidirectionalSelfAttention(CausalSelfAttention):
    """The same attention with NO mask: softmax(Q K^T / sqrt(hd)) V over the whole
    sequence (an encoder does not generate, so it never gets a cache)."""

    causal = False


class MaskedLM(GPT):
    """A bidirectional transformer encoder with a [MASK] token, trained with CWT
    (``objective="cwt"``, headless) or with the tied softmax head (``"ce"``).

    ``config.vocab_size`` counts the [MASK] id, which is the last one
    (``mask_id = vocab_size - 1``). ``forward(idx, labels)`` returns ``(out, loss)``:
    ``out`` is the (B, T, d) outputs for "cwt" and the (B, T, V) logits for "ce";
    the loss covers the positions whose label is not ``IGNORE_INDEX``."""

    def __init__(self, config: HeadlessConfig, objective: str = "cwt"):
        if objective not in ("cwt", "ce"):
            raise ValueError(f"MaskedLM: objective must be 'cwt' or 'ce', got {objective!r}")
        if not isinstance(config, HeadlessConfig):
            raise TypeError(f"MaskedLM needs a HeadlessConfig, got {type(config).__name__}")
        super().__init__(config)
        self.objective = objective
        for block in self.blocks:                # the one change: attention sees everything
            block.attn = BidirectionalSelfAttention(config.d_model, config.n_head,
                                                    config.dropout, config.bias)
        self.init_weights()                      # GPT-2 init for the new attention weights

    def generate(self, *args, **kwargs):
        """Refused: an encoder sees the whole sequence, future included."""
        raise TypeError("MaskedLM.generate: a masked (bidirectional) encoder does not "
                        "generate left to right; train a causal model (GPT or "
                        "HeadlessGPT) to generate text")

    @property
    def mask_id(self) -> int:
        return self.config.vocab_size - 1

    def head(self, x: Tensor) -> Tensor:
        """"cwt": the outputs o = ln_f(x) (B, T, d); "ce": the tied logits o E^T."""
        return self.ln_f(x) if self.objective == "cwt" else super().head(x)

    def forward(self, idx, labels=None, cache=None):
        out, _ = super().forward(idx, cache=cache)
        if labels is None:
            return out, None
        xp = backend.xp_of(self.wte.weight.data)
        labels = labels.data if isinstance(labels, Tensor) else xp.asarray(labels)
        picked = labels != IGNORE_INDEX                              # S, (B, T) bool
        if not bool(picked.any()):      # nothing selected: a zero loss, not CE's 0/0 = NaN
            return out, (out * 0.0).sum()
        if self.objective == "ce":
            return out, F.cross_entropy(out, labels, ignore_index=IGNORE_INDEX)
        outputs = out[picked]                                        # (K, d)
        targets = self.wte(labels[picked])             # (K, d) the tie: E again, not detached
        return out, cwt_loss(outputs, targets, self.config.temperature)


def mlm_loss_fn(masking: MaskingConfig | None = None, seed: int = 0):
    """A ``loss_fn(model, x, y)`` for :func:`nanotie.train.train`: corrupts ``x`` with
    :func:`mask_tokens` (its own seeded generator) and ignores ``y``."""
    rng = np.random.default_rng(seed)

    def loss_fn(model, x, y):
        ids = backend.asnumpy(x.data if isinstance(x, Tensor) else x)
        inputs, labels = mask_tokens(ids, model.mask_id, model.mask_id, masking, rng)
        device = model.wte.weight.device
        return model(backend.to_device(inputs, device), backend.to_device(labels, device))[1]

    return loss_fn
