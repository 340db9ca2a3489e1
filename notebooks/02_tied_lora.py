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
# # 02 · Tied-LoRA: one low-rank pair for every layer
#
# LoRA (Hu et al., 2021) adapts a frozen weight $W$ by adding a trained low-rank
# product $BA$, one pair per layer. **Tied-LoRA** (Renduchintala, Konuk and Kuchaiev,
# 2023, arXiv:2311.09578) asks how much of that is needed. It *ties* $A$ and $B$
# across layers and gives each layer two cheap scaling vectors instead. On the fused
# query/key/value projection of layer $l$ (width $d \to 3d$):
#
# $$\mathrm{qkv}_l = W_{qkv,l}\,x + \operatorname{diag}(v_l)\, B \operatorname{diag}(u_l)\, A\, x,
# \qquad A \in \mathbb{R}^{r\times d},\ B \in \mathbb{R}^{3d\times r},\
# u_l \in \mathbb{R}^{r},\ v_l \in \mathbb{R}^{3d}.$$
#
# Each of $A, B, u, v$ is either trained or frozen. That gives a lattice of
# configurations, from LoRA (untied, $A$ and $B$ trained, $u = v = 1$) to VeRA's
# corner (random tied $A, B$, frozen; only $u, v$ trained).
#
# The plan:
#
# 1. **The adapter**, attached to a GPT by wrapping each block's `attn.qkv`.
# 2. **The lattice** as a table, with closed-form parameter counts checked against
#    the built models, and the savings at the paper's scale.
# 3. **The tied gradient**: $\partial L/\partial A = \sum_l \partial L/\partial A_l$,
#    and a finite-difference check.
# 4. **Zero start, merge, frozen parts.**
# 5. **The miniature experiment**: a prose-trained GPT adapted to Python code with
#    every configuration.
# 6. **Exercises**: write the parameter-count formula, then the tied adapter's
#    forward and backward (checked by `python -m nanotie exercise check 6`).
#
# `NANOTIE_QUICK=1` (the test suite sets it) trains a tiny base model and a short sweep.

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import nanotie
from nanotie import data
from nanotie.gradcheck import gradcheck_module
from nanotie.nn import GPT, GPTConfig, count_parameters, tie_report
from nanotie.nn.optim import AdamW, param_groups
from nanotie.papers import tied_lora as tl
from nanotie.papers.tied_lora import experiment
from nanotie.train import TrainConfig, evaluate, train

QUICK = os.environ.get("NANOTIE_QUICK") == "1"
rng = np.random.default_rng(0)
print("quick mode:", QUICK)

# %% [markdown]
# ## 1. The adapter
#
# `tl.attach(model, config)` freezes the model and replaces each block's `attn.qkv`
# Linear by a `TiedLoRALinear` that holds the original Linear and the four pieces.
# The GPT's own code is untouched. With `tie_AB=True` the SAME two Parameter objects
# are assigned to every layer: tying is aliasing, exactly like the tied embedding.

# %%
def small_gpt(n_layer=3, d_model=8, seed=0):
    """A tiny float64 GPT with weights moved away from the near-zero GPT-2 init."""
    nanotie.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=16, context=8, d_model=d_model, n_layer=n_layer,
                          n_head=2)).double()
    r = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = p.data + r.normal(0.0, 0.3, p.shape)
    return model


tl6 = tl.TiedLoRAConfig(rank=2)             # the default is TL6: tied, all four trained
model = tl.attach(small_gpt(), tl6)
print(model.blocks[0].attn.qkv)
print(tie_report(model))
ads = tl.adapters(model)
assert all(ad.A is ads[0].A and ad.B is ads[0].B for ad in ads)     # one A, one B
assert len({id(ad.u) for ad in ads}) == len(ads)                    # u, v per layer

# %% [markdown]
# The forward pass is two thin matrix products on top of the frozen one:
# `h = (x A^T) * u` is (B, T, r) and `(h B^T) * v` is (B, T, 3d). For a single vector
# it is the equation above; check it by hand on the first layer:

