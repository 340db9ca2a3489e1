"""A GPT: causal self-attention, pre-LN blocks, and the tied embedding / output head.

The model is nanoGPT's, written against nanotie's Tensor. Its ``forward`` is three
hooks, so a paper can replace one piece and keep the rest (labml's pattern)::

    x      = self.embed(idx)              # tokens -> vectors            (B, T, d)
    x      = self.block(i, x, cache)      # for i in range(n_layer)      (B, T, d)
    logits = self.head(x)                 # vectors -> next-token scores (B, T, V)

With ``tie_embeddings`` the output head IS the input embedding: one aliasing line,
``self.lm_head.weight = self.wte.weight`` (Press & Wolf, 2017). The logits are then
``h E^T``, a token's score is the dot product of the hidden state with that
token's own embedding, and E's gradient sums both uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from types import SimpleNamespace

import numpy as np

from .. import backend
from ..autograd import Tensor
from . import functional as F
from .layers import MLP, Dropout, Embedding, LayerNorm, Linear, RMSNorm, SwiGLU
from .module import TIES_KEY, Module, ModuleList, Parameter, _as_state, _parse_ties

__all__ = ["GPTConfig", "GPT", "Block", "CausalSelfAttention", "KVCache", "norm"]


@dataclass
class GPTConfig:
    """The shapes of a GPT and whether its embedding and head are tied."""
    vocab_size: int = 256         # 256 = bytes; a BPE tokenizer's size otherwise
    context: int = 128            # the longest sequence the model sees (T_max)
    d_model: int = 128            # width of the residual stream (d)
    n_layer: int = 4              # number of transformer blocks
    n_head: int = 4               # attention heads; d_model must divide by it
    dropout: float = 0.0          # on embeddings, attention weights and residual branches
    tie_embeddings: bool = True   # the output head reuses the input embedding matrix
    bias: bool = True             # biases in the Linear layers and LayerNorms
    ffn: str = "mlp"              # "mlp" (GELU, 4d) or "swiglu"
    norm: str = "layer"           # "layer" (LayerNorm) or "rms" (RMSNorm)

    def __post_init__(self):
        problems = [f"{name} must be positive, got {getattr(self, name)}" for name in
                    ("vocab_size", "context", "d_model", "n_layer", "n_head")
                    if getattr(self, name) < 1]
        if not problems and self.d_model % self.n_head:
            problems.append(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.ffn not in ("mlp", "swiglu"):
            problems.append(f"ffn must be 'mlp' or 'swiglu', got {self.ffn!r}")
        if self.norm not in ("layer", "rms"):
            problems.append(f"norm must be 'layer' or 'rms', got {self.norm!r}")
        if problems:
            raise ValueError("GPTConfig: " + "; ".join(problems))


class KVCache:
    """The keys and values of the tokens seen so far, per layer, for generation.

    A new token's query attends to every earlier key, and earlier keys never change
    (attention is causal), so each step computes keys and values for the NEW token
    only and writes them after the others: O(T) work per token instead of O(T^2).
    The buffers are made once, for ``context`` positions, and written in place, so a
    step copies one token's keys and values, not the whole cache. The cache is for
    generation: attention reads keys and values back from the buffers as constants, so
    no gradient flows through them (train without a cache)."""

    def __init__(self, model: GPT, batch: int):
        cfg, weight = model.config, model.wte.weight
        xp = backend.xp_of(weight.data)
        # (B, context, H, hd) in memory, as qkv lays out uncached keys: attention reads
        # both with the same strides, so it gives the same results, bit for bit
        shape = (batch, cfg.context, cfg.n_head, cfg.d_model // cfg.n_head)

        def buffer():                                                # (B, H, context, hd)
            return xp.zeros(shape, weight.dtype).transpose(0, 2, 1, 3)

        # per layer: keys and values, filled up to ``length``
        self.layers = [SimpleNamespace(k=buffer(), v=buffer(), length=0)
                       for _ in range(cfg.n_layer)]
        self.length = 0      # tokens already cached (the position offset)

    def nbytes(self) -> int:
        """Bytes in use: the filled positions of every layer's keys and values."""
        return int(sum(layer.k[:, :, :self.length].nbytes + layer.v[:, :, :self.length].nbytes
                       for layer in self.layers))


