"""Exercise 11: the parameter budget of a Super Tiny Language Model (STLM).

The check compares the learner's count with ``count_parameters`` of the BUILT model at
small sizes, and with ``nanotie.papers.stlm.params.parameter_budget`` at the paper's.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from itertools import combinations

import numpy as np

from ..nn import count_parameters
from ..papers.stlm import STLM, STLMConfig
from ..papers.stlm.params import (PAPER_FIGURES, ffn_width, measured_split, millions,
                                  paper_configs, parameter_budget)
from . import Planted
from .checking import Checker, CheckResult, Mistake, written

TITLE = "STLM: the parameter budget"
GOAL = ("Count where a small language model's parameters go, and see the ties at work: "
        "a tied head and a shared FFN are one array each, counted once. Your count must "
        "match the built model's unique parameters and the paper's 55.89M / 81.62M / "
        "34.66M, and show the byte-level embedder's 2.56M against a 25.73M table.")
FUNCTION = "stlm_budget"

STUB = '''
from nanotie.papers.stlm import ffn_width


def stlm_budget(config):
    """The unique trainable parameters of STLM(config): returns (total, embedding_head).

    config: an STLMConfig. The fields that matter:
        vocab_size V, context T, d_model d, n_layer L, n_head, n_kv_head,
        ffn ("mlp" or "swiglu"), norm ("layer" or "rms"), bias, learned_positions,
        embedder ("token" or "byte"), tie_embeddings, share_ffn,
        byte_window W and byte_dim c (the byte-level model only)

    An array used in several places (a TIE) is one array: count it once.

    Linear i -> o    i * o weights, plus o biases when config.bias
    norm of width n  RMSNorm ("rms"): a gain, n.  LayerNorm ("layer"): a gain and,
                     when config.bias, an offset: 2 n

    The core (either embedder):
        positions    a (T, d) table wpe when learned_positions; none otherwise (RoPE)
        attention    per layer: qkv Linear d -> d + 2 d_kv and out Linear d -> d,
                     d_kv = d * n_kv_head // n_head  (n_kv_head None means n_head)
        FFN          per layer, h = ffn_width(config):
                       "mlp"     Linear d -> h, Linear h -> d
                       "swiglu"  Linear d -> h twice (gate, up), Linear h -> d
                     with share_ffn, all L layers use ONE FFN
        norms        two per layer and a final one: 2 L + 1 norms of width d

    embedding_head (the position table wpe is NOT part of it: it is the core's):
        "token"  the table wte (V, d), no bias; the head lm_head is another (V, d)
                 unless tie_embeddings, when lm_head IS wte
        "byte"   (tie_embeddings is False) a byte embedder plus a byte decoder, built
                 of byte blocks  B(i, o, f) = 2 norms of width i
                                   + attention at width i (qkv i -> 3 i, out i -> i)
                                   + Linear i -> f + Linear f -> o
                 embedder  258 c (byte table) + W c (slot positions)
                           + B(c, 2 c, 4 c) + B(2 c, d, 8 c)
                 decoder   Linear d -> W c (no bias) + W c (slot positions)
                           + 2 blocks B(c, c, 4 c) + Linear c -> 258 (no bias)

    total = embedding_head + positions + attention + FFN + norms (ints)
    """
    total = ...            # your code
    embedding_head = ...   # your code
    return total, embedding_head
'''


def reference(config):
    """The solution."""
    d, L, V, T = config.d_model, config.n_layer, config.vocab_size, config.context

    def linear(i, o, bias=config.bias):
        return i * o + (o if bias else 0)

    def norm(n):
        return 2 * n if config.norm == "layer" and config.bias else n

    def attention(n, n_head, n_kv_head):
        d_kv = n * n_kv_head // n_head
        return linear(n, n + 2 * d_kv) + linear(n, n)           # qkv, out

    h = ffn_width(config)
    ffn = (2 if config.ffn == "swiglu" else 1) * linear(d, h) + linear(h, d)
    positions = T * d if config.learned_positions else 0
    core = (positions + L * attention(d, config.n_head, config.n_kv_head or config.n_head)
            + (1 if config.share_ffn else L) * ffn              # shared: one FFN
            + (2 * L + 1) * norm(d))
    if config.embedder == "token":
        embedding_head = V * d if config.tie_embeddings else 2 * V * d   # tied: one table
    else:
        c, W = config.byte_dim, config.byte_window

        def block(i, o, f):
            return 2 * norm(i) + attention(i, 1, 1) + linear(i, f) + linear(f, o)

        embedder = 258 * c + W * c + block(c, 2 * c, 4 * c) + block(2 * c, d, 8 * c)
        decoder = (linear(d, W * c, bias=False) + W * c + 2 * block(c, c, 4 * c)
                   + linear(c, 258, bias=False))
        embedding_head = embedder + decoder
    return core + embedding_head, embedding_head


# Small models to build and count, one per kind of tie and layer choice.
GPT2_LIKE = dict(vocab_size=97, context=16, d_model=24, n_layer=3, n_head=4, ffn="mlp",
                 norm="layer", bias=True)
TOKEN_CASES = {
    "GPT-2-like, tied": GPT2_LIKE,
    "GPT-2-like, tied + FFN sharing": dict(GPT2_LIKE, share_ffn=True),
    "GPT-2-like without biases (a LayerNorm gain only)": dict(GPT2_LIKE, bias=False),
    "SwiGLU/RMSNorm, untied, no positions": dict(vocab_size=89, context=12, d_model=32,
                                                 n_layer=4, n_head=4,
                                                 learned_positions=False,
                                                 tie_embeddings=False),
    "SwiGLU/RMSNorm with biases, tied + FFN sharing": dict(
        vocab_size=71, context=10, d_model=16, n_layer=2, n_head=2, ffn_hidden=40,
        bias=True, share_ffn=True),
    "SwiGLU/RMSNorm, grouped-query attention (8 query, 2 key/value heads)": dict(
        vocab_size=61, context=8, d_model=32, n_layer=2, n_head=8, n_kv_head=2),
}
BYTE_CASES = {
    "byte-level, LayerNorm with biases": dict(
        vocab_size=50, context=8, d_model=24, n_layer=2, n_head=2, ffn="mlp",
        norm="layer", bias=True, embedder="byte", tie_embeddings=False, byte_window=5,
        byte_dim=8, byte_heads=2),
    "byte-level, the paper's layers, FFN sharing": dict(
        vocab_size=50, context=8, d_model=16, n_layer=3, n_head=2, embedder="byte",
        tie_embeddings=False, share_ffn=True, byte_window=4, byte_dim=8, byte_heads=2),
}


@lru_cache(maxsize=None)
def measured(name: str) -> tuple:
    """(total, embedding_head) of the BUILT small model ``name``: its unique parameters."""
    model = STLM(STLMConfig(**{**TOKEN_CASES, **BYTE_CASES}[name]))
    return count_parameters(model), measured_split(model)["embedding+head"]


# ------------------------------------------------------------------ diagnosis

def _slips(cfg: STLMConfig) -> list:
    """Recognised wrong counts for ``cfg``: [(delta total, delta embedding_head, why)],
    where ``delta`` is the wrong count minus the right one. Many are the count of the
    config with one setting misread; where that setting is already ``cfg``'s, both
    deltas are 0 and the slip is never matched."""
    b = parameter_budget(cfg)
    d, L, V, T = cfg.d_model, cfg.n_layer, cfg.vocab_size, cfg.context
    token, layer_norm = cfg.embedder == "token", cfg.norm == "layer"
    n_ffn = 1 if cfg.share_ffn else L

    def misread(why: str, **changes) -> tuple:
        wrong = parameter_budget(replace(cfg, **changes))
        return wrong["total"] - b["total"], wrong["embedding+head"] - b["embedding+head"], why

    if token:
        slips = [misread("it counts the LM head separately (the untied model's count). With "
                         "tie_embeddings=True the head IS the token embedding wte: one (V, d) "
                         "array used twice, counted once.", tie_embeddings=False),
                 misread("the head is missing: with tie_embeddings=False the model has a "
                         "head lm_head of its own, another V * d.", tie_embeddings=True)]
    else:
        slips = [(V * d, V * d, "it counts a (V, d) token table, but the byte-level model has "
                                "none: its embedding and head are the byte embedder and "
                                "decoder, whose size does not depend on V.")]
    slips += [misread(f"it counts the shared FFN once per layer. With share_ffn=True all {L} "
                      f"layers use ONE FFN object, so it is counted once: {L - 1} FFNs too "
                      f"many.", share_ffn=False),
              misread(f"it counts one FFN, but without share_ffn each of the {L} layers has "
                      f"its own.", share_ffn=True)]
    biases = misread("the biases are missing: with bias=True each Linear i -> o has o biases"
                     + (" and each LayerNorm an offset as wide as its gain." if layer_norm
                        else "."), bias=False)
    offsets = misread("the LayerNorm offsets are missing: with bias=True a LayerNorm has a "
                      "gain AND an offset, twice its width.", norm="rms")
    slips += [biases, offsets]
    if layer_norm:                                # the biases of the Linear layers alone
        slips.append((biases[0] - offsets[0], biases[1] - offsets[1],
                      "the Linear layers' biases are missing: with bias=True each Linear "
                      "i -> o has o biases."))
    if not layer_norm or not cfg.bias:
        slips.append((b["norms"], 0,
                      "it counts an offset in every norm, but " +
                      ("RMSNorm has a gain only." if not layer_norm else
                       "a LayerNorm without bias has a gain only.")))
    norm_unit = 2 if layer_norm and cfg.bias else 1
    byte_norms = 0 if token else 10 * cfg.byte_dim * norm_unit   # 6 of width c, 2 of 2c
    slips.append((-b["norms"], 0,
                  f"the norms are missing: two per layer (before attention and before "
                  f"the FFN) and a final one, {2 * L + 1} norms of width d."))
    if not token:
        slips.append((-byte_norms, -byte_norms,
                      "the byte blocks' norms are missing: each block B(i, o, f) has 2 "
                      "norms of width i."))
        slips.append((-b["norms"] - byte_norms, -byte_norms,
                      "the norms are missing, in the core (2 L + 1 of width d) and in "
                      "every byte block (2 of width i)."))
    slips.append(misread("the position embedding is missing: learned_positions=True gives a "
                         "(T, d) table wpe, T * d parameters.", learned_positions=False))
    if cfg.learned_positions:
        slips.append((0, T * d,
                      "embedding_head includes the position table wpe, but wpe belongs to "
                      "the core: embedding_head is wte (and an untied lm_head), or the "
                      "byte embedder and decoder."))
    slips.append(misread("it counts a position table, but with learned_positions=False "
                         "(RoPE, as in the paper) positions have no parameters.",
                         learned_positions=True))
    slips.append(misread(f"it gives keys and values full width, but they have n_kv_head = "
                         f"{cfg.n_kv_head} of the {cfg.n_head} heads (grouped-query "
                         f"attention): d_kv = d * n_kv_head // n_head, qkv is d -> d + 2 d_kv.",
                         n_kv_head=None))
    h = ffn_width(cfg)
    one_matrix = d * h + (h if cfg.bias else 0)             # one d -> h Linear of the FFN
    if cfg.ffn == "swiglu":
        slips.append((-n_ffn * one_matrix, 0,
                      "the SwiGLU FFN has THREE matrices: gate and up (d -> h each) and "
                      "down (h -> d)."))
    else:
        slips.append((n_ffn * one_matrix, 0,
                      "a GELU MLP (ffn='mlp') has TWO matrices, d -> h and h -> d; the "
                      "gate is SwiGLU's."))
    if not token:
        c, W = cfg.byte_dim, cfg.byte_window
        decoder_block = (2 * c * norm_unit + 12 * c * c           # B(c, c, 4c): norms,
                         + (9 * c if cfg.bias else 0))             # 4c^2 attn, 8c^2 FFN
        slips.append((-decoder_block, -decoder_block,
                      "a byte block is missing: the decoder has TWO blocks B(c, c, 4 c)."))
        slips.append((-W * c, -W * c,
                      "a slot-position table is missing: the embedder and the decoder "
                      "each have their own (W, c) table."))
    return slips


def _number(got, name: str) -> int:
    """The learner's count as an int, or a Mistake saying what it is instead."""
    written(got, f"`{name}`", "Return the count, an int.")
    if isinstance(got, str):
        raise Mistake(f"`{name}` is the string {got!r}; return the count as an int "
                      f"(use millions(n) only to print it).")
    try:
        value = float(np.asarray(got).item())
    except (TypeError, ValueError):
        raise Mistake(f"`{name}` is a {type(got).__name__}, not a number.") from None
    if not np.isfinite(value) or value != round(value):
        raise Mistake(f"`{name}` is {value!r}, but a count is a whole number.")
    return int(round(value))


def _explain(name: str, got: int, want: int, cfg: STLMConfig, which: int) -> str:
    """Why ``got`` (the total, ``which`` = 0, or embedding_head, 1) is not ``want``: a
    recognised slip (or two), or else the right parts to compare with."""
    diff = got - want
    single = [(s[which], s[2]) for s in _slips(cfg) if s[which]]
    for d, why in single:
        if d == diff:
            return f"your `{name}` is {got:,}, the correct count is {want:,}: {why}"
    for (d1, why1), (d2, why2) in combinations(single, 2):
        if d1 + d2 == diff:
            return (f"your `{name}` is {got:,}, the correct count is {want:,}. Two slips: "
                    f"(1) {why1} (2) {why2}")
    b = parameter_budget(cfg)
    emb, head = ("byte embedder", "byte decoder") if cfg.embedder == "byte" else ("wte", "lm_head")
    parts = {emb: b["embedding"], head: b["head"], "positions": b["positions"],
             "attention": b["attention"], "FFN": b["ffn"], "norms": b["norms"]}
    shown = ", ".join(f"{k} {v:,}" for k, v in parts.items())
    return (f"your `{name}` is {got:,}, the correct count is {want:,} ({diff:+,}). It is "
            f"not one of the usual slips; compare your parts with the right ones: {shown}.")


def _describe(cfg: STLMConfig) -> str:
    text = (f"V={cfg.vocab_size}, T={cfg.context}, d={cfg.d_model}, L={cfg.n_layer}, "
            f"n_head={cfg.n_head}, n_kv_head={cfg.n_kv_head}, ffn={cfg.ffn!r} "
            f"(h={ffn_width(cfg)}), norm={cfg.norm!r}, bias={cfg.bias}, "
            f"learned_positions={cfg.learned_positions}, embedder={cfg.embedder!r}, "
            f"tie_embeddings={cfg.tie_embeddings}, share_ffn={cfg.share_ffn}")
    if cfg.embedder == "byte":
        text += f", W={cfg.byte_window}, c={cfg.byte_dim}"
    return text


def _expect(c: Checker, fn, cfg: STLMConfig, want: tuple, label: str, paper: str = "") -> None:
    """The learner's (total, embedding_head) for ``cfg`` must equal ``want``."""
    c.case = f"{label}: {_describe(cfg)}"
    out = c.returns(fn, replace(cfg), what="stlm_budget(config)",
                    names="total, embedding_head")
    got = (_number(out[0], "total"), _number(out[1], "embedding_head"))
    for which, name in ((0, "total"), (1, "embedding_head")):
        if got[which] != want[which]:
            raise Mistake(_explain(name, got[which], want[which], cfg, which)
                          + (f" (The paper: {paper}.)" if paper and which == 0 else ""))


def check(fn) -> CheckResult:
    configs = paper_configs()
    budgets = {name: parameter_budget(cfg) for name, cfg in configs.items()}
    paper = {name: (b["total"], b["embedding+head"]) for name, b in budgets.items()}
    with Checker(f"Exercise 11: {TITLE}") as c:
        with c.step(f"small token-level models: total and embedding_head equal the built "
                    f"STLM's unique parameters ({len(TOKEN_CASES)} models)"):
            for name, fields in TOKEN_CASES.items():
                _expect(c, fn, STLMConfig(**fields), measured(name), name)
        with c.step("the paper's sizes: 55.89M tied, 81.62M untied, 34.66M tied + FFN "
                    "sharing (parameter_budget)"):
            for name in ("tied", "untied", "tied + FFN sharing"):
                _expect(c, fn, configs[name], paper[name], f"the paper, {name}",
                        PAPER_FIGURES[name])
        with c.step(f"byte-level models: the built ones ({len(BYTE_CASES)}), and the "
                    f"paper's byte embedder + decoder of 2.56M"):
            for name, fields in BYTE_CASES.items():
                _expect(c, fn, STLMConfig(**fields), measured(name), name)
            _expect(c, fn, configs["byte-level"], paper["byte-level"], "the paper, byte-level",
                    f"byte embedder + decoder {PAPER_FIGURES['byte embedder + decoder']} = "
                    f"{millions(paper['byte-level'][1])}")
    return c.result


# ------------------------------------------------ wrong answers, for the tests

def _tied_head_counted_twice(config):
    if config.embedder == "token":
        config = replace(config, tie_embeddings=False)    # "the head is a layer too"
    return reference(config)


def _shared_ffn_per_layer(config):
    return reference(replace(config, share_ffn=False))    # one FFN per layer, always


def _no_biases(config):
    return reference(replace(config, bias=False))         # biases never counted


def _no_norms(config):
    total, embedding_head = reference(config)
    return total - parameter_budget(config)["norms"], embedding_head   # the core's 2 L + 1


def _no_position_embedding(config):
    return reference(replace(config, learned_positions=False))


MISTAKES = [
    Planted("the tied head counted separately (the untied count)", _tied_head_counted_twice,
            ("counts the LM head separately", "IS the token embedding")),
    Planted("the shared FFN counted once per layer", _shared_ffn_per_layer,
            ("shared FFN once per layer", "counted once: 2 FFNs too many")),
    Planted("biases forgotten", _no_biases, ("biases are missing",)),
    Planted("norms forgotten", _no_norms, ("norms are missing", "7 norms of width d")),
    Planted("the position embedding forgotten", _no_position_embedding,
            ("position embedding is missing",)),
]
