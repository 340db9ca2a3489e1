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
# # 01 · Modules, parameters, and weight tying
#
# Notebook 00 ended on one rule of the engine: when a tensor is used twice, the
# gradients of its uses **add**. This notebook builds on it. Tensors become
# `Parameter`s held by `Module`s. Weight tying then takes one assignment line, and
# the rest of the library has to respect it: parameter counts, optimizers,
# checkpoints. As in 00, every claim is checked by an assert, and the test suite runs
# the notebook.
#
# The plan:
#
# 1. **Module and Parameter.** Assigning an attribute registers it.
# 2. **Tying is aliasing.** `head.weight = emb.weight` and what follows from it:
#    one object, listed once, counted once. Copying the values is *not* tying.
# 3. **The gradient of a tied weight is a sum**, by the multivariable chain rule.
# 4. **A gradient check** of a tiny tied GPT in float64.
# 5. **One optimizer step moves a tied weight once**, checked against AdamW's
#    first-step formula.
# 6. **Checkpoints** store a tied weight once and restore the tie on load.
# 7. **Training** a small byte-level GPT with a tied embedding on English prose, with
#    a plot and a sample.
# 8. **An exercise**: share one transformer block across layers. (A first one,
#    in section 3, writes a tied gradient by hand.)
#
# Set `NANOTIE_QUICK=1` for a fast run (the test suite does). Training in section 7
# then takes seconds; without it, a few minutes.

# %%
import math
import os
import tempfile
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np

import nanotie
from nanotie import data
from nanotie.nn import (GPT, Embedding, GPTConfig, Linear, Module, Parameter,
                        count_parameters, tie_report, tied_parameters)
from nanotie.nn import functional as F
from nanotie.nn.optim import AdamW
from nanotie.train import TrainConfig, train

QUICK = os.environ.get("NANOTIE_QUICK") == "1"
rng = np.random.default_rng(0)   # all the random data below comes from here
f64 = np.float64                 # float64 wherever we compare gradients closely

print("quick mode:", QUICK)

# %% [markdown]
# ## 1. Module and Parameter
#
# A `Parameter` is a `Tensor` that requires a gradient and that a module registers
# as trainable. A `Module` is any object that holds Parameters and other Modules
# and defines `forward`. Assigning an attribute is all the registration there is:
# `Module.__setattr__` sorts Parameters into `_parameters`, Modules into
# `_modules`, and everything else into ordinary attributes.
#
# Here is a tiny two-layer network, $y = s \odot \bigl(W_2 \tanh(W_1 x + b_1) +
# b_2\bigr)$, with a learned output scale $s$ held directly as a Parameter:

# %%
class TwoLayer(Module):
    def __init__(self, d_in, d_hidden, d_out):
        super().__init__()
        self.fc1 = Linear(d_in, d_hidden, dtype=f64)      # a Module: registered
        self.fc2 = Linear(d_hidden, d_out, dtype=f64)
        self.scale = Parameter(np.ones(d_out))            # a Parameter: registered
        self.d_hidden = d_hidden                          # an int: a plain attribute

    def forward(self, x):                                 # (N, d_in) -> (N, d_out)
        return self.fc2(self.fc1(x).tanh()) * self.scale


net = TwoLayer(3, 5, 2)
for name, p in net.named_parameters():
    print(f"{name:12s} {str(tuple(p.shape)):8s} requires_grad={p.requires_grad}")

names = [name for name, _ in net.named_parameters()]
assert names == ["scale", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
assert list(net._modules) == ["fc1", "fc2"] and "d_hidden" not in net._parameters
assert count_parameters(net) == (3 * 5 + 5) + (5 * 2 + 2) + 2

# %% [markdown]
# `named_parameters()` walks the module tree depth first: the module's own
# Parameters, then each child's, under dotted paths. The optimizer, the checkpoint
# code and the counters all go through this walk. A forward and backward pass puts
# a `.grad` on every Parameter:

# %%
x = nanotie.tensor(rng.standard_normal((4, 3)))
net(x).sum().backward()
assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())
print("every parameter got a gradient of its own shape")

