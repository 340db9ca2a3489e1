"""The engine's behaviour: tying sums, accumulation, graph lifetime, grad modes, dtypes.

The heart of it is the tying rule: a tensor used twice is ONE node with two outgoing
edges, so its gradient is the SUM of what each use contributes. We check that by
comparing against untied copies (two separate leaves with the same values) whose
gradients we add ourselves, and, where it is short, against the formula.
"""

import re

import numpy as np
import pytest

import nanotie as nt
from nanotie.nn import functional as F


def leaf(array, dtype=np.float64):
    """A fresh leaf that requires grad, holding a private copy of ``array``."""
    return nt.tensor(np.array(array, dtype=dtype), requires_grad=True)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ----------------------------------------------------------------- the tying rule


def test_square_by_self_multiplication_is_sum_of_both_uses(rng):
    """x * x: d/dx = x + x (one term per use), not x."""
    x0 = rng.standard_normal((3, 4))
    w = rng.standard_normal((3, 4))                        # a random upstream gradient

    x = leaf(x0)
    (x * x * nt.tensor(w)).sum().backward()

    a, b = leaf(x0), leaf(x0)                              # the untied copies
    (a * b * nt.tensor(w)).sum().backward()

    np.testing.assert_allclose(x.grad, a.grad + b.grad, rtol=1e-12)
    np.testing.assert_allclose(x.grad, 2 * x0 * w, rtol=1e-12)   # the formula


def test_weight_used_by_two_matmuls(rng):
    """y = (x @ W) @ W: W's gradient is the sum of both matmuls' contributions."""
    x0, W0 = rng.standard_normal((5, 4)), rng.standard_normal((4, 4))
    w = rng.standard_normal((5, 4))

    W = leaf(W0)
    ((nt.tensor(x0) @ W @ W) * nt.tensor(w)).sum().backward()

    W1, W2 = leaf(W0), leaf(W0)
    ((nt.tensor(x0) @ W1 @ W2) * nt.tensor(w)).sum().backward()

    np.testing.assert_allclose(W.grad, W1.grad + W2.grad, rtol=1e-12)
    # The formula, in NumPy: d/dW1 = x^T (w W^T), d/dW2 = (x W)^T w.
    expected = x0.T @ (w @ W0.T) + (x0 @ W0).T @ w
    np.testing.assert_allclose(W.grad, expected, rtol=1e-10)


def _tiny_lm_loss(E_in, E_out, ids, targets):
    """Embed tokens with E_in (V, D) and score the vocabulary with the head E_out.T."""
    h = nt.embedding(E_in, ids)                            # (T, D)
    logits = h @ E_out.T                                   # (T, V)
    return F.cross_entropy(logits, targets)


def test_embedding_tied_to_output_head(rng):
    """The classic tie (Press & Wolf): the input embedding E is also the output head."""
    E0 = rng.standard_normal((7, 3))
    ids = nt.tensor([0, 3, 3, 6, 1])                       # a repeated token on purpose
    targets = nt.tensor([3, 3, 0, 2, 6])

    E = leaf(E0)
    _tiny_lm_loss(E, E, ids, targets).backward()

    E_in, E_out = leaf(E0), leaf(E0)
    _tiny_lm_loss(E_in, E_out, ids, targets).backward()

    # Both uses contribute something, so the sum is a real test of the tie.
    assert np.abs(E_in.grad).max() > 0 and np.abs(E_out.grad).max() > 0
    np.testing.assert_allclose(E.grad, E_in.grad + E_out.grad, rtol=1e-12, atol=1e-15)


def test_tensor_used_by_many_consumers_gets_every_share(rng):
    """Fan-out to k different ops sums k contributions (and the engine's in-place
    accumulation buffer does not leak into another tensor)."""
    x0 = rng.standard_normal(4)
    x = leaf(x0)
    (x * 2 + x * 3 + x.exp() + x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 + 3 + np.exp(x0) + 1, rtol=1e-12)


# ----------------------------------------------------- accumulation and lifetime