# %%
ad = ads[0]
for p in (ad.u, ad.v):                          # non-trivial scales for the check
    p.data = rng.normal(size=p.shape)
x = rng.normal(size=(5, 8))                     # 5 inputs of width d = 8
W, b = ad.base.weight.numpy(), ad.base.bias.numpy()
A, B, u, v = (t.numpy() for t in (ad.A, ad.B, ad.u, ad.v))
by_hand = np.stack([W @ xi + b + np.diag(v) @ B @ np.diag(u) @ A @ xi for xi in x])
np.testing.assert_allclose(ad(nanotie.tensor(x)).numpy(), by_hand, rtol=1e-12, atol=1e-12)
print("Eq. 1 holds for the first layer")

# %% [markdown]
# ## 2. The lattice and its parameter counts
#
# A configuration is `(tie_AB, train_A, train_B, train_u, train_v)` plus the rank $r$.
# The trainable count has a closed form:
#
# $$N = c\,(\,[A]\,dr + [B]\,3dr\,) + L\,(\,[u]\,r + [v]\,3d\,), \qquad
# c = 1 \text{ if tied, } L \text{ if not}.$$
#
# `tl.lattice(r)` is the paper's sweep: LoRA plus the fifteen tied configurations
# that train something. Below, every one is built on a 3-layer GPT and counted (unique
# trainable arrays, so a tied matrix counts once), and the same formula is evaluated
# at the paper's scale (LLaMA-2 7B: L = 32, d = 4096, r = 8).

# %%
L_small, d_small, r_small = 3, 8, 2
L_paper, d_paper, r_paper = 32, 4096, 8
lora_paper = tl.trainable_count(tl.TiedLoRAConfig.from_key("LoRA", r_paper), L_paper, d_paper)
print(f"{'configuration':14s} {'zero start':>10s} {'built':>7s} {'formula':>8s} "
      f"{'paper scale':>12s} {'% of LoRA':>10s}")
for config in tl.lattice(r_small):
    built = count_parameters(tl.attach(small_gpt(L_small, d_small), config))
    formula = tl.trainable_count(config, L_small, d_small)
    assert built == formula, config.key
    paper = tl.trainable_count(tl.TiedLoRAConfig.from_key(config.key, r_paper), L_paper,
                               d_paper)
    print(f"{config.name:14s} {str(config.zero_start):>10s} {built:7d} {formula:8d} "
          f"{paper:12,d} {100 * paper / lora_paper:9.2f}%")

# %% [markdown]
# At the paper's scale TL6 costs 12.5% of LoRA and TL5, tying alone, $1/L$ = 3.1%.
# How the share depends on depth: the tied matrices are paid once, the scaling
# vectors once per layer, so with more layers TL6 tends to VeRA's cost (the per-layer
# vectors) and its share of LoRA to $(r + 3d) / 4dr$.

# %%
def share(key, L, d=4096, r=8):
    return 100 * tl.trainable_count(tl.TiedLoRAConfig.from_key(key, r), L, d) / \
        tl.trainable_count(tl.TiedLoRAConfig.from_key("LoRA", r), L, d)


layers = np.arange(1, 97)
fig, ax = plt.subplots(figsize=(6, 3.5))
for key in ("TL6", "VeRA-style", "TL5"):
    ax.plot(layers, [share(key, L) for L in layers], label=key)
ax.axvline(32, color="gray", ls=":", lw=1)
ax.set(xlabel="layers L (d = 4096, r = 8)", ylabel="% of LoRA's trainable parameters",
       yscale="log", title="What tying saves")
ax.grid(alpha=0.3, which="both")
ax.legend()
plt.show()
assert round(share("TL6", 32), 3) == 12.506 and share("TL5", 32) == 100 / 32

# %% [markdown]
# ## 3. The gradient of a tied A is a sum over layers
#
# $A$ is used once per layer, so by the multivariable chain rule
# $\partial L/\partial A = \sum_l \partial L/\partial A_l$, where $A_l$ is what layer
# $l$ would have if it held its own copy. The engine's single `+` for a tensor used
# twice does that. Check it against an untied twin whose per-layer copies hold the
# same values, then against finite differences in float64.

