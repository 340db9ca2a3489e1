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
# # 00 · Reverse-mode autograd, from the chain rule to weight tying
#
# Every model in nanotie trains through one small engine, `nanotie.autograd`. This
# notebook takes it apart, in the spirit of JAX's *Autodidax*: each claim we make is
# followed by code that checks it, and the test suite runs this notebook, so if a
# claim stops being true, a test fails.
#
# The plan:
#
# 1. **A scalar, by hand.** The chain rule on $f(x) = \tanh(xw + b)$, worked out on
#    paper and then by `backward()`.
# 2. **The graph.** What an op records (`grad_fn`, `_parents`, a backward closure),
#    and how `backward()` walks the graph in reverse topological order.
# 3. **A tensor used twice.** Its gradient is a *sum*. This one rule is why weight
#    tying needs no special code.
# 4. **Broadcasting** and its mirror image, un-broadcasting.
# 5. **Matmul's backward**, derived in index notation.
# 6. **Gradient checking** with central differences and a *random* upstream
#    gradient, including a deliberately wrong backward that the check catches.
# 7. **A plot** of finite-difference error against the step size.
# 8. **Exercises** whose answers are verified by `nanotie.gradcheck`.
#
# Set `NANOTIE_QUICK=1` in the environment for a faster run (the test suite does);
# this notebook is cheap either way.

# %%
import math
import os

import matplotlib.pyplot as plt
import numpy as np

import nanotie
from nanotie.autograd import make_result
from nanotie.gradcheck import gradcheck_report
from nanotie.nn import functional as F

QUICK = os.environ.get("NANOTIE_QUICK") == "1"
rng = np.random.default_rng(0)   # all the random data below comes from here
f64 = nanotie.float64            # float64 everywhere: we compare gradients closely


def leaf(values):
    """A float64 tensor that requires a gradient (an input we differentiate by)."""
    return nanotie.tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


print("quick mode:", QUICK)

# %% [markdown]
# ## 1. A scalar, by hand
#
# Take one neuron, $f(x) = \tanh(xw + b)$, and split it into steps, each of them a
# function we know how to differentiate:
#
# $$u = x w + b, \qquad y = \tanh(u).$$
#
# The chain rule says that the derivative of $y$ with respect to anything upstream is
# the derivative of $y$ with respect to $u$, times the derivative of $u$ with respect
# to that thing:
#
# $$\frac{\partial y}{\partial u} = 1 - \tanh^2(u) = 1 - y^2, \qquad
# \frac{\partial y}{\partial w} = (1 - y^2)\,x, \quad
# \frac{\partial y}{\partial x} = (1 - y^2)\,w, \quad
# \frac{\partial y}{\partial b} = 1 - y^2.$$
#
# *Reverse mode* organises this computation backwards. Write $\bar v$ for
# $\partial y / \partial v$, the "adjoint" of $v$. Start from $\bar y = 1$ and move
# from the output to the inputs, each step multiplying by one local derivative:
#
# $$\bar y = 1, \qquad \bar u = \bar y\,(1 - y^2), \qquad
# \bar w = \bar u\,x, \quad \bar x = \bar u\,w, \quad \bar b = \bar u.$$
#
# First, by hand, with plain Python floats:

# %%
x0, w0, b0 = 0.5, -1.5, 0.25

# forward pass: keep the intermediate values, the backward pass needs them
u0 = x0 * w0 + b0
y0 = math.tanh(u0)

# backward pass: adjoints, from the output back to the inputs
y_bar = 1.0
u_bar = y_bar * (1 - y0 ** 2)
w_bar, x_bar, b_bar = u_bar * x0, u_bar * w0, u_bar

print(f"y = {y0:.6f}   dy/dx = {x_bar:.6f}   dy/dw = {w_bar:.6f}   dy/db = {b_bar:.6f}")

# %% [markdown]
# Now the same with nanotie. We build the expression from tensors that require a
# gradient, call `backward()` on the scalar output, and read each input's `.grad`:

# %%
x, w, b = leaf(x0), leaf(w0), leaf(b0)
y = (x * w + b).tanh()
y.backward()

print(f"y = {y.item():.6f}   dy/dx = {float(x.grad):.6f}   dy/dw = {float(w.grad):.6f}"
      f"   dy/db = {float(b.grad):.6f}")