def test_gradients_accumulate_across_backward_calls(rng):
    x0 = rng.standard_normal(5)
    x = leaf(x0)
    (x * x).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x0 + 3.0, rtol=1e-12)
    x.zero_grad()
    assert x.grad is None


def test_an_input_whose_backward_gives_none_gets_no_gradient():
    """An op may return None for an input (PyTorch: no gradient flows there): that
    input's grad stays None, on a leaf and through a non-leaf, and the other inputs
    still get theirs."""
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    h = a * 2.0                                          # a non-leaf that gets nothing
    out = nt.autograd.make_result("first_ignored", h.data + b.data + a.data, (h, b, a),
                                  lambda g: (None, g, None))
    out.sum().backward()
    assert a.grad is None
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])


@pytest.mark.parametrize("bad_shape", [(2,), (3, 1), (), (2, 4)])
def test_a_backward_rule_returning_the_wrong_shape_is_named(bad_shape):
    """A hand-written backward (a learner's exercise) that returns a gradient the
    engine cannot un-broadcast to its input's shape fails at once, naming the op, the
    input and both shapes, instead of leaving a wrong-shaped .grad."""
    a, b = leaf([[1.0, 2.0, 3.0]] * 2), leaf([1.0, 2.0, 3.0])
    out = nt.autograd.make_result("my_op", a.data + b.data, (a, b),
                                  lambda g: (g, np.ones(bad_shape)))
    with pytest.raises(nt.autograd.ShapeError,
                       match=r"'my_op'.*input 1 .*shape \(.*\).*shape \(3,\)"):
        out.sum().backward()
    assert b.grad is None


def test_non_leaf_grad_is_kept_only_with_retain_grad(rng):
    x = leaf(rng.standard_normal(3))
    h = x * 2.0
    (h * h).sum().backward()
    assert h.grad is None and not h.is_leaf
    assert x.grad is not None

    x = leaf([1.0, -2.0, 0.5])
    h = (x * 2.0).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * np.array([2.0, -4.0, 1.0]))   # d(h^2)/dh = 2h


def test_graph_is_freed_after_backward():
    x = leaf([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_shared_subgraph_is_freed_too():
    """A second loss that reuses part of a freed graph fails clearly as well."""
    x = leaf([1.0, 2.0])
    h = x * x
    h.sum().backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        (h * 3.0).sum().backward()


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * (2 * np.array([1.0, 2.0])))


def test_deep_graph_does_not_hit_the_recursion_limit():
    """5000 chained adds: far deeper than Python's default recursion limit (1000)."""
    x = leaf(1.5)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.backward()
    assert x.grad == 1.0
    np.testing.assert_allclose(y.item(), 5001.5)


# ---------------------------------------------------------------------- grad modes


def test_no_grad_records_nothing():
    x = leaf([1.0, 2.0])
    with nt.no_grad():
        assert not nt.is_grad_enabled()
        y = x * 2 + 1
    assert nt.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf


def test_enable_grad_inside_no_grad():
    x = leaf([1.0, 2.0])
    with nt.no_grad():
        with nt.enable_grad():
            y = x * 2
        z = x * 2
    assert y.requires_grad and y.grad_fn == "mul"
    assert not z.requires_grad


def test_no_grad_as_decorator_and_restored_after_an_error():
    @nt.no_grad()
    def double(t):
        return t * 2

    assert not double(leaf([1.0])).requires_grad
    with pytest.raises(ZeroDivisionError):
        with nt.no_grad():
            1 / 0
    assert nt.is_grad_enabled()


def test_detach_shares_values_but_cuts_the_graph():
    x = leaf([1.0, -3.0])
    d = x.detach()
    assert not d.requires_grad and d.grad_fn is None
    assert np.shares_memory(d.data, x.data)
    (d * x).sum().backward()                 # only the second factor is differentiated
    np.testing.assert_allclose(x.grad, [1.0, -3.0])


def test_requires_grad_on_a_non_leaf_raises():
    y = leaf([1.0]) * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(True)


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="floating-point"):
        nt.tensor([1, 2, 3], requires_grad=True)
    with pytest.raises(TypeError, match="int64"):
        nt.tensor([1, 2, 3]).requires_grad_()


