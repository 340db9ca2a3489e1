# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Super Tiny Language Models: bytes, pooling, and two ties
#
# Hillier, Guertler et al. (2024, arXiv:2405.14159) ask where the parameters of a
# *small* language model go, and find most of them in the wrong place: in the token
# embedding and the LM head, two (V, d) tables with one row per vocabulary entry.
# Their recipe cuts 90–95% of those parameters:
#
# 1. **Byte-level embedding with pooling.** A subword tokenizer still says where
#    tokens begin and end, but a token's vector is *built from its bytes* by a small
#    byte encoder and mean-pooled; a small byte decoder predicts all bytes of the next
#    token at once. No (V, d) table is left.
# 2. **Weight tying.** The LM head *is* the embedding (one array), and one
#    feed-forward network (FFN) is shared by every layer.
#
# The plan:
#
# 1. Where a small model's parameters go, counted at the paper's sizes.
# 2. Tokens as byte windows, and what the window cuts off.
# 3. Byte pooling, step by step.
# 4. The byte decoder and its loss, with the pad ignored.
# 5. The two ties: embedding/head, and FFN sharing.
# 6. The miniature experiment: parameters against bits per byte.
# 7. An exercise: a parameter budget by hand.
#
# Set `NANOTIE_QUICK=1` for a fast run (the test suite does).

# %%
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import nanotie as nt
from nanotie import data
from nanotie.gradcheck import gradcheck_module
from nanotie.nn import count_parameters, tied_parameters
from nanotie.papers.stlm import (EOT, PAD, PAPER_FIGURES, STLM, ByteWindows, STLMConfig,
                                 byte_cross_entropy, measured_split, millions,
                                 paper_configs, parameter_budget)
from nanotie.papers.stlm import experiment

QUICK = os.environ.get("NANOTIE_QUICK") == "1"

# %% [markdown]
# ## 1. Where the parameters go
#
# The paper's ~50M-class model: hidden size d = 512, 10 layers, a SwiGLU FFN of width
# 1536, GPT-2's V = 50,257 tokens, 16 query heads sharing 4 key/value heads, RoPE.
# `parameter_budget` counts it piece by piece **without building it** (the formula is
# in its docstring; the tests check it against every model they build).

# %%
configs = paper_configs()
budgets = {name: parameter_budget(cfg) for name, cfg in configs.items()}
for name, b in budgets.items():
    print(f"{name:20s} total {millions(b['total']):>8s}   embedding+head "
          f"{millions(b['embedding+head']):>8s}")

assert millions(budgets["tied"]["total"]) == PAPER_FIGURES["tied"]              # 55.89M
assert millions(budgets["untied"]["total"]) == PAPER_FIGURES["untied"]          # 81.62M
assert millions(budgets["tied + FFN sharing"]["total"]) == PAPER_FIGURES["tied + FFN sharing"]
assert millions(budgets["byte-level"]["embedding+head"]) == PAPER_FIGURES["byte embedder + decoder"]

# %%
parts = ["embedding", "head", "attention", "ffn", "norms"]
fig, ax = plt.subplots(figsize=(8, 3.2))
left = np.zeros(len(budgets))
for part in parts:
    values = np.array([b[part] for b in budgets.values()]) / 1e6
    ax.barh(list(budgets), values, left=left, label=part)
    left += values
ax.set(xlabel="parameters (millions)", title="Where the parameters of the paper's models go")
ax.legend(ncol=5, fontsize=8, loc="lower right")
ax.invert_yaxis()
plt.tight_layout()
plt.show()

byte, tied, untied = (budgets[k]["embedding+head"] for k in ("byte-level", "tied", "untied"))
print(f"byte embedder + decoder: {1 - byte / tied:.1%} fewer than the tied table, "
      f"{1 - byte / untied:.1%} fewer than the untied pair")
