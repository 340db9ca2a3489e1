"""Every op in the table (tests/op_table.py): gradients by central differences, forward
values against NumPy formulas, and float32 in, float32 out."""

import functools
import warnings

import numpy as np
import pytest

import nanotie
from op_table import CASES, run_nanotie

by_name = pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)


def float64_inputs(case):
    """The case's inputs as nanotie tensors; the float ones in float64, requiring grad."""
    return [nanotie.tensor(a, dtype=np.float64, requires_grad=True) if spec.grad
            else nanotie.tensor(a) for spec, a in zip(case.args, case.sample())]


@by_name
def test_gradcheck(case):
    """Analytic gradients of every input match float64 central differences, element by
    element, against a random upstream gradient (gradcheck draws one)."""
    fn = functools.partial(case.fn, nanotie)   # keeps the argument names for messages
    assert nanotie.gradcheck(fn, float64_inputs(case), name=case.name)


@by_name
def test_forward_matches_numpy(case):
    """The forward value equals the NumPy float64 formula."""
    arrays = case.sample()
    want = np.asarray(case.ref(*arrays))
    with nanotie.no_grad():
        got = case.fn(nanotie, *float64_inputs(case))
    assert got.dtype == np.float64, f"{case.name}: float64 inputs gave {got.dtype}"
    assert got.shape == want.shape, \
        f"{case.name}: output shape {got.shape}, NumPy formula gives {want.shape}"
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12,
                               err_msg=f"{case.name}: forward differs from the NumPy formula")


@by_name
def test_float32_stays_float32(case):
    """float32 inputs give a float32 output and float32 gradients."""
    out, inputs = run_nanotie(case, case.sample(), dtype=np.float32)
    assert out.dtype == np.float32, f"{case.name}: float32 inputs gave a {out.dtype} output"
    for i, t in enumerate(inputs):
        assert t.grad is not None, f"{case.name}: no gradient reached input {i}"
        assert t.grad.dtype == np.float32, \
            f"{case.name}: the gradient of input {i} is {t.grad.dtype}, not float32"
        assert t.grad.shape == t.shape, \
            f"{case.name}: the gradient of input {i} has shape {t.grad.shape}, not {t.shape}"


# Public ops that the table leaves to other tests, and why.
NOT_IN_TABLE = {
    "eq": "comparisons return constants without a gradient",
    "ne": "comparisons return constants without a gradient",
    "lt": "comparisons return constants without a gradient",
    "le": "comparisons return constants without a gradient",
    "gt": "comparisons return constants without a gradient",
    "ge": "comparisons return constants without a gradient",
    "cast": "it changes the dtype, so neither a float64 gradcheck nor float32-in-"
            "float32-out applies",
}


def names_reached(case) -> set:
    """The op names a case uses: the names its function calls (``lib.exp``, ``x.sum``)
    and the ops recorded in its graph (``a @ b`` records ``matmul``)."""
    names = set(case.fn.__code__.co_names)
    stack = [case.fn(nanotie, *float64_inputs(case))]
    while stack:
        t = stack.pop()
        if t.grad_fn is not None:
            names.add(t.grad_fn)
            stack.extend(p for p in t._parents if isinstance(p, nanotie.Tensor))
    return names


def test_table_covers_every_op():
    """Every public op of nanotie.ops and nanotie.nn.functional has a row in the table,
    so a new op cannot go untested."""
    public = set(nanotie.ops.__all__) | set(nanotie.nn.functional.__all__)
    reached = set().union(*(names_reached(c) for c in CASES))
    missing = sorted(public - reached - set(NOT_IN_TABLE))
    assert not missing, f"ops with no case in tests/op_table.py: {missing}"


# ------------------------------------------- single behaviours the table cannot express


def test_a_python_list_operand_is_read_as_tensor_reads_it():
    """Python floats become float32, as in tensor(): a list used to come in as float64
    and turn a float32 result into float64."""
    t = nanotie.tensor([1.0, 2.0], requires_grad=True)
    for out in (t + [1.0, 2.0], [3.0, 4.0] * t, t - [[0.5], [1.5]]):
        assert out.dtype == np.float32, out
    out = t * [3.0, 4.0]
    out.sum().backward()
    assert t.grad.tolist() == [3.0, 4.0] and t.grad.dtype == np.float32


