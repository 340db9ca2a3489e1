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
# # 08 · Dynamic layer tying: an agent decides which layers train
#
# Hay & Wolf (ICLR 2024, arXiv:2401.12819) let a small Q-learning agent rewire a
# transformer *while it trains*. Every few steps, for each layer $i$, the agent picks
# one of $i + 1$ actions: make layer $i$ a copy of an earlier layer $j < i$, or let it
# train on its own. A copy has no gradient and no optimizer state, so each copy saves
# memory; the agent is rewarded for a low perplexity, so it should keep independent
# only the layers that pay for themselves.
#
# The plan:
#
# 1. **The tying state** $s$ and the agent's action space.
# 2. **Copying versus sharing.** The authors' copy is *not* nanotie's usual tie: what
#    each does to gradients (checked by finite differences) and to memory.
# 3. **The optimizer's state follows the tying**: a copy holds no Adam moments.
# 4. **The Q-learning loop**: the network, $\varepsilon$-greedy, one TD update.
# 5. **Can the agent learn?** A synthetic reward with a known best policy; then the
#    **miniature experiment**: vanilla, dynamic tying, a random schedule and a fixed
#    pattern, same LM steps, over seeds.
# 6. **An exercise**: the trainable parameters, Adam bytes and training memory of a
#    tying state, with exercise 13's checker (`python -m nanotie exercise check 13`).
#
# Set `NANOTIE_QUICK=1` for a fast run (the test suite does).

# %%
import math
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import nanotie
from nanotie.gradcheck import gradcheck_module
from nanotie.nn import GPTConfig, count_parameters
from nanotie.nn.optim import AdamW, param_groups
from nanotie.papers.dynamic_tying import (DynamicTiedGPT, DynamicTyingConfig,
                                          SyntheticReward, TyingAgent, action_offset,
                                          chance_train_share, decay_to_floor, experiment,
                                          greedy_train_share, independent_layers,
                                          optimizer_state_bytes, q_output_size, root_of,
                                          sync_optimizer, trainable_formula,
                                          training_memory_bytes, with_action)
from nanotie.train import TrainConfig

QUICK = os.environ.get("NANOTIE_QUICK") == "1"
rng = np.random.default_rng(0)
out = os.path.join(tempfile.mkdtemp(prefix="nanotie-"), "dynamic-tying")   # section 5's runs
print("quick mode:", QUICK)

# %% [markdown]
# ## 1. The tying state and the action space
#
# The state is a vector $s \in \mathbb{Z}^L$ with $s_0 = 0$ and $s_i \le i$:
# $s_i = i$ means *layer $i$ trains*, $s_i = j < i$ means *layer $i$ is a copy of
# layer $j$*. A copy of a copy uses the weights at the end of its chain, its **root**
# $r(i)$. Training starts from $s = 0$: every layer a copy of layer 0.
#
# For layer $i$ the action $a \in \{0, \dots, i\}$ simply becomes the new $s_i$
# ($a = i$: train). One Q-network scores all layers' actions at once; its output has
# $1 + 2 + \dots + L = L(L+1)/2$ entries, and layer $i$ reads the slice that starts at
# $i(i+1)/2$:

# %%
L = 6
print("Q-network output size:", q_output_size(L))
for i in range(L):
    print(f"layer {i}: Q-values [{action_offset(i)}, {action_offset(i) + i + 1})"
          f"  actions: {['copy ' + str(j) for j in range(i)] + ['train']}")

s = (0, 1, 1, 3, 2, 5)
print("\nstate", s, "-> roots", [root_of(s, i) for i in range(L)],
      "| independent layers:", independent_layers(s))
assert [root_of(s, i) for i in range(L)] == [0, 1, 1, 3, 1, 5]
assert with_action(s, 4, 4) == (0, 1, 1, 3, 4, 5)       # layer 4 now trains

