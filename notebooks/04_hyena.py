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
# # 04 · Hyena and MultiHyena: long convolutions, implicit filters, filters tied into heads
#
# Attention mixes the tokens of a sequence with an $L \times L$ matrix computed from
# the data. **Hyena** (Poli et al., 2023) mixes them with a *long convolution*, one
# filter as long as the sequence per channel, wrapped in two data-dependent gates.
# **MultiHyena** (Massaroli et al., 2023, the *Laughing Hyena Distillery*) ties those
# filters: one per head instead of one per channel.
#
# The plan:
#
# 1. **Convolution as a layer**, and why the FFT makes a long one cheap.
# 2. **Implicit filters**: a filter as a function of position, not a table.
# 3. **The Hyena operator**, checked against its equations and by a gradient check.
# 4. **Tying the filters into heads**: MultiHyena, its filter count, and its
#    single-pole form, which is linear attention with decay.
# 5. **The miniature experiment**: Transformer vs Hyena vs MultiHyena on prose and
#    on associative recall, with plots of the learned filters.
# 6. **An exercise**: the backward of the causal FFT convolution, with exercise 8's
#    checker (`python -m nanotie exercise check 8`).
#
# Every claim is checked by an assert. Set `NANOTIE_QUICK=1` for a fast run (the
# test suite does): section 5 then trains tiny models for a few seconds.

# %%
import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

import nanotie
from nanotie import Tensor
from nanotie.gradcheck import gradcheck, gradcheck_module
from nanotie.nn import count_parameters
from nanotie.nn import functional as F
from nanotie.papers.hyena import (HyenaConfig, HyenaOperator, ImplicitFilter,
                                  MultiHyenaOperator, linear_attention_with_decay,
                                  positional_features)
from nanotie.papers.hyena import experiment
from nanotie.papers.distillery.study import DistillStudy
from nanotie.papers.hyena.recall import RecallConfig
from nanotie.train import TrainConfig

QUICK = os.environ.get("NANOTIE_QUICK") == "1"
rng = np.random.default_rng(0)
out = tempfile.mkdtemp()          # section 5's runs and their cache, for this session

# %% [markdown]
# ## 1. Convolution as a layer
#
# A causal convolution of a signal $u$ with a filter $h$, both of length $L$:
#
# $$y_t = \sum_{s=0}^{t} h_s\, u_{t-s}, \qquad t = 0, \dots, L-1 .$$
#
# Output $t$ sees inputs $0..t$ only (causal), and the same weights $h$ slide along
# the sequence: a convolution *is* weight tying across positions. As a matrix,
# $y = T(h)\,u$ with a lower-triangular Toeplitz matrix $T(h)_{ts} = h_{t-s}$.
# Applying it costs $O(L^2)$.
#
# The FFT turns convolution into a product of spectra. A length-$n$ FFT computes a
# *circular* convolution, which wraps the tail of $y$ back onto its start; the
# linear convolution has $2L-1$ samples, so padding both signals to $n \ge 2L-1$
# leaves room and nothing wraps. Then
#
# $$y = \mathrm{IFFT}_n\big(\mathrm{FFT}_n(u) \cdot \mathrm{FFT}_n(h)\big)[0:L], \qquad O(L \log L).$$
#
# That is `nanotie.nn.functional.fftconv`.

# %%
L = 12
u, h = rng.standard_normal(L), rng.standard_normal(L)
toeplitz = np.array([[h[t - s] if s <= t else 0.0 for s in range(L)] for t in range(L)])
direct = toeplitz @ u
fft = F.fftconv(Tensor(u), Tensor(h)).numpy()
circular = np.fft.irfft(np.fft.rfft(u, L) * np.fft.rfft(h, L), L)   # n = L: too short
print("FFT (n >= 2L-1) vs direct:", np.abs(fft - direct).max())
print("circular (n = L) vs direct:", np.abs(circular - direct).max())
assert np.allclose(fft, direct, atol=1e-12)
assert not np.allclose(circular, direct)        # the wrap-around that padding prevents