class CausalSelfAttention(Module):
    """softmax(Q K^T / sqrt(hd) + mask) V per head, with one fused projection.

    ``qkv`` maps d -> 3d in ONE Linear, so an adapter (Tied-LoRA) can attach to a
    single weight; its output splits into queries, keys and values. A subclass with
    ``causal = False`` is a bidirectional encoder's attention (no mask)."""

    causal = True

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.n_head, self.d_head = n_head, d_model // n_head
        self.qkv = Linear(d_model, 3 * d_model, bias)
        self.proj = Linear(d_model, d_model, bias)
        self.attn_dropout = dropout            # applied to the weights inside the fused op
        self.resid_drop = Dropout(dropout)

    def forward(self, x: Tensor, kv=None) -> Tensor:   # kv: this layer's KVCache entry
        B, T, C = x.shape
        H, hd = self.n_head, self.d_head
        qkv = self.qkv(x).reshape(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]                                    # (B, H, T, hd)
        offset = 0
        if kv is not None:          # generation: write these after the cached keys/values
            if kv.k.shape[0] != B:  # NumPy would broadcast 1 row into all, or fail obscurely
                raise ValueError(f"KVCache: made for a batch of {kv.k.shape[0]}, given a "
                                 f"batch of {B}")
            offset, kv.length = kv.length, kv.length + T
            kv.k[:, :, offset:kv.length] = k.data                           # in place
            kv.v[:, :, offset:kv.length] = v.data
            k, v = Tensor(kv.k[:, :, :kv.length]), Tensor(kv.v[:, :, :kv.length])  # all of them
        # The causal mask (T, T_k): 0 where query i (at offset + i) may see key j, i.e.
        # j <= offset + i, and -inf above that diagonal.
        mask = None
        if self.causal:
            xp = backend.xp_of(x.data)
            mask = xp.triu(xp.full((T, k.shape[2]), -np.inf, dtype=x.dtype), k=1 + offset)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0,
            scale=1.0 / math.sqrt(hd))                                       # (B, H, T, hd)
        y = y.permute(0, 2, 1, 3).reshape(B, T, C)                           # (B, T, C)
        return self.resid_drop(self.proj(y))


def norm(dim: int, config: GPTConfig) -> Module:
    """The normalisation ``config.norm`` names, over the last ``dim`` features."""
    return LayerNorm(dim, bias=config.bias) if config.norm == "layer" else RMSNorm(dim)


