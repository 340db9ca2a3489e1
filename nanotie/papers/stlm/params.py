"""Where the parameters go: an analytic count, evaluated without building a model.

With d the core width, V the vocabulary, L the layers, h the FFN width, c the byte
width and W the byte window (biases and LayerNorm offsets left out for brevity;
:func:`parameter_budget` includes them when ``bias=True``):

    token embedding            V d                (the head adds V d more, untied)
    attention, per layer       d (d + 2 d_kv) + d d           d_kv = d n_kv_head / n_head
    FFN, per layer             2 d h (GELU MLP)  or  3 d h (SwiGLU)
    norms                      2 d per layer + d for the final norm
    positions                  T_max d (learned) or 0 (RoPE, the paper)
    core                       L (attention + 2 d) + d + positions
                                 + L FFN, or 1 FFN when shared: (L - 1) FFN saved
    byte block (in i, out o, FFN f)     2 i + 4 i^2 + i f + f o
    byte embedder              258 c + W c + block(c, 2c, 4c) + block(2c, d, 8c)
    byte decoder               d W c + W c + 2 block(c, c, 4c) + 258 c
                                 (or V d for the softmax head of variant (f))

At the paper's sizes (d 512, L 10, h 1536, V 50257, 16 heads with 4 key/value
heads, c 128, W 12) this gives 55.89M tied, 81.62M untied, 34.66M tied with FFN
sharing, and 2.56M for the byte embedder plus decoder instead of a 25.73M tied or
51.46M untied embedding: 90.0% or 95.0% fewer.
"""

from __future__ import annotations

from dataclasses import replace

from ...nn.module import count_parameters
from .byte_windows import BYTE_VOCAB
from .layers import STLMConfig


def ffn_width(cfg: STLMConfig) -> int:
    """The FFN's hidden width h: ``ffn_hidden`` or the layer's default."""
    if cfg.ffn_hidden is not None:
        return cfg.ffn_hidden
    d = cfg.d_model
    return 4 * d if cfg.ffn == "mlp" else 8 * ((8 * d // 3 + 7) // 8)


def parameter_budget(cfg: STLMConfig) -> dict:
    """Unique trainable parameters of ``STLM(cfg)``, piece by piece, without building it.

    Keys: embedding, head, positions, attention, ffn, norms, core, embedding+head,
    total. For the byte-level model, "embedding" is the byte embedder and "head" the
    byte decoder."""
    d, L, V, h = cfg.d_model, cfg.n_layer, cfg.vocab_size, ffn_width(cfg)
    c, W = cfg.byte_dim, cfg.byte_window

    def linear(i, o):
        return i * o + (o if cfg.bias else 0)

    def norm(dim):
        return dim * (2 if cfg.norm == "layer" and cfg.bias else 1)   # gain (+ offset)

    def attn(dim, n_head, n_kv_head):
        d_kv = dim // n_head * n_kv_head              # keys (and values) are this wide
        return linear(dim, dim + 2 * d_kv) + linear(dim, dim)   # qkv, output

    def byte_block(i, o, f):
        return 2 * norm(i) + attn(i, cfg.byte_heads, cfg.byte_heads) + linear(i, f) + linear(f, o)

    if cfg.embedder == "token":
        embedding = V * d
        head = 0 if cfg.tie_embeddings else V * d     # tied: the same array, counted once
    else:
        embedding = (BYTE_VOCAB * c + W * c + byte_block(c, 2 * c, 4 * c)
                     + byte_block(2 * c, d, 8 * c))
        if cfg.byte_head == "softmax":              # variant (f): an ordinary (d, V) head
            head = V * d
        else:                                       # its two Linears have no bias
            head = d * W * c + W * c + 2 * byte_block(c, c, 4 * c) + c * BYTE_VOCAB
    positions = cfg.context * d if cfg.learned_positions else 0
    attention = L * attn(d, cfg.n_head, cfg.n_kv_head or cfg.n_head)
    one_ffn = (1 if cfg.ffn == "mlp" else 2) * linear(d, h) + linear(h, d)  # SwiGLU: gate, up
    ffn = (1 if cfg.share_ffn else L) * one_ffn       # shared: one FFN for all L layers
    norms = (2 * L + 1) * norm(d)
    core = positions + attention + ffn + norms
    return {"embedding": embedding, "head": head, "positions": positions,
            "attention": attention, "ffn": ffn, "norms": norms, "core": core,
            "embedding+head": embedding + head, "total": embedding + head + core}


def measured_split(model) -> dict:
    """The BUILT model's unique parameters: embedding+head, core and total."""
    total = count_parameters(model, trainable_only=False)
    emb = sum(p.numel() for name, p in model.named_parameters()   # each Parameter once
              if name.startswith(("wte.", "lm_head.", "byte_embedder.", "byte_decoder.")))
    return {"embedding+head": emb, "core": total - emb, "total": total}


def paper_configs() -> dict:
    """The paper's variants at its sizes (to count, not to build): the ~50M-class
    configuration of the paper and the authors' code, hidden 512, 10 layers, SwiGLU FFN
    1536, RMSNorm, no biases, GPT-2's vocabulary, context 512, 16 query heads sharing 4
    key/value heads, RoPE positions; byte window 12, width 128."""
    tied = STLMConfig(vocab_size=50257, context=512, d_model=512, n_layer=10, n_head=16,
                      n_kv_head=4, ffn="swiglu", ffn_hidden=1536, norm="rms", bias=False,
                      learned_positions=False, byte_window=12, byte_dim=128, byte_heads=8)
    return {"untied": replace(tied, tie_embeddings=False),
            "tied": tied,
            "tied + FFN sharing": replace(tied, share_ffn=True),
            "byte-level": replace(tied, embedder="byte", tie_embeddings=False)}


# The paper's figures, as it states them (millions to two decimals, percent to one).
PAPER_FIGURES = {"tied": "55.89M", "untied": "81.62M", "tied + FFN sharing": "34.66M",
                 "embedding (tied)": "25.73M", "byte embedder + decoder": "2.56M",
                 "fewer than tied": "90.0%", "fewer than untied": "95.0%"}


def millions(n: int) -> str:
    """55888896 -> '55.89M', the paper's precision."""
    return f"{n / 1e6:.2f}M"