# %% [markdown]
# ## 2. Tying is aliasing
#
# A language model has an input embedding $E_\text{in}$ ($V \times D$: one row per
# token) and an output head $E_\text{out}$, also $V \times D$, that scores every token
# as $h E_\text{out}^\top$. *Tying* (Press & Wolf, 2017) uses one matrix for both:
# $E_\text{in} = E_\text{out} = E$.
#
# In code, tying is **one assignment**, after which both modules hold *the same
# Parameter object*. Nothing is copied. Below is the smallest model that has both
# matrices: look up a token's row, apply $\tanh$, and score the next token.

# %%
class TinyLM(Module):
    def __init__(self, V, D):
        super().__init__()
        self.emb = Embedding(V, D, dtype=f64)             # E_in   (V, D)
        self.head = Linear(D, V, bias=False, dtype=f64)   # E_out  (V, D)

    def forward(self, ids, targets):                      # ids, targets: (N,)
        h = self.emb(ids).tanh()                          # (N, D)
        return F.cross_entropy(self.head(h), targets)     # logits (N, V)


V, D = 7, 4
lm = TinyLM(V, D)
untied_count = count_parameters(lm)

lm.head.weight = lm.emb.weight                            # THE tie: one line

print(tie_report(lm))
assert lm.head.weight is lm.emb.weight                    # one object, two places
assert len(list(lm.parameters())) == 1                    # listed once
assert [n for n, _ in lm.named_parameters(remove_duplicate=False)] == [
    "emb.weight", "head.weight"]                          # reachable by both paths
assert tied_parameters(lm) == {"emb.weight": ["emb.weight", "head.weight"]}
assert untied_count - count_parameters(lm) == V * D       # exactly one matrix saved
print(f"parameters: untied {untied_count}, tied {count_parameters(lm)}")

# %% [markdown]
# `parameters()` compares Parameters by *identity* (`is`), not by value, so the tied
# matrix comes out once. Because of that, the optimizer holds one entry for it and
# `count_parameters` counts it once. `named_parameters(remove_duplicate=False)` lists
# every path that reaches it, and `tied_parameters` / `tie_report` are built on that
# list.
#
# ### Copying values is not tying
#
# A tempting mistake is to "tie" by copying: give the head a *new* Parameter with the
# embedding's values. At first the two look the same, but they are two objects. Each
# gets its own gradient (the lookup reaches only the rows of the tokens it saw, the
# head reaches every row), so one optimizer step moves them apart.

# %%
ids = np.array([0, 2, 2, 5, 1, 3])                        # token 2 appears twice
targets = np.array([2, 5, 1, 0, 3, 6])

copied = TinyLM(V, D)
copied.head.weight = Parameter(copied.emb.weight.data.copy())   # equal values, NOT a tie

assert np.array_equal(copied.head.weight.data, copied.emb.weight.data)
assert copied.head.weight is not copied.emb.weight
assert count_parameters(copied) == 2 * V * D and not tied_parameters(copied)

opt = AdamW(copied.parameters(), lr=0.01)
copied(ids, targets).backward()
opt.step()
drift = np.abs(copied.head.weight.data - copied.emb.weight.data).max()
print(f"after one step the copies differ by up to {drift:.4f}")
assert drift > 1e-3

# %% [markdown]
# ## 3. The gradient of a tied weight is a sum
#
# Write the loss with its two matrices as separate arguments, $\ell(E_\text{in},
# E_\text{out})$. The tied model computes $L(E) = \ell(E, E)$: $E$ reaches the loss
# along two paths. By the multivariable chain rule, the derivative along each path
# adds:
#
# $$\frac{\partial L}{\partial E}
#   = \frac{\partial \ell}{\partial E_\text{in}}\bigg|_{E_\text{in} = E_\text{out} = E}
#   + \frac{\partial \ell}{\partial E_\text{out}}\bigg|_{E_\text{in} = E_\text{out} = E}.$$
#
# For our model the two terms have simple forms. Write $p_n = \operatorname{softmax}(
# h_n E^\top)$ for the predicted distribution at position $n$ and $e_{y}$ for the
# one-hot vector of target $y$. The head term is
# $\frac{1}{N}\sum_n (p_n - e_{y_n})\, h_n^\top$ and touches every row of $E$. The
# lookup term is a scatter-add into the rows of the tokens that were looked up, so a
# row that no token used gets nothing from it.
#
# The engine knows nothing about tying. It only adds the gradients that arrive at the
# same node. To check the formula, we build an *untied twin*: two separate
# Parameters holding the same values. The tied gradient must equal the sum of the
# twin's two gradients.

