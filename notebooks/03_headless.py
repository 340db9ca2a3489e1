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
# # 03 · Headless language models: Contrastive Weight Tying
#
# Godey, de la Clergerie and Sagot (ICLR 2024, arXiv:2309.08351) take the output
# layer off a language model. Instead of a softmax over the whole vocabulary, the
# model is trained so that its output $o_k$ at a target position lands close to the
# **input** embedding $e(x_k)$ of the token it should predict, and far from the
# input embeddings of the other targets in the batch. The input embedding matrix
# $E$ is the only "output layer": that is the tie.
#
# The plan:
#
# 1. **The cost argument**: a $K \times K$ score matrix instead of $K \times V$.
# 2. **The loss**, Eq. 3, and three facts about it that the tests also check.
# 3. **Why the gradient flows into $E$ from both sides**, and what detaching the
#    targets would lose.
# 4. **A gradient check** of a whole headless GPT.
# 5. **The miniature experiment**: throughput, bits per byte with the $E^\top$ head
#    and with a fine-tuned head, a downstream probe, and the plots.
# 6. **An exercise**: write the CWT loss yourself, checked against the library's and
#    by `gradcheck`.
#
# Set `NANOTIE_QUICK=1` for a fast run (the test suite does): section 5 then runs a
# smoke-sized profile in seconds that shows nothing; without it, the quick profile
# (about 2-3 minutes of CPU in this one process; `python -m nanotie reproduce
# headless` spreads the same runs over every core).

# %%
import math
import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np

import nanotie
from nanotie import Tensor
from nanotie.gradcheck import gradcheck_module
from nanotie.nn import functional as F
from nanotie.ops import embedding
from nanotie.papers.headless import HeadlessConfig, HeadlessGPT, cwt_loss, experiment

QUICK = os.environ.get("NANOTIE_QUICK") == "1"
rng = np.random.default_rng(0)
f64 = np.float64
print("quick mode:", QUICK)

# %% [markdown]
# ## 1. The cost argument
#
# Take a batch of $B$ sequences of $T$ tokens: $K = BT$ target positions, hidden
# size $D$, vocabulary $V$. A softmax head computes all $K \times V$ logits
# $o_k \cdot e(v)$, one matrix product of $K D V$ multiply-adds (and two more of the
# same size in the backward pass), then a softmax over $K V$ numbers. CWT scores each
# output only against the $K$ targets of the batch: $K \times K$ scores, $K^2 D$
# multiply-adds. With $K = 1024$ and $V = 8192$ that is 8 times fewer:

# %%
B, T, D, V = 16, 64, 128, 8192
K = B * T
softmax_head = K * D * V
cwt_scores = K * K * D
print(f"K = {K}: softmax head {softmax_head / 1e6:.0f} M multiply-adds, "
      f"CWT {cwt_scores / 1e6:.0f} M  (x{softmax_head / cwt_scores:.0f})")

# %% [markdown]
# The gain depends on $V / K$ only: CWT's cost does not grow with the vocabulary at
# all, and it grows with the batch. The batch is also where the negatives come
# from, so the paper recommends batches of 128 sequences or more.
#
# Here are the two losses timed on their own, forward and backward (the whole
# training step, with the transformer body, comes in section 5):

# %%
def time_loss(fn, *inputs, repeats=3):
    best = math.inf
    for _ in range(repeats):
        for x in inputs:
            x.grad = None
        t0 = time.perf_counter()
        fn(*inputs).backward()
        best = min(best, time.perf_counter() - t0)
    return best


O = Tensor(rng.normal(size=(K, D)).astype(np.float32), requires_grad=True)
E = Tensor(rng.normal(size=(V, D)).astype(np.float32) * 0.1, requires_grad=True)
targets = rng.integers(0, V, K)
t_ce = time_loss(lambda o, e: F.cross_entropy(o @ e.T, targets), O, E)
t_cwt = time_loss(lambda o, e: cwt_loss(o, embedding(e, targets)), O, E)
print(f"softmax head + CE: {t_ce * 1e3:.0f} ms   CWT: {t_cwt * 1e3:.0f} ms")