@pytest.mark.parametrize("update", ["+=", "-=", "*=", "/="])
def test_in_place_arithmetic_on_a_trainable_leaf_is_refused(update):
    """PyTorch's manual step, ``p -= lr * p.grad`` under no_grad, would rebind the loop
    variable and leave every Parameter unchanged without a word."""
    from nanotie.nn import Linear
    model = Linear(3, 2)
    model(nt.randn(4, 3)).sum().backward()
    before = [p.numpy().copy() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=re.escape(f"'{update}' on a leaf tensor that")):
        with nt.no_grad():
            for p in model.parameters():
                exec(f"p {update} 0.1 * p.grad")
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), b)
    total = 0.0                   # accumulating a loss, or a constant, still works
    for _ in range(2):
        total += leaf([1.0]).sum()
    c = nt.tensor([1.0])
    c *= 3
    assert total.grad_fn == "add" and c.tolist() == [3.0]


def test_backward_on_a_tensor_without_grad_says_why():
    with pytest.raises(RuntimeError, match="does not require grad"):
        nt.tensor([1.0, 2.0]).sum().backward()


# ------------------------------------------------------------------ dtype discipline


def test_float32_stays_float32_through_a_small_mlp():
    """No op silently promotes float32 to float64, Python-scalar arithmetic included."""
    nt.manual_seed(0)
    x = nt.randn(8, 5)
    y = nt.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    W1 = nt.randn(16, 5, requires_grad=True)
    b1 = nt.zeros(16, requires_grad=True)
    W2 = nt.randn(3, 16, requires_grad=True)
    g = nt.ones(16, requires_grad=True)

    steps = []
    h = F.linear(x, W1, b1); steps.append(h)
    h = F.gelu(h); steps.append(h)
    h = F.layer_norm(h, 16, weight=g); steps.append(h)
    h = h * 0.5 + 1.0; steps.append(h)
    h = 2.0 - h / 3; steps.append(h)
    h = h ** 2; steps.append(h)
    h = F.rms_norm(h, 16); steps.append(h)
    logits = F.linear(h.relu(), W2); steps.append(logits)
    p = F.softmax(logits); steps.append(p)
    loss = F.cross_entropy(logits, y) + 1e-3 * (W1 * W1).sum() + 0.1 * p.mean()
    steps.append(loss)
    loss.backward()

    for i, t in enumerate(steps):
        assert t.dtype == np.float32, f"step {i} ({t.grad_fn}) is {t.dtype}"
    for name, p in dict(W1=W1, b1=b1, W2=W2, g=g).items():
        assert p.grad is not None and p.grad.dtype == np.float32, name


def test_numpy_float64_scalar_does_not_promote():
    """NumPy 2 would turn float32 * np.float64(2) into float64; nanotie treats NumPy
    scalars like Python scalars."""
    x = nt.tensor([1.0, 2.0])
    assert (x * np.float64(2.0)).dtype == np.float32
    assert (np.float64(2.0) + x).dtype == np.float32


# ------------------------------------------------------ aliasing of leaf gradients


def test_a_0d_leaf_gets_an_array_as_its_gradient():
    """NumPy gives a 0-d result as a scalar, which cannot be updated in place (an
    optimizer's p.grad *= ... would rebind a name and change nothing)."""
    x = leaf(2.0)
    for expected in (4.0, 8.0):               # the first backward, then accumulation
        (x * x).backward()
        assert isinstance(x.grad, np.ndarray) and x.grad.shape == ()
        assert x.grad.item() == expected


def test_leaf_grads_of_one_op_do_not_alias():
    """add's backward returns the SAME array for both inputs; each leaf must get its
    own, or editing one grad in place would silently change the other."""
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).backward(np.array([1.0, 1.0]))
    a.grad += 10.0
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])
    assert not np.shares_memory(a.grad, b.grad)


def test_leaf_grad_does_not_alias_the_callers_gradient():
    a = leaf([1.0, 2.0])
    upstream = np.array([5.0, 6.0])
    (a * 1.0).backward(upstream)
    a.grad *= 0
    np.testing.assert_array_equal(upstream, [5.0, 6.0])