assert f"{100 * (1 - byte / tied):.1f}%" == PAPER_FIGURES["fewer than tied"]       # 90.0%
assert f"{100 * (1 - byte / untied):.1f}%" == PAPER_FIGURES["fewer than untied"]   # 95.0%

# %% [markdown]
# In the untied model the two tables hold 63% of all parameters. Tying halves them,
# FFN sharing removes 9 of the 10 FFNs, and the byte path replaces the table with
# 2.56M parameters whose size does not depend on V at all.

# %% [markdown]
# ## 2. Tokens as byte windows
#
# We train nanotie's byte-level BPE on a slice of Python's own prose. Each token's
# bytes go into a window of W = 12 slots; the rest is filled with PAD = 256. The id
# EOT = 257 closes a text, so the byte vocabulary has 258 ids.

# %%
corpus = data.prose_corpus(60_000)
tok = data.BPETokenizer.train(corpus, 400)
windows = ByteWindows(tok, window=12)

text = "The return statement leaves the current function call."
ids = tok.encode(text)
print([tok.vocab[i] for i in ids][:6])
print(windows.encode(text)[:3])

# The round trip: tokens -> windows -> drop the pads -> the text again.
assert windows.decode_bytes(windows.encode(text)).decode() == text
end = windows.encode(text, eot=True)
assert end[-1, 0] == EOT and (end[-1, 1:] == PAD).all()

# %% [markdown]
# A token longer than the window loses its tail, so the round trip is exact only
# when no token is that long. This vocabulary of 400 holds none longer than 12 bytes
# (the longest is printed), so W = 12 cuts nothing; a window of 6 shows the cut, on the
# whole slice:

# %%
all_ids = tok.encode(corpus)
short = ByteWindows(tok, window=6)
long = sorted({tok.vocab[i] for i in all_ids if short.full[i] > 6}, key=len)[-3:]
print(f"longest token {windows.full.max()} bytes; with W = 6, "
      f"{short.truncation_rate(all_ids):.2%} of the tokens are truncated, "
      f"{short.lost_byte_rate(all_ids):.2%} of the bytes lost; e.g. {long}")
restored = short.decode_bytes(short(all_ids))
lost = int(np.maximum(short.full[all_ids] - 6, 0).sum())
assert lost > 0 and len(restored) == len(corpus) - lost

# %% [markdown]
# ## 3. Byte pooling, step by step
#
# The embedder turns a (B, T, W) batch of windows into (B, T, d):
#
# $$e_{t,j} = E_\text{byte}[b_{t,j}] + P[j], \qquad
#   h_{t,\cdot} = \text{blocks}(e_{t,\cdot}), \qquad
#   x_t = \tfrac{1}{W} \textstyle\sum_j h_{t,j}$$
#
# Two small **non-causal** blocks run over the W slots of each token separately,
# widening c → 2c → d; then the slots are averaged. We redo it by hand and compare.

# %%
cfg = STLMConfig(vocab_size=tok.vocab_size, context=16, d_model=32, n_layer=2, n_head=4,
                 embedder="byte", tie_embeddings=False, byte_window=12, byte_dim=8,
                 byte_heads=2)
nt.manual_seed(0)
model = STLM(cfg)
emb = model.byte_embedder
x = windows(all_ids[:2 * 16].reshape(2, 16))                        # (B, T, W) = (2, 16, 12)

e = emb.byte_emb(x) + emb.byte_pos(np.arange(12))                   # (2, 16, 12, 8)
h = e.reshape(2 * 16, 12, 8)                                        # one row per token
for block in emb.blocks:
    h = block(h)                                                    # (32, 12, 8) -> (32, 12, 32)
pooled = h.mean(dim=1).reshape(2, 16, 32)                           # (2, 16, d)
print("by hand:", pooled.shape)
np.testing.assert_allclose(pooled.numpy(), emb(x).numpy(), rtol=1e-6)

