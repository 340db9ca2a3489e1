"""The STLM: a GPT core with a token or byte-level embedder/head, and the two ties.

    x      = embed(windows)          # byte windows -> pooled token vectors   (B, T, d)
    x      = block(i, x)             # the causal core, unchanged             (B, T, d)
    logits = head(x)                 # -> ALL W bytes of the next token       (B, T, W, 258)

:class:`STLM` subclasses nanotie's :class:`~nanotie.nn.GPT` and overrides its
``embed`` and ``head`` hooks; the core blocks are nanotie's :class:`~nanotie.nn.Block`.
With ``embedder="token"`` it is an ordinary GPT (tied or not), the baseline (a)-(c).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ... import backend
from ...autograd import Tensor
from ...nn import functional as F
from ...nn.layers import MLP, Dropout, Embedding, LayerNorm, Linear, RMSNorm, SwiGLU
from ...nn.module import Module, ModuleList
from ...nn.transformer import GPT, Block, CausalSelfAttention, GPTConfig
from .byte_windows import BYTE_VOCAB, PAD

__all__ = ["STLMConfig", "STLM", "ByteBlock", "ByteEmbedder", "ByteDecoder",
           "ByteSelfAttention", "ProjectingMLP", "GroupedQKV", "share_ffn",
           "byte_cross_entropy"]


@dataclass
class STLMConfig:
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
    byte_head: str = "decoder"      # byte embedder only: "decoder" predicts the next
                                    # token's W bytes (the paper); "softmax" is an
                                    # ordinary (d, V) head over the BPE tokens, which
                                    # isolates the decoder (variant (f))
    byte_loss: str = "pad_ignored"  # byte decoder only: "pad_ignored" scores the bytes
                                    # alone; "all_slots" scores every slot, pads
                                    # included (the authors' code)

    def __post_init__(self):
        for name in ("vocab_size", "context", "d_model", "n_layer", "n_head",
                     "byte_window", "byte_dim", "byte_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"STLMConfig: {name} must be positive, got "
                                 f"{getattr(self, name)}")
        choices = {"ffn": ("mlp", "swiglu"), "norm": ("layer", "rms"),
                   "embedder": ("token", "byte"), "byte_head": ("decoder", "softmax"),
                   "byte_loss": ("pad_ignored", "all_slots")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"STLMConfig: {name} must be one of {allowed}, got "
                                 f"{getattr(self, name)!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"STLMConfig: d_model={self.d_model} is not divisible by "
                             f"n_head={self.n_head}")
        kv = self.n_kv_head
        if kv is not None and (kv < 1 or self.n_head % kv):
            raise ValueError(f"STLMConfig: n_head={self.n_head} must be a multiple of "
                             f"n_kv_head={kv}")
        if self.byte_dim % self.byte_heads:
            raise ValueError(f"STLMConfig: byte_dim={self.byte_dim} is not divisible by "
                             f"byte_heads={self.byte_heads}")
        if self.ffn_hidden is not None and self.ffn_hidden < 1:
            raise ValueError(f"STLMConfig: ffn_hidden must be positive or None, got "
                             f"{self.ffn_hidden}")
        if self.embedder == "byte" and self.tie_embeddings:
            raise ValueError("STLMConfig: tie_embeddings=True needs embedder='token'; the "
                             "byte-level embedder and decoder have no (V, d) table to share")

    def gpt_config(self) -> GPTConfig:
        """The core's settings, as the GPTConfig that nanotie's Block reads."""
        return GPTConfig(vocab_size=self.vocab_size, context=self.context,
                         d_model=self.d_model, n_layer=self.n_layer, n_head=self.n_head,
                         dropout=self.dropout, tie_embeddings=self.tie_embeddings,
                         bias=self.bias, ffn=self.ffn, norm=self.norm)


def _norm(dim: int, config: STLMConfig) -> Module:
    return LayerNorm(dim, bias=config.bias) if config.norm == "layer" else RMSNorm(dim)


def _ffn(config: STLMConfig) -> Module:
    FFN = MLP if config.ffn == "mlp" else SwiGLU
    return FFN(config.d_model, config.ffn_hidden, dropout=config.dropout, bias=config.bias)


def share_ffn(blocks) -> None:
    """FFN sharing: every block's feed-forward network IS block 0's, one object.

    Attention and norms stay per layer. The FFN's gradient is then the sum over the
    L layers that use it, and the model holds (L - 1) FFNs fewer:

        params(shared) = params(unshared) - (L - 1) * params(FFN)
    """
    for i in range(1, len(blocks)):
        blocks[i].mlp = blocks[0].mlp          # THE tie: one object, L uses


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
        self.d_kv = hd * n_kv_head
        self.fused = Linear(d_model, d_model + 2 * self.d_kv, bias)   # (d, d + 2 d_kv)
        col = np.arange(d_model)                       # query column: head col // hd
        kv_col = (col // hd // group) * hd + col % hd  # its key/value column
        self.index = np.concatenate([col, d_model + kv_col,
                                     d_model + self.d_kv + kv_col])     # (3 d,)

    def forward(self, x: Tensor) -> Tensor:              # (..., d) -> (..., 3 d)
        y = self.fused(x)                                # (..., d + 2 d_kv)
        return y[..., backend.xp_of(y.data).asarray(self.index)]


# --------------------------------------------------------------- byte blocks


class ProjectingMLP(Module):
    """A width-changing feed-forward layer: proj(GELU(fc(x))), in -> hidden -> out."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, bias: bool = False):
        super().__init__()
        self.fc = Linear(in_dim, hidden, bias)
        self.proj = Linear(hidden, out_dim, bias)

    def forward(self, x: Tensor) -> Tensor:          # (..., in) -> (..., out)
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class ByteSelfAttention(CausalSelfAttention):
    """Attention among the W byte slots of ONE token, in both directions (no mask):
    a token's bytes are all known when it is embedded, so slot 0 may look at slot 11.
    The tokens never mix here: each token is its own sequence of W slots."""

    def forward(self, x: Tensor) -> Tensor:          # (N, W, c), N = B * T tokens
        N, W, C = x.shape
        H, hd = self.n_head, self.d_head
        qkv = self.qkv(x).reshape(N, W, 3, H, hd).permute(2, 0, 3, 1, 4)  # (3, N, H, W, hd)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2],
                                           scale=1.0 / math.sqrt(hd))    # (N, H, W, hd)
        return self.proj(y.permute(0, 2, 1, 3).reshape(N, W, C))         # (N, W, c)


