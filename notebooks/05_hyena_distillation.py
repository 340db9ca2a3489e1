# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Laughing Hyena: distilling long convolutions into small recurrences
#
# Massaroli, Poli, Fu et al., *Laughing Hyena Distillery: Extracting Compact
# Recurrences From Convolutions* (NeurIPS 2023, arXiv:2310.18780).
#
# Notebook 04 built Hyena: a language model whose mixer is a **long convolution**,
# y = h * u, with a filter h as long as the context. Training is fast (one FFT), but
# generation is not: every new token needs the whole past, so the cost of token t
# grows with t, like attention without a cache.
#
# The fix is old control theory. If h were the impulse response of a small linear
# **state-space model** (SSM), the convolution could be run as a recurrence that
# carries a few numbers of state from token to token: O(1) work and memory per token.
# A trained filter is not exactly such a response, but it is close to one, and the
# paper *distils* each filter into the best small SSM it can find.
#
# The plan, on synthetic filters that look like Hyena's (no trained model needed):
#
# 1. **What an SSM is**, and its modal (diagonal) form.
# 2. **The Hankel matrix**, and why its rank is the state size.
# 3. **ERA**, step by step: from a filter to (A, B, C), then to poles and residues.
# 4. **Modal refinement** by least squares.
# 5. **The lower bound**: no order-d system can do better than σ_{d+1}/√n.
# 6. **The recurrence**: prefill a prompt in one pass, then one O(1) step per token.
# 7. **An exercise**: write the recurrence step yourself.
# 8. A trained Hyena, distilled (the plots of the miniature experiment).
#
# Set `NANOTIE_QUICK=1` for a fast run (the test suite does).

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np

from nanotie import tensor
from nanotie.nn import functional as F
from nanotie.papers.hyena import distill as ds

QUICK = os.environ.get("NANOTIE_QUICK") == "1"
L = 128 if QUICK else 512          # filter length
rng = np.random.default_rng(0)
print("quick mode:", QUICK, "| filter length L =", L)

# %% [markdown]
# ## 1 · State-space models and their impulse response
#
# A discrete linear SSM with state x_t ∈ R^d reads one number u_t and writes one number
# y_t per step:
#
# $$x_{t+1} = A x_t + B u_t, \qquad y_t = C x_t + D u_t .$$
#
# Feed it a single spike (u_0 = 1, then zeros) and it answers with its **impulse
# response**: h_0 = D, and h_t = C A^{t-1} B for t ≥ 1. Because the system is linear
# and time-invariant, its output for any input is the convolution y = h * u. So an SSM
# *is* a convolution, with a filter of a very particular shape.
#
# Diagonalise A = W diag(λ) W⁻¹. Then C A^{t-1} B = Σ_k (CW)_k (W⁻¹B)_k λ_k^{t-1}:
#
# $$h_t = \sum_k R_k \lambda_k^{t-1}, \qquad R_k = (CW)_k (W^{-1}B)_k .$$
#
# This is the **modal form**: d poles λ_k and d residues R_k. A real A has real poles
# and complex-conjugate pairs; a pair contributes R λ^t + R̄ λ̄^t = Re(2Rλ^t), so we
# keep one member of each pair and take the real part. The system is stable, and its
# response decays, when every |λ_k| < 1.

# %%
d_true = 4
A = rng.standard_normal((d_true, d_true))
A *= 0.9 / np.abs(np.linalg.eigvals(A)).max()          # spectral radius 0.9: stable
B, C, D = rng.standard_normal(d_true), rng.standard_normal(d_true), 0.5

h_ssm = np.array([D] + [C @ np.linalg.matrix_power(A, t - 1) @ B for t in range(1, L)])

lam, W = np.linalg.eig(A)
R = (C @ W) * np.linalg.solve(W, B)
keep = lam.imag >= 0                                   # one pole per conjugate pair
poles, residues = lam[keep], np.where(lam[keep].imag > 0, 2, 1) * R[keep]
h_modal = ds.modal_impulse_response(poles, residues, D, L)

print("poles:", np.round(poles, 3))
assert np.allclose(h_modal, h_ssm, atol=1e-12)
assert np.abs(poles).max() < 1

# %% [markdown]
# ## 2 · A Hyena-like filter, and its Hankel matrix
#
# Hyena's filters are *implicit*: a small MLP with sine activations maps positional
# features [t, cos(2πft/L), −sin(2πft/L)] to the filter, which is then multiplied by an
# exponential decay window. We make a few such filters with random weights and
# different decay rates (a trained model's filters look much like these).