# %% [markdown]
# ## 2. Copying versus sharing
#
# nanotie ties weights by **aliasing**: two places hold the same `Parameter`, and the
# engine adds the gradients of both uses. The authors' copy is different. Layer $i$
# gets new Parameters that hold the **same arrays** as layer $j$'s, with
# `requires_grad=False`. So:
#
# * layer $i$ always computes with $W_j$, since the optimizer updates that array in place;
# * layer $i$ gets no gradient, and no optimizer ever sees it;
# * $W_j$'s gradient is the **partial derivative through layer $j$ alone**; what
#   layer $i$'s use would have contributed is dropped.
#
# `DynamicTiedGPT` has both: `mode="official"` (the copy) and `mode="shared"`
# (plain tying, where $\partial L/\partial W_j$ sums both uses). Here are both on a
# 3-layer model where layer 2 copies layer 1, in float64 with random weights:

# %%
CFG = GPTConfig(vocab_size=11, context=8, d_model=8, n_layer=3, n_head=2)
x_ids, y_ids = rng.integers(0, 11, (2, 8)), rng.integers(0, 11, (2, 8))


def tiny(mode, state):
    nanotie.manual_seed(0)
    m = DynamicTiedGPT(CFG, mode=mode, state=(0, 1, 2)).double()
    noise = np.random.default_rng(1)
    for p in m.parameters():
        p.data += noise.normal(0.0, 0.3, p.shape)      # in place, away from the tiny init
    m.set_tying(state)
    return m


official, shared = tiny("official", (0, 1, 1)), tiny("shared", (0, 1, 1))
# the same values with every layer independent: layer 2 holds its own copy of layer 1's
untied = tiny("official", (0, 1, 2))
for p1, p2 in zip(untied.blocks[1].parameters(), untied.blocks[2].parameters()):
    p2.data[...] = p1.data
w1, w2 = official.blocks[1].mlp.fc.weight, official.blocks[2].mlp.fc.weight
print("official: same Parameter?", w2 is w1, "| same array?", w2.data is w1.data,
      "| copy requires grad?", w2.requires_grad)
assert w2 is not w1 and w2.data is w1.data and not w2.requires_grad
assert shared.blocks[2].mlp.fc.weight is shared.blocks[1].mlp.fc.weight

# %% [markdown]
# Now the gradients. `untied` has the same values, but layer 2 owns a separate copy
# of them, so its layer-1 and layer-2 gradients are the two uses' parts. A gradient
# check confirms those parts by finite differences first.

# %%
def loss(m):
    return m(x_ids, y_ids)[1]


assert gradcheck_module(untied, lambda: loss(untied), max_elements=8, n_directions=3)
for m in (official, shared):
    m.zero_grad()
    loss(m).backward()

part1 = untied.blocks[1].mlp.fc.weight.grad       # through layer 1
part2 = untied.blocks[2].mlp.fc.weight.grad       # through layer 2
g_off = official.blocks[1].mlp.fc.weight.grad
g_sh = shared.blocks[1].mlp.fc.weight.grad
print("official grad == layer 1's part:        ", np.allclose(g_off, part1, rtol=1e-10))
print("shared grad   == layer 1's + layer 2's:  ", np.allclose(g_sh, part1 + part2, rtol=1e-10))
print("the copy's grad in official mode:         ", official.blocks[2].mlp.fc.weight.grad)
assert np.allclose(g_off, part1, rtol=1e-10, atol=1e-13)
assert np.allclose(g_sh, part1 + part2, rtol=1e-10, atol=1e-13)
assert official.blocks[2].mlp.fc.weight.grad is None
# The shared model's gradient IS the derivative w.r.t. the shared array ...
assert gradcheck_module(shared, lambda: loss(shared), max_elements=8, n_directions=3)
# ... the official one is not: nudging the array nudges both uses, the gradient sees one.
assert not gradcheck_module(official, lambda: loss(official), max_elements=8,
                            n_directions=3, raise_exception=False)

# %% [markdown]
# Both modes save the same memory: the copy's weights live in the root's array, and
# there is one gradient and one set of Adam moments per *independent* layer. With
# embeddings $P_E$ (token and position), the final norm $P_N$ and $P_B$ per block:
#
# $$P_\text{train} = P_E + P_N + \#\{i : s_i = i\}\, P_B .$$

# %%
def memory(m):
    opt = AdamW(param_groups(m, 0.1), lr=0.0)
    m.zero_grad()
    loss(m).backward()
    opt.step()
    return training_memory_bytes(m, opt)