assert math.isclose(y.item(), y0)
assert math.isclose(float(x.grad), x_bar)
assert math.isclose(float(w.grad), w_bar)
assert math.isclose(float(b.grad), b_bar)

# %% [markdown]
# The engine did exactly the bookkeeping we did by hand. The rest of this notebook is
# about *how* it knows which local derivatives to multiply, and in which order.
#
# ## 2. The graph
#
# When an op runs on a tensor that requires a gradient, it records three things on
# its output:
#
# * `grad_fn`: the op's name (`None` for a *leaf*, a tensor you made yourself);
# * `_parents`: the op's inputs;
# * `_backward`: a closure that maps the gradient of the output, $\bar{\text{out}}$,
#   to one gradient per input. It *returns* them; it never writes into the inputs.
#
# Let us build the neuron again, one step per line, and look.

# %%
x, w, b = leaf(x0), leaf(w0), leaf(b0)
u = x * w
v = u + b
y = v.tanh()

names = {id(x): "x", id(w): "w", id(b): "b", id(u): "u", id(v): "v", id(y): "y"}


def show(t, depth=0):
    """Print the graph below t, one node per line, inputs indented."""
    print("    " * depth + f"{names[id(t)]}  <- {t.grad_fn or 'leaf'}")
    for p in t._parents:
        show(p, depth + 1)


show(y)
assert (y.grad_fn, v.grad_fn, u.grad_fn, x.grad_fn) == ("tanh", "add", "mul", None)
assert y._parents[0] is v and v._parents == (u, b) and u._parents == (x, w)

# %% [markdown]
# Each backward closure knows only its own op's local derivative. For example,
# `mul`'s closure returns $(\bar{\text{out}}\, w,\ \bar{\text{out}}\, x)$; we can call
# it directly with $\bar u = 1$:

# %%
dx_local, dw_local = u._backward(np.ones(()))
print("mul's backward at g = 1 returns", float(dx_local), float(dw_local))
assert math.isclose(float(dx_local), w0) and math.isclose(float(dw_local), x0)

# %% [markdown]
# To combine the local pieces, `backward()` must visit a node only after it has
# collected *all* of that node's adjoint, that is, after every node that consumes it.
# That is a **reverse topological order**: the output first, each node before its
# inputs. The engine computes it with a depth-first search:

# %%
from nanotie.autograd import _topological_order  # private: we peek under the hood

order = _topological_order(y)
print(" -> ".join(names[id(n)] for n in order))

position = {id(n): i for i, n in enumerate(order)}
for node in order:
    for p in node._parents:
        assert position[id(p)] > position[id(node)], "an input came before its consumer"

# %% [markdown]
# With the order in hand, the whole backward pass is a loop. Here it is in a few lines
# (the real one, `nanotie.autograd._run_backward`, adds un-broadcasting, frees the
# graph as it goes, and stores `.grad` on the leaves):

# %%
adjoint = {id(y): np.ones(())}               # ybar = 1
for node in order:
    if node._backward is None:               # a leaf: nothing further back
        continue
    for parent, g in zip(node._parents, node._backward(adjoint[id(node)])):
        adjoint[id(parent)] = adjoint.get(id(parent), 0.0) + g   # note the +

y.backward()                                 # the engine, for comparison
for t in (x, w, b):
    print(f"d y / d {names[id(t)]}:  our loop {float(adjoint[id(t)]):+.6f}"
          f"   engine {float(t.grad):+.6f}")
    assert math.isclose(float(adjoint[id(t)]), float(t.grad))

# %% [markdown]
# After `backward()` the engine frees the graph (large models would otherwise keep
# every intermediate array alive). A second backward through it fails, with a message
# that says what to do:

# %%
assert y._parents == ()
try:
    y.backward()
except RuntimeError as err:
    print("RuntimeError:", err)
    assert "second time" in str(err)
else:
    raise AssertionError("a second backward should have failed")

