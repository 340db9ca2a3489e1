"""Super Tiny Language Models.

Dylan Hillier, Leon Guertler, Cheston Tan, Palaash Agrawal, Ruirui Chen, Bobby Cheng,
2024. arXiv:2405.14159.

The idea. In a small language model most parameters sit in the token embedding and
the LM head: at hidden size 512 with GPT-2's 50,257 tokens, the embedding alone is
25.7M of a 55.9M model. STLMs remove them in two ways. (1) Byte-level embedding with
pooling: a subword tokenizer still marks where tokens begin and end, but a token's
vector is BUILT from its bytes by a small byte encoder and mean-pooled, and a small
byte decoder predicts all bytes of the next token in parallel: 2.56M parameters
instead of 25.73M (tied) or 51.46M (untied), 90-95% fewer. (2) Weight tying: the LM
head is the token embedding, and one feed-forward network is shared by all layers.

The ties, as aliasing (one Parameter object, several uses; gradients add):

    embedding / head:   logits = h E^T,   E = wte.weight = lm_head.weight
                        dL/dE = (dL/dE)_embedding + (dL/dE)_head
    FFN sharing:        FFN_l = FFN_0 for l = 1..L-1
                        dL/dW_FFN = sum_l dL/dW_FFN_l
                        params = params_unshared - (L - 1) params(FFN)

The byte-level path (W byte slots per token, byte width c, core width d):

    windows  (B, T, W)  ids in 0..257: the bytes, then PAD = 256; EOT = 257
    embed    e_tj = E_byte[b_tj] + P[j];  blocks c -> 2c -> d;  x_t = mean_j h_tj
    core     causal transformer over the T pooled vectors
    decode   u_t = reshape(h_t A, (W, c)) + P;  blocks;  logits_tj = u_tj B_out
    loss     mean over the NON-PAD slots of the next token: -log p_tj(b_{t+1, j})

Differences from the paper: ``DIFFERENCES``, at the end of this file (the results
page prints it).
"""

from __future__ import annotations

from ... import backend
from ...autograd import Tensor
from ...nn import functional as F
from ...nn.layers import Dropout, Embedding, Linear
from ...nn.module import Module, ModuleList
from ...nn.transformer import GPT, Block
from .byte_windows import BYTE_VOCAB, EOT, PAD, ByteWindows
from .layers import ByteBlock, ByteSelfAttention, GroupedQKV, STLMConfig, ffn, norm
from .params import (PAPER_FIGURES, ffn_width, measured_split, millions, paper_configs,
                     parameter_budget)