for name, m in [("untied", untied), ("official copy", official), ("shared", shared)]:
    print(f"{name:14s} trainable {count_parameters(m):5d} (formula {trainable_formula(m):5d})"
          f"  memory {memory(m)}")
assert memory(official) == memory(shared)
assert memory(official)["total"] < memory(untied)["total"]

# %% [markdown]
# ## 3. The optimizer's state follows the tying
#
# AdamW keeps $m$ and $v$ per Parameter, keyed by identity. When layer 2 becomes a
# copy, its old Parameters leave the model, and `sync_optimizer` rebuilds the groups
# from the model's trainable Parameters and drops the moments of those that left.
# Untying goes the other way: nanotie gives the layer **fresh Parameters holding a
# copy of the values it computed with** and fresh (zero) moments. The authors'
# code instead turns gradients back on for arrays that stay shared. We avoid that: two
# sets of moments would then update one array.

# %%
m = tiny("official", (0, 1, 2))
opt = AdamW(param_groups(m, 0.1), lr=1e-2)


def lm_step(m, opt):
    opt.zero_grad()
    loss(m).backward()
    opt.step()


for _ in range(2):
    lm_step(m, opt)
print("independent: Adam holds", optimizer_state_bytes(opt), "bytes")
m.set_tying((0, 1, 1))
sync_optimizer(opt, m)
tied_bytes = optimizer_state_bytes(opt)
print("layer 2 tied: Adam holds", tied_bytes, "bytes")
assert all(id(p) not in opt.state for p in m.blocks[2].parameters())
m.set_tying((0, 1, 2))
sync_optimizer(opt, m)
lm_step(m, opt)
steps = {int(opt.state[id(p)]["step"]) for p in m.blocks[2].parameters()}
print("untied again: layer 2's moments are", steps, "step old; layer 1's",
      {int(opt.state[id(p)]["step"]) for p in m.blocks[1].parameters()})
assert steps == {1}

# %% [markdown]
# ## 4. The Q-learning loop
#
# $Q(s) = W_2\,\mathrm{relu}(W_1 s + b_1) + b_2$, with Linear(L, 128) and
# Linear(128, L(L+1)/2). For each layer $i = 1, \dots, L-1$ in an episode:
#
# 1. $a$ = argmax of layer $i$'s slice of $Q(s)$; with probability $\varepsilon$,
#    a uniform action instead;
# 2. $s' = s$ with $s_i = a$; rewire the layers and sync the optimizer;
# 3. a few language-model steps;
# 4. reward $r = -\exp(\text{CE})$ (minus the perplexity), clipped to $[-10, 10]$ in the
#    authors' code, on a random training batch there; the experiment uses one fixed
#    batch held out from training, so that rewards differ by what the actions did, not
#    by which text was drawn, and widens the clip to $[-100, 100]$ (a tiny byte-level
#    model's per-byte perplexity stays above 10 for a long time, where every reward
#    would be $-10$ and all actions would look alike);
# 5. one AdamW step on $\bigl(Q(s)_{i,a} - (r + 0.99 \max_{a'} Q(s')_{i,a'})\bigr)^2$.
#
# After each episode $\varepsilon \leftarrow \max(0.95\,\varepsilon, 0.01)$ in the
# authors' code; the experiment picks the decay so that $\varepsilon$ reaches its floor
# within its few dozen episodes (`decay_to_floor`). There is no replay buffer and no
# target network, as in the authors' code. Here is one decision
# by hand:

# %%
agent = TyingAgent(3, DynamicTyingConfig(), seed=0)
agent.epsilon = 0.0                                   # greedy, for the demonstration
s = (0, 1, 0)
q2 = agent.q_values(s, 2)
a = agent.act(s, 2)
s_next = with_action(s, 2, a)
y = agent.td_target(-12.0, s_next, 2)                 # -12 is clipped to -10
print("layer 2's Q-values:", q2.round(4), "-> action", a, "-> s' =", s_next)
print("TD target y =", round(y, 4), "= -10 + 0.99 *", round(agent.q_values(s_next, 2).max(), 4))
assert a == int(np.argmax(q2)) and math.isclose(y, -10 + 0.99 * agent.q_values(s_next, 2).max())
before = (q2[a] - y) ** 2
agent.update(s, 2, a, -12.0, s_next)
print("squared TD error before the step:", round(before, 3), " after:",
      round((agent.q_values(s, 2)[a] - agent.td_target(-12.0, s_next, 2)) ** 2, 3))