# %% [markdown]
# ## 3. A tensor used twice: the gradient is a sum
#
# Notice the `+` in our loop: `adjoint.get(id(parent), 0.0) + g`. When a tensor feeds
# two ops, two gradients arrive at it, and they **add**. This is the multivariable
# chain rule: if $L$ depends on $x$ through two paths $a(x)$ and $b(x)$, then
#
# $$\frac{dL}{dx} = \frac{\partial L}{\partial a}\frac{\partial a}{\partial x}
#                 + \frac{\partial L}{\partial b}\frac{\partial b}{\partial x}.$$
#
# The smallest example is $x \cdot x$. The `mul` op sees two inputs that happen to be
# the same tensor; its backward returns $(\bar{\text{out}}\,x,\ \bar{\text{out}}\,x)$,
# and the engine sums them into $2x$:

# %%
x = leaf(rng.standard_normal(5))
(x * x).sum().backward()
print("x       =", np.round(x.data, 4))
print("x.grad  =", np.round(x.grad, 4))
assert np.allclose(x.grad, 2 * x.data)

# %% [markdown]
# ### Weight tying is this rule, nothing more
#
# Tying means two places in a model hold *the same* Parameter object. The classic case
# is a language model whose token embedding matrix $E$ (shape $V \times D$) is also
# its output head: the input vectors are rows of $E$, and the logits are $h E^\top$.
#
# Because $E$ is one node with two outgoing edges, its gradient is the gradient
# through the lookup *plus* the gradient through the head. We can check that against
# an untied model: two separate copies $E_\text{in}$ and $E_\text{out}$ with the same
# values. The tied gradient must equal the sum of the two untied ones.

# %%
V, D = 6, 4
ids = nanotie.tensor(np.array([0, 2, 2, 5]))        # token 2 appears twice
targets = nanotie.tensor(np.array([2, 5, 1, 0]))
E_values = rng.standard_normal((V, D))


def tiny_lm(E_in, E_out):
    h = nanotie.embedding(E_in, ids).tanh()          # (N, D): look up, then a nonlinearity
    logits = h @ E_out.T                             # (N, V): score every token
    return F.cross_entropy(logits, targets)


E = leaf(E_values)                                   # tied: one matrix, used twice
tiny_lm(E, E).backward()

E_in, E_out = leaf(E_values), leaf(E_values)         # untied: two equal copies
tiny_lm(E_in, E_out).backward()

assert np.allclose(E.grad, E_in.grad + E_out.grad)
print("tied gradient == input-side gradient + output-side gradient: OK")
print("rows of E that the lookup touched:", np.flatnonzero(np.abs(E_in.grad).sum(1)))

# %% [markdown]
# The engine has no notion of "tying"; it only sums gradients that meet at a node.
# Look for the comment `# the tying sum` in `nanotie/autograd.py`. (The embedding
# lookup applies the same rule one level down: token 2 was looked up twice, so its
# row's gradient is the sum of both positions, a *scatter-add*.)
#
# ## 4. Broadcasting, and un-broadcasting
#
# Adding a bias $b \in \mathbb{R}^{D}$ to a batch $X \in \mathbb{R}^{B \times D}$
# *broadcasts* $b$: conceptually it is copied $B$ times, once per row,
# $Y_{ij} = X_{ij} + b_j$. Each copy is a use of $b$, so by the rule of section 3,
#
# $$\frac{\partial L}{\partial b_j} = \sum_{i=1}^{B} \frac{\partial L}{\partial Y_{ij}}.$$
#
# An op's backward returns a gradient with the *output's* shape $(B, D)$; the engine
# then **un-broadcasts** it to the input's shape $(D,)$, by summing over the axes
# that broadcasting added or stretched. Below, `G` plays the role of the upstream
# gradient $\partial L / \partial Y$: passing it to `backward(G)` is the same as
# differentiating $L = \sum_{ij} G_{ij} Y_{ij}$.

# %%
B_, D_ = 5, 3
X = leaf(rng.standard_normal((B_, D_)))
bias = leaf(rng.standard_normal(D_))
G = rng.standard_normal((B_, D_))

Y = X + bias                       # (B, D) + (D,) -> (B, D)
Y.backward(G)

print("bias.grad     :", np.round(bias.grad, 4))
print("G.sum(axis=0) :", np.round(G.sum(axis=0), 4))
assert bias.grad.shape == bias.shape
assert np.allclose(bias.grad, G.sum(axis=0))
assert np.allclose(X.grad, G)      # X was not broadcast: its gradient is G itself