# %% [markdown]
# ## 2. The loss
#
# With $S$ the target positions of the batch and $\tau$ a temperature (1 in the
# paper: raw dot products, no projection):
#
# $$
# \mathcal{L}_{CWT} = -\frac{1}{K}\sum_{k \in S}
#   \log \frac{\exp(o_k \cdot e(x_k) / \tau)}{\sum_{m \in S} \exp(o_k \cdot e(x_m)/\tau)}
# $$
#
# Stack the outputs into $O$ ($K \times D$) and the target embeddings into
# $T_E$ ($K \times D$, row $k$ is $e(x_k)$). Then the loss is plain softmax
# cross-entropy over the rows of $O T_E^\top / \tau$ with the right answer on the
# **diagonal**. nanotie writes it from engine ops, a matrix product, a
# `logsumexp` and a row-wise dot product:

# %%
import inspect

print(inspect.getsource(cwt_loss).split('"""')[-1])

# %%
o, t = rng.normal(size=(7, 4)), rng.normal(size=(7, 4))
ours = cwt_loss(Tensor(o), Tensor(t)).item()
diagonal_ce = F.cross_entropy(Tensor(o @ t.T), np.arange(7)).item()
print(ours, diagonal_ce)
assert abs(ours - diagonal_ce) < 1e-12

# %% [markdown]
# **Every id once = the tied softmax.** If $S$ holds every vocabulary id exactly
# once, the denominator runs over the whole vocabulary and CWT *is* the
# cross-entropy of the tied head $o E^\top$:

# %%
Vs, Ds = 6, 3
E_small = rng.normal(size=(Vs, Ds))
O_small = rng.normal(size=(Vs, Ds))
perm = rng.permutation(Vs)
cwt = cwt_loss(Tensor(O_small), embedding(Tensor(E_small), perm)).item()
tied = F.cross_entropy(Tensor(O_small @ E_small.T), perm).item()
print(cwt, tied)
assert abs(cwt - tied) < 1e-12

# %% [markdown]
# **Duplicates are kept.** In a real batch a frequent token is the target at many
# positions. CWT does not de-duplicate: if $x_k$ occurs $m_k$ times in $S$, the
# denominator holds $m_k$ copies of the positive score, so the probability of "the
# right answer" is at most $1/m_k$ and the loss at $k$ is at least $\log m_k$, however
# good the model. A perfect model (orthonormal embeddings, $o_k$ a large multiple of
# $e(x_k)$) reaches exactly that floor:

# %%
ids = np.array([0, 0, 0, 1, 2, 2])
per_position = cwt_loss(Tensor(40.0 * np.eye(3)[ids]), embedding(Tensor(np.eye(3)), ids),
                        reduction="none").numpy()
m = np.bincount(ids)[ids]
print("loss per position:", per_position.round(4), "\nlog m_k:          ", np.log(m).round(4))
assert np.allclose(per_position, np.log(m), atol=1e-12)

random_E, random_O = rng.normal(size=(3, 4)), rng.normal(size=(6, 4))
assert (cwt_loss(Tensor(random_O), embedding(Tensor(random_E), ids),
                 reduction="none").numpy() >= np.log(m) - 1e-12).all()

# %% [markdown]
# ## 3. The gradient flows into $E$ from both sides
#
# A headless GPT reads $E$ twice: the lookup $E[\text{inputs}]$ that feeds the
# network, and the lookup $E[\text{targets}]$ that the outputs are scored against.
# Both are reads of the SAME Parameter, so the engine adds their gradients (the one
# `+` of notebook 00). `HeadlessGPT` is nanotie's GPT with one hook changed: `head`
# stops at the final norm and returns the outputs $o$, and `forward` scores them
# against `wte(targets)`, not detached.
#
# Which rows of $E$ get gradient? Use ids 0-3 as inputs, 4-6 only as targets, and
# never touch 7-11:

# %%
nanotie.manual_seed(0)
cfg = HeadlessConfig(vocab_size=12, context=8, d_model=8, n_layer=1, n_head=2)
model = HeadlessGPT(cfg).to(f64)
x = rng.integers(0, 4, (2, 8))
y = rng.integers(4, 7, (2, 8))
_, loss = model(x, y)
loss.backward()
row_norms = np.abs(model.wte.weight.grad).sum(axis=1)
print("gradient per row of E:", row_norms.round(5))
assert (row_norms[:7] > 0).all() and (row_norms[7:] == 0).all()