# %% [markdown]
# How much cheaper? The direct sum (NumPy's `np.convolve`, compiled) against
# `fftconv`, for a few channels of length $L$. BLAS is pinned to one thread for the
# timing (`threadpoolctl`): on a machine with other work running, OpenBLAS's waiting
# threads can stall this many-call work by orders of magnitude (one `np.convolve` at
# $L = 16384$ took over a minute with two threads, 0.18 s with one).

# %%
def best_time(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


lengths = [256, 1024, 4096, 16384]
channels = 4
t_direct, t_fft = [], []
with threadpool_limits(limits=1, user_api="blas"):
    for n in lengths:
        us, hs = rng.standard_normal((channels, n)), rng.standard_normal((channels, n))
        t_direct.append(best_time(lambda: [np.convolve(a, b)[:n] for a, b in zip(us, hs)]))
        t_fft.append(best_time(lambda: F.fftconv(Tensor(us), Tensor(hs))))
        print(f"L={n:6d}  direct {t_direct[-1] * 1e3:8.2f} ms   fft {t_fft[-1] * 1e3:6.2f} ms")

plt.figure(figsize=(5, 3.2))
plt.loglog(lengths, t_direct, "o-", label="direct sum, O(L^2)")
plt.loglog(lengths, t_fft, "o-", label="fftconv, O(L log L)")
plt.xlabel("L"), plt.ylabel("seconds"), plt.legend(), plt.grid(alpha=0.3)
plt.show()
# Times depend on what else the machine is doing, so this prints the ratio rather than
# asserting it (`benchmarks/` holds the timings).
print(f"at L = {lengths[-1]}, fftconv is {t_direct[-1] / t_fft[-1]:.0f}x faster than the "
      "direct sum")

# %% [markdown]
# ## 2. Implicit filters
#
# A long filter per channel stored as a table would cost $D \times L$ parameters and
# fix the length. Hyena computes the filter from the position instead. Positional
# features
#
# $$\mathrm{PE}(\tau) = \big[t_\tau,\ \cos(2\pi f_k \tau / L),\ -\sin(2\pi f_k \tau / L)\big]_k$$
#
# go through a small MLP with sine activations $\sin(\omega x)$ (one learnable vector
# of frequencies $\omega$, *shared* by every sine layer: a tie inside the filter),
# and the result is multiplied by a decay window $e^{-t |\delta_c|}$ whose rate is
# spread over the channels:
#
# $$h_c(\tau) = \mathrm{MLP}(\mathrm{PE}(\tau))_c \cdot e^{-t_\tau |\delta_c|}.$$

# %%
t, pe = positional_features(64, 7)
nanotie.manual_seed(0)
filt = ImplicitFilter(channels=8, max_len=64, emb_dim=7, width=16, omega=4.0)
hs = filt(64).numpy()                                     # (C, L)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
ax1.plot(pe)
ax1.set(title="positional features PE(tau)", xlabel="tau")
for c in (0, 3, 7):
    line, = ax2.plot(hs[c], label=f"channel {c}")
    ax2.plot(filt.window.numpy()[:, c] * np.abs(hs[c]).max(), "--", color=line.get_color())
ax2.set(title="filters at initialisation, windows dashed", xlabel="tau")
ax2.legend()
plt.show()

# The parameter count does not depend on the length, and a shorter sequence uses
# the first L taps of the same filters (up to round-off: BLAS may sum 20 rows of the
# MLP's products in another order than 64).
long = ImplicitFilter(channels=8, max_len=4096, emb_dim=7, width=16)
assert count_parameters(long) == count_parameters(filt)
assert np.allclose(filt(20).numpy(), hs[:, :20], rtol=1e-5, atol=1e-7)
print("filter parameters:", count_parameters(filt), "for any max_len")

# %% [markdown]
# The frequency vector $\omega$ is one `Parameter` that three sine layers use, so its
# gradient is the sum of three contributions; `gradcheck_module` checks every
# parameter of the filter in float64, with a random upstream gradient:

# %%
small = ImplicitFilter(3, 10, emb_dim=5, width=6, n_inner=2, omega=2.0).double()
w = Tensor(rng.standard_normal((3, 10)))
assert gradcheck_module(small, lambda: (small(10) * w).sum(), max_elements=64)
print("implicit filter: gradient check passed")

# %% [markdown]
# ## 3. The Hyena operator
#
# Order 2, for an input $u$ of shape $(L, D)$:
#
# 1. $z = u W_{in} + b_{in}$, a projection to $3D$;
# 2. a short causal depthwise convolution (3 taps) over $z$, split into $x_0, x_1, v$;
# 3. the inner gate $w = x_1 \odot v$;
# 4. the long convolution with a skip: $y_{lc} = h * w + D_{skip} \odot w$;
# 5. the outer gate and the out-projection: $y = (x_0 \odot y_{lc}) W_{out} + b_{out}$.
#
# `HyenaOperator.forward` is `out_proj(mix(*project(u)))`, and step 4 is the method
# `long_conv`. We check the operator against these equations written in NumPy, with
# a direct (not FFT) convolution:

# %%
nanotie.manual_seed(1)
op = HyenaOperator(d_model=3, max_len=7, filter_width=8, filter_emb_dim=5).double()
u = rng.standard_normal((2, 7, 3))

W_in, b_in = op.in_proj.weight.numpy(), op.in_proj.bias.numpy()
K, kb = op.short.weight.numpy(), op.short.bias.numpy()               # (3D, 3), (3D,)
z = (u @ W_in.T + b_in).transpose(0, 2, 1)                           # (B, 3D, L)
zp = np.pad(z, ((0, 0), (0, 0), (2, 0)))
z = kb[:, None] + sum(K[:, j, None] * zp[:, :, j:j + 7] for j in range(3))   # short conv
x0, x1, v = z[:, :3], z[:, 3:6], z[:, 6:]
w = x1 * v                                                           # inner gate
H = op.filter_array(7)                                               # (D, L)
conv = np.stack([[np.convolve(w[b, c], H[c])[:7] for c in range(3)] for b in range(2)])
y = x0 * (conv + op.dskip_array()[:, None] * w)                      # long conv + skip
y = y.transpose(0, 2, 1) @ op.out_proj.weight.numpy().T + op.out_proj.bias.numpy()
assert np.allclose(op(Tensor(u)).numpy(), y, atol=1e-10)

# the whole operator, gradient-checked: its input and every parameter
ut = Tensor(u, requires_grad=True)
assert gradcheck(lambda ut: op(ut), [ut])
g = Tensor(rng.standard_normal((2, 7, 3)))
assert gradcheck_module(op, lambda: (op(ut) * g).sum(), max_elements=48)
print("Hyena operator: equations and gradient check passed")

# %% [markdown]
# Causality: the output at $t$ must not change when inputs after $t$ change.

# %%
u2 = u.copy()
u2[:, 4:] = rng.standard_normal((2, 3, 3))
y1, y2 = op(Tensor(u)).numpy(), op(Tensor(u2)).numpy()
assert np.allclose(y1[:, :4], y2[:, :4], atol=1e-12) and not np.allclose(y1[:, 4:], y2[:, 4:])

# %% [markdown]
# ## 4. Tying the filters into heads: MultiHyena
#
# Split $q, k, v$ (the three short-conv outputs, Hyena's $x_0, x_1, v$) into $M$
# heads of width $N = D/M$. Per head, form the outer products
# $z_t = k_t v_t^\top$ ($N \times N$ channels) and convolve **all** of them with the
# head's one filter $h^m$:
#
# $$y_t^m[j] = \sum_i q_t^m[i] \Big( (h^m * z^m)_t[i, j] + D^m_{skip}\, z_t^m[i, j] \Big).$$
#
# $M$ filters instead of $D$. With $M = D$ ($N = 1$) this is Hyena again. In code,
# `MultiHyenaOperator` overrides only the gate, the readout and the filter count; the
# tie is the broadcast of a head's filter $(M, 1, 1, L)$ over its $N^2$ channels
# inside `long_conv`, and its gradient is the sum over those channels (the engine's
# un-broadcast).

# %%
D, M = 16, 4
kw = dict(filter_width=8, filter_emb_dim=5, filter_inner=1)
hy, mh = HyenaOperator(D, 32, **kw), MultiHyenaOperator(D, 32, n_head=M, **kw)
print("filters:", hy.n_filters, "(Hyena) vs", mh.n_filters, "(MultiHyena)")
print("parameters:", count_parameters(hy), "vs", count_parameters(mh))
assert hy.filter_array().shape == (D, 32) and mh.filter_array().shape == (M, 32)
# Each filter costs a row of the MLP's output layer (width 8) and one Dskip.
assert count_parameters(hy) - count_parameters(mh) == (8 + 1) * (D - M)

# %% [markdown]
# With a single real pole, $h_t = \lambda^t$, the convolution is a running sum with
# decay, and MultiHyena is **linear attention with decay**: a state
# $S_t = \lambda S_{t-1} + k_t v_t^\top$ and $y_t = q_t^\top (S_t + D_{skip} z_t)$.
# A subclass replaces the filters by the pole (the `filters` hook), and the parallel
# FFT form meets the recurrence:

# %%
class SinglePole(MultiHyenaOperator):
    lam = 0.9

    def filters(self, length):
        h = self.lam ** np.arange(length, dtype=np.float64)
        return Tensor(np.tile(h, (self.n_filters, 1)))


nanotie.manual_seed(2)
pole = SinglePole(8, 16, n_head=2, **kw).double()
q, k, v = (rng.standard_normal((2, 8, 16)) for _ in range(3))
parallel = pole.mix(Tensor(q), Tensor(k), Tensor(v)).numpy().reshape(2, 2, 4, 16)
recurrent = linear_attention_with_decay(*(a.reshape(2, 2, 4, 16) for a in (q, k, v)),
                                        SinglePole.lam, pole.dskip_array())
print("parallel vs recurrent:", np.abs(parallel - recurrent).max())
assert np.allclose(parallel, recurrent, atol=1e-10)

# %% [markdown]
# ## 5. The miniature experiment
#
# `nanotie.papers.hyena.experiment` trains three models of about the same size on
# the same GPT skeleton: a Transformer, a Hyena LM and a MultiHyena LM (the mixer in
# each block is the only difference). Once as byte-level language models on the
# prose that ships with Python (bits per byte on held-out text), once on
# **associative recall**: an episode binds keys to values, `k1 v1 k2 v2 ...`, then
# asks for some keys again, and only the answers are scored.
#
# `python -m nanotie reproduce hyena` runs the quick profile (about a minute and a
# half on two cores): two seeds of each model on each task, test figures that
# nothing was chosen on, and a verdict per claim. Here, in quick mode, a smaller
# profile trains for seconds; otherwise the quick profile itself runs. The runs are
# cached in a temporary folder, so running this cell again is instant.

# %%
small_profile = experiment.Profile(
    model=HyenaConfig(context=32, d_model=32, n_layer=2, n_head=4, filter_width=16),
    train=TrainConfig(steps=60, batch_size=8, lr=3e-3, warmup_steps=10, eval_interval=20,
                      eval_batches=2),
    recall=RecallConfig(n_keys=8, n_values=8, n_pairs=3, n_queries=3),
    recall_model=HyenaConfig(d_model=32, n_layer=2, n_head=4, filter_width=16),
    recall_train=TrainConfig(steps=60, batch_size=16, lr=3e-3, warmup_steps=10,
                             weight_decay=0.0, eval_interval=20, eval_batches=2),
    n_recall_train=2000, n_recall_val=200, n_recall_test=200, seeds=2,
    study=DistillStudy(orders=(2, 4), contexts=(64, 256), steps=2, rounds=1,
                       eval_batches=2))

results = experiment.run(out_dir=os.path.join(out, "hyena"),
                         profile=small_profile if QUICK else None)
for name in experiment.MODELS:
    print(f"{name:12s} test bpb {results['lm'][name]['test_bpb']['mean']:.3f} "
          f"± {results['lm'][name]['test_bpb']['std']:.3f}   "
          f"recall accuracy {results['recall'][name]['test_acc']['mean']:.3f}   "
          f"long filters {results['filters'][name]['filters']}")
print("unigram bpb", round(results["unigram_test_bpb"], 3), " recall chance",
      results["recall_chance"])
print("verdict, MultiHyena vs Hyena:", results["verdicts"]["multihyena_vs_hyena"])

# %%
profile = small_profile if QUICK else experiment.PROFILES["quick"]
n_layer, d, m = profile.model.n_layer, profile.model.d_model, profile.model.n_head
assert results["filters"]["hyena"]["filters"] == n_layer * d
assert results["filters"]["multihyena"]["filters"] == n_layer * m
for name in experiment.MODELS:
    assert len(results["lm"][name]["test_bpb"]["values"]) == profile.seeds   # every seed
    assert results["lm"][name]["test_bpb"]["mean"] < 8.0     # better than uniform guessing
    if not QUICK:   # the quick profile's models use context
        assert results["lm"][name]["test_bpb"]["mean"] < results["unigram_test_bpb"]

# %% [markdown]
# The loss curves, and the learned filters of the first layer of each Hyena model:
# left, a few filters scaled to their largest tap; right, $|h_c(t)|$ on a log scale
# with the decay window dashed.

# %%
for figure in ("test_bpb.png", "loss.png", "recall_loss.png", "filters.png"):
    img = plt.imread(os.path.join(out, "hyena", figure))
    plt.figure(figsize=(11, 11 * img.shape[0] / img.shape[1]))
    plt.imshow(img)
    plt.axis("off")
    plt.show()

# %% [markdown]
# What it shows (the experiment's report has the numbers of a quick run, with the
# spread over seeds and the verdicts): in the quick run both Hyena models reach clearly
# lower bits per byte than the Transformer and are within noise of each other; recall is
# where the Transformer leads; MultiHyena needs $M$ filters per layer where Hyena needs
# $D$; and the learned filters stay within their decay windows.
#
# ## 6. Exercise: the backward of the causal FFT convolution
#
# Write `my_fftconv(u, h)` for NumPy arrays `u` (..., L) and `h` (..., Lh), with
# $L_h \le L$ and leading axes that broadcast (`u` (B, D, L) with one filter per
# channel, `h` (D, Lh)): return the causal convolution $y$ (computed by FFT) and a
# `backward(g)` that returns
# $(\partial \mathcal{L}/\partial u, \partial \mathcal{L}/\partial h)$ given
# $g = \partial \mathcal{L}/\partial y$, each shaped like its input.
#
# Derive it first. $y_t = \sum_s h_s u_{t-s}$, so
# $\partial \mathcal{L}/\partial u_r = \sum_t g_t h_{t-r}$ and
# $\partial \mathcal{L}/\partial h_s = \sum_t g_t u_{t-s}$: both are
# *correlations* with $g$ (a convolution with the time-reversed signal). In the
# Fourier domain a correlation is a product with the complex conjugate:
# $\mathrm{IFFT}(G \cdot \overline{H})$, cropped to $L$ (or $L_h$), with the same
# padding $n \ge L + L_h - 1$ so nothing wraps. A filter shared by the batch is used
# by every batch row, so its gradient is the sum over the batch.
#
# The next cell checks it with exercise 8's checker, the same one as `python -m nanotie
# exercise check 8`: it tests that the output is causal, compares forward and gradients
# with `F.fftconv`, and runs `nanotie.gradcheck` on your backward.

# %%
# ---- EXERCISE 8: your code here ----------------------------------------------------
from nanotie.autograd import unbroadcast    # exercise 1: sums a gradient to a shape


def my_fftconv(u, h):
    # Return (y, backward), with backward(g) -> (grad_u, grad_h), each shaped like its input.
    raise NotImplementedError


# %%
from nanotie import exercises

my_fftconv = exercises.get(8).check_in_notebook(my_fftconv)

# %% [markdown]
# What the checker says about the commonest slip, an FFT without the zero padding
# (the product of spectra is then a *circular* convolution):

# %%
slip = exercises.get(8).check(exercises.get(8).mistake("no zero padding"))
print(slip.report())
assert not slip.passed and "not causal" in slip.message and "padding" in slip.message