# %% [markdown]
# Broadcasting also stretches axes of size 1. A per-row scale $s$ of shape $(B, 1)$
# multiplying $X$ is used once per column, so its gradient sums over the columns and
# *keeps* the size-1 axis:
#
# $$Y_{ij} = s_{i} X_{ij} \quad\Rightarrow\quad
# \frac{\partial L}{\partial s_{i}} = \sum_j G_{ij} X_{ij}.$$

# %%
X = leaf(rng.standard_normal((B_, D_)))
s = leaf(rng.standard_normal((B_, 1)))
(s * X).backward(G)

assert s.grad.shape == (B_, 1)
assert np.allclose(s.grad, (G * X.data).sum(axis=1, keepdims=True))
assert np.allclose(X.grad, G * s.data)
print("s.grad[:, 0] =", np.round(s.grad[:, 0], 4))

# %% [markdown]
# ### Exercise 1: write `unbroadcast` yourself
#
# Given a gradient `grad` of the broadcast (output) shape, return the gradient for an
# input of shape `shape`. Two rules, in this order:
#
# 1. broadcasting *prepends* axes until both shapes have as many dimensions: sum
#    those leading axes away;
# 2. an input axis of size 1 that was stretched: sum over it, keeping the axis
#    (`keepdims=True`).
#
# Write it in the cell below; the next cell checks it with exercise 1's checker, the
# same one as `python -m nanotie exercise check 1` (see `python -m nanotie exercise
# list`). It compares your sums with the engine's on several shapes, then makes your
# function the backward of a broadcast and runs `nanotie.gradcheck` on it. A wrong
# answer gets a message that names the mistake; one not written yet is reported, and
# the notebook goes on.

# %%
# ---- EXERCISE 1: your code here -------------------------------------------------
def my_unbroadcast(grad, shape):
    # Sum the leading axes away (rule 1), then each stretched size-1 axis (rule 2).
    raise NotImplementedError


# %%
from nanotie import exercises

my_unbroadcast = exercises.get(1).check_in_notebook(my_unbroadcast)

# %% [markdown]
# Here is what the checker says about a typical slip, a sum over a size-1 axis
# without `keepdims=True`:

# %%
slip = exercises.get(1).check(exercises.get(1).mistake("keepdims"))
print(slip.report())
assert not slip.passed and "keepdims=True" in slip.message

# %% [markdown]
# ## 5. Matmul's backward: $G B^\top$ and $A^\top G$
#
# Let $C = AB$ with $A \in \mathbb{R}^{M\times K}$, $B \in \mathbb{R}^{K \times N}$,
# and let $G = \partial L/\partial C$ be the upstream gradient, of shape $M\times N$.
# In index notation $C_{ij} = \sum_k A_{ik} B_{kj}$, so
# $\partial C_{ij} / \partial A_{ik} = B_{kj}$ and, summing over every output that
# $A_{ik}$ touches,
#
# $$\frac{\partial L}{\partial A_{ik}} = \sum_j G_{ij} B_{kj} = (G B^\top)_{ik},
# \qquad
# \frac{\partial L}{\partial B_{kj}} = \sum_i A_{ik} G_{ij} = (A^\top G)_{kj}.$$
#
# A mnemonic that is also a check: the gradient of $A$ must have $A$'s shape
# $M \times K$, and the only way to make that from $G$ ($M\times N$) and $B$
# ($K\times N$) is $G B^\top$. Likewise $A^\top G$ is the only $K \times N$ product.

# %%
M, K, N = 4, 3, 5
A = leaf(rng.standard_normal((M, K)))
Bm = leaf(rng.standard_normal((K, N)))
G = rng.standard_normal((M, N))

C = A @ Bm
C.backward(G)

assert A.grad.shape == (M, K) and Bm.grad.shape == (K, N)
assert np.allclose(A.grad, G @ Bm.data.T)
assert np.allclose(Bm.grad, A.data.T @ G)
print("A.grad == G @ B.T and B.grad == A.T @ G: OK")

