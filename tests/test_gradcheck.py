"""The gradient checker checks: it passes correct ops and CATCHES wrong backwards.

Each wrong backward below is a bug a learner could plausibly write, built with
``nanotie.autograd.make_result`` exactly as the library's own ops are. A checker
that passed any of them would be worse than none.
"""

import re

import numpy as np
import pytest

import nanotie as nt
from nanotie.autograd import make_result
from nanotie.gradcheck import GradcheckError, gradcheck, gradcheck_report
from nanotie.nn import functional as F


def leaf(*shape, seed=0):
    return nt.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


# ------------------------------------------------------------ deliberately wrong ops


def matmul_transposed_grad(a, b):
    """C = A @ B with dA = G^T B^T instead of G B^T. For square matrices the shapes
    fit, and with an all-ones upstream G = G^T, so the bug hides."""
    x, y = a.data, b.data
    return make_result("matmul_transposed_grad", x @ y, (a, b),
                       lambda g: (g.T @ y.T, x.T @ g))


def square_half_grad(a):
    """a^2 with d/da = a: the factor 2 is forgotten."""
    x = a.data
    return make_result("square_half_grad", x * x, (a,), lambda g: (g * x,))


def bias_add_no_sum(x, bias):
    """x (N, D) + bias (D,) whose bias gradient takes ONE row of g instead of
    summing over the N rows that the bias was broadcast to."""
    return make_result("bias_add_no_sum", x.data + bias.data, (x, bias),
                       lambda g: (g, g[0]))


def square_wrong_at_one_element(a):
    """a^2, with a correct gradient everywhere except element (1, 2)."""
    x = a.data

    def backward(g):
        grad = 2 * x * g
        grad[1, 2] *= 3.0
        return (grad,)

    return make_result("square_wrong_at_one_element", x * x, (a,), backward)


# --------------------------------------------------------------- correct ops pass


@pytest.mark.parametrize("fn, shapes", [
    (lambda a, b: a @ b, [(3, 4), (4, 2)]),
    (lambda a, b: a * b + a / (b * b + 1.0), [(2, 3), (3,)]),
    (lambda a: F.softmax(a, dim=-1), [(3, 5)]),
    (lambda a, b: (a.tanh() - b.sigmoid()).sum(dim=0), [(4, 3), (1, 3)]),
])
def test_correct_ops_pass(fn, shapes):
    inputs = [leaf(*s, seed=i) for i, s in enumerate(shapes)]
    assert gradcheck(fn, inputs) is True