# %%
E_values = rng.normal(0.0, 0.5, (V, D))

tied_lm = TinyLM(V, D)
tied_lm.head.weight = tied_lm.emb.weight
tied_lm.emb.weight.data = E_values.copy()

untied_lm = TinyLM(V, D)
untied_lm.emb.weight.data = E_values.copy()
untied_lm.head.weight.data = E_values.copy()

tied_lm(ids, targets).backward()
untied_lm(ids, targets).backward()

g_tied = tied_lm.emb.weight.grad
g_in, g_out = untied_lm.emb.weight.grad, untied_lm.head.weight.grad
assert np.allclose(g_tied, g_in + g_out)
assert not np.allclose(g_tied, g_in) and not np.allclose(g_tied, g_out)   # both matter
print("tied gradient == lookup gradient + head gradient: OK")

unused = sorted(set(range(V)) - set(ids.tolist()))
assert np.all(g_in[unused] == 0) and np.allclose(g_tied[unused], g_out[unused])
print(f"rows {unused} were never looked up: only the head trains them")

# %% [markdown]
# The last assert shows why tying helps rare tokens. A row that never appears as
# an input still gets a gradient from the output side, on every step.
#
# ### Exercise 5: the tied gradient by hand
#
# Write `my_tied_lm`: the same model in plain NumPy, forward and backward, with its one matrix
# $E$ used twice: $h = \tanh(E[\text{ids}])$, logits $= h E^\top$, the mean
# cross-entropy. `backward(g)` must return $\partial L/\partial E$ = the lookup's
# part + the head's part. The lookup's part is a scatter-add: a token that occurs
# twice in `ids` is two uses of its row (`np.add.at`).
#
# The check is exercise 5's checker, the same as `python -m nanotie exercise check 5`.
# It compares your loss and gradient with the engine's and runs `nanotie.gradcheck`;
# if your gradient holds only one use's part, or averages the two, it says so.

# %%
# ---- EXERCISE 5: your code here ----------------------------------------------------
def my_tied_lm(E, ids, targets):
    # Return (loss, backward), with backward(g) -> (dL/dE,): the lookup's part + the head's.
    raise NotImplementedError


# %%
from nanotie import exercises

my_tied_lm = exercises.get(5).check_in_notebook(my_tied_lm)

# %% [markdown]
# ## 4. A gradient check of a tiny tied GPT
#
# `nanotie.nn.GPT` ties its output head to its token embedding with
# `self.lm_head.weight = self.wte.weight` when `tie_embeddings=True` (the default).
# Is the gradient that `backward()` puts on that shared matrix right?
#
# `nanotie.gradcheck` checks a *function* of tensors. So we write the GPT's loss as a
# function of the tied matrix $E$ alone: the same three hooks as `GPT.forward`
# (`embed`, `block`, `head`), with $E$ passed in by hand at both of its uses. In
# float64, with weights moved away from GPT-2's tiny initialisation (a check on
# near-zero numbers proves little):

# %%
cfg = GPTConfig(vocab_size=16, context=8, d_model=8, n_layer=2, n_head=2)
nanotie.manual_seed(0)
gpt = GPT(cfg).double()
for p in gpt.parameters():
    p.data = p.data + rng.normal(0.0, 0.3, p.shape)

B, T = 2, 6
idx = rng.integers(0, cfg.vocab_size, (B, T))
tgt = rng.integers(0, cfg.vocab_size, (B, T))


def gpt_loss(E):
    """The tiny GPT's loss with its tied matrix E (V, d) passed in explicitly."""
    x = F.embedding(E, idx) + gpt.wpe(np.arange(T))       # use 1: rows of E  (B, T, d)
    for i in range(cfg.n_layer):
        x = gpt.block(i, x)
    logits = F.linear(gpt.ln_f(x), E)                     # use 2: h E^T      (B, T, V)
    return F.cross_entropy(logits, tgt)