# %% [markdown]
# Rows 4-6 learn only because the targets are not detached. A softmax head, for
# contrast, pushes gradient into all $V$ rows at every step (every id is in every
# denominator), which is the other half of its cost.
#
# The tied gradient is the sum of the two uses. We check it by scoring against a
# separate COPY of $E$, so the two parts land in two places:

# %%
tied_grad = model.wte.weight.grad.copy()
model.zero_grad()
E_copy = Tensor(model.wte.weight.data.copy(), requires_grad=True)
outputs, _ = model(x)
cwt_loss(outputs.reshape(-1, 8), embedding(E_copy, y).reshape(-1, 8)).backward()
input_side, target_side = model.wte.weight.grad, E_copy.grad
assert np.allclose(tied_grad, input_side + target_side, atol=1e-14)
print("input side reaches rows", np.flatnonzero(np.abs(input_side).sum(1)),
      "\ntarget side reaches rows", np.flatnonzero(np.abs(target_side).sum(1)))

# %% [markdown]
# ## 4. A gradient check
#
# The whole headless GPT, in float64, with repeated target ids and $\tau = 0.7$,
# against central differences (`gradcheck_module` perturbs every parameter,
# including the tied $E$):

# %%
nanotie.manual_seed(1)
check_model = HeadlessGPT(HeadlessConfig(vocab_size=12, context=8, d_model=8, n_layer=1,
                                         n_head=2, temperature=0.7)).to(f64)
for p in check_model.parameters():
    p.data = p.data + rng.normal(0, 0.2, p.shape)
xc, yc = rng.integers(0, 12, (2, 6)), rng.integers(0, 4, (2, 6))
assert gradcheck_module(check_model, lambda: check_model(xc, yc)[1])
print("gradcheck passed")

# %% [markdown]
# ## 5. The miniature experiment
#
# `nanotie.papers.headless.experiment` follows nanotie's protocol: Python's help text
# is cut into train | val | test, every setting is chosen on val, every figure is
# reported on test with its spread over seeds. It pretrains, for **one pass** over
# the training split (as the paper does), three models with the same body and the
# same batches, on a BPE vocabulary of 4096 ids:
#
# * **CE, untied head**: the paper's baseline (Pythia's output layer is untied);
# * **CE, tied head**: nanotie's usual GPT;
# * **CWT**: the headless model.
#
# Each objective gets its own learning rate, chosen on val from a small grid. Then:
#
# * **Table 3's pattern**: bits per byte of CWT read through the zero-shot head
#   $o E^\top$, and of CWT with an UNTIED head cloned from $E$ and fine-tuned with CE
#   at a constant rate (`lm_from_headless(model, "clone")`), the whole model or the
#   head alone; the CE model gets the same fine-tuning as a control, and a CE model
#   trained for the FLOPs CWT pretraining and fine-tuning spend (fewer steps) is the
#   paper's "similar compute" comparison;
# * **a probe**: a linear classifier on frozen features (which help topic a passage
#   comes from), for CE, CWT and an untrained model;
# * **tokens/s against V**, the two steps timed interleaved.
#
# Section 5 is `python -m nanotie reproduce headless` (in quick mode here, a smoke-sized
# profile that only checks that everything runs).

# %%
out_dir = tempfile.mkdtemp()
profile = experiment.SMOKE if QUICK else None
results = experiment.run(quick=True, out_dir=os.path.join(out_dir, "headless"),
                         profile=profile)
pre = results["pretrain"]
print(f"{pre['steps']} pretraining steps = {pre['epochs']:.2f} epochs; "
      f"chosen rates {pre['chosen_lr']}")
for name, row in results["rows"].items():
    t = row["test_bpb"]
    print(f"{name:45s} test bpb {t['mean']:.3f} ± {t['std']:.3f}  (seeds: "
          f"{', '.join(f'{v:.3f}' for v in t['values'])})")
print(f"tokens/s: CE {results['tokens_per_second']['ce']:,.0f}, "
      f"CWT {results['tokens_per_second']['cwt']:,.0f} "
      f"(x{results['throughput_ratio']:.2f})")
for name, v in results["verdicts"].items():
    print(f"{name:18s} {v['outcome']}")

