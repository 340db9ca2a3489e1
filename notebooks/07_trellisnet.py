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
# # 07 · Trellis Networks: one convolution tied across depth
#
# Bai, Kolter & Koltun (ICLR 2019, arXiv:1810.06682) take a temporal convolutional
# network and make two changes: every level uses **the same weights**, and the input
# sequence is **injected again at every level**. The result, a TrellisNet, turns out
# to contain truncated recurrent networks as a special case.
#
# 1. The trellis picture.
# 2. Why tying across depth turns a TCN into a truncated RNN.
# 3. The conversion, live: an LSTM becomes a TrellisNet, exactly (and where not).
# 4. The cached input injection and a gradient check: the shared weight's gradient is
#    the sum over levels.
# 5. The miniature experiment: LM, depth at a fixed budget, the adding problem.
# 6. An exercise: build the converter's weights yourself.
#
# `NANOTIE_QUICK=1` (the test suite sets it) runs section 5 with a tiny profile.

# %%
import os
import tempfile
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np

import nanotie as nt
from nanotie.autograd import Tensor
from nanotie.gradcheck import gradcheck_module
from nanotie.nn import count_parameters
from nanotie.papers.trellis import (LSTM, LSTMConfig, TrellisConfig, TrellisNet, UntiedTCN,
                                    from_lstm, truncated_lstm)
from nanotie.papers.trellis import experiment

QUICK = os.environ.get("NANOTIE_QUICK") == "1"
rng = np.random.default_rng(0)
print("quick mode:", QUICK)

# %% [markdown]
# ## 1. The trellis
#
# Time runs left to right, levels bottom to top. Node (level $i+1$, time $t$) reads
# the two nodes below it at $t-1$ and $t$, **and** the input at $t-1$ and $t$:
#
# $$\hat z^{(i+1)}_t = W_1^x x_{t-1} + W_2^x x_t + W_1^h z^{(i)}_{t-1} + W_2^h z^{(i)}_t + b$$
#
# then an LSTM-style gate (order $i, o, g, f$):
# $c^{(i+1)}_t = f \odot c^{(i)}_{t-1} + i \odot g$, $z^{(i+1)}_t = o \odot \tanh c^{(i+1)}_t$.
# The same $W$ and $b$ at every level: that is the tie.

# %%
T_pic, L_pic = 6, 4
fig, ax = plt.subplots(figsize=(7, 3.6))
for lev in range(L_pic + 1):
    for t in range(T_pic):
        ax.plot(t, lev, "o", color="tab:blue" if lev else "lightgray", ms=9, zorder=3)
        if lev:
            for dt in (1, 0):
                if t - dt >= 0:
                    ax.annotate("", (t, lev), (t - dt, lev - 1),
                                arrowprops=dict(arrowstyle="->", color="tab:blue", lw=0.8))
for t in range(T_pic):
    ax.plot(t, -1, "s", color="tab:orange", ms=9)
ax.set(yticks=range(-1, L_pic + 1), yticklabels=["x"] + [f"level {i}" for i in range(L_pic + 1)],
       xticks=range(T_pic), xticklabels=[f"t={t}" for t in range(T_pic)],
       xlabel="x (orange) is injected at every level; W·x is computed once",
       title="A trellis: one shared kernel-2 convolution per level")
plt.show()

# %% [markdown]
# ## 2. Why tying across depth makes it a truncated RNN
#
# Compare one LSTM step, $a_t = W_{ih} x_t + W_{hh} h_{t-1} + b$, with one trellis level.
# Set $W_1^x = 0$, $W_2^x = W_{ih}$, $W_1^h = W_{hh}$, $W_2^h = 0$: level $j$ at time $t$
# is one LSTM step from level $j-1$ at time $t-1$. By induction, level $j$ at time $t$ is
# the LSTM run from a zero state over the last $j$ inputs. **Because every level uses the
# same weights**, every step of that run uses the LSTM's one set of weights. An untied
# TCN could not express this without copying the weights $M$ times, and its parameter
# count grows with depth; the TrellisNet's does not:

# %%
counts = {L: (count_parameters(TrellisNet(TrellisConfig(n_in=8, n_hid=8, n_out=8, n_levels=L))),
              count_parameters(UntiedTCN(TrellisConfig(n_in=8, n_hid=8, n_out=8, n_levels=L))))
          for L in (1, 4, 16)}
for L, (tied, untied) in counts.items():
    print(f"{L:3d} levels: TrellisNet {tied:,} parameters, untied TCN {untied:,}")