# %%
tied = tl.attach(small_gpt(), tl.TiedLoRAConfig(rank=2))
untied = tl.attach(small_gpt(), tl.TiedLoRAConfig(rank=2, tie_AB=False))
for p in tied.parameters():                     # random values in every adapter array
    if p.requires_grad:                         # (the shared A and B once)
        p.data = rng.normal(0, 0.5, p.shape)
for t, un in zip(tl.adapters(tied), tl.adapters(untied)):
    for name in "ABuv":                         # the untied twin: equal copies per layer
        getattr(un, name).data = getattr(t, name).data.copy()
idx = rng.integers(0, 16, (2, 8))
tgt = rng.integers(0, 16, (2, 8))
for m in (tied, untied):
    m(idx, tgt)[1].backward()
sum_of_layers = sum(ad.A.grad for ad in tl.adapters(untied))
np.testing.assert_allclose(tl.adapters(tied)[0].A.grad, sum_of_layers, rtol=1e-10)
print("dL/dA (tied) == sum over layers of dL/dA_l (untied)")
assert gradcheck_module(tied, lambda: tied(idx, tgt)[1], name="TL6")
print("and every trainable array of the tied model passes the finite-difference check")

# %% [markdown]
# ## 4. Zero start, merge, and frozen parts
#
# **Zero start and scale.** nanotie starts $u = 1$ and $v = 0$ when $v$ is trained (1
# when frozen); $B = 0$ when it is trained while $v$ is frozen (LoRA, TL5), as LoRA
# does. Then the update is zero and the adapted model *is* the base model at step 0.
# Three tied corners freeze both $v$ and $B$; nothing in them starts at zero. Random
# $A$ and $B$ start at LoRA's scale, $A \sim N(0, 1/d)$ and $B \sim N(0, 1/r)$: Adam
# moves every entry by about the learning rate per step, so a unit-scale $A$ would
# barely move in a short run. (The paper gives no initialisation and the authors' NeMo
# code does not settle it; see the module docstring.)

# %%
base = small_gpt()
with nanotie.no_grad():
    base_logits = base(idx)[0].numpy()
for config in tl.lattice(2):
    m = tl.attach(small_gpt(), config)
    with nanotie.no_grad():
        same = np.array_equal(m(idx)[0].numpy(), base_logits)
    assert same == config.zero_start, config.key
print("starts away from the base:", [c.key for c in tl.lattice(2) if not c.zero_start])
wide = tl.attach(small_gpt(n_layer=1, d_model=64), tl.TiedLoRAConfig(rank=16))
A0, B0 = tl.adapters(wide)[0].A.numpy(), tl.adapters(wide)[0].B.numpy()
print(f"std of A: {A0.std():.3f} (1/sqrt(d) = {64 ** -0.5:.3f}); "
      f"std of B: {B0.std():.3f} (1/sqrt(r) = {16 ** -0.5:.3f})")
assert abs(A0.std() * 8 - 1) < 0.1 and abs(B0.std() * 4 - 1) < 0.1

# %% [markdown]
# **Merge.** The update is linear in $x$, so for inference it folds into the weight:
# $W_{qkv,l} \leftarrow W_{qkv,l} + \operatorname{diag}(v_l) B \operatorname{diag}(u_l) A$,
# and the adapter path is skipped. `tl.unmerge` subtracts it again.

# %%
with nanotie.no_grad():
    before = tied(idx)[0].numpy()
    tl.merge(tied)
    merged = tied(idx)[0].numpy()
    tl.unmerge(tied)
np.testing.assert_allclose(merged, before, rtol=1e-10, atol=1e-12)
print("merged model == adapter path; max difference", np.abs(merged - before).max())

# %% [markdown]
# **Frozen parts** are Parameters with `requires_grad=False`. The training loop's
# `param_groups` hands the optimizer only trainable ones, so frozen parts get no
# gradient, no update and no optimizer state.