# %% [markdown]
# Pooling is local: changing the bytes of token s changes pooled vector s only, and
# the causal core's outputs before s not at all.

# %%
s = 5
x2 = x.copy()
x2[:, s] = windows.table[tok.encode(" banana")[0]]
with nt.no_grad():
    changed = np.abs(emb(x).numpy() - emb(x2).numpy()).max(axis=(0, 2)) > 0
    out, out2 = model(x)[0].numpy(), model(x2)[0].numpy()
print("pooled vectors that changed:", np.flatnonzero(changed))
assert changed.tolist() == [t == s for t in range(16)]
np.testing.assert_array_equal(out[:, :s], out2[:, :s])

# %% [markdown]
# ## 4. The byte decoder, and the pad the loss must ignore
#
# The head projects each output vector to W slots of width c, runs two byte blocks,
# and scores all 258 byte ids in every slot: **all bytes of the next token in
# parallel**, logits of shape (B, T, W, 258). The targets are the next token's
# window. Its pad slots carry no information and must not count:
#
# $$\mathcal{L} = \frac{1}{\#\{(t,j): y_{tj} \ne \text{PAD}\}}
#   \sum_{y_{tj} \ne \text{PAD}} -\log p_{tj}(y_{tj})$$
#
# The authors' code passes EOT (257) as the ignored id, so it scores every pad slot;
# here `byte_cross_entropy` ignores PAD (256).

# %%
x_in, y_next = windows(all_ids[:16][None]), windows(all_ids[1:17][None])
logits, loss = model(x_in, y_next)
print("logits", logits.shape, "loss", round(loss.item(), 3), "nats per predicted byte")
assert loss.item() == byte_cross_entropy(logits, y_next).item()
logits.retain_grad()
loss.backward()
pad = y_next == PAD
assert np.abs(logits.grad[pad]).max() == 0            # pad slots get no gradient
assert np.abs(logits.grad[~pad]).max() > 0
print(f"{pad.mean():.0%} of the target slots are pads, and they get no gradient")

# %% [markdown]
# A consequence worth seeing: since pads are never scored, the decoder never learns
# **where a token ends**. Its loss is not a full code length for the text. For a fair
# comparison in section 6 we add the cost of coding each token's length with a
# simple unigram model of window lengths.

# %% [markdown]
# ## 5. The two ties
#
# **Embedding/head tying** is one assignment, `lm_head.weight = wte.weight`: a
# token's score is the dot product of the hidden state with the token's own
# embedding, and the shared array's gradient is the sum of its two uses.
#
# **FFN sharing** assigns one FFN *object* to every block. Attention and norms stay
# per layer. The count drops by (L − 1) FFNs, and the FFN's gradient sums over the
# L layers that use it.

# %%
base = STLMConfig(vocab_size=tok.vocab_size, context=16, d_model=32, n_layer=4, n_head=4)
nt.manual_seed(0)
plain, shared = STLM(replace(base, tie_embeddings=False)), STLM(replace(base, share_ffn=True))
assert shared.lm_head.weight is shared.wte.weight
assert all(block.mlp is shared.blocks[0].mlp for block in shared.blocks)
one_ffn = count_parameters(shared.blocks[0].mlp)
saved = count_parameters(plain) - count_parameters(shared)
print(f"untied {count_parameters(plain):,} -> tied + shared FFN {count_parameters(shared):,}")
assert saved == base.vocab_size * base.d_model + (base.n_layer - 1) * one_ffn
print(list(tied_parameters(shared))[:3], "...")

# %% [markdown]
# A gradient check of a whole (tiny) byte-level model with a shared FFN, in float64:
# every parameter, tied ones against their summed gradient.

# %%
tiny = STLMConfig(vocab_size=10, context=3, d_model=8, n_layer=2, n_head=2, ffn_hidden=6,
                  embedder="byte", tie_embeddings=False, share_ffn=True, byte_window=3,
                  byte_dim=4, byte_heads=2)