eps = [1.0]
for _ in range(119):
    eps.append(max(eps[-1] * 0.95, 0.01))
plt.figure(figsize=(5, 2.5))
plt.plot(eps)
plt.xlabel("episode")
plt.ylabel("epsilon")
plt.title("exploration schedule")
plt.show()

# %% [markdown]
# ### Can this agent learn at all?
#
# Before crediting an agent with a language model's perplexity, give it a reward whose
# best policy is known. `SyntheticReward` makes every trained layer lower the
# "perplexity" by 1, plus noise of 1: "train" is always right. After a few dozen
# episodes, for how many layers does the greedy action at the all-train state say
# "train"? A random choice says it for $1/(i+1)$ of layer $i$'s choices.
#
# With the authors' raw reward (about $-20$ here) and $\gamma = 0.99$, the TD fixed
# point is near $r / (1 - \gamma)$, a hundred times the reward, which a few hundred
# AdamW steps at $10^{-3}$ cannot reach, and the difference an action makes is lost in
# the reward's size. Standardising the reward by its running mean and std
# (`reward_norm="ema"`, not in the paper) makes the difference the signal. Three agents
# are a small sample, so the cell asserts only that the standardised reward beats
# chance; the two shares can come out close (in quick mode they tie), and the
# experiment's report compares them over ten agents.