# %% [markdown]
# In a linear layer, $B$ is a weight shared by every row of the batch, so
# $A^\top G = \sum_i A_{i:}^\top G_{i:}$ is, once again, a sum over uses.
#
# ## 6. Gradient checking
#
# How do we know a backward rule is right? We compare it with **finite differences**.
# By Taylor's theorem,
#
# $$f(x \pm \epsilon) = f(x) \pm \epsilon f'(x) + \tfrac{\epsilon^2}{2} f''(x)
#   \pm \tfrac{\epsilon^3}{6} f'''(x) + \dots$$
#
# so the *central* difference cancels the even terms:
#
# $$\frac{f(x+\epsilon) - f(x-\epsilon)}{2\epsilon} = f'(x) + O(\epsilon^2),$$
#
# whereas the one-sided $\bigl(f(x+\epsilon) - f(x)\bigr)/\epsilon$ is only
# $f'(x) + O(\epsilon)$. For a tensor input we perturb one element at a time.
#
# A tensor *output* needs one more idea. We reduce it to a scalar with a **random**
# upstream gradient $W$ of the output's shape,
#
# $$L(x) = \sum_i W_i\, f(x)_i,$$
#
# call `f(x).backward(W)` for the analytic gradient of $L$, and compare with central
# differences of $L$. Here are central differences in a few lines:

# %%
def central_differences(loss, x, eps=1e-6):
    """dloss/dx by central differences, one element at a time (x: float64 array)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        plus = loss(x)
        x[i] = old - eps
        minus = loss(x)
        x[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def compare_with_upstream(fn, x_values, W):
    """Does fn's backward agree with central differences of L = sum(W * fn(x))?"""
    x = leaf(x_values)
    fn(x).backward(W)
    numeric = central_differences(
        lambda v: float((fn(nanotie.tensor(v)).numpy() * W).sum()), x_values.copy())
    return np.allclose(x.grad, numeric, atol=1e-6)


x_values = rng.standard_normal((3, 4))
assert compare_with_upstream(nanotie.tanh, x_values, rng.standard_normal((3, 4)))
print("tanh's backward agrees with central differences")

# %% [markdown]
# `nanotie.gradcheck` does this properly: it copies the inputs to float64, draws the
# random upstream gradient, checks every input that requires a gradient (element by
# element for small ones, along random directions for large ones), and on failure
# names the function, the argument and the worst element. Let us run it on a few ops,
# including one with broadcasting and the fused `cross_entropy`:

# %%
X = leaf(rng.standard_normal((4, 3)))
bias = leaf(rng.standard_normal(3))
A, Bm = leaf(rng.standard_normal((4, 3))), leaf(rng.standard_normal((3, 5)))
Z = leaf(rng.standard_normal((4, 5)))
labels = nanotie.tensor(np.array([1, 0, 4, 4]))

checks = {
    "tanh": (nanotie.tanh, [X]),
    "matmul": (nanotie.matmul, [A, Bm]),
    "add (broadcast bias)": (nanotie.add, [X, bias]),
    "log_softmax (composite)": (F.log_softmax, [Z]),
    "softmax (fused)": (F.softmax, [Z]),
    "cross_entropy (fused)": (lambda logits: F.cross_entropy(logits, labels), [Z]),
}
for name, (fn, inputs) in checks.items():
    assert nanotie.gradcheck(fn, inputs, name=name)
    print(f"gradcheck passed: {name}")

for r in gradcheck_report(nanotie.matmul, [A, Bm]):
    print("  ", r.describe())

# %% [markdown]
# ### Catching a wrong backward
#
# Now a bug of the kind that really happens. Below is a custom op built with
# `make_result`, the same function every primitive in `nanotie.ops` uses. It
# transposes a matrix, and its backward **forgets to transpose the gradient back**:
# it returns `g` where it should return `g.T`. For a square matrix the shapes still
# match, so nothing crashes; the gradients are silently wrong.

# %%
def bad_transpose(a):
    """a^T, with a BUGGY backward: the correct one returns (g.T,)."""
    return make_result("bad_transpose", a.data.T, (a,), lambda g: (g,))


Sq = leaf(rng.standard_normal((3, 3)))
caught = None
try:
    nanotie.gradcheck(bad_transpose, [Sq])
except nanotie.GradcheckError as err:
    caught = err

assert caught is not None, "gradcheck should have caught the missing transpose"
assert "bad_transpose" in str(caught)
print(caught)

