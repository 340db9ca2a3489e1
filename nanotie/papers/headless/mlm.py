"""The masked-LM variant: a bidirectional encoder trained with CWT on masked positions.

BERT's recipe (Devlin et al. 2019), which the paper keeps for its headless encoders:
pick 15% of the positions; of those, 80% become the [MASK] token, 10% become a
random token and 10% stay as they are. The model must recover the ORIGINAL token at
every picked position, and only there: the picked positions are the set S of Eq. 3.

    L_MLM-CWT = -(1/K) sum_{k in S} log softmax_m (o_k . e(x_m) / tau)[k],  K = |S|

The encoder is nanotie's GPT with one change: its attention is not causal (every
position sees the whole sequence). The vocabulary has one more id than the
tokenizer's, the [MASK] token. Labels follow PyTorch's convention: the original id
at picked positions, ``ignore_index`` (-100) elsewhere.
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

__all__ = ["MaskingConfig", "mask_tokens", "BidirectionalSelfAttention", "MaskedLM",
           "mlm_loss_fn", "IGNORE_INDEX"]

IGNORE_INDEX = -100          # label of the positions outside S (not in the loss)


@dataclass
class MaskingConfig:
    select_prob: float = 0.15   # share of the positions that enter the loss (S)
    mask_prob: float = 0.8      # of the selected: replaced by [MASK]
    random_prob: float = 0.1    # of the selected: replaced by a uniform random id
                                # (the remaining 1 - 0.8 - 0.1 = 10% stay unchanged)

    def __post_init__(self):
        for name in ("select_prob", "mask_prob", "random_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"MaskingConfig: {name} must be in [0, 1], got {value}")
        if self.mask_prob + self.random_prob > 1.0:
            raise ValueError(f"MaskingConfig: mask_prob + random_prob must be <= 1, got "
                             f"{self.mask_prob} + {self.random_prob}")


def mask_tokens(ids, mask_id: int, n_random: int, config: MaskingConfig | None = None,
                rng: np.random.Generator | None = None):
    """BERT's corruption of a batch of token ids.

    Returns ``(inputs, labels)``: ``inputs`` are ``ids`` with the selected positions
    corrupted (80% -> ``mask_id``, 10% -> a random id in [0, n_random), 10% kept);
    ``labels`` hold the original id at the selected positions and ``IGNORE_INDEX``
    elsewhere. Both are int64 NumPy arrays of the shape of ``ids``."""
    config = config or MaskingConfig()
    rng = rng if rng is not None else np.random.default_rng()
    ids = np.asarray(ids, dtype=np.int64)
    selected = rng.random(ids.shape) < config.select_prob          # S
    u = rng.random(ids.shape)                                      # which corruption
    to_mask = selected & (u < config.mask_prob)
    to_random = selected & (u >= config.mask_prob) & (u < config.mask_prob +
                                                      config.random_prob)
    inputs = ids.copy()
    inputs[to_mask] = mask_id
    inputs[to_random] = rng.integers(0, n_random, int(to_random.sum()))
    labels = np.where(selected, ids, IGNORE_INDEX)
    return inputs, labels


class BidirectionalSelfAttention(CausalSelfAttention):
    """The same attention with NO mask: softmax(Q K^T / sqrt(hd)) V over the whole
    sequence. Only ``forward`` changes (no cache: an encoder does not generate)."""

    def forward(self, x: Tensor, kv=None) -> Tensor:
        if kv is not None:
            raise ValueError("BidirectionalSelfAttention: an encoder has no KV cache")
        B, T, C = x.shape
        H, hd = self.n_head, self.d_head
        qkv = self.qkv(x).reshape(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        y = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=None,
            dropout_p=self.attn_dropout if self.training else 0.0,
            scale=1.0 / math.sqrt(hd))                                      # (B, H, T, hd)
        y = y.permute(0, 2, 1, 3).reshape(B, T, C)                          # (B, T, C)
        return self.resid_drop(self.proj(y))


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
        if self.objective == "ce":
            return out, F.cross_entropy(out, labels, ignore_index=IGNORE_INDEX)
        picked = labels != IGNORE_INDEX                              # S, (B, T) bool
        if not bool(picked.any()):               # nothing selected: a zero loss, no NaN
            return out, (out * 0.0).sum()
        outputs = out[picked]                                        # (K, d)
        targets = self.wte(labels[picked])                           # (K, d), not detached
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