# %%
L_syn, episodes = 6, 20 if QUICK else 40
shares = {}
for norm in ("none", "ema"):
    shares[norm] = []
    for seed in range(3):
        nanotie.manual_seed(seed)
        syn_agent = TyingAgent(L_syn, DynamicTyingConfig(
            reward_norm=norm, reward_clip=100, epsilon_decay=decay_to_floor(episodes * 2 // 3)),
            seed=seed)
        SyntheticReward(L_syn, seed=seed + 1).train(syn_agent, episodes)
        shares[norm].append(greedy_train_share(syn_agent, L_syn))
chance = chance_train_share(L_syn)
print(f"greedy 'train' share after {episodes} episodes (chance {chance:.2f}):")
for norm, v in shares.items():
    print(f"  reward_norm={norm!r:7s} seeds {np.round(v, 2)}  mean {np.mean(v):.2f}")
assert np.mean(shares["ema"]) > chance

# %% [markdown]
# ## 5. The miniature experiment
#
# A byte-level GPT on Python's own help text, cut into train | val | test. Four
# methods, the same language-model steps, batches and schedule, over several seeds:
#
# - **vanilla**: every layer trains (the same loop with no agent, which reproduces
#   `nanotie.train.train` bit for bit);
# - **dynamic**: the agent decides, starting from $s = 0$;
# - **random schedule**: the same decisions, each a uniform action, no learning;
# - **fixed pattern**: every layer trains for a third of the episodes, then every
#   layer is a copy of layer 0.
#
# The two controls tie as much as the agent does without learning anything: only if
# the agent beats them is its policy, not tying itself, what the figures show.
# `python -m nanotie reproduce dynamic-tying` runs the quick profile (6 layers,
# 400 steps, 3 seeds); in quick mode this notebook runs a smaller one. Every run is
# cached next to the output folder, so running the cell again retrains nothing.

# %%
profile = None
if QUICK:
    profile = dict(model=GPTConfig(vocab_size=256, context=32, d_model=32, n_layer=4,
                                   n_head=2),
                   train=TrainConfig(steps=48, batch_size=8, lr=3e-3, warmup_steps=6,
                                     eval_interval=24, eval_batches=4),
                   tying=DynamicTyingConfig(lm_steps_per_decision=2, reward_norm="ema",
                                            reward_clip=experiment.REWARD_CLIP),
                   modes=("official",), seeds=2, lrs=(3e-3,), grid_seeds=2,
                   floor_at=2 / 3, fixed_switch=1 / 3)
results = experiment.run(quick=True, out_dir=out, profile=profile)
table = results["table"]
for label, row in table.items():
    print(f"{label:20s} test ppl {row['test_ppl']['mean']:.3f} ± {row['test_ppl']['std']:.3f}"
          f"  trainable (end) {row['trainable_final']['mean']:,.0f}"
          f"  weights+grads+Adam MB {row['param_mb_final']['mean']:.3f}"
          f"  whole step MB {row['step_peak_mb']['mean']:.2f}")
for name, v in results["verdicts"].items():
    print(f"{name}: {v['outcome']} ({v['reason']})")

# %%
for name in ("test_ppl", "val_curves", "memory", "independent_layers", "tying_pattern"):
    img = plt.imread(os.path.join(out, name + ".png"))
    plt.figure(figsize=(10, 4))
    plt.imshow(img)
    plt.axis("off")
    plt.show()

# %% [markdown]
# What this shows, and what it does not. Trainable parameters and the parameter-side
# memory (weights, gradients, Adam) drop with every copy: any run that starts from
# $s = 0$ holds less on average than the vanilla one. The whole step's peak drops far
# less, because a copy still runs and keeps its activations, which at this width are
# most of the step. Whether the agent's *choices* matter is what the random schedule
# and the fixed pattern tell: at this scale the verdicts above say whether the gap is
# larger than the spread over seeds. The paper's runs last hundreds of episodes.

# %%
v, d = table["vanilla"], table["dynamic (official)"]
assert d["trainable_mean"]["mean"] < v["trainable_mean"]["mean"]
assert d["param_mb_mean"]["mean"] < v["param_mb_mean"]["mean"]
assert d["param_mb_final"]["mean"] <= v["param_mb_final"]["mean"]
for row in table.values():          # the whole step holds more than the parameter side
    assert row["step_peak_mb"]["mean"] > row["param_mb_final"]["mean"]

# %% [markdown]
# ## 6. Exercise: what does a tying state cost?
#
# Write `my_tying_memory(config, state, mode)`. It returns, for a `DynamicTiedGPT`
# with that state, three whole numbers: the trainable parameters, the bytes of
# AdamW's moments $m$ and $v$ (float32; leave out its 8-byte step counters), and the
# training memory, weights + gradients + $m$ and $v$, with every array stored once.
# Use the config alone, not the model. Does the mode change the answer?
#
# A pre-LN block has two LayerNorms ($2d$ each, $d$ without bias), the attention's
# fused qkv ($3d^2 + 3d$) and output projection ($d^2 + d$), and the MLP
# ($4d^2 + 4d$ and $4d^2 + d$); without bias the Linear layers lose their $+d$ terms.
# Outside the blocks: `wte` ($Vd$), `wpe` ($Td$), the final LayerNorm, and the head
# ($Vd$) unless it is tied to `wte`.
#
# The next cell checks it with exercise 13's checker, the same one as
# `python -m nanotie exercise check 13`: it builds real models for several states,
# configs and both modes, takes one AdamW step, and measures.

# %%
# ---- EXERCISE 13: your code here -----------------------------------------------------
def my_tying_memory(config, state, mode):
    # Return (trainable, adam_bytes, training_bytes), all ints.
    raise NotImplementedError


# %%
from nanotie import exercises

my_tying_memory = exercises.get(13).check_in_notebook(my_tying_memory)

# %% [markdown]
# With the checked function, the cost of this notebook's 6-layer model under a few
# states. Each copy saves one block's weights, gradients and both moments: 16 bytes
# per block parameter.

# %%
config = GPTConfig(vocab_size=256, context=32, d_model=32, n_layer=6, n_head=4)
block = DynamicTiedGPT(config).block_parameter_count()
states = [(0, 1, 2, 3, 4, 5), (0, 1, 1, 3, 3, 0), (0, 0, 2, 2, 4, 4), (0,) * 6]
costs = [my_tying_memory(config, state, "official") for state in states]
for state, (n, adam, total) in zip(states, costs):
    print(f"{str(state):20s} trainable {n:7d}   Adam {adam / 1024:6.1f} KiB   "
          f"training {total / 1024:7.1f} KiB")
for state, cost in zip(states, costs):
    copies = sum(1 for i, s in enumerate(state) if s != i)
    assert costs[0][2] - cost[2] == 16 * block * copies