E = nanotie.tensor(gpt.wte.weight.data.copy(), requires_grad=True)
_, loss = gpt(idx, tgt)
assert math.isclose(gpt_loss(E).item(), loss.item(), rel_tol=1e-12)   # same function

assert nanotie.gradcheck(gpt_loss, [E], name="tiny tied GPT")
print(f"gradcheck passed on all {E.numel()} entries of the tied matrix")

# %% [markdown]
# The check passed for the function. Now the model itself: its tied Parameter must
# carry exactly that gradient.

# %%
gpt_loss(E).backward()
loss.backward()
assert np.allclose(gpt.wte.weight.grad, E.grad, rtol=1e-10, atol=1e-14)
print("the GPT's tied weight has the gradient that gradcheck verified")

# %% [markdown]
# One more check, on the model directly, without rewriting anything. Because the two
# uses share one array, moving that array moves both uses at once. A central
# difference of the model's loss along a random direction $v$ must therefore match
# $\langle \nabla_E L, v \rangle$, the tied gradient projected on $v$:
#
# $$\frac{L(E + \epsilon v) - L(E - \epsilon v)}{2\epsilon}
#   \approx \langle \nabla_E L,\, v\rangle .$$

# %%
W, W0 = gpt.wte.weight, gpt.wte.weight.data.copy()
eps = 1e-6
for _ in range(3):
    v = rng.standard_normal(W.shape)
    W.data = W0 + eps * v
    plus = gpt(idx, tgt)[1].item()
    W.data = W0 - eps * v
    minus = gpt(idx, tgt)[1].item()
    W.data = W0.copy()
    numeric, analytic = (plus - minus) / (2 * eps), float((W.grad * v).sum())
    print(f"numeric {numeric:+.8f}   analytic {analytic:+.8f}")
    assert math.isclose(numeric, analytic, rel_tol=1e-6, abs_tol=1e-8)
assert gpt.lm_head.weight is W                             # still tied, of course

# %% [markdown]
# `nanotie.gradcheck_module` runs such checks on every Parameter of a model, in place:
# element by element for small ones, along random directions for large ones, each
# tied Parameter once. Papers' tests use it.

# %%
assert nanotie.gradcheck_module(gpt, lambda: gpt(idx, tgt)[1])
print("gradcheck_module passed on", len(list(gpt.parameters())), "unique parameters")

# %% [markdown]
# ## 5. One optimizer step moves a tied weight once
#
# An optimizer that listed the tied matrix twice would update it twice per step.
# nanotie's optimizers de-duplicate their parameters by identity, so a tied weight
# is stepped once, with its summed gradient $g = g_\text{in} + g_\text{out}$.
#
# AdamW's first step has a closed form. With $m_0 = v_0 = 0$, step 1 gives
# $m_1 = (1-\beta_1) g$ and $v_1 = (1-\beta_2) g^2$. After bias correction these
# are $\hat m = g$ and $\hat v = g^2$, so (with decoupled weight decay $\lambda$)
#
# $$E \leftarrow E\,(1 - \eta\lambda) - \eta\,\frac{g}{|g| + \epsilon}.$$
#
# Each entry moves by about $\eta$ against the sign of its gradient. We check the
# tied model from section 3 against this formula, with $g$ from its untied twin, and
# we hand the optimizer the tied weight twice, through both paths:

# %%
lr, wd, adam_eps = 0.01, 0.1, 1e-8
g = g_in + g_out                                           # from section 3
E_before = tied_lm.emb.weight.data.copy()

both_paths = [tied_lm.emb.weight, tied_lm.head.weight]     # the same object, twice
opt = AdamW(both_paths, lr=lr, weight_decay=wd, eps=adam_eps)
assert len(list(opt.parameters())) == 1                    # de-duplicated
opt.step()