class ByteBlock(Module):
    """x + attn(norm(x)), then a width-changing FFN: (N, W, in) -> (N, W, out).

    The FFN has no residual, since its output width differs from its input's
    (the authors' byte block); this is how the embedder widens c -> 2c -> d."""

    def __init__(self, in_dim: int, out_dim: int, ffn_dim: int, config: STLMConfig):
        super().__init__()
        self.ln1 = _norm(in_dim, config)
        self.attn = ByteSelfAttention(in_dim, config.byte_heads, bias=config.bias)
        self.ln2 = _norm(in_dim, config)
        self.mlp = ProjectingMLP(in_dim, ffn_dim, out_dim, config.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return self.mlp(self.ln2(x))


class ByteEmbedder(Module):
    """Token windows (B, T, W) -> one vector per token (B, T, d):

        e_{t,j} = E_byte[b_{t,j}] + P[j]                  byte + in-token position
        h_t     = blocks(e_{t,1..W})                      c -> 2c -> d, within token t
        x_t     = (1/W) sum_j h_{t,j}                     mean pooling over the slots

    x_t depends on token t's bytes only: pooling never mixes tokens."""

    def __init__(self, config: STLMConfig):
        super().__init__()
        c, d, W = config.byte_dim, config.d_model, config.byte_window
        self.window = W
        self.byte_emb = Embedding(BYTE_VOCAB, c)          # (258, c)
        self.byte_pos = Embedding(W, c)                   # (W, c)
        self.blocks = ModuleList([ByteBlock(c, 2 * c, 4 * c, config),
                                  ByteBlock(2 * c, d, 8 * c, config)])

    def forward(self, windows) -> Tensor:
        B, T, W = windows.shape
        slots = backend.xp_of(self.byte_pos.weight.data).arange(W)
        x = self.byte_emb(windows) + self.byte_pos(slots)  # (B, T, W, c)
        x = x.reshape(B * T, W, x.shape[-1])               # each token on its own
        for block in self.blocks:
            x = block(x)                                   # (B*T, W, c) -> (B*T, W, d)
        return x.mean(dim=1).reshape(B, T, x.shape[-1])    # pool: (B, T, d)


class ByteDecoder(Module):
    """Core output (B, T, d) -> logits over the 258 byte ids for ALL W byte slots of
    the NEXT token at once (B, T, W, 258):

        u_t      = reshape(h_t A, (W, c)) + P            A: (d, W c)
        logits_t = blocks(u_t) B_out                     B_out: (c, 258)
    """

    def __init__(self, config: STLMConfig):
        super().__init__()
        c, d, W = config.byte_dim, config.d_model, config.byte_window
        self.window, self.byte_dim = W, c
        self.proj = Linear(d, W * c, bias=False)
        self.byte_pos = Embedding(W, c)
        self.blocks = ModuleList([ByteBlock(c, c, 4 * c, config) for _ in range(2)])
        self.byte_head = Linear(c, BYTE_VOCAB, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        B, T, _ = h.shape
        W, c = self.window, self.byte_dim
        slots = backend.xp_of(self.byte_pos.weight.data).arange(W)
        u = self.proj(h).reshape(B * T, W, c) + self.byte_pos(slots)    # (B*T, W, c)
        for block in self.blocks:
            u = block(u)
        return self.byte_head(u).reshape(B, T, W, BYTE_VOCAB)          # (B, T, W, 258)


def byte_cross_entropy(logits: Tensor, targets, reduction: str = "mean",
                       ignore_pad: bool = True) -> Tensor:
    """Cross-entropy over the byte slots of the next token, PADS IGNORED:

        loss = sum_{t,j: y_tj != PAD} -log p_tj(y_tj)  /  #{t,j: y_tj != PAD}

    ``logits`` (B, T, W, 258), ``targets`` (B, T, W). The ignored id is PAD (256); the
    authors' code passes EOT (257) instead, which scores every pad slot and ignores
    the end of text. Since pads are never scored, this loss does not model where a
    token ends (its length); see the experiment's bits per byte.

    ``ignore_pad=False`` scores every slot, pads included (the mean over all B T W
    slots): the authors' loss in effect, since their ignored id (EOT) closes a
    document and is rare. The pads then code the token's length."""
    return F.cross_entropy(logits, targets, ignore_index=PAD if ignore_pad else -1,
                           reduction=reduction)


# ---------------------------------------------------------------------- model


class STLM(GPT):
    """A super tiny language model: nanotie's GPT core between a token or byte-level
    embedder and head, with embedding/head tying and FFN sharing as options.

    ``forward(x, targets)`` returns ``(logits, loss)``. With ``embedder="token"``, x
    and targets are (B, T) token ids and logits (B, T, V). With ``embedder="byte"``,
    x and targets are (B, T, W) byte windows and logits (B, T, W, 258); with
    ``byte_head="softmax"`` (variant (f)) x is byte windows but targets are (B, T)
    token ids and logits (B, T, V)."""

    def __init__(self, config: STLMConfig):
        Module.__init__(self)               # GPT's pieces, built here with our sizes
        self.config = config
        d = config.d_model
        if config.embedder == "token":
            self.wte = Embedding(config.vocab_size, d)               # (V, d)
        else:
            self.byte_embedder = ByteEmbedder(config)
        self.wpe = Embedding(config.context, d) if config.learned_positions else None
        self.drop = Dropout(config.dropout)
        self.blocks = ModuleList(Block(config.gpt_config()) for _ in range(config.n_layer))
        if config.ffn_hidden is not None:   # Block builds its FFN at the default width
            for block in self.blocks:
                block.mlp = _ffn(config)
        if config.n_kv_head not in (None, config.n_head):     # grouped-query attention
            for block in self.blocks:
                block.attn.qkv = GroupedQKV(d, config.n_head, config.n_kv_head, config.bias)
        self.ln_f = _norm(d, config)
        if self.predicts_tokens:
            self.lm_head = Linear(d, config.vocab_size, bias=False)   # (V, d) weight
        else:
            self.byte_decoder = ByteDecoder(config)
        self.init_weights()
        if config.embedder == "token" and config.tie_embeddings:
            self.lm_head.weight = self.wte.weight   # tie 1: one (V, d) array, two uses
        if config.share_ffn:
            share_ffn(self.blocks)                  # tie 2: one FFN, L uses

    def init_weights(self) -> None:
        """GPT-2's N(0, 0.02) initialisation for the core and the token table; the
        byte path keeps its layers' PyTorch defaults. (Its blocks end in a
        width-changing FFN with no residual, so small weights would shrink the pooled
        vectors layer after layer; in a short run it trained measurably slower.)"""
        byte_path = {id(p) for name, p in self.named_parameters()
                     if name.startswith(("byte_embedder.", "byte_decoder."))}
        saved = {id(p): p.data.copy() for p in self.parameters() if id(p) in byte_path}
        super().init_weights()
        for p in self.parameters():
            if id(p) in saved:
                p.data = saved[id(p)]

    @property
    def predicts_tokens(self) -> bool:
        """True when the head is a softmax over the V BPE tokens (not the byte decoder)."""
        return self.config.embedder == "token" or self.config.byte_head == "softmax"

    # ------------------------------------------------------------------ hooks
    def embed(self, idx, pos_offset: int = 0) -> Tensor:
        """Token ids (B, T) or byte windows (B, T, W) -> (B, T, d)."""
        T = idx.shape[1]
        if pos_offset + T > self.config.context:
            raise ValueError(f"STLM: sequence of {pos_offset + T} tokens is longer than "
                             f"the context of {self.config.context}")
        x = self.wte(idx) if self.config.embedder == "token" else self.byte_embedder(idx)
        if self.wpe is not None:
            xp = backend.xp_of(self.wpe.weight.data)
            x = x + self.wpe(xp.arange(pos_offset, pos_offset + T))
        return self.drop(x)

    def head(self, x: Tensor) -> Tensor:
        """(B, T, d) -> next-token logits (B, T, V) or next-token byte logits
        (B, T, W, 258)."""
        x = self.ln_f(x)
        return self.lm_head(x) if self.predicts_tokens else self.byte_decoder(x)

    # ---------------------------------------------------------------- forward
    def forward(self, x, targets=None, cache=None):
        if self.config.embedder == "token":
            return super().forward(x, targets, cache)
        if cache is not None:
            raise ValueError("STLM: the byte-level model has no KV cache")
        xp = backend.xp_of(self.wpe.weight.data if self.wpe is not None else
                           self.byte_embedder.byte_pos.weight.data)
        windows = x.data if isinstance(x, Tensor) else xp.asarray(x)
        if windows.ndim != 3 or windows.shape[-1] != self.config.byte_window:
            raise ValueError(f"STLM: expected byte windows of shape (B, T, "
                             f"{self.config.byte_window}), got {windows.shape}")
        h = self.embed(windows)
        for i in range(self.config.n_layer):
            h = self.block(i, h)
        logits = self.head(h)
        if targets is None:
            loss = None
        elif self.predicts_tokens:                     # (f): targets are token ids (B, T)
            loss = F.cross_entropy(logits, targets)
        else:                                          # targets are windows (B, T, W)
            loss = byte_cross_entropy(logits, targets,
                                      ignore_pad=self.config.byte_loss == "pad_ignored")
        return logits, loss

    def generate(self, idx, *args, **kwargs):
        if self.config.embedder == "byte" and self.predicts_tokens:
            raise NotImplementedError(
                "STLM: sampling from a byte-embedder model is not implemented; each sampled "
                "token would have to be turned back into its byte window")
        if self.config.embedder == "byte":
            raise NotImplementedError(
                "STLM: sampling from the byte-level model is not implemented; with the "
                "default loss its decoder never learns where a token ends (the pads are "
                "ignored)")
        return super().generate(idx, *args, **kwargs)