class STLM(GPT):
    """A super tiny language model: nanotie's GPT core between a token or byte-level
    embedder and head, with embedding/head tying and FFN sharing as options.

        x      = embed(windows)          # byte windows -> pooled token vectors   (B, T, d)
        x      = block(i, x)             # the causal core, nanotie's Block       (B, T, d)
        logits = head(x)                 # -> ALL W bytes of the next token       (B, T, W, 258)

    It overrides GPT's ``embed`` and ``head`` hooks; ``forward(x, targets)`` returns
    ``(logits, loss)``. With ``embedder="token"`` it is an ordinary GPT (the baselines
    (a)-(c)): x and targets are (B, T) token ids, logits (B, T, V). With
    ``embedder="byte"``, x and targets are (B, T, W) byte windows, logits (B, T, W, 258);
    with ``byte_head="softmax"`` (variant (f)) targets are token ids again."""

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
        core = config.gpt_config()          # GPTConfig checks the core's sizes
        self.blocks = ModuleList(Block(core) for _ in range(config.n_layer))
        if config.ffn_hidden is not None:   # Block builds its FFN at the default width
            for block in self.blocks:
                block.mlp = ffn(config)
        if config.n_kv_head not in (None, config.n_head):     # grouped-query attention
            for block in self.blocks:
                block.attn.qkv = GroupedQKV(d, config.n_head, config.n_kv_head, config.bias)
        self.ln_f = norm(d, config)
        if self.predicts_tokens:
            self.lm_head = Linear(d, config.vocab_size, bias=False)   # (V, d) weight
        else:
            self.byte_decoder = ByteDecoder(config)
        self.init_weights()
        if config.embedder == "token" and config.tie_embeddings:
            self.lm_head.weight = self.wte.weight   # tie 1: one (V, d) array, two uses
        if config.share_ffn:
            share_ffn(self.blocks)                  # tie 2: one FFN, L uses

    @property
    def predicts_tokens(self) -> bool:
        """True when the head is a softmax over the V BPE tokens (not the byte decoder)."""
        return self.config.embedder == "token" or self.config.byte_head == "softmax"

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
        """(B, T, d) -> next-token logits (B, T, V) or its bytes' logits (B, T, W, 258)."""
        x = self.ln_f(x)
        return self.lm_head(x) if self.predicts_tokens else self.byte_decoder(x)

    def forward(self, x, targets=None, cache=None):
        if self.config.embedder == "token":
            return super().forward(x, targets, cache)
        if cache is not None:
            raise ValueError("STLM: the byte-level model has no KV cache")
        xp = backend.xp_of(self.byte_embedder.byte_pos.weight.data)
        windows = x.data if isinstance(x, Tensor) else xp.asarray(x)
        if windows.ndim != 3 or windows.shape[-1] != self.config.byte_window:
            raise ValueError(f"STLM: expected byte windows of shape (B, T, "
                             f"{self.config.byte_window}), got {windows.shape}")
        h = self.embed(windows)
        for i in range(self.config.n_layer):
            h = self.block(i, h)
        logits = self.head(h)
        if targets is None:
            return logits, None
        if self.predicts_tokens:                       # (f): targets are token ids (B, T)
            return logits, F.cross_entropy(logits, targets)
        return logits, byte_cross_entropy(             # targets are windows (B, T, W)
            logits, targets, ignore_pad=self.config.byte_loss == "pad_ignored")

    def generate(self, idx, *args, **kwargs):
        if self.config.embedder == "byte":
            raise NotImplementedError(
                "STLM: sampling from a byte-level model is not implemented; each sampled "
                "token would have to be turned back into its byte window, and with the "
                "default loss the decoder never learns where a token ends (the pads are "
                "ignored)")
        return super().generate(idx, *args, **kwargs)

    def init_weights(self) -> None:
        """GPT-2's N(0, 0.02) initialisation for the core and the token table; the
        byte path keeps its layers' PyTorch defaults. (Its blocks end in a
        width-changing FFN with no residual, so small weights would shrink the pooled
        vectors layer after layer; in a short run it trained measurably slower.)"""
        byte_path = [p for name, p in self.named_parameters()
                     if name.startswith(("byte_embedder.", "byte_decoder."))]
        saved = [p.data.copy() for p in byte_path]
        super().init_weights()
        for p, data in zip(byte_path, saved):
            p.data = data


def share_ffn(blocks) -> None:
    """FFN sharing: every block's feed-forward network IS block 0's, one object, so its
    gradient sums over the L layers that use it and the model holds (L - 1) FFNs fewer
    (the equations are in the module docstring). Attention and norms stay per layer."""
    for i in range(1, len(blocks)):
        blocks[i].mlp = blocks[0].mlp          # tie 2: one FFN object, L uses