want = E_before * (1 - lr * wd) - lr * g / (np.abs(g) + adam_eps)
assert np.allclose(tied_lm.emb.weight.data, want, rtol=1e-9, atol=1e-12)
step_size = np.abs(tied_lm.emb.weight.data - E_before * (1 - lr * wd))
print(f"largest move {step_size.max():.6f} (lr = {lr}); a double step would be ~{2 * lr}")
assert step_size.max() <= lr * (1 + 1e-9)
assert tied_lm.head.weight is tied_lm.emb.weight

# %% [markdown]
# ## 6. Checkpoints keep the tie
#
# `state_dict()` returns plain NumPy arrays by path. A tied weight is stored **once**,
# under the first path that reaches it, and the entry `"__ties__"` records the other
# paths as `"alias=name"`. `load_state_dict` reads that entry and **restores the
# tie**. Into a GPT built *without* the tie it refuses by default (the config would
# say one thing and the weights another); `retie=True` takes the checkpoint's tie and
# updates the config. Everything is a plain array, so
# `np.savez` writes it and `np.load(..., allow_pickle=False)` reads it back.

# %%
sd = gpt.state_dict()
print("ties:", sd["__ties__"].tolist())
assert "wte.weight" in sd and "lm_head.weight" not in sd
assert list(sd["__ties__"]) == ["lm_head.weight=wte.weight"]

with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "tiny_gpt.npz")
    np.savez(path, **sd)
    with np.load(path, allow_pickle=False) as z:
        loaded = {k: z[k] for k in z.files}

fresh = GPT(replace(cfg, tie_embeddings=False)).double()   # built UNTIED
assert fresh.lm_head.weight is not fresh.wte.weight
assert count_parameters(fresh) == count_parameters(gpt) + cfg.vocab_size * cfg.d_model

fresh.load_state_dict(loaded, retie=True)                  # take the checkpoint's tie
assert fresh.lm_head.weight is fresh.wte.weight            # the tie is back
assert fresh.config.tie_embeddings
assert count_parameters(fresh) == count_parameters(gpt)
assert np.array_equal(fresh(idx)[0].data, gpt(idx)[0].data)
print("loaded into an untied GPT: tie restored, same logits")

# %% [markdown]
# Restoring the tie is the important part. Had the loader copied the stored matrix
# into both places, it would have produced the untied copies of section 2, and they
# would drift apart as soon as training resumed.
#
# ## 7. Training the baseline GPT
#
# Now a real run: a byte-level GPT (vocabulary 256, one token per byte) with a tied
# embedding, trained on the English help pages that ship with Python
# (`pydoc_data.topics`). The last 10% of the text is held out for validation.
# `nanotie.train.train` runs AdamW with warmup and cosine decay, clips gradients,
# and evaluates every `eval_interval` steps. It reports **bits per byte**: the
# validation loss in nats divided by $\ln 2$ (one token is one byte here).
#
# Two reference points. Guessing uniformly over 256 bytes costs $\log_2 256 = 8$ bits,
# and a freshly initialised GPT is close to that. A *unigram* model, which predicts
# each byte from the training set's byte frequencies and ignores context, costs
#
# $$\text{bpb}_\text{unigram} = -\frac{1}{N_\text{val}} \sum_{n} \log_2 \hat p(x_n),
# \qquad \hat p(b) = \frac{\text{count}(b) + 1}{\sum_{b'} (\text{count}(b') + 1)}.$$
#
# The model is useful only if it beats this, that is, only if it has learned to use
# context.

# %%
train_ids, val_ids = data.train_val_split(data.prose_corpus(), val_fraction=0.1)
counts = np.bincount(train_ids, minlength=256) + 1.0
unigram_bpb = float(-np.log2(counts / counts.sum())[val_ids].mean())
print(f"{len(train_ids):,} training bytes, {len(val_ids):,} validation bytes; "
      f"unigram baseline {unigram_bpb:.3f} bits per byte")

if QUICK:   # seconds on two CPU cores
    model_cfg = GPTConfig(vocab_size=256, context=32, d_model=64, n_layer=2, n_head=4)
    train_cfg = TrainConfig(steps=150, batch_size=16, lr=3e-3, warmup_steps=10,
                            eval_interval=50, eval_batches=8)
