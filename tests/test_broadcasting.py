"""Property tests: broadcasting forward, un-broadcasting backward.

Broadcasting copies an input along new leading axes and along its size-1 axes; the
input's gradient is therefore the SUM of the gradients of all its copies (the tying
rule once more). The reference below computes that sum with an explicit loop over
every element of the broadcast result, independent of NumPy's reductions and of the
engine's ``unbroadcast``.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import nanotie as nt
from nanotie.autograd import unbroadcast
from nanotie.gradcheck import gradcheck

SETTINGS = settings(max_examples=30, deadline=None)
TWO_SHAPES = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                           min_side=1, max_side=3)
THREE_SHAPES = mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3,
                                             min_side=1, max_side=3)
SEEDS = st.integers(0, 2**32 - 1)


def sum_over_copies(g, shape):
    """Reference un-broadcast: each element of ``g`` (broadcast shape) is added to the
    element of ``shape`` it was copied from. Axes align on the right; an input axis of
    size 1 always reads its element 0."""
    out = np.zeros(shape)
    lead = g.ndim - len(shape)
    for pos in np.ndindex(g.shape):
        src = tuple(0 if n == 1 else i for i, n in zip(pos[lead:], shape))
        out[src] += g[pos]
    return out


def stretch(x, shape):
    """Reference broadcast of ``x`` to ``shape``, element by element."""
    out = np.empty(shape)
    lead = len(shape) - x.ndim
    for pos in np.ndindex(shape):
        out[pos] = x[tuple(0 if n == 1 else i for i, n in zip(pos[lead:], x.shape))]
    return out


# ------------------------------------------------------------------ unbroadcast


@SETTINGS
@given(shapes=TWO_SHAPES, seed=SEEDS)
def test_unbroadcast_sums_over_the_copies(shapes, seed):
    g = np.random.default_rng(seed).standard_normal(shapes.result_shape)
    for shape in shapes.input_shapes:
        got = unbroadcast(g, shape)
        assert got.shape == shape
        np.testing.assert_allclose(got, sum_over_copies(g, shape), rtol=1e-12, atol=1e-12)


@SETTINGS
@given(shapes=TWO_SHAPES, seed=SEEDS)
def test_expand_gradient_is_the_sum_of_the_weights(shapes, seed):
    """d/dx sum(broadcast_to(x) * w) = sum of w over the copies of each element."""
    rng = np.random.default_rng(seed)
    shape, target = shapes.input_shapes[0], shapes.result_shape
    x = nt.tensor(rng.standard_normal(shape), requires_grad=True)
    w = rng.standard_normal(target)
    y = x.expand(*target) if target else x
    np.testing.assert_array_equal(y.numpy(), stretch(x.numpy(), target))
    (y * nt.tensor(w)).sum().backward()
    assert x.grad.shape == shape
    np.testing.assert_allclose(x.grad, sum_over_copies(w, shape), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------- binary operators


def local_grads(op, A, B):
    """d op / dA and d op / dB at the broadcast arrays A, B (the textbook formulas)."""
    if op == "add":
        return np.ones_like(A), np.ones_like(B)
    if op == "sub":
        return np.ones_like(A), -np.ones_like(B)
    if op == "mul":
        return B, A
    if op == "div":
        return 1 / B, -A / B**2
    if op == "maximum":
        return (A > B).astype(float), (B > A).astype(float)
    raise ValueError(op)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum"])
@SETTINGS
@given(shapes=TWO_SHAPES, seed=SEEDS)
def test_binary_op_gradients_under_broadcasting(op, shapes, seed):
    rng = np.random.default_rng(seed)
    sa, sb = shapes.input_shapes
    a0 = rng.standard_normal(sa)
    b0 = rng.uniform(0.5, 2.0, sb) * rng.choice([-1, 1], sb)   # away from 0 for div
    w = rng.standard_normal(shapes.result_shape)

    a = nt.tensor(a0, requires_grad=True)
    b = nt.tensor(b0, requires_grad=True)
    out = getattr(nt, op)(a, b)
    assert out.shape == shapes.result_shape
    (out * nt.tensor(w)).sum().backward()

    A, B = stretch(a0, shapes.result_shape), stretch(b0, shapes.result_shape)
    da, db = local_grads(op, A, B)
    np.testing.assert_allclose(a.grad, sum_over_copies(w * da, sa), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.grad, sum_over_copies(w * db, sb), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fn", [
    lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b,
    lambda a, b: nt.maximum(a, b), lambda a, b: nt.minimum(a, b),
])
@settings(max_examples=15, deadline=None)
@given(shapes=TWO_SHAPES, seed=SEEDS)
def test_binary_op_gradients_match_finite_differences(fn, shapes, seed):
    rng = np.random.default_rng(seed)
    sa, sb = shapes.input_shapes
    # Values on a grid with spacing 0.25 and distinct offsets: no ties for max/min,
    # no zeros for div, and every kink far from the finite-difference step.
    a = nt.tensor(rng.integers(-8, 8, sa) * 0.25 + 0.1, requires_grad=True)
    b = nt.tensor(rng.integers(1, 8, sb) * 0.25 * rng.choice([-1, 1], sb) + 0.05,
                  requires_grad=True)
    assert gradcheck(fn, [a, b])


@SETTINGS
@given(shapes=THREE_SHAPES, seed=SEEDS)
def test_where_gradients_under_broadcasting(shapes, seed):
    """where(c, a, b): a gets w where c holds, b gets w elsewhere, each summed over
    its copies; the condition broadcasts too."""
    rng = np.random.default_rng(seed)
    sc, sa, sb = shapes.input_shapes
    cond = rng.random(sc) < 0.5
    a = nt.tensor(rng.standard_normal(sa), requires_grad=True)
    b = nt.tensor(rng.standard_normal(sb), requires_grad=True)
    w = rng.standard_normal(shapes.result_shape)
    out = nt.where(nt.tensor(cond), a, b)
    assert out.shape == shapes.result_shape
    (out * nt.tensor(w)).sum().backward()
    C = stretch(cond.astype(float), shapes.result_shape)
    np.testing.assert_allclose(a.grad, sum_over_copies(w * C, sa), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.grad, sum_over_copies(w * (1 - C), sb), rtol=1e-12,
                               atol=1e-12)