# %%
vera = tl.attach(small_gpt(), tl.TiedLoRAConfig.from_key("VeRA-style", 2))
opt = AdamW(param_groups(vera, 0.0), lr=1e-2)
vera(idx, tgt)[1].backward()
opt.step()
frozen = [n for n, p in vera.named_parameters() if not p.requires_grad]
params = dict(vera.named_parameters())
assert all(params[n].grad is None and id(params[n]) not in opt.state for n in frozen)
print(f"{len(frozen)} frozen arrays (the base model, A and B): no grad, no optimizer state;"
      f" {len(opt.state)} trained arrays (u and v of each layer) have state")

# %% [markdown]
# ## 5. The miniature experiment
#
# Pretrain a byte-level GPT on English prose, then adapt it to Python source code
# (both corpora ship with Python) with LoRA, TL5, TL6 and the VeRA-style corner. The
# experiment follows nanotie's protocol: the code is cut into train | val | test; each
# configuration gets its own learning rate, chosen on val at the first seed; the other
# seeds then train at that rate, and the test split is only reported. A sensitivity row
# starts TL6 at $B = 0$, $u = v = 1$ instead of $v = 0$. `experiment.sweep` does both
# phases; here the runs execute one after another in this process (the CLI spreads
# them over worker processes). Outside quick mode this is the quick profile of
# `python -m nanotie reproduce tied-lora` (the base takes a few minutes to train); in
# quick mode a tiny base and short runs. Everything goes to a temporary folder.

# %%
from dataclasses import asdict

from nanotie import protocol
from nanotie.papers.gpt import experiment as gpt_experiment

workdir = tempfile.mkdtemp()
base_settings = gpt_experiment.base_settings(quick=True, cache_dir=workdir)
if QUICK:
    base_settings["model"] = asdict(GPTConfig(context=32, d_model=32, n_layer=4, n_head=2))
    tiny_train = asdict(TrainConfig(steps=300, batch_size=8, lr=1e-2, warmup_steps=10,
                                    eval_interval=300, eval_batches=2))
    tiny_train.pop("seed")
    base_settings["train"] = tiny_train
    profile = experiment.SweepProfile(ranks=(4,), lrs=(3e-3, 1e-2), steps=60, batch_size=8,
                                      block_size=32, warmup_steps=3, eval_windows=32)
else:
    profile = experiment.PROFILES["quick"]

raw = experiment.sweep(profile, base_settings, protocol.Runner(progress=False), seed=0)
rows = experiment.table_rows(raw)
base_bpb = raw["base"]["test"]["bpb"]
print(f"frozen base on code: {base_bpb:.3f} test bits per byte")
for r in rows:
    print(f"r={r['rank']:3d} {r['config']:16s} {r['trainable']:7,d} params "
          f"({r['pct_of_lora']:5.1f}% of LoRA)  lr {r['lr']:g}  "
          f"test {r['test_bpb'].format(3)} bpb (seeds: {r['test_bpb'].seeds(3)})")

# %%
path = experiment.plot_sweep(rows, base_bpb, os.path.join(workdir, "sweep.png"),
                             f"adapting to code ({profile.steps} steps)")
img = plt.imread(path)
plt.figure(figsize=(8, 5))
plt.imshow(img)
plt.axis("off")
plt.show()

# %% [markdown]
# What the run shows, checked: each configuration's trainable count equals the
# formula; TL5 costs exactly $1/L$ of LoRA; LoRA and TL6 improve on the frozen base at
# every seed. The verdicts judge the paper's claim (TL6 about as good as LoRA, here
# within 1% of LoRA's bits per byte) against the seed spread, and the movement
# diagnostics say how far each part of the adapter travelled.

# %%
for r in rows:
    assert r["trainable"] == r["formula"], r["key"]