@pytest.mark.parametrize("through", ["reshape", "expand", "sum", "transpose"])
def test_leaf_reached_through_a_view_gets_a_writeable_grad_of_its_own(through):
    """Movement ops hand back views (reshape, transpose) or read-only broadcasts
    (sum, expand); the leaf's .grad must still be a private, writeable array."""
    a = leaf(np.ones((2, 3)))
    other = leaf(np.ones((3, 2)))
    if through == "reshape":
        y = a.reshape(3, 2) + other
    elif through == "expand":
        y = a.reshape(1, 2, 3).expand(4, 2, 3).reshape(4, 3, 2) + other
    elif through == "sum":
        y = a.sum() + other
    else:
        y = a.T + other
    y.backward(np.arange(6.0).reshape(3, 2) if through != "expand"
               else np.arange(24.0).reshape(4, 3, 2))
    assert a.grad.flags.writeable and a.grad.flags.owndata
    assert not np.shares_memory(a.grad, other.grad)
    before = other.grad.copy()
    a.grad += 1.0                                          # must not raise, nor leak
    np.testing.assert_array_equal(other.grad, before)


# --------------------------------------------------------------------- anomaly mode


def test_detect_anomaly_is_off_by_default():
    assert not nt.is_anomaly_enabled()
    with np.errstate(invalid="ignore"):
        y = nt.log(nt.tensor([-1.0]))                      # NaN, and no error
    assert np.isnan(y.item())


def test_detect_anomaly_names_the_forward_op():
    x = leaf([1.0, -1.0])
    with nt.detect_anomaly():
        assert nt.is_anomaly_enabled()
        with np.errstate(invalid="ignore"), pytest.raises(nt.AnomalyError,
                                                          match=r"forward.*'log'.*nan"):
            nt.log(x)
    assert not nt.is_anomaly_enabled()


def test_detect_anomaly_names_the_backward_op():
    """sqrt(0) = 0 is finite, but its derivative 1/(2 sqrt 0) is infinite."""
    x = leaf([0.0, 4.0])
    with nt.detect_anomaly():
        loss = (nt.sqrt(x) * 3.0).sum()                    # the forward is fine
        with np.errstate(divide="ignore"), pytest.raises(nt.AnomalyError,
                                                         match=r"backward.*'sqrt'.*inf"):
            loss.backward()


# ---------------------------------------------------- constants and conversions


@pytest.mark.parametrize("compare", [
    lambda x: x < 0, lambda x: x >= 0, lambda x: x.gt(0.5), lambda x: x.eq(x),
    lambda x: x.ne(1.0), lambda x: x.le(x * 2),
])
def test_comparisons_carry_no_gradient(compare):
    x = leaf([-1.0, 0.0, 2.0])
    out = compare(x)
    assert out.dtype == np.bool_
    assert not out.requires_grad and out.grad_fn is None


def test_item_and_numpy():
    t = nt.tensor([[2.5]])
    assert isinstance(t.item(), float) and t.item() == 2.5
    with pytest.raises(ValueError, match=r"one element.*\(2,\)"):
        nt.tensor([1.0, 2.0]).item()
    arr = nt.tensor([[1.0, 2.0], [3.0, 4.0]]).numpy()
    assert isinstance(arr, np.ndarray)
    np.testing.assert_array_equal(arr, [[1.0, 2.0], [3.0, 4.0]])


def test_truth_value_of_a_one_element_tensor_and_the_ambiguous_rest():
    """``if loss < best:`` works as in PyTorch; the fallback on len() used to fail on a
    0-d tensor and to call tensor([0.0]) true."""
    assert nt.tensor(1.0) < 2.0 and not nt.tensor(3.0) < 2.0
    assert not nt.tensor([0.0]) and nt.tensor([[5.0]])
    for shape in [(2,), (0,), (2, 3)]:
        with pytest.raises(ValueError, match=rf"shape \({shape[0]},.*ambiguous.*\.item\(\)"):
            bool(nt.zeros(*shape))