class ByteEmbedder(Module):
    """Token windows (B, T, W) -> one vector per token (B, T, d):

        e_{t,j} = E_byte[b_{t,j}] + P[j]                  byte + in-token position
        h_t     = blocks(e_{t,1..W})                      c -> 2c -> d, within token t
        x_t     = (1/W) sum_j h_{t,j}                     mean pooling over the slots

    x_t depends on token t's bytes only: pooling never mixes tokens."""

    def __init__(self, config: STLMConfig):
        super().__init__()
        c, d, W = config.byte_dim, config.d_model, config.byte_window
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
        self.proj = Linear(d, W * c, bias=False)
        self.byte_pos = Embedding(W, c)
        self.blocks = ModuleList([ByteBlock(c, c, 4 * c, config) for _ in range(2)])
        self.byte_head = Linear(c, BYTE_VOCAB, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        B, T, _ = h.shape
        W, c = self.byte_pos.weight.shape                               # (W, c)
        slots = backend.xp_of(self.byte_pos.weight.data).arange(W)
        u = self.proj(h).reshape(B * T, W, c) + self.byte_pos(slots)    # (B*T, W, c)
        for block in self.blocks:
            u = block(u)
        return self.byte_head(u).reshape(B, T, W, BYTE_VOCAB)          # (B, T, W, 258)


def byte_cross_entropy(logits: Tensor, targets, reduction: str = "mean",
                       ignore_pad: bool = True) -> Tensor:
    """Cross-entropy over the byte slots of the next token, PADS IGNORED:

        loss = sum_{t,j: y_tj != PAD} -log p_tj(y_tj)  /  #{t,j: y_tj != PAD}

    ``logits`` (B, T, W, 258), ``targets`` (B, T, W). Since pads are never scored, this
    loss does not model where a token ends; see the experiment's bits per byte.

    ``ignore_pad=False`` scores every slot, pads included (the mean over all B T W
    slots), so the pads code the token's length: the authors' loss in effect, since
    their ignored id (EOT, 257) only closes a document."""
    return F.cross_entropy(logits, targets, ignore_index=PAD if ignore_pad else -1,
                           reduction=reduction)


# Differences from the paper, as the results page prints them.
DIFFERENCES = """\
- **Which code the counts follow.** The paper's figures (55.89M / 81.62M / 34.66M /
  2.56M) come from the authors' code when the paper appeared (2 + 2 byte blocks, core
  hidden size 512), which the formula and the built models follow. Their later code
  (hidden 768, 4 + 7 byte blocks) gives 5.77M for the byte path, about 85% / 92.5% fewer.
- **Tokenizer**: nanotie's own byte-level BPE trained on the training split (a few
  thousand tokens, nothing downloaded), not GPT-2's 50,257, so the byte path saves less
  here than at the paper's size.
- **Grouped-query attention** (16 query heads sharing 4 key/value heads) is built
  (`GroupedQKV`: each key/value head is a tie among the query heads that read it) and
  counted; the miniatures use full multi-head attention.
- **Positions.** The byte positions are added once, e_tj = E_byte[b_tj] + P[j]; the
  authors' code adds `x + pos_encoder(x)`, i.e. 2x + P. The core uses learned
  positions instead of the paper's RoPE (which has no parameters).
- **A final norm** sits before the decoder (nanotie's GPT core ends with one).
- **GELU**: the byte blocks use the tanh approximation.
- **Raw bytes**: tokens become their raw bytes; the authors' code round-trips them
  through text with replacement characters.
- **Pooling** is a plain mean over all W slots, pads included (pads have an embedding
  of their own), as in the authors' code; the byte blocks use the core's norm and bias
  settings.
- **The loss**: nanotie ignores the pad id (256), so the byte decoder never models
  where a token ends; a unigram length code (fitted on the training split) makes bits
  per byte a complete code, reported beside the bytes-only figure. The authors' code
  scores every slot, pads included (its ignored id is EOT, 257): `byte_loss="all_slots"`
  trains with that loss (variant (g)); both figures are reported for every byte decoder.
- **Variant (f)**, not in the paper: `byte_head="softmax"` puts an ordinary (d, V)
  softmax head on the byte embedder, which tells the pooling's cost from the decoder's.
- The miniature runs are tiny and short; the paper's benchmarks (BLiMP, ARC,
  HellaSwag, MMLU) are not reproduced."""


__all__ = ["PAD", "EOT", "BYTE_VOCAB", "ByteWindows", "STLMConfig", "STLM", "ByteBlock",
           "ByteEmbedder", "ByteDecoder", "ByteSelfAttention", "GroupedQKV",
           "share_ffn", "byte_cross_entropy", "DIFFERENCES", "parameter_budget", "ffn_width",
           "measured_split", "paper_configs", "PAPER_FIGURES", "millions"]