# %% [markdown]
# The message names the function and the argument, and gives the worst element with
# both values, so you know where to look.
#
# **Why the upstream gradient must be random.** Suppose we had used
# $W = \mathbf{1}$, i.e. checked $L = \sum_{ij} (A^\top)_{ij}$. Then
# $\partial L / \partial A = \mathbf{1}$, and the buggy backward returns
# $W = \mathbf{1}$ too: a matrix of ones is its own transpose, so the bug is
# invisible. The same holds for any backward that permutes or transposes its
# gradient. Both checks, side by side:

# %%
S_values = rng.standard_normal((3, 3))
ones_check = compare_with_upstream(bad_transpose, S_values, np.ones((3, 3)))
random_check = compare_with_upstream(bad_transpose, S_values, rng.standard_normal((3, 3)))
print(f"all-ones upstream: check passes? {ones_check}     (the bug slips through)")
print(f"random upstream:   check passes? {random_check}    (the bug is caught)")
assert ones_check and not random_check

# and the correct op passes both
good_transpose = lambda a: nanotie.transpose(a, 0, 1)  # noqa: E731
assert compare_with_upstream(good_transpose, S_values, np.ones((3, 3)))
assert compare_with_upstream(good_transpose, S_values, rng.standard_normal((3, 3)))
assert nanotie.gradcheck(good_transpose, [Sq])

# %% [markdown]
# ## 7. How small should $\epsilon$ be? A picture
#
# Finite differences have two errors pulling in opposite directions. *Truncation*
# error shrinks with $\epsilon$: like $\epsilon$ for the one-sided difference,
# $\epsilon^2$ for the central one. *Round-off* error grows as $\epsilon$ shrinks,
# because we divide the float64 rounding error of $f$ (about $10^{-16}$) by
# $\epsilon$. On a log-log plot this makes a V: slope 1 or 2 on the right, slope
# $-1$ on the left. The exact derivative comes from `backward()`.
#
# On the left panel: $\tanh$ and its derivative, obtained for a whole grid at once by
# calling `backward()` on a sum (each output depends on its own input only, so the
# gradient of the sum is the elementwise derivative).

# %%
grid = leaf(np.linspace(-3, 3, 121))
curve = grid.tanh()
curve.sum().backward()
assert np.allclose(grid.grad, 1 - np.tanh(grid.data) ** 2)

x_star = 0.3
t = leaf(x_star)
t.tanh().backward()
exact = float(t.grad)


def f(value):
    return nanotie.tensor(value, dtype=f64).tanh().item()


eps_grid = np.logspace(-13, -1, 25 if QUICK else 61)
one_sided_err = np.array([abs((f(x_star + e) - f(x_star)) / e - exact) for e in eps_grid])
central_err = np.array([abs((f(x_star + e) - f(x_star - e)) / (2 * e) - exact)
                        for e in eps_grid])

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.6))
ax0.plot(grid.data, curve.data, label=r"$\tanh(x)$")
ax0.plot(grid.data, grid.grad, label=r"$d\tanh/dx$ from backward()")
ax0.set_xlabel("x")
ax0.legend()
ax1.loglog(eps_grid, one_sided_err, "o-", ms=3, label=r"one-sided, $O(\epsilon)$")
ax1.loglog(eps_grid, central_err, "o-", ms=3, label=r"central, $O(\epsilon^2)$")
ax1.set_xlabel(r"step $\epsilon$")
ax1.set_ylabel("|finite difference - backward()|")
ax1.set_title(rf"derivative of tanh at x = {x_star}")
ax1.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The plot's claims, checked. On the right arm (truncation-dominated,
# $\epsilon \ge 10^{-3}$) the slopes are 1 and 2; the central difference's best
# $\epsilon$ sits near $\sqrt[3]{10^{-16}} \approx 5 \times 10^{-6}$, which is why
# `gradcheck` uses $\epsilon = 10^{-6}$ in float64; and far left, round-off makes
# both worse again.

# %%
right = eps_grid >= 1e-3
slope_one_sided = np.polyfit(np.log10(eps_grid[right]), np.log10(one_sided_err[right]), 1)[0]
slope_central = np.polyfit(np.log10(eps_grid[right]), np.log10(central_err[right]), 1)[0]
best_eps = eps_grid[np.argmin(central_err)]
print(f"slope, one-sided: {slope_one_sided:.2f}   slope, central: {slope_central:.2f}")
print(f"best central eps: {best_eps:.1e}   error there: {central_err.min():.1e}")
assert abs(slope_one_sided - 1) < 0.2 and abs(slope_central - 2) < 0.2
assert 1e-7 <= best_eps <= 1e-3
assert central_err[0] > 100 * central_err.min()     # the left arm of the V
assert central_err.min() < one_sided_err.min()