nt.manual_seed(1)
check = STLM(tiny).double()
rng = np.random.default_rng(0)
for p in check.parameters():
    p.data += rng.normal(0, 0.3, p.shape)
bx = rng.integers(0, 258, (2, 3, 3))
by = np.where(rng.random((2, 3, 3)) < 0.3, PAD, rng.integers(0, 256, (2, 3, 3)))
assert gradcheck_module(check, lambda: check(bx, by)[1], max_elements=8)
print("gradient check passed")

# %% [markdown]
# ## 6. The miniature experiment
#
# What the paper claims is the count of section 1: 90% / 95% fewer parameters in the
# embedding and head. Its v1 abstract adds "while maintaining competitive performance",
# but it reports no quality figure for the byte-level model (its repository lists that
# report as in progress; later versions make it future work), so here we *measure* what
# the cut costs. Models with the same training budget (steps × batch × context tokens, the
# same batches), on the prose corpus cut into train | val | test: (a) BPE untied,
# (b) BPE tied, (c) tied + FFN sharing, (d) byte-level pooling, (f) the byte embedder
# with an ordinary softmax head over the BPE tokens, (g) (d) trained with the
# authors' loss (every slot scored, pads included). The metric is held-out **bits per
# byte**, fair across tokenizations:
#
# $$\text{bpb} = \frac{\text{total nats}}{\ln 2 \cdot \text{bytes}}$$
#
# For the byte decoders the total includes the token-length code of section 4
# (hollow markers: bytes only, without it). In quick mode this is a very short run,
# one seed, on part of the corpus; `python -m nanotie reproduce stlm` runs the quick
# profile with its seeds and writes the results page.

# %%
profile = experiment.PROFILES["quick"]
if QUICK:
    profile = replace(profile, model=replace(profile.model, vocab_size=1024, n_layer=2),
                      train=replace(profile.train, steps=30, eval_interval=30,
                                    eval_batches=2),
                      seeds=1, max_bytes=150_000)
res = experiment.compare(profile)          # every run in this process, nothing cached
for label, runs in res["chosen"].items():
    f = runs[0].figures
    print(f"{label:34s} params {f['parameters']:>8,}  emb+head {f['embedding+head']:>8,}"
          f"  test bpb {f['test']['bpb']:.3f}  (bytes only {f['test']['bpb_bytes_only']:.3f})")
ceiling = res["chosen"][experiment.A][0].figures["ceiling"]["test"]
print(f"per-slot marginals of (a)'s own p(token): {ceiling['bpb']:.3f} bpb")

# %%
tmp = Path(tempfile.mkdtemp())
path = experiment.plot_params_vs_bpb(res["chosen"], tmp / "stlm.png",
                                     "parameters vs held-out bits per byte")
plt.imshow(plt.imread(path))
plt.axis("off")
plt.show()

f = {label: runs[0].figures for label, runs in res["chosen"].items()}
A, B, D, F_ = experiment.A, experiment.B, experiment.D, experiment.F_
assert f[D]["embedding+head"] < f[B]["embedding+head"] < f[A]["embedding+head"]
assert f[A]["parameters"] - f[B]["parameters"] == profile.model.vocab_size * profile.model.d_model
assert all(x["parameters"] == x["analytic_parameters"] for x in f.values())
assert all(x["test"]["bpb"] >= x["test"]["bpb_bytes_only"] for x in f.values())

