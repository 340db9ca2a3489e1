"""What the STLM (the mechanism, in ``__init__.py``) is assembled from: :class:`STLMConfig`,
the byte blocks (attention among the W slots of one token, then a width-changing FFN)
and the grouped-query projection of the paper's core."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import backend
from ...autograd import Tensor
from ...nn.layers import MLP, Linear, SwiGLU
from ...nn.module import Module
from ...nn.transformer import CausalSelfAttention, GPTConfig, norm

_CHOICES = {"ffn": ("mlp", "swiglu"), "norm": ("layer", "rms"), "embedder": ("token", "byte"),
            "byte_head": ("decoder", "softmax"), "byte_loss": ("pad_ignored", "all_slots")}


@dataclass
class STLMConfig:
    """The shapes of a Super Tiny LM, its pooling and which of its weights are tied."""
    vocab_size: int = 2048          # BPE vocabulary: it sets the pooling boundaries
    context: int = 64               # tokens the core sees (T_max)
    d_model: int = 64               # core width d (the paper: 512)
    n_layer: int = 4                # core blocks L (the paper: 10)
    n_head: int = 4                 # core attention heads (the paper: 16)
    n_kv_head: int | None = None    # key/value heads, None = n_head; the paper's 4:
                                    # grouped-query attention (GroupedQKV)
    ffn: str = "swiglu"             # "swiglu" (the paper) or "mlp" (GELU)
    ffn_hidden: int | None = None   # FFN width; None: the layer's default (paper: 1536)
    norm: str = "rms"               # "rms" (the paper) or "layer"
    bias: bool = False              # biases in Linear layers and norms (the paper: none)
    learned_positions: bool = True  # a (context, d) position table; False: none (the
                                    # paper's RoPE has no parameters)
    dropout: float = 0.0            # on embeddings and residual branches of the core
    embedder: str = "token"         # "token": a (V, d) table; "byte": bytes + pooling
    tie_embeddings: bool = True     # token embedder only: the LM head IS the embedding
    share_ffn: bool = False         # every core block uses block 0's FFN (one object)
    byte_window: int = 12           # W: byte slots per token (the paper: 12)
    byte_dim: int = 128             # c: width of one byte slot (the paper: 128)
    byte_heads: int = 8             # attention heads in the byte blocks (the paper: 8)
    byte_head: str = "decoder"      # byte embedder only: "decoder" (the paper) predicts
                                    # the next token's W bytes; "softmax": a (d, V) head
                                    # over the BPE tokens, isolating the decoder (f)
    byte_loss: str = "pad_ignored"  # byte decoder only: score the bytes alone, or
                                    # "all_slots", pads included (the authors' code)

    def __post_init__(self):        # the names a learner types, and how heads divide
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"STLMConfig: {name} must be one of {allowed}, got "
                                 f"{getattr(self, name)!r}")
        if self.embedder == "byte" and self.tie_embeddings:
            raise ValueError("STLMConfig: tie_embeddings=True needs embedder='token'; the "
                             "byte-level embedder and decoder have no (V, d) table to share")
        for width, heads in (("d_model", "n_head"), ("n_head", "n_kv_head"),
                             ("byte_dim", "byte_heads")):
            n = getattr(self, heads)
            if n is not None and (n < 1 or getattr(self, width) % n):
                raise ValueError(f"STLMConfig: {width}={getattr(self, width)} is not "
                                 f"divisible by {heads}={n} (heads >= 1)")
        if self.ffn_hidden is not None and self.ffn_hidden < 1:   # 0 would mean "default"
            raise ValueError(f"STLMConfig: ffn_hidden must be positive or None, got "
                             f"{self.ffn_hidden}")

    def gpt_config(self) -> GPTConfig:
        """The core's settings, as the GPTConfig that nanotie's Block reads."""
        return GPTConfig(vocab_size=self.vocab_size, context=self.context,
                         d_model=self.d_model, n_layer=self.n_layer, n_head=self.n_head,
                         dropout=self.dropout, tie_embeddings=self.tie_embeddings,
                         bias=self.bias, ffn=self.ffn, norm=self.norm)


def ffn(config: STLMConfig) -> Module:
    """The feed-forward block the config asks for: an MLP or a SwiGLU."""
    FFN = MLP if config.ffn == "mlp" else SwiGLU
    return FFN(config.d_model, config.ffn_hidden, dropout=config.dropout, bias=config.bias)


class ByteSelfAttention(CausalSelfAttention):
    """Attention among the W byte slots of ONE token, in both directions (no mask):
    a token's bytes are all known when it is embedded, so slot 0 may look at slot 11.
    The tokens never mix here: each token is its own sequence of W slots, the input
    (N, W, c) with N = B * T tokens."""

    causal = False


class ByteBlock(Module):
    """x + attn(norm(x)), then a width-changing FFN: (N, W, in) -> (N, W, out).

    The FFN has no residual, since its output width differs from its input's
    (the authors' byte block); this is how the embedder widens c -> 2c -> d."""

    def __init__(self, in_dim: int, out_dim: int, ffn_dim: int, config: STLMConfig):
        super().__init__()
        self.ln1 = norm(in_dim, config)
        self.attn = ByteSelfAttention(in_dim, config.byte_heads, bias=config.bias)
        self.ln2 = norm(in_dim, config)
        self.mlp = MLP(in_dim, ffn_dim, bias=config.bias, out_dim=out_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return self.mlp(self.ln2(x))


class GroupedQKV(Module):
    """The fused q, k, v projection of grouped-query attention (the paper's 16 query
    heads sharing 4 key/value heads), shaped so that nanotie's attention runs as is.

    With H query heads, G key/value heads and head width hd = d / H, the weights map
    d -> d + 2 d_kv (d_kv = G hd): queries for every head, keys and values for G heads
    only. The output repeats each key/value head for the H / G query heads that read
    it, giving the (..., 3 d) that CausalSelfAttention splits into q, k, v:

        q_h = x Wq_h,   k_h = x Wk_{g(h)},   v_h = x Wv_{g(h)},   g(h) = h // (H / G)

    Query heads sharing a key/value head is a tie like the others: the repeat is a
    gather, whose backward sums the H / G gradients into the one shared head."""

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, bias: bool = False):
        super().__init__()
        hd, group = d_model // n_head, n_head // n_kv_head
        d_kv = hd * n_kv_head
        self.fused = Linear(d_model, d_model + 2 * d_kv, bias)        # (d, d + 2 d_kv)
        col = np.arange(d_model)                       # query column: head col // hd
        kv_col = (col // hd // group) * hd + col % hd  # its key/value column
        self.index = np.concatenate([col, d_model + kv_col,
                                     d_model + d_kv + kv_col])          # (3 d,)

    def forward(self, x: Tensor) -> Tensor:              # (..., d) -> (..., 3 d)
        y = self.fused(x)                                # (..., d + 2 d_kv)
        return y[..., backend.xp_of(y.data).asarray(self.index)]   # kv heads: a tie