assert len({tied for tied, _ in counts.values()}) == 1
assert counts[16][1] == 16 * counts[1][1]

# %% [markdown]
# ## 3. The conversion, live
#
# `from_lstm(lstm, M)` writes those weights (block-sparse for several layers: slot $l$
# of $z$ holds layer $l$; $W_1^h$ block-diagonal with each $W_{hh}^l$, $W_2^h$
# sub-diagonal with $W_{ih}^l$). `truncated_lstm` is the brute force: for every $t$ it
# reruns the LSTM from zero over $x_{t-M+1..t}$. In float64 they agree to rounding:

# %%
nt.manual_seed(0)
x = Tensor(rng.standard_normal((2, 16, 5)))
M = 5
lstm1 = LSTM(LSTMConfig(5, (8,), bias=True)).double()
trellis1 = from_lstm(lstm1, M)
err1 = np.abs(trellis1(x).out.numpy() - truncated_lstm(lstm1, x, M).numpy()).max()
print(f"one layer, biases:        max |difference| = {err1:.1e}")
assert err1 < 1e-13

lstm2 = LSTM(LSTMConfig(5, (8, 4), bias=False)).double()
err2 = np.abs(from_lstm(lstm2, M)(x).out.numpy() - truncated_lstm(lstm2, x, M).numpy()).max()
print(f"two layers, no biases:    max |difference| = {err2:.1e}")
assert err2 < 1e-13

# %% [markdown]
# **The caveat.** With biases, several layers do not match. Slot 2 at level 1 reads
# slot 1 at level 0, which is zero, and an LSTM fed a zero input from a zero state does
# not stay at zero: it moves to the state of its bias. So the upper layer starts one
# step early, on a zero input. `truncated_lstm(..., staircase=True)` computes exactly
# that, and agrees:

# %%
lstm3 = LSTM(LSTMConfig(5, (8, 4), bias=True)).double()
net3 = from_lstm(lstm3, M)
plain = np.abs(net3(x).out.numpy() - truncated_lstm(lstm3, x, M).numpy()).max()
stair = np.abs(net3(x).out.numpy() - truncated_lstm(lstm3, x, M, staircase=True).numpy()).max()
print(f"two layers, biases: vs truncated LSTM {plain:.1e}, vs staircase {stair:.1e}")
assert plain > 1e-4 and stair < 1e-13

# %% [markdown]
# **History repackaging.** Between segments the reference fills the left padding of
# every level with the previous segment's last top-level $(h, c)$. For a converted
# LSTM and segments no longer than $M$, that reproduces the *full* LSTM:

# %%
history, pieces = None, []
for start in range(0, 16, M):
    res = trellis1(x[:, start:start + M], history)
    history = res.history
    pieces.append(res.out.numpy())
err = np.abs(np.concatenate(pieces, 1) - lstm1(x).out.numpy()).max()
print(f"segments of {M} with history vs the untruncated LSTM: {err:.1e}")
assert err < 1e-13

# %% [markdown]
# ## 4. Input injection and the tied gradient
#
# $W^x x$ does not change from level to level, so it is computed once per dilation and
# added at every level. `forward_concat` is the textbook form (one convolution over the
# concatenated $[x; z]$ at every level); both agree. Then a finite-difference check of
# a tiny TrellisNet: the engine sums the gradient of the shared weights over levels.

# %%
nt.manual_seed(1)
tiny = TrellisNet(TrellisConfig(n_in=3, n_hid=2, n_out=2, n_levels=3, dilations=(1, 2, 1),
                                weight_norm=True, init_std=0.3)).double()
xs = Tensor(rng.standard_normal((2, 6, 3)))
diff = np.abs(tiny(xs).out.numpy() - tiny.forward_concat(xs).numpy()).max()
print(f"cached W·x vs one convolution over [x; z]: {diff:.1e}")
assert diff < 1e-13
w = Tensor(rng.standard_normal((2, 6, 2)))
assert gradcheck_module(tiny, lambda: (tiny(xs).out * w).sum(), max_elements=512)
print("gradcheck passed")

# %% [markdown]
# ## 5. The miniature experiment
#
# `experiment.run` trains, on Python's own help text, a TrellisNet, a two-layer LSTM and
# an untied TCN at about the same parameter count, each over a few seeds and learning
# rates (chosen on the validation split, reported on the test split); the TrellisNet and
# the TCN are dilated so that their receptive field covers the window, as the LSTM's
# does. It sweeps depth at a fixed parameter budget (TrellisNets of every depth have the
# same count; the untied TCN must get narrower) and trains on the adding problem. In
# quick mode a tiny profile runs.