else:       # a few minutes on two CPU cores
    model_cfg = GPTConfig(vocab_size=256, context=64, d_model=128, n_layer=4, n_head=4)
    train_cfg = TrainConfig(steps=400, batch_size=32, lr=3e-3, warmup_steps=40,
                            eval_interval=50, eval_batches=16)

nanotie.manual_seed(0)
model = GPT(model_cfg)
print(tie_report(model))
history = train(model, train_ids, val_ids, train_cfg, progress=False)
print(f"{history.step[-1]} steps in {history.seconds:.1f} s; "
      f"validation: {history.val_bpb[-1]:.3f} bits per byte")

# %%
bits = np.array(history.train_loss) / math.log(2)         # nats per byte -> bits per byte
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(history.step, bits, lw=1, alpha=0.6, label="training batch")
ax.plot(history.eval_step, history.val_bpb, "o-", label="validation")
ax.axhline(8.0, color="gray", ls=":", label="uniform over 256 bytes")
ax.axhline(unigram_bpb, color="gray", ls="--", label="unigram byte frequencies")
ax.set_xlabel("optimizer step")
ax.set_ylabel("bits per byte")
ax.set_title(f"Byte-level GPT, tied embedding ({count_parameters(model):,} parameters)")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# What the plot claims, checked. At initialisation the model predicts nearly uniformly:
# the GPT-2 initialisation makes the logits small, so the first loss is about $\ln 256$
# nats, or 8 bits. A little less, and that is the tie at work. The residual stream still
# holds the embedding $e_x$ of the byte just read, and the head scores byte $v$ by
# $\mathrm{LN}(h) \cdot e_v$, so the byte just read scores highest at most positions
# (checked below; about 1 above the mean logit in the full model): a fresh tied model
# already bets that a byte repeats, as a space after a space does, and a batch with many
# repeats can cost a tenth of a nat less than $\ln 256$. An untied head's rows have
# nothing to do with $e_x$; its first loss is a little above $\ln 256$. By the end, the
# validation loss is below the unigram baseline, so the model uses context.

# %%
print(f"first training loss {history.train_loss[0]:.3f} nats (ln 256 = {math.log(256):.3f})")
print(f"final validation {history.val_bpb[-1]:.3f} bpb vs unigram {unigram_bpb:.3f} bpb")
assert -0.25 < history.train_loss[0] - math.log(256) < 0.1     # below: repeated bytes
assert history.val_bpb[-1] < unigram_bpb - 0.1
assert history.val_bpb[-1] < history.val_bpb[0]
assert model.lm_head.weight is model.wte.weight           # still one matrix after training

# The bet on repeats, in a fresh model of the same shape: how often does the byte just
# read get the top logit, tied and untied?
x = train_ids[None, :model_cfg.context].astype(np.int64)      # (1, T)
for tie in (True, False):
    nanotie.manual_seed(0)
    with nanotie.no_grad():
        logits = GPT(replace(model_cfg, tie_embeddings=tie))(x)[0].data[0]    # (T, 256)
    top = (logits.argmax(-1) == x[0]).mean()
    print(f"fresh {'tied' if tie else 'untied'} model: the byte just read scores highest "
          f"at {top:.0%} of positions")
    assert top > 0.5 if tie else top < 0.2

# %% [markdown]
# A sample: the model continues a prompt one byte at a time, sampling each byte from
# its predicted distribution (temperature 0.8, keeping the 40 most likely bytes).
# After the quick run, expect letter soup: the model has learned which bytes are
# common and where spaces go, little more. After the full run, expect words and
# fragments that look like Python's documentation.

# %%
tok = data.ByteTokenizer()
prompt = "The "
out = model.generate(tok.encode(prompt)[None], 120 if QUICK else 400,
                     temperature=0.8, top_k=40, seed=0)
sample = tok.decode(out[0])
print(sample)
assert out.shape == (1, len(prompt) + (120 if QUICK else 400))
assert sample.startswith(prompt)