# %%
def implicit_like(seed, length, decay):
    """A Hyena-shaped filter: a random sine MLP of positional features, times a decay."""
    r = np.random.default_rng(seed)
    t, tau = np.linspace(0, 1, length), np.arange(length)
    bands = np.arange(1, 4)[:, None]
    pe = np.concatenate([t[None], np.cos(2 * np.pi * bands * tau / length),
                         -np.sin(2 * np.pi * bands * tau / length)])
    z = np.sin(r.standard_normal((16, 7)) @ pe)
    z = np.sin(r.standard_normal((16, 16)) / 4 @ z)
    return (r.standard_normal(16) / 4 @ z) * np.exp(-decay * t)


decays = [2.0, 8.0, 30.0]
filters = {f"decay {a:g}": implicit_like(1, L, a) for a in decays}
fig, ax = plt.subplots(figsize=(8, 3))
for name, h in filters.items():
    ax.plot(h, label=name)
ax.set(xlabel="t", ylabel="h_t", title="Hyena-like implicit filters")
ax.legend()
plt.show()

# %% [markdown]
# The **Hankel matrix** of a filter stacks its Markov parameters h_1, h_2, ... so that
# each anti-diagonal is constant: H_ij = h_{1+i+j}. For an order-d SSM,
#
# $$H_{ij} = C A^{i} A^{j} B = (\text{row } i \text{ of } \mathcal{O}) \cdot
# (\text{column } j \text{ of } \mathcal{Q}), \quad \mathcal{O} = \begin{bmatrix} C
# \\ CA \\ CA^2 \\ \vdots \end{bmatrix}, \; \mathcal{Q} = [B, AB, A^2B, \dots]$$
#
# a product of a (rows × d) and a (d × cols) matrix, so **rank H ≤ d**. Conversely, the
# number of significant singular values of H is the size of the state the filter
# needs (Kronecker's theorem). We use the (m × k) Hankel matrix of h_1..h_{L-2}, with
# m + k = L − 1, so that its one-step shift (used by ERA below) still fits in the filter.

# %%
H = ds.hankel_matrix(h_ssm)
sigma_ssm = ds.hankel_singular_values(h_ssm)
print("Hankel matrix shape:", H.shape, "| H[2, 5] == h[8]:", H[2, 5] == h_ssm[8])
print("singular values of the order-4 SSM's Hankel matrix:", sigma_ssm[:7])
assert np.sum(sigma_ssm > 1e-10 * sigma_ssm[0]) == d_true    # rank = state size

fig, ax = plt.subplots(figsize=(8, 3))
for name, h in filters.items():
    s = ds.hankel_singular_values(h)
    ax.semilogy(s[:40] / s[0], ".-", label=name)
ax.semilogy(sigma_ssm[:40] / sigma_ssm[0], "k.", label="an exact order-4 SSM")
ax.set(xlabel="index i", ylabel="σ_i / σ_1", ylim=(1e-17, 2),
       title="Hankel singular values: how many states each filter needs")
ax.legend()
plt.show()

# %% [markdown]
# The faster a filter decays, the faster its Hankel spectrum falls, and the fewer
# states it needs. The exact SSM's spectrum drops to round-off after 4 values.

# %% [markdown]
# ## 3 · ERA, step by step
#
# The Eigensystem Realization Algorithm (Ho–Kalman, Kung) reads an SSM off the Hankel
# matrix. Take the SVD H = U Σ Vᵀ and keep d singular values. A balanced factorisation
# is 𝒪 = U_d Σ_d^{1/2} and 𝒬 = Σ_d^{1/2} V_dᵀ. The *shifted* Hankel matrix
# H↑_ij = h_{2+i+j} = 𝒪 A 𝒬, so
#
# $$A = \Sigma_d^{-1/2} U_d^\top H^\uparrow V_d \Sigma_d^{-1/2}, \qquad
# B = \mathcal{Q}[:, 0], \qquad C = \mathcal{O}[0, :], \qquad D = h_0 .$$
#
# Then the eigendecomposition of A gives poles and residues, as in section 1. Here
# it is written out, then compared with `ds.era`.