for rank in profile.ranks:
    at = {r["config"]: r for r in rows if r["rank"] == rank}
    L = base_settings["model"]["n_layer"]
    assert at["TL5"]["trainable"] * L == at["LoRA"]["trainable"]
    for name in ("LoRA", "TL6"):
        assert at[name]["test_bpb"].max < base_bpb, (name, at[name]["test_bpb"], base_bpb)
    for what, v in experiment.verdicts_at(rows, rank):
        print(f"{what}: {v}")
    for name in ("LoRA", "TL5", "TL6", "VeRA-style"):
        moved = at[name]["moved"]
        print(f"{name:10s} " + "  ".join(
            f"{p}: {experiment.format_movement(moved, p)}" for p in "ABuv"))

# %% [markdown]
# ## 6. Exercise: the parameter count
#
# Write `my_count(config, L, d)`: the number of trainable scalars that the adapters
# add to an L-layer GPT of width d, for ANY configuration (tied or not, any subset of
# A, B, u, v trained). Remember the shapes: A is (r, d), B is (3d, r), u is (r,) and
# v is (3d,) per layer, and a tied matrix exists once. The check compares your
# formula with the unique trainable arrays of built models for all 30 configurations
# at several sizes, and with the paper-scale numbers.

# %%
# ---- EXERCISE: your code here ---------------------------------------------------------
def my_count(config, L, d):
    # Count the trainable scalars of A, B, u, v that config trains; a tied matrix once.
    raise NotImplementedError


# %%
from nanotie import exercises

with exercises.skip_if_unwritten("my_count"):
    for L, d, r in [(1, 4, 1), (2, 8, 3), (3, 12, 2)]:
        for config in tl.all_configurations(r):
            built = count_parameters(tl.attach(small_gpt(L, d), config))
            assert my_count(config, L, d) == built, (config.key, L, d,
                                                     my_count(config, L, d), built)
    paper = {"LoRA": 4_194_304, "TL5": 131_072, "VeRA-style": 393_472, "TL6": 524_544}
    for key, want in paper.items():
        assert my_count(tl.TiedLoRAConfig.from_key(key, 8), 32, 4096) == want, key
    print("my_count matches every built model and the paper-scale numbers")

# %% [markdown]
# ## 7. Exercise: the tied adapter, forward and backward
#
# Now write the adapter itself as an op, in plain NumPy, for all L layers at once:
# `my_tied_lora(X, A, B, u, v)` with the inputs of the L layers stacked as X (L, N, d),
# ONE A (r, d) and ONE B (3d, r), and the per-layer scales stacked as u (L, r) and
# v (L, 3d). Leave the frozen base weight out and return the update
#
# $$\delta_l = \big((x_l A^\top) \odot u_l\big) B^\top \odot v_l
# = \operatorname{diag}(v_l)\, B \operatorname{diag}(u_l)\, A\, x_l
# \quad\text{for every row } x_l,$$
#
# with a `backward(g)` that returns the gradients for X, A, B, u and v. The lesson of
# section 3 in code: A and B are tied, so their gradients are SUMS over the layers
# (and the rows); u and v belong to one layer each, so theirs keep the layer axis.
#
# The next cell checks it with exercise 6's checker, the same one as
# `python -m nanotie exercise check 6` (`python -m nanotie exercise start 6` writes a
# stub with the math). It compares your output with L `TiedLoRALinear` adapters
# holding the same A and B, your A and B gradients with the sums over layers of an
# untied twin's, and runs `nanotie.gradcheck` in float64 with a random upstream
# gradient.

# %%
# ---- EXERCISE 6: your code here --------------------------------------------------------
def my_tied_lora(X, A, B, u, v):
    # Return (out, backward), with backward(g) -> (grad_X, grad_A, grad_B, grad_u, grad_v).
    raise NotImplementedError


# %%
my_tied_lora = exercises.get(6).check_in_notebook(my_tied_lora)

# %% [markdown]
# What the checker says about the slip this notebook is about: the tied A's and B's
# gradients taken from one layer (the last), as if A and B were that layer's own.

# %%
slip = exercises.get(6).check(exercises.get(6).mistake("last layer only"))
print(slip.report())
assert not slip.passed and "SUM" in slip.message and "misses" in slip.message