# %% [markdown]
# ## 8. A notebook exercise: the backward of `softplus`
#
# $$\operatorname{softplus}(a) = \log(1 + e^{a}), \qquad
# \frac{d}{da}\operatorname{softplus}(a) = \frac{e^{a}}{1 + e^{a}} = \sigma(a).$$
#
# The forward is given, computed stably as `logaddexp(0, a)` (no overflow for large
# $a$). Write the backward: given the upstream gradient `g`, return a tuple with the
# gradient for `a`. Keep it stable too: $1/(1 + e^{-a})$ overflows for very negative
# $a$; the identity $\sigma(a) = \tfrac12\bigl(1 + \tanh(a/2)\bigr)$ never does. Use
# `xp = nanotie.backend.xp_of(a)` (NumPy, or CuPy on a GPU) rather than `np`, as the
# library's ops do. The cell after yours makes it the backward of a new op, `softplus`.

# %%
# ---- NOTEBOOK EXERCISE: your code here -----------------------------------------
def softplus_backward(a, g):
    # Return (dL/da,) for out = softplus(a), given g = dL/dout (a and g are arrays).
    raise NotImplementedError


# %%
def softplus(a):
    """softplus(a) = log(1 + e^a).  d/da = sigmoid(a)."""
    xp = nanotie.backend.xp_of(a.data)

    def backward(g):
        grads = softplus_backward(a.data, g)
        assert isinstance(grads, tuple) and len(grads) == 1, (
            f"softplus_backward must return a tuple of exactly one gradient, (grad_a,); "
            f"it returned a {type(grads).__name__}")
        return grads

    return make_result("softplus", xp.logaddexp(0, a.data), (a,), backward)


# %% [markdown]
# The check: `gradcheck` on its own and inside a small composite with broadcasting
# (the engine un-broadcasts for you), agreement with `nanotie.sigmoid`, and the right
# gradients at extreme inputs, with no overflow on the way.

# %%
with exercises.skip_if_unwritten("softplus_backward"):
    a = leaf(rng.standard_normal((4, 5)) * 3)
    scale = leaf(rng.standard_normal(5))
    assert nanotie.gradcheck(softplus, [a], name="softplus")
    assert nanotie.gradcheck(lambda a, s: softplus(a * s).sum(dim=0), [a, scale],
                             name="softplus composite")

    a.zero_grad()
    softplus(a).sum().backward()
    assert np.allclose(a.grad, nanotie.sigmoid(a).data)

    extreme = leaf([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    with np.errstate(over="raise"):      # an overflow is an error here, not a warning
        softplus(extreme).sum().backward()
    assert np.allclose(extreme.grad, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-12), (
        f"at a = {extreme.data} the gradient is sigmoid(a) = [0, 0, 0.5, 1, 1], yours "
        f"{extreme.grad} (does exp overflow? 0.5 * (1 + tanh(a / 2)) never does)")
    print("softplus backward passes gradcheck")

# %% [markdown]
# ## What we saw
#
# * Reverse mode is the chain rule evaluated from the output back, one local
#   derivative per op; each op's backward *returns* the gradients for its inputs.
# * The engine walks the recorded graph in reverse topological order, so a node is
#   processed only once all of its adjoint has arrived.
# * Gradients that meet at a node **add**. That covers $x \cdot x$, broadcasting
#   (un-broadcasting is a sum over the copies), a weight shared across a batch, a
#   repeated token in an embedding lookup, and weight tying: a tied weight's gradient
#   is the sum of the gradients of its uses, with no special code.
# * Gradient checks need a *random* upstream gradient and central differences in
#   float64; an all-ones upstream would have let a transposed gradient through.
#
# Next: `01_nn_and_tying`, where these tensors become modules, and tying becomes one aliasing
# line. More exercises, each with a checker that says what is wrong: the matmul,
# softmax-cross-entropy and layer_norm backwards (`python -m nanotie exercise list`).