# %%
h = filters["decay 8"]
d = 6
U, s, Vt = np.linalg.svd(ds.hankel_matrix(h))
root = np.sqrt(s[:d])
A_era = (U[:, :d].T @ ds.hankel_matrix(h, shift=1) @ Vt[:d].T) / np.outer(root, root)
B_era, C_era = root * Vt[:d, 0], U[0, :d] * root
lam, W = np.linalg.eig(A_era)
R = (C_era @ W) * np.linalg.solve(W, B_era)
keep = lam.imag >= 0
h_era_by_hand = ds.modal_impulse_response(
    lam[keep], np.where(lam[keep].imag > 0, 2, 1) * R[keep], h[0], L)

fit_era = ds.era(h, d)
assert np.allclose(fit_era.impulse_response(L), h_era_by_hand, atol=1e-10)
print(f"ERA, order {d}: poles {np.round(fit_era.poles, 3)}")
print(f"relative error {fit_era.rel_error:.3e}")

# %% [markdown]
# ERA recovers an exact SSM exactly (its Hankel matrix has rank d and nothing is
# truncated):

# %%
exact = ds.era(h_ssm, d_true)
print(f"ERA on the order-4 SSM: relative error {exact.rel_error:.1e}")
assert exact.rel_error < 1e-10

# %% [markdown]
# ## 4 · Modal refinement
#
# ERA is a good start, not the best order-d fit: it matches the Hankel matrix in a
# balanced sense, not the filter in ℓ2. The paper refines the modal parameters
# directly on the impulse response ("modal interpolation"):
#
# $$\min_{\lambda, R} \sum_t \Big(h_t - \mathrm{Re}\sum_k R_k \lambda_k^{t-1}\Big)^2
# \quad \text{s.t.} \; |\lambda_k| < 1 .$$
#
# `ds.refine` does it in two moves: for fixed poles the residues are a *linear*
# least-squares problem (a Vandermonde fit), then `scipy.optimize.least_squares` moves
# poles and residues together, with the poles in polar form ρe^{iθ} and the box
# constraint 0 ≤ ρ ≤ 1 − 10⁻⁶. A refinement that ends worse than its start is thrown
# away, so refining never hurts.

# %%
fit_ref = ds.refine(h, fit_era)
print(f"order {d}: ERA {fit_era.rel_error:.3e} -> refined {fit_ref.rel_error:.3e} "
      f"({fit_ref.method})")
assert fit_ref.error <= fit_era.error and np.abs(fit_ref.poles).max() < 1

fig, axes = plt.subplots(1, 2, figsize=(11, 3))
axes[0].plot(h, "k", lw=3, alpha=0.3, label="filter h")
axes[0].plot(fit_era.impulse_response(L), label=f"ERA (order {d})")
axes[0].plot(fit_ref.impulse_response(L), "--", label="refined")
axes[0].set(xlabel="t", title="the filter and its order-6 distillations")
axes[0].legend()
axes[1].plot(np.abs(h - fit_era.impulse_response(L)), label="ERA")
axes[1].plot(np.abs(h - fit_ref.impulse_response(L)), label="refined")
axes[1].set(xlabel="t", yscale="log", title="|h_t - ĥ_t|")
axes[1].legend()
plt.show()

# %% [markdown]
# ## 5 · The lower bound, and choosing the order
#
# How good can an order-d system possibly be? Its Hankel matrix has rank ≤ d, and the
# Hankel map is linear, so for the error e = h − ĥ:
#
# * Eckart–Young: ‖H(h) − H(ĥ)‖₂ ≥ σ_{d+1}(H(h)), the best any rank-d matrix can do;
# * each h_t sits on one anti-diagonal, which has at most n = min(m, k) entries, so
#   ‖H(e)‖₂ ≤ ‖H(e)‖_F ≤ √n ‖e‖₂.
#
# Together: **‖h − ĥ‖₂ ≥ σ_{d+1} / √n for every order-d system** (the paper's bound; in
# the infinite-length limit, the Adamyan–Arov–Krein theory makes σ_{d+1} itself the
# best achievable Hankel-norm error). Below: the achieved error at every order, ERA
# and refined, against the bound.