# %% [markdown]
# Getting an LM back: the cloned head starts as $E$ and is a separate Parameter (one
# more $V \times d$ matrix), and a short CE fine-tune brings it below the zero-shot
# head. That is the paper's Table 3 pattern (LAMBADA, Pythia-70M: 18.26% with
# $E^\top$, 22.2% after a short fine-tuning of the whole model with the cloned head,
# which is what the cell checks). The verdicts compare the per-seed test
# figures: *holds* only when the gap exceeds the spread between seeds.

# %%
rows = results["rows"]
ft_name = experiment.FT_MODES[("cwt", "whole")]
print("E^T head:", results["verdicts"]["zero_shot_worse"]["reason"])
assert rows[ft_name]["test_bpb"]["mean"] < rows["CWT, zero-shot head o E^T"]["test_bpb"]["mean"]
assert results["parameters"]["cwt_finetuned"] == (results["parameters"]["cwt"]
                                                  + results["vocab_size"]
                                                  * results["model"]["d_model"])
assert results["pretrain"]["epochs"] <= 1.0

# %% [markdown]
# A headless model can also generate: `HeadlessGPT.generate` scores its outputs
# against every row of $E$ (the zero-shot head), so every id of the vocabulary can
# come out, not just the first $d$.

# %%
nanotie.manual_seed(0)
gen_model = HeadlessGPT(HeadlessConfig(vocab_size=50, context=8, d_model=8, n_layer=1,
                                       n_head=2))
sample = gen_model.generate(np.array([[1, 2, 3]]), 30, temperature=1.0, seed=0)
print(sample[0])
assert sample.max() >= 8

# %%
fig, axes = plt.subplots(3, 1, figsize=(10, 13))
for ax, name in zip(axes, results["plots"]):
    ax.imshow(plt.imread(os.path.join(out_dir, "headless", name)))
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# Read the plots with the report in `report.md` next to them. The pretraining curves
# are against compute (steps times the measured step time), so CWT's cheaper step
# shows as a shorter line. The throughput plot: the softmax step slows down as $V$
# grows; the CWT step depends on $V$ only through the embedding's gradient and
# AdamW update, which both models share.

# %% [markdown]
# ## 6. Exercise: the CWT loss by hand
#
# Write the loss and its backward yourself, in plain NumPy, as an op: `my_cwt_loss(O,
# E_targets, temperature)` returns `(loss, backward)`, and `backward(g)` returns the
# gradients for `O` and `E_targets`. `O` and `E_targets` are (K, D) arrays, row k of
# `E_targets` the positive of row k of `O` (duplicates kept). With $S = O
# E_{\text{targets}}^\top / \tau$, $P$ the softmax of each row of $S$ and $g$ the
# upstream gradient:
#
# $$
# dS = g\,(P - I)/K, \qquad
# \frac{\partial L}{\partial O} = dS\,E_{\text{targets}} / \tau, \qquad
# \frac{\partial L}{\partial E_{\text{targets}}} = dS^\top O / \tau .
# $$
#
# The last one is section 3 in a formula: the targets are not detached, so each
# $e_j$ gets $-o_j$ from its own positive (the $-I$) and $p_{kj}\,o_k$ from every
# row's denominator (the $P$).
#
# It is exercise 7 of `python -m nanotie exercise list`, and the next cell checks it
# with the same checker as `python -m nanotie exercise check 7`: the loss against
# the library's `cwt_loss` (repeated targets, and scores near 2000 where an exp
# without the max subtracted overflows), the backward against the engine's
# gradients, and `nanotie.gradcheck` through the embedding lookup with repeated ids.

# %%
# ---- EXERCISE 7: your code here ---------------------------------------------------------
def my_cwt_loss(O, E_targets, temperature=1.0):
    # Return (loss, backward), with backward(g) -> (grad_O, grad_E_targets).
    raise NotImplementedError


# %%
from nanotie import exercises

my_cwt_loss = exercises.get(7).check_in_notebook(my_cwt_loss)

# %% [markdown]
# Here is what the checker says about the slip section 3 warns against: keeping only
# the positive term's gradient for the targets, as if the negatives were constants.

# %%
slip = exercises.get(7).check(exercises.get(7).mistake("only the positive term"))
print(slip.report())
assert not slip.passed and "only the positive term" in slip.message

# %% [markdown]
# What to take away: CWT keeps the tie but drops the $V$-sized product. $E$ still
# serves as input and as output, and its gradient is still the sum of the two uses;
# only the set of outputs it is compared against changes, from the whole vocabulary
# to the targets of the batch.