# %% [markdown]
# ## 8. A notebook exercise: share one block across layers
#
# Tying is not limited to embeddings. Layer sharing (ALBERT, Universal Transformers,
# and several of the papers in this library) reuses one transformer block at several
# depths. With modules, that is again one assignment: put the same `Block` object in
# two slots of `model.blocks`.
#
# Write `share_first_block(model)`: make every layer of `model` use the block
# `model.blocks[0]`, and return the model. Everything else follows from aliasing.
# The check cell verifies that:
#
# * every slot holds the same object, and the count drops by exactly
#   $(n_\text{layer} - 1)$ blocks' worth of parameters;
# * the shared block's gradient is the sum of the gradients of the layers of an
#   untied twin (same values in every block), as in section 3;
# * the loss is unchanged by sharing when every block held the same values anyway.
#
# %%
# ---- NOTEBOOK EXERCISE: your code here ---------------------------------------------
def share_first_block(model):
    # Make every slot of model.blocks hold model.blocks[0]; return the model.
    raise NotImplementedError


# %%
ex_cfg = GPTConfig(vocab_size=16, context=8, d_model=8, n_layer=3, n_head=2)
nanotie.manual_seed(1)
twin = GPT(ex_cfg).double()                               # untied: three blocks ...
for p in twin.parameters():
    p.data = p.data + rng.normal(0.0, 0.3, p.shape)
for i in range(1, ex_cfg.n_layer):                        # ... with equal values
    block_sd = twin.blocks[0].state_dict()
    twin.blocks[i].load_state_dict(block_sd)

shared = GPT(ex_cfg).double()
shared.load_state_dict(twin.state_dict())                 # same values everywhere
block_size = count_parameters(shared.blocks[0])
with exercises.skip_if_unwritten("share_first_block"):
    shared = share_first_block(shared)
    assert isinstance(shared, GPT), f"share_first_block must return the model, not {shared!r}"
    assert type(shared.blocks) is type(twin.blocks), (
        f"model.blocks is now a {type(shared.blocks).__name__}, which a Module does not "
        f"register: assign into its slots (model.blocks[i] = ...) instead")
    copies = [i for i, b in enumerate(shared.blocks) if b is not shared.blocks[0]]
    assert not copies, (f"slot(s) {copies} hold another object than model.blocks[0] (a "
                        f"copy has equal values, but it is not a tie)")
    assert count_parameters(twin) - count_parameters(shared) == (ex_cfg.n_layer - 1) * block_size

    loss_twin = twin(idx, tgt)[1]
    loss_shared = shared(idx, tgt)[1]
    assert math.isclose(loss_twin.item(), loss_shared.item(), rel_tol=1e-12)
    loss_twin.backward()
    loss_shared.backward()
    for name, p in shared.blocks[0].named_parameters():
        summed = sum(dict(b.named_parameters())[name].grad for b in twin.blocks)
        assert np.allclose(p.grad, summed, rtol=1e-10, atol=1e-14), name
    print(tie_report(shared).splitlines()[0])
    print(f"One block serves {ex_cfg.n_layer} layers; {block_size:,} parameters "
          f"instead of {ex_cfg.n_layer * block_size:,}, and its gradient is the sum over layers")

# %% [markdown]
# ## What we saw
#
# * Assigning a Parameter or a Module to an attribute registers it, and
#   `named_parameters()` walks the tree.
# * **Tying is aliasing.** `head.weight = emb.weight` makes one Parameter reachable
#   from two places. `parameters()` de-duplicates by identity, so the tied matrix is
#   counted once and stepped once. A copy of the values is a different Parameter,
#   and it drifts away after one step.
# * The gradient of a tied weight is the **sum** of the gradients of its uses: the
#   multivariable chain rule, carried out by the engine's single `+`. A
#   finite-difference check on a tiny float64 GPT confirms it.
# * Checkpoints store a tied weight once, with a `__ties__` table, and
#   `load_state_dict` restores the tie.
# * A byte-level GPT with a tied embedding learns to beat a unigram model within a
#   few dozen steps. Sharing a whole block across layers works the same way as
#   sharing a matrix.
#
# The paper notebooks build on this: each one ties something different (an embedding,
# a block, part of an adapter) and measures what it costs and what it saves.