# %% [markdown]
# What to read from it: the parameter axis is exact and matches the formula; the
# bits-per-byte axis depends on how long the models train. At this size the byte
# path's saving is smaller than the paper's 90–95%, because the vocabulary is small
# (the table shrinks with V, the byte path does not).
#
# **Why is (d) so far behind (a)?** Look at (f): the same byte embedder with a softmax
# head stands with the BPE models, so the pooling is fine and the cost sits in the
# decoder. The decoder predicts the next token's byte slots *independently*,
# $p(b_1 \dots b_W) = \prod_j p_j(b_j)$. Push even (a)'s own next-token distribution
# through that factorisation, $m_j(b) = \sum_v p(v)\,[\text{byte } j \text{ of } v = b]$,
# and it loses most of what it knew: that is the "per-slot marginal" ceiling. Per
# slot, each slot guesses without the earlier bytes of its own token. With the pads
# ignored ((d) and those marginals) the cost peaks at the second byte and falls for the
# late slots of the few long tokens; with the pads scored, it grows with the slot, as the
# late slots mostly code whether the token has ended (quick mode's 30 steps leave (d)
# and (g) too little trained to show these shapes; the marginals show them):

# %%
data_ = res["data"]
unigram = experiment.unigram_bpb(data_["split_bytes"].train, data_["split_bytes"].test)
path = experiment.plot_bits_per_slot(res["chosen"], unigram, tmp / "slots.png",
                                     "bits at each byte slot of the next token")
plt.imshow(plt.imread(path))
plt.axis("off")
plt.show()
assert len(f[D]["bits_per_slot"]["test"]) == profile.model.byte_window
assert ceiling["bpb"] > f[A]["test"]["bpb"]     # the factorisation loses information

# %% [markdown]
# ## 7. Exercise: a parameter budget by hand
#
# Write `my_budget(config)`: the unique trainable parameters of `STLM(config)`, as
# `(total, embedding_head)`, **by hand** (no `parameter_budget`). It must handle every
# configuration: a GELU MLP or SwiGLU FFN with or without biases, LayerNorm or
# RMSNorm, learned positions or none, grouped-query attention, a tied or untied
# head, a shared FFN, and the byte-level embedder and decoder. The rules, in short
# (the full statement is the stub of `python -m nanotie exercise start 11`):
#
# - a Linear i → o has i·o weights, plus o biases when `bias=True`; a norm of width
#   n has a gain (n), and a LayerNorm with `bias=True` an offset too (2n);
# - per layer: qkv d → d + 2·d_kv and out d → d (d_kv = d·n_kv_head/n_head), an FFN
#   (MLP: d → h → d; SwiGLU: gate and up d → h, down h → d), two norms; then a final
#   norm and, when learned, a (T, d) position table;
# - **a tie is one array, counted once**: the tied head adds nothing, and a shared
#   FFN is one FFN whatever L is;
# - `embedding_head` is wte (+ an untied lm_head), or the byte embedder + decoder
#   (the position table is the core's).
#
# The next cell checks it with exercise 11's checker, the same one as
# `python -m nanotie exercise check 11`: first against the *built* small models'
# `count_parameters`, then at the paper's sizes (55.89M tied, 81.62M untied, 34.66M
# tied + FFN sharing), then the byte path (2.56M).

# %%
# ---- EXERCISE 11: your code here --------------------------------------------------
from nanotie.papers.stlm import ffn_width


def my_budget(config):
    # Return (total, embedding_head), counting each array once (a tie is one array).
    raise NotImplementedError


# %%
from nanotie import exercises

my_budget = exercises.get(11).check_in_notebook(my_budget)

ex = STLMConfig(vocab_size=300, context=32, d_model=48, n_layer=3, n_head=4, ffn="mlp",
                norm="layer", bias=True, tie_embeddings=True, share_ffn=True)
nt.manual_seed(0)
built = STLM(ex)
print(my_budget(ex), count_parameters(built))
assert my_budget(ex) == (count_parameters(built), measured_split(built)["embedding+head"])

# %% [markdown]
# What the checker says about the most common slip, counting the tied head as a
# layer of its own (the untied model's count):

# %%
slip = exercises.get(11).check(exercises.get(11).mistake("tied head counted separately"))
print(slip.report())
assert not slip.passed and "head IS the token embedding" in slip.message