def test_numpy_reads_a_tensors_values_but_its_ufuncs_refuse_tensors():
    """np.asarray(t) used to make an object array, and np.mean([loss1, loss2]) failed."""
    t = nt.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    arr = np.asarray(t)
    assert arr.dtype == np.float32 and arr.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    np.array(t)[0, 0] = 9.0                             # np.array copies, as for an array
    assert t.numpy()[0, 0] == 1.0
    assert np.mean([nt.tensor(1.0), nt.tensor(3.0)]) == 2.0 and float(nt.tensor([2.5])) == 2.5
    with pytest.raises(TypeError, match="Tensor"):      # use t.exp(): np.exp drops the graph
        np.exp(t)
    # An array on the left still gives a recorded Tensor op (Tensor.__radd__ etc.).
    a = np.ones((2, 2), dtype=np.float32)
    for result in (a + t, a - t, a * t, a / t, a @ t, np.float64(2.0) * t):
        assert isinstance(result, nt.Tensor) and result.requires_grad
        assert result.dtype == np.float32


def test_to_float64_is_a_differentiable_cast():
    x = nt.tensor([1.0, 2.0], requires_grad=True)          # float32
    y = x.to(np.float64)
    assert y.dtype == np.float64 and y.grad_fn == "cast"
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32                      # cast back for the leaf
    np.testing.assert_allclose(x.grad, [2.0, 4.0])
    assert x.to(np.float32) is x                           # no-op cast


def test_a_cast_to_integers_carries_no_gradient():
    """As in PyTorch: integers cannot require grad, so the cast ends the graph."""
    y = leaf([1.5, -2.5]).to(np.int64)
    assert y.dtype == np.int64 and not y.requires_grad and y.grad_fn is None


def test_tensor_default_dtypes():
    assert nt.tensor(1.5).dtype == np.float32
    assert nt.tensor([1.0, 2.0]).dtype == np.float32
    assert nt.tensor([[1, 2], [3, 4]]).dtype == np.int64
    assert nt.tensor(7).dtype == np.int64
    assert nt.tensor([True, False]).dtype == np.bool_
    # An array keeps its own dtype; an explicit dtype wins.
    assert nt.tensor(np.zeros(2, dtype=np.float64)).dtype == np.float64
    assert nt.tensor([1, 2], dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize("make", [nt.zeros, nt.ones, nt.randn, nt.rand])
def test_factories_make_float32_leaves_that_need_a_gradient_only_when_asked(make):
    """As torch.zeros and friends: float32 by default, ``*shape`` or one tuple, and a
    parameter only with ``requires_grad=True``."""
    a, b = make(2, 3), make((2, 3), dtype=nt.float64, requires_grad=True)
    assert (a.shape, a.dtype, a.requires_grad) == ((2, 3), np.float32, False)
    assert (b.shape, b.dtype, b.requires_grad, b.grad_fn) == ((2, 3), np.float64, True, None)
    if make in (nt.zeros, nt.ones):
        assert (a.numpy() == (make is nt.ones)).all()


# ------------------------------------------------------- tensor() copies its data


def test_tensor_copies_an_array_so_later_edits_change_neither_values_nor_grads():
    """torch.tensor copies; so does nt.tensor: the backward of x * x reads x's values,
    which must still be the ones the forward used."""
    a = np.array([1.0, 2.0, 3.0])
    x = nt.tensor(a, requires_grad=True, dtype=np.float64)
    y = (x * x).sum()
    a[:] = 100.0                             # the learner reuses their array
    y.backward()
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(x.grad, [2.0, 4.0, 6.0])
    t = nt.tensor([4.0, 5.0])
    u = nt.tensor(t)                         # from a Tensor: a copy too
    u.data[0] = -1.0
    assert t.numpy()[0] == 4.0


def test_from_numpy_shares_the_array_as_documented():
    from nanotie.autograd import from_numpy

    a = np.zeros(3)
    x = from_numpy(a)
    a[1] = 7.0
    assert x.numpy()[1] == 7.0 and x.dtype == a.dtype
    with pytest.raises(TypeError, match="from_numpy"):
        from_numpy([1.0, 2.0])