# %%
profile = replace(experiment.PROFILES["quick"], lm_steps=20, lm_eval_interval=10,
                  eval_batches=2, dilations=(1, 2), depths=(1, 2), lm_lrs=(5e-3,),
                  adding_steps=40, adding_eval=64) if QUICK else None
# The runs, their cache and the report go to a temporary folder: ./runs holds the
# CLI's reproductions, which a notebook must never overwrite.
out_dir = tempfile.mkdtemp(prefix="trellis-")
results = experiment.run(quick=True, out_dir=os.path.join(out_dir, "trellis"), profile=profile)
for name, r in results["lm"].items():
    print(f"{name:12s} {r['model']:44s} {r['parameters']:7,} params  receptive field "
          f"{r['receptive_field'] or 'all':>4}  test {r['test_bpb']['mean']:.3f} bpb")
print("verdict:", results["headline"]["verdict"])
sweep = results["depth_sweep"]["trellis"]
assert len({r["core_parameters"] for r in sweep}) == 1    # more levels, no more parameters

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
for ax, name in zip(axes, ("lm_loss.png", "depth.png", "adding.png")):
    ax.imshow(plt.imread(os.path.join(out_dir, "trellis", name)))
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# What to look for (the full numbers: `python -m nanotie reproduce trellis`, then
# `runs/trellis/report.md`): every model beats the
# unigram byte model only after a few hundred steps; at a fixed budget the TrellisNet
# can add levels for free while the untied TCN must shrink its width; on the adding
# problem a receptive field shorter than the sequence (no dilation) sees the second
# marked number only when it falls near the end, so it beats predicting the mean only
# partly and stays far behind the dilated net.
#
# ## 6. Exercise: the converter's weights
#
# This is exercise 12 (`python -m nanotie exercise start 12` writes the same task to a
# file). Write `trellis_weights(w_ih, w_hh, b)` for a ONE-layer LSTM with $H$ units
# and $I$ inputs, given as PyTorch stores it: gates in the order i, f, g, o, shapes
# $(4H, I)$, $(4H, H)$, $(4H,)$. Return the TrellisNet's `(weight_x, weight_h, bias)`
# of shapes $(4H, 2I)$, $(4H, 2H)$, $(4H,)$, in its layout: the tap-$(t-1)$ columns
# first in each matrix, gates in the order i, o, g, f.
#
# The next cell runs exercise 12's checker, the same one as `python -m nanotie
# exercise check 12`: it builds $M$-level TrellisNets with your weights ($M$ = 1, 2, 5)
# and compares them with `truncated_lstm` to float64 precision. Where they differ, it
# reads your arrays against the library converter's and names the mistake: a tap off by
# one step in time, the input weights on the $z$ path, the bias counted twice, the gates
# left in PyTorch's order.

# %%
# ---- EXERCISE 12: your code here ---------------------------------------------------
def trellis_weights(w_ih, w_hh, b):
    # Return (weight_x, weight_h, bias): taps [t-1 | t] side by side, gates i, o, g, f.
    raise NotImplementedError


# %%
from nanotie import exercises

trellis_weights = exercises.get(12).check_in_notebook(trellis_weights)
ex12 = exercises.get(12)

# %% [markdown]
# Your weights on the LSTM of section 3 (its weights handed over in PyTorch's order):
# the TrellisNet they make is the $M$-truncated LSTM, to rounding.

# %%
mine = TrellisNet(TrellisConfig(n_in=5, n_hid=0, n_out=8, n_levels=M)).double()
for param, value in zip((mine.conv.weight_x, mine.conv.weight_h, mine.conv.bias),
                        trellis_weights(*ex12.module.pytorch_weights(lstm1.layers[0]))):
    assert param.shape == value.shape, (param.shape, value.shape)
    param.data = value
err = np.abs(mine(x).out.numpy() - truncated_lstm(lstm1, x, M).numpy()).max()
print(f"your TrellisNet vs the {M}-truncated LSTM: {err:.1e}")
assert err < 1e-12

# %% [markdown]
# What the checker says about a typical slip: $W_{hh}$ on the $z_t$ tap, as if the
# recurrence read the current step. One level cannot tell (a single LSTM step from the
# zero state never uses $W_{hh}$); two levels can.

# %%
slip = ex12.check(ex12.mistake("W_hh on the z_t tap"))
print(slip.report())
assert not slip.passed and "z_{t-1} tap" in slip.message and "With M = 1 it matched" in slip.message