def test_float32_inputs_are_checked_in_float64():
    x = nt.tensor(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    assert gradcheck(lambda a: a.exp() * a, [x])


# ----------------------------------------------------------- wrong backwards fail


def test_all_ones_upstream_would_miss_the_transposed_gradient():
    """The reason gradcheck uses a RANDOM upstream gradient."""
    a0, b0 = leaf(3, 3, seed=1), leaf(3, 3, seed=2)
    a, b = nt.tensor(a0.data.copy(), requires_grad=True), b0
    matmul_transposed_grad(a, b).sum().backward()          # upstream = ones
    np.testing.assert_allclose(a.grad, np.ones((3, 3)) @ b0.data.T)   # looks right!

    def product(left, right):
        return matmul_transposed_grad(left, right)

    with pytest.raises(GradcheckError) as info:
        gradcheck(product, [a0, b0])
    message = str(info.value)
    assert "'product'" in message
    assert re.search(r"argument 0 \(left, shape \(3, 3\)\): worst at element \(\d, \d\)",
                     message), message
    assert "right" not in message                          # its backward was correct


def test_a_transposed_input_is_perturbed_in_place():
    """A transposed (Fortran-order) input has no flat view: the check must still move
    its elements, or a correct backward reads as a zero numeric gradient."""
    a = np.random.default_rng(0).standard_normal((3, 4))
    assert gradcheck(lambda t: t * t, [nt.Tensor(a.T, requires_grad=True)])
    assert gradcheck(lambda t: t @ t.T, [nt.Tensor(np.asfortranarray(a), requires_grad=True)])


def test_factor_of_two_is_caught():
    def square(x):
        return square_half_grad(x)

    with pytest.raises(GradcheckError, match=r"(?s)'square'.*argument 0 \(x, shape "
                                             r"\(2, 3\)\).*element \(\d, \d\)"):
        gradcheck(square, [leaf(2, 3)])
    (r,) = gradcheck_report(square, [leaf(2, 3)])
    assert r.analytic == pytest.approx(r.numeric / 2, rel=1e-4)   # exactly half


def test_forgetting_to_sum_a_broadcast_dim_is_caught():
    def biased(x, bias):
        return bias_add_no_sum(x, bias)

    with pytest.raises(GradcheckError) as info:
        gradcheck(biased, [leaf(4, 3, seed=1), leaf(3, seed=2)])
    message = str(info.value)
    assert re.search(r"argument 1 \(bias, shape \(3,\)\): worst at element \(\d,\)", message)
    assert "argument 0" not in message                     # x's gradient was right


def test_worst_index_points_at_the_wrong_element():
    results = gradcheck_report(square_wrong_at_one_element, [leaf(3, 4)])
    (r,) = results
    assert not r.passed and r.mode == "elementwise"
    assert r.worst_index == (1, 2)
    assert r.name == "a"
    assert r.analytic == pytest.approx(3 * r.numeric, rel=1e-4)   # the planted factor 3
    with pytest.raises(GradcheckError, match=r"element \(1, 2\)"):
        gradcheck(square_wrong_at_one_element, [leaf(3, 4)])


def test_the_name_argument_labels_the_message():
    with pytest.raises(GradcheckError, match="'my square'"):
        gradcheck(square_half_grad, [leaf(2, 2)], name="my square")


# ------------------------------------------------------------------- large inputs


def test_large_inputs_use_random_directions_and_still_catch_bugs():
    big = leaf(30, 30, seed=3)                              # 900 > max_elements = 512
    other = nt.tensor(np.random.default_rng(4).standard_normal((30, 30)))
    (ok,) = gradcheck_report(lambda a: a @ other, [big])
    assert ok.passed and ok.mode == "directional"

    def product(left, right):
        return matmul_transposed_grad(left, right)

    with pytest.raises(GradcheckError, match=r"argument 0 \(left, shape \(30, 30\)\): worst "
                                             r"at random direction \d"):
        gradcheck(product, [big, other])
    with pytest.raises(GradcheckError, match="random direction"):
        gradcheck(square_half_grad, [big])


def test_max_elements_is_the_largest_input_checked_element_by_element():
    (at,) = gradcheck_report(lambda a: a * a, [leaf(2, 3)], max_elements=6)
    (over,) = gradcheck_report(lambda a: a * a, [leaf(7)], max_elements=6)
    assert (at.mode, over.mode) == ("elementwise", "directional")
    assert at.passed and over.passed


def test_the_relative_tolerance_grows_with_the_gradient():
    """A right gradient of 1e8 misses central differences by far more than atol (the
    loss's round-off over 2 eps); rtol * |numeric| is what lets it pass."""
    for shape in [(6,), (600,)]:                   # elementwise, then along directions
        (r,) = gradcheck_report(lambda a: a * 1e8, [leaf(*shape)])
        assert r.passed and r.max_abs_err > 1e-5, r


def test_an_empty_input_passes_with_nothing_to_compare():
    (r,) = gradcheck_report(lambda a: a * 2.0, [leaf(0, 3)])
    assert r.passed and r.max_abs_err == 0.0 and r.shape == (0, 3)


# ------------------------------------------------------------ the other outcomes


def test_raise_exception_false_returns_false():
    assert gradcheck(square_half_grad, [leaf(2, 2)], raise_exception=False) is False
    assert gradcheck(lambda a: a * a, [leaf(2, 2)], raise_exception=False) is True


def test_unused_argument_reports_no_gradient_reached():
    def ignores_y(x, y):
        return x * 2.0

    with pytest.raises(GradcheckError, match=r"argument 1 \(y.*no gradient reached"):
        gradcheck(ignores_y, [leaf(2), leaf(2, seed=1)])


def test_refuses_when_no_input_requires_grad():
    with pytest.raises(ValueError, match="no input has requires_grad"):
        gradcheck(lambda a: a * 2.0, [nt.tensor(np.ones(3))])


def test_one_input_may_be_given_without_a_list():
    (r,) = gradcheck_report(square_half_grad, leaf(2, 3))
    assert r.name == "a" and r.shape == (2, 3) and not r.passed


def test_only_inputs_that_require_grad_are_checked():
    const = nt.tensor(np.arange(3.0))
    results = gradcheck_report(lambda a, c: a * c, [leaf(3), const])
    assert [r.name for r in results] == ["a"] and results[0].passed


# ------------------------------------------------------- a model's own parameters


def _tiny_gpt(**overrides):
    from nanotie.nn import GPT, GPTConfig

    nt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, context=4, d_model=4, n_layer=1, n_head=2,
                          **overrides)).double()
    rng = np.random.default_rng(0)
    for p in model.parameters():            # away from GPT-2's tiny init
        p.data = p.data + rng.normal(0.0, 0.3, p.shape)
    idx, tgt = rng.integers(0, 7, (2, 4)), rng.integers(0, 7, (2, 4))
    return model, lambda: model(idx, tgt)[1]


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("max_elements", [64, 8], ids=["elementwise", "directional"])
def test_gradcheck_module_passes_for_the_gpt_and_restores_its_weights(tie, max_elements):
    model, loss_fn = _tiny_gpt(tie_embeddings=tie)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    assert nt.gradcheck_module(model, loss_fn, max_elements=max_elements)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_gradcheck_module_names_the_parameter_whose_gradient_is_wrong():
    from nanotie.nn import Linear, Module

    class Doubler(Module):
        """y = 2 (x W^T) with a backward that forgets the 2 for W only."""

        def __init__(self):
            super().__init__()
            self.good = Linear(3, 3)
            self.bad = Linear(3, 1)

        def forward(self, x):
            h = self.good(x)
            w = self.bad.weight
            y = make_result("twice", 2 * w.data, (w,), lambda g: (g,))   # wrong: 2 g
            return (h @ y.T).sum()

    nt.manual_seed(0)
    model = Doubler().double()
    x = nt.tensor(np.random.default_rng(0).normal(size=(2, 3)))
    with pytest.raises(nt.GradcheckError, match=r"(?s)'Doubler'.*bad\.weight"):
        nt.gradcheck_module(model, lambda: model(x))
    assert not nt.gradcheck_module(model, lambda: model(x), raise_exception=False)


def test_gradcheck_module_perturbs_a_transposed_parameter_in_place():
    lin = nt.nn.Linear(3, 4).double()
    lin.weight = nt.nn.Parameter(np.asfortranarray(lin.weight.data))
    x = nt.tensor(np.random.default_rng(1).standard_normal((5, 3)))
    assert nt.gradcheck_module(lin, lambda: (lin(x) ** 2).sum())


def test_gradcheck_module_needs_float64():
    model, loss_fn = _tiny_gpt()
    model.float()
    with pytest.raises(TypeError, match="float64"):
        nt.gradcheck_module(model, loss_fn)