class Block(Module):
    """Pre-LN transformer block: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        FFN = MLP if config.ffn == "mlp" else SwiGLU
        self.ln1 = norm(config.d_model, config)
        self.attn = CausalSelfAttention(config.d_model, config.n_head, config.dropout,
                                        config.bias)
        self.ln2 = norm(config.d_model, config)
        self.mlp = FFN(config.d_model, dropout=config.dropout, bias=config.bias)

    def forward(self, x: Tensor, kv=None) -> Tensor:  # (B, T, d)
        x = x + self.attn(self.ln1(x), kv)
        return x + self.mlp(self.ln2(x))


class GPT(Module):
    """A decoder-only language model with learned positions and an optional tied head.

    ``forward(idx, targets)`` returns ``(logits, loss)``; ``loss`` is the mean
    next-token cross-entropy in nats when ``targets`` are given, else None."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.wte = Embedding(config.vocab_size, d)       # token embedding E   (V, d)
        self.wpe = Embedding(config.context, d)          # position embedding  (T_max, d)
        self.drop = Dropout(config.dropout)
        self.blocks = ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = norm(d, config)
        self.lm_head = Linear(d, config.vocab_size, bias=False)
        self.init_weights()
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight        # THE tie: one object, two uses

    def load_state_dict(self, state_dict, strict: bool = True, retie: bool = False) -> None:
        """:meth:`~.module.Module.load_state_dict`, refusing a checkpoint whose embedding tie
        differs from ``config.tie_embeddings``: a tied checkpoint would otherwise tie an
        untied GPT silently (its config still saying False), changing what it trains.

        ``retie=True`` takes the checkpoint's tie instead (tying or untying
        ``lm_head.weight`` and ``wte.weight``) and updates ``self.config`` to match.
        """
        state = _as_state(state_dict)
        saved_tied = _head_tied_in(state, _parse_ties(state.get(TIES_KEY, []), []))
        if not retie or saved_tied is None or saved_tied == self.config.tie_embeddings:
            return super().load_state_dict(state, strict)
        head, config = self.lm_head.weight, self.config
        self.lm_head.weight = (self.wte.weight if saved_tied else
                               Parameter(self.wte.weight.data.copy()))   # values: the load's
        self.config = replace(config, tie_embeddings=saved_tied)
        try:
            super().load_state_dict(state, strict)
        except BaseException:
            self.lm_head.weight, self.config = head, config     # left as it was
            raise

    def _state_dict_problems(self, state: dict, ties: dict) -> list:
        saved_tied = _head_tied_in(state, ties)
        if saved_tied is None or saved_tied == self.config.tie_embeddings:
            return []
        saved = "tied to wte.weight" if saved_tied else "stored separately"
        return [f"the checkpoint's lm_head.weight is {saved}, but this "
                f"{type(self).__name__} has tie_embeddings={self.config.tie_embeddings}: build "
                f"it with tie_embeddings={saved_tied}, or pass retie=True to take the "
                f"checkpoint's tie"]

    def init_weights(self) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights, zero biases, and the residual
        projections scaled by 1/sqrt(2 n_layer) so the residual stream's variance does
        not grow with depth."""
        std = 0.02
        for path, p in self.named_parameters():
            if path.endswith("bias"):
                p.data[...] = 0
            elif p.ndim == 2:
                scale = std / math.sqrt(2 * self.config.n_layer) if path.endswith(
                    ("attn.proj.weight", "mlp.proj.weight")) else std
                p.data = backend.randn(p.shape, p.dtype, p.device) * p.dtype.type(scale)

    # ------------------------------------------------------------------ hooks
    def embed(self, idx, pos_offset: int = 0) -> Tensor:
        """Token plus position embeddings: (B, T) ids -> (B, T, d)."""
        T = idx.shape[-1]
        if pos_offset + T > self.config.context:
            raise ValueError(f"GPT: sequence of {pos_offset + T} tokens is longer than the "
                             f"context of {self.config.context}")
        xp = backend.xp_of(self.wpe.weight.data)
        pos = xp.arange(pos_offset, pos_offset + T)
        return self.drop(self.wte(idx) + self.wpe(pos))

    def block(self, i: int, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """Layer i of the stack: (B, T, d) -> (B, T, d)."""
        return self.blocks[i](x, cache.layers[i] if cache is not None else None)

    def head(self, x: Tensor) -> Tensor:
        """Final norm and the output projection: (B, T, d) -> (B, T, V) logits."""
        return self.lm_head(self.ln_f(x))

    # ---------------------------------------------------------------- forward
    def forward(self, idx, targets=None, cache: KVCache | None = None):
        idx = idx if isinstance(idx, Tensor) else Tensor(
            backend.xp_of(self.wte.weight.data).asarray(idx))
        if idx.ndim != 2:
            raise ValueError(f"GPT: expected token ids of shape (B, T), got {idx.shape}")
        x = self.embed(idx, cache.length if cache is not None else 0)
        for i in range(self.config.n_layer):
            x = self.block(i, x, cache)
        logits = self.head(x)
        if cache is not None:
            cache.length += idx.shape[1]
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return logits, loss

    # ------------------------------------------------------------- generation
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None,
                 use_cache: bool = True) -> np.ndarray:
        """Continue each row of ``idx`` (B, T) by ``max_new_tokens`` sampled tokens.

        Logits are divided by ``temperature`` (0 means greedy) and, with ``top_k``,
        all but the k largest are dropped before sampling. The KV cache makes each
        step cost one token's work; when the sequence outgrows the context, the
        model re-reads the last ``context`` tokens."""
        out, rng = _start_generation(idx, temperature, seed)
        context, cache = self.config.context, None
        with self.evaluating():
            for _ in range(max_new_tokens):
                if not use_cache or cache is None or cache.length >= context:
                    cache = KVCache(self, len(out)) if use_cache else None
                    logits, _ = self(out[:, -context:], cache=cache)
                else:
                    logits, _ = self(out[:, -1:], cache=cache)
                nxt = _sample(backend.asnumpy(logits.data[:, -1]), temperature, top_k, rng)
                out = np.concatenate([out, nxt[:, None]], axis=1)
        return out


def _start_generation(idx, temperature: float, seed) -> tuple:
    """The prompt as a (B, T) int64 NumPy array and the sampling generator, after
    checking the arguments every ``generate`` shares."""
    if temperature < 0:
        raise ValueError(f"generate: temperature must be >= 0, got {temperature}")
    out = np.asarray(backend.asnumpy(idx.data if isinstance(idx, Tensor) else idx),
                     dtype=np.int64)
    if out.ndim != 2 or out.shape[1] == 0:
        raise ValueError(f"generate: expected a prompt of shape (B, T>0), got {out.shape}")
    return out, np.random.default_rng(seed)


def _sample(logits: np.ndarray, temperature: float, top_k, rng) -> np.ndarray:
    """One token per row of (B, V) logits."""
    logits = logits.astype(np.float64)
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = np.sort(logits, axis=-1)[:, -min(top_k, logits.shape[-1])][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    u = rng.random((p.shape[0], 1))
    return np.minimum((p.cumsum(axis=-1) < u).sum(axis=-1), p.shape[-1] - 1)


def _head_tied_in(state: dict, ties: dict) -> bool | None:
    """Whether a GPT checkpoint ties ``lm_head.weight`` to ``wte.weight`` (True), stores
    it separately (False), or holds no head at all (None)."""
    if ties.get("lm_head.weight") == "wte.weight":
        return True
    return False if "lm_head.weight" in state else None