# %%
orders = list(range(0, 17 if QUICK else 25))
fig, axes = plt.subplots(1, len(filters), figsize=(14, 3.2), sharey=True)
ratios = {}
for ax, (name, h_i) in zip(axes, filters.items()):
    fits = ds.order_sweep(h_i, orders)
    err = np.array([f.rel_error for f in fits])
    era_err = np.array([f.era_error / f.norm for f in fits])
    bound = np.array([f.bound / f.norm for f in fits])
    assert np.all(err * (1 + 1e-12) >= bound)             # the bound holds at every order
    assert np.all(np.diff(err) <= 1e-12)                  # the error falls with order
    assert np.all(err <= era_err * (1 + 1e-12))           # refinement never hurts
    ratios[name] = err[bound > 0] / bound[bound > 0]
    ax.semilogy(orders, era_err, "o-", ms=3, label="ERA")
    ax.semilogy(orders, err, "o-", ms=3, label="ERA + refinement")
    ax.semilogy(orders, bound, "k--", label="lower bound σ_{d+1}/√n")
    ax.set(title=name, xlabel="order d")
axes[0].set(ylabel="relative ℓ2 error")
axes[0].legend()
plt.show()
for name, r in ratios.items():
    print(f"{name}: achieved error / lower bound, min {r.min():.2f}, "
          f"median {np.median(r):.2f}, max {r.max():.2f}")

# %% [markdown]
# The bound tracks the shape of the error curve: both fall as fast as the Hankel
# spectrum does. The achieved error stays a small factor above it. Part of that gap
# is the fit and part is the bound itself, which is loose by design: it charges every
# error sample as if it sat on the longest anti-diagonal, while a decaying filter's
# error lives at small t, where the anti-diagonals are short.
#
# **Choosing the order.** The paper picks, per filter, the smallest order that meets
# an error budget. `ds.distill_filter(h, tol=...)` does that, and skips (without
# fitting) every order whose lower bound already exceeds the budget.

# %%
for name, h_i in filters.items():
    fit = ds.distill_filter(h_i, tol=1e-2, max_order=32)
    print(f"{name}: order {fit.order:2d}, relative error {fit.rel_error:.2e}, "
          f"error / bound {fit.error / fit.bound:.2f}")
    assert fit.rel_error <= 1e-2

# %% [markdown]
# ## 6 · The recurrence: prefill once, then O(1) per token
#
# A modal system is a diagonal SSM with complex state s ∈ C^K:
#
# $$y_t = \mathrm{Re}\sum_k R_k\, s_{t-1,k} + D\,u_t, \qquad s_t = \lambda \odot s_{t-1}
# + u_t .$$
#
# Unrolling, s_{t−1} = Σ_{j≥1} λ^{j−1} u_{t−j}, so y_t = Σ_j ĥ_j u_{t−j}: the
# recurrence *is* the convolution with ĥ. For a prompt we don't loop: the final state
# is one contraction with powers of λ, s_{T−1} = Σ_τ λ^{T−1−τ} u_τ (`prefill`), and
# the prompt's outputs come from the FFT convolution. Then each new token costs one
# multiply-add per mode, whatever the context length.
#
# A bank of C filters distilled together runs as one vectorised recurrence, here with
# a batch of 4 sequences.

# %%
bank = ds.distill_filters(np.stack(list(filters.values())), tol=1e-2, max_order=32)
print("orders:", bank.orders, "| modes per channel (complex, padded):", bank.poles.shape[1])
rec = bank.recurrence()

T = 3 * L
u = rng.standard_normal((4, len(filters), T))                  # (B, C, T)
y_fft = F.fftconv(tensor(u), tensor(bank.impulse_response(T))).numpy()

y_prompt, state = rec.prefill(u[..., :L])                      # the prompt in one pass
steps = []
for t in range(L, T):                                          # then token by token
    y_t, state = rec.step(u[..., t], state)
    steps.append(y_t)
y_rec = np.concatenate([y_prompt, np.stack(steps, -1)], -1)
print("max |recurrence - FFT convolution|:", np.abs(y_rec - y_fft).max())
assert np.allclose(y_rec, y_fft, atol=1e-11)

# %% [markdown]
# The per-token cost, for a layer-sized bank of 512 channels (our three filters,
# repeated). Producing the newest output by convolution is a dot product with the
# whole past, O(t) per channel; the recurrence step is O(K) per channel, flat in t.
# (Timings on a shared CPU are noisy; the `hyena` experiment measures whole models.)