def test_an_integer_operand_takes_the_float_operands_dtype():
    """float32 with int64 (an int list, an id tensor) stays float32, as in PyTorch;
    NumPy's rule would make it float64."""
    t = nanotie.tensor([1.0, 2.0], requires_grad=True)
    ids = nanotie.tensor(np.array([3, 4]))
    for out in (t * [3, 4], ids * t, t @ ids, t - ids.data,
                nanotie.ops.where(np.array([True, False]), t, ids)):
        assert out.dtype == np.float32, out
    assert (t.double() + ids).dtype == np.float64
    for out in (ids * 0.5, 1.5 - ids, ids / 2, ids / ids, ids ** 0.5, (ids > 3) * 0.5):
        assert out.dtype == np.float32, out     # NumPy: float64; PyTorch: float32
    assert (ids * 2).dtype == np.int64 and (t.double() / 2).dtype == np.float64
    (t * ids).sum().backward()
    assert t.grad.tolist() == [3.0, 4.0] and t.grad.dtype == np.float32


def test_a_masked_row_and_a_zero_base_give_their_values_without_a_warning():
    """log 0 and 0 * -inf are masked out of these results; NumPy warned on each."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = nanotie.tensor([[-np.inf, -np.inf], [0.0, 1.0]], requires_grad=True)
        nanotie.logsumexp(x, -1).sum().backward()
        y = nanotie.tensor([2.0, 0.0], requires_grad=True)
        nanotie.pow(0.0, y).sum().backward()
    assert x.grad[0].tolist() == [0.0, 0.0] and y.grad.tolist() == [0.0, 0.0]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")     # NumPy's 0**-1 and log(0)
def test_pow_at_a_zero_base_or_a_zero_exponent_gives_pytorchs_gradients():
    """A Python base of 0 used to raise 'math domain error' (math.log), and x**0 at
    x = 0 gave nan (0 * 0^-1). PyTorch's values: d/dx x^0 = 0; d/dy 0^y = 0 for y >= 0;
    what is truly undefined stays nan or inf instead of raising."""
    y = nanotie.tensor([2.0, 0.0, -1.0], requires_grad=True)
    nanotie.pow(0.0, y).sum().backward()
    assert y.grad.tolist() == [0.0, 0.0, -np.inf] and y.grad.dtype == np.float32
    y = nanotie.tensor([0.5, 1.0], requires_grad=True)
    nanotie.pow(-2.0, y).sum().backward()
    assert np.isnan(y.grad).all()                 # log of a negative base
    x = nanotie.tensor([0.0, 2.0], requires_grad=True)
    (x ** 0).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0]
    x = nanotie.tensor([0.0, 2.0], dtype=np.float64, requires_grad=True)
    e = nanotie.tensor([0.0, 3.0], dtype=np.float64, requires_grad=True)
    (x ** e).sum().backward()
    assert x.grad.tolist() == [0.0, 12.0] and e.grad.tolist() == [0.0, 8 * np.log(2.0)]


def test_expand_refuses_minus_one_on_a_new_leading_axis():
    """-1 means "keep this size", and a new axis has none: it used to wrap round to a
    trailing size, so randn(3).expand(-1, 3) gave (3, 3). PyTorch refuses it too."""
    x = nanotie.randn(3)
    assert x.expand(2, -1).shape == (2, 3)
    for sizes in [(-1, 3), (2, -1, 3)]:
        with pytest.raises(nanotie.autograd.ShapeError,
                           match=r"expand: -1 .* dim \d of .* new leading axis .*\(3,\)"):
            x.expand(*sizes)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")     # NumPy's log(0)
def test_logsumexp_of_an_all_minus_inf_slice_is_minus_inf_with_zero_gradient():
    """A fully masked row: m = -inf made x - m = nan, so the value was nan (PyTorch:
    -inf) and nan reached the gradient of the whole input. Other rows are unchanged."""
    rows = [[-np.inf, -np.inf, -np.inf], [0.0, 1.0, -np.inf], [1.0, 2.0, 3.0]]
    x = nanotie.tensor(rows, dtype=np.float64, requires_grad=True)
    w = np.array([1.0, 2.0, 3.0])
    out = x.logsumexp(dim=1)
    (out * nanotie.tensor(w)).sum().backward()
    finite = np.array(rows[1:])
    want = np.log(np.exp(finite).sum(axis=1))
    assert out.numpy()[0] == -np.inf
    np.testing.assert_allclose(out.numpy()[1:], want, rtol=1e-12)
    softmax = np.exp(finite - want[:, None])
    np.testing.assert_array_equal(x.grad[0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(x.grad[1:], w[1:, None] * softmax, rtol=1e-12)
    assert nanotie.tensor(rows[:1]).logsumexp().item() == -np.inf     # dim=None too