# %%
def per_token_seconds(fn, repeats=30):
    """Best of ``repeats`` timings of fn(): the least disturbed run."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


C = 512
big = ds.ModalFilterBank(np.resize(bank.poles, (C, bank.poles.shape[1])),
                         np.resize(bank.residues, (C, bank.poles.shape[1])),
                         np.resize(bank.direct, C), bank.length)
big_rec = big.recurrence()
contexts = [256, 1024, 4096] if QUICK else [256, 1024, 4096, 16384]
h_long = big.impulse_response(max(contexts))                   # (C, L_max)
big_state = big_rec.init_state((1, C))
for ctx in contexts:
    past = rng.standard_normal((1, C, ctx))
    t_conv = per_token_seconds(lambda: np.einsum("bct,ct->bc", past[..., ::-1],
                                                 h_long[:, :ctx]))
    t_rec = per_token_seconds(lambda: big_rec.step(past[..., -1], big_state))
    print(f"context {ctx:6d}: convolution {1e6 * t_conv:8.1f} µs/token, "
          f"recurrence {1e6 * t_rec:6.1f} µs/token (state: {big_state.size} numbers)")


# %% [markdown]
# ## 7 · Exercise: one step of the modal recurrence
#
# Fill in `my_step` so that it advances the modal state by one token and returns the
# output: `my_step(u_t, state, poles, residues, direct) -> (y_t, new_state)`, with
# u_t of shape (C,), the complex state, poles and residues (C, K), the direct term
# (C,). Written with broadcasting (`u_t[..., None]`, sums over `axis=-1`), the same
# function also runs a batch (u_t (B, C), state (B, C, K)).
# Mind the order: the output reads the state *before* the update, and the state stays
# complex (only y_t takes the real part).
#
# The next cell checks it with exercise 9's checker, the same one as
# `python -m nanotie exercise check 9`: one step from a random complex state against
# `ModalRecurrence.step`, then a whole sequence from s = 0 against the FFT
# convolution with the impulse response. A wrong answer gets a message that names the
# mistake (e.g. "it reads the state AFTER this token's update, an off-by-one in
# time"). The cell after it runs your step on this notebook's distilled bank.
#
# As in the other notebooks, a reference solution is filled in; replace it with yours.

# %%
# ---- EXERCISE: your code here ------------------------------------------------------
def my_step(u_t, state, poles, residues, direct):
    """Return (y_t, new_state): y_t = Re Σ_k R_k s_{t-1,k} + D u_t, s_t = λ ⊙ s_{t-1} + u_t."""
    # reference solution (replace it with yours)
    y_t = np.real(np.sum(residues * state, axis=-1)) + direct * u_t
    state = poles * state + u_t[..., None]
    return y_t, state
# -------------------------------------------------------------------------------------


# %%
from nanotie import exercises

ex9 = exercises.get(9).check(my_step)
print(ex9.report())
ex9.raise_if_failed()

# %%
state = np.zeros((4, len(filters), bank.poles.shape[1]), dtype=complex)
outputs = []
for t in range(T):
    y_t, state = my_step(u[..., t], state, bank.poles, bank.residues, bank.direct)
    outputs.append(y_t)
assert np.allclose(np.stack(outputs, -1), y_fft, atol=1e-10)
print("my_step reproduces the FFT convolution")

# %% [markdown]
# ## 8 · A trained Hyena, distilled
#
# Now the real thing: the `hyena` experiment trains a Transformer, a Hyena LM and a
# MultiHyena LM on bytes of prose, and its distillation section (the last part of
# `python -m nanotie reproduce hyena`) distils **every** long filter of the two
# Hyena models at several orders. `distilled.distill(model, order=..., tol=...)` does
# the same for one model: it returns a model that shares every Parameter with the
# original except the implicit filters, which it replaces by modal SSMs. Here we run
# the section itself. In quick mode the models and the timing are tiny; otherwise
# this is the experiment's quick profile (about a minute and a half of training and
# distilling on two cores).

# %%
import tempfile
from pathlib import Path

from nanotie.papers.hyena import experiment
from nanotie.papers.hyena import generate as gen
from nanotie.papers.hyena.distill_experiment import STUDIES, DistillStudy, distillation_section
from nanotie.papers.hyena.distilled import distill
from nanotie.papers.hyena.model import HyenaConfig
from nanotie.train import TrainConfig

small = experiment.Profile(   # only its LM part is used here
    model=HyenaConfig(context=32, d_model=32, n_layer=2, n_head=4, filter_width=16),
    train=TrainConfig(steps=60, batch_size=8, lr=3e-3, warmup_steps=10, eval_interval=20,
                      eval_batches=2),
    recall=experiment.PROFILES["quick"].recall,
    recall_model=experiment.PROFILES["quick"].recall_model,
    recall_train=experiment.PROFILES["quick"].recall_train)
study = DistillStudy(orders=(2, 4, 8), contexts=(256, 1024), steps=8) if QUICK \
    else STUDIES["quick"]

out = Path(tempfile.mkdtemp())
ctx = experiment.Context(quick=True, seed=0, device="cpu", out_dir=out, cache_dir=out / "cache",
                         custom=small if QUICK else None)
results, report, _ = distillation_section(study)(ctx)
r = results["distill"]
print("orders swept:", r["orders"])
for name, m in r["models"].items():
    b = m["bpb"]
    print(f"{name:10s} {m['filters']:3d} filters | held-out bits/byte: original "
          f"{b['original']:.3f}, no long memory (d=0) {b['order_0']:.3f}, "
          + ", ".join(f"d={d}: {x:.3f}" for d, x in zip(r["orders"], b["by_order"])))

# %% [markdown]
# The section's figures. First the Hankel spectra of trained filters, then the error
# of **every** filter at every order against its lower bound, the held-out bits per
# byte against the order, and the generation throughput against the context length.

# %%
for key in ("hankel", "error_vs_order", "bpb_vs_order", "throughput"):
    img = plt.imread(out / r["figures"][key])
    plt.figure(figsize=(11, 11 * img.shape[0] / img.shape[1]))
    plt.imshow(img)
    plt.axis("off")
    plt.show()

# %% [markdown]
# What the numbers must show, checked: the bound holds for every filter at every
# order, the error falls as the order grows, refinement never loses to ERA, and the
# distilled model generates far faster than Hyena re-running its convolutions at the
# longest context timed.

# %%
for name, m in r["models"].items():
    err, bound = np.array(m["rel_error"]), np.array(m["rel_bound"])
    assert np.all(err >= bound), name
    assert np.all(np.diff(err, axis=1) <= 1e-12), name
    assert np.all(err <= np.array(m["rel_era_error"]) * (1 + 1e-12)), name
tp = r["throughput"]
tokens_per_s = {kind: v["tokens_per_second"] for kind, v in tp.items()}
for kind, v in tokens_per_s.items():
    print(f"{kind:22s}", "  ".join(f"L={L}: {x:8,.0f}/s" for L, x in zip(tp[kind]["context"], v)))
assert tokens_per_s["distilled_hyena"][-1] > 5 * tokens_per_s["hyena_recompute"][-1]

# %% [markdown]
# Finally, generation itself. `distill(...)` with a tolerance picks an order per
# filter; the distilled model's `generate()` prefills the prompt in one pass and then
# steps its states, one position of the network per token. Greedy decoding gives the
# same text as re-running the distilled model's parallel form at every token, and
# the state it carries has the same size after the prompt as after the last token.

# %%
model = ctx.models("lm")["hyena"][0]
distilled = distill(model, tol=3e-2, max_order=8)
print("orders chosen per filter (layer 1):", np.bincount(distilled.banks[0].orders))
prompt = np.frombuffer(b"The ", dtype=np.uint8)[None].astype(np.int64)
recurrent = distilled.generate(prompt, 40, temperature=0)
parallel = distilled.generate(prompt, 40, temperature=0, use_cache=False)
print(repr(bytes(recurrent[0].astype(np.uint8)).decode("utf-8", "replace")))
assert np.array_equal(recurrent, parallel)

state = gen.init_state(distilled, 1)
distilled(prompt, cache=state)
numbers = state.numbers()
for t in range(20):
    distilled(recurrent[:, 4 + t:5 + t], cache=state)
assert state.numbers() == numbers
print("state size (numbers per sequence):", numbers)

# %% [markdown]
# ## What we saw
#
# * An SSM is a convolution whose filter has a Hankel matrix of rank d; the Hankel
#   singular values of any filter say how many states it needs.
# * ERA turns the Hankel SVD into an SSM; modal least squares improves it; neither can
#   beat σ_{d+1}/√n, and the achieved error stays within a small factor of that.
# * A distilled filter runs as a diagonal recurrence: one pass over the prompt, then a
#   constant amount of work and memory per generated token.
# * On trained LMs, a few states per filter keep the held-out loss where it was
#   (while dropping the long memory altogether costs bits), and the distilled
#   model's time per token stays flat as the context grows, where Hyena's grows with
#   it and attention's, with a KV cache, grows more slowly.
