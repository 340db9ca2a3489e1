"""PyTorch as an oracle: every op in the table, run by the same lambda in nanotie and in
PyTorch with the same inputs and the same random upstream gradient, must give the
same output and the same gradient for every input."""

import numpy as np
import pytest

import nanotie
from op_table import CASES, run_nanotie

torch = pytest.importorskip("torch")

TORCH_DTYPES = {np.float64: torch.float64, np.float32: torch.float32}

# A few representative ops for the float32 comparison: a GEMM, the fused primitives,
# a scatter-add, a reduction with exp/log and a composite.
FLOAT32_CASES = ["matmul_shared_weight", "einsum_attention_scores", "softmax_last",
                 "logsumexp_dim", "cross_entropy_mean", "layer_norm_affine", "rms_norm_weight",
                 "gelu_exact", "fftconv_broadcast", "embedding_repeated_ids",
                 "getitem_int_array_repeats", "pow_tensor_tensor", "linear_bias", "sdpa_causal"]


def run_torch(case, arrays, dtype, upstream):
    """Forward and backward in PyTorch; returns the output and the input gradients."""
    inputs = [torch.tensor(a, dtype=TORCH_DTYPES[dtype], requires_grad=True) if spec.grad
              else torch.from_numpy(a) for spec, a in zip(case.args, arrays)]
    out = (case.torch_fn or case.fn)(torch, *inputs)
    out.backward(torch.tensor(upstream, dtype=TORCH_DTYPES[dtype]))
    grads = [t.grad for spec, t in zip(case.args, inputs) if spec.grad]
    return out.detach().numpy(), [None if g is None else g.numpy() for g in grads]


def assert_close(got, want, rtol, atol, what):
    """|got - want| <= atol * max(1, max|want|) + rtol * |want|, elementwise."""
    assert got.shape == want.shape, f"{what}: shape {got.shape}, PyTorch gives {want.shape}"
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


def compare_with_torch(case, dtype, rtol, atol):
    """Run ``case`` in both libraries at ``dtype``; compare output and input gradients."""
    arrays = case.sample()
    out, inputs = run_nanotie(case, arrays, dtype=dtype)
    upstream = case.upstream(out.shape)
    want_out, want_grads = run_torch(case, arrays, dtype, upstream)
    label = f"{case.name} ({np.dtype(dtype).name})"
    assert_close(out.numpy(), want_out, rtol, atol, f"{label}: forward differs from PyTorch")
    for i, (t, want) in enumerate(zip(inputs, want_grads)):
        assert want is not None, f"{label}: PyTorch gives input {i} no gradient"
        assert t.grad is not None, f"{label}: nanotie gives input {i} no gradient"
        assert_close(np.asarray(t.grad), want, rtol, atol,
                     f"{label}: gradient of input {i} differs from PyTorch")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_float64_matches_torch(case):
    """float64: agreement to rounding error."""
    compare_with_torch(case, np.float64, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in CASES if c.name in FLOAT32_CASES],
                         ids=lambda c: c.name)
def test_float32_matches_torch(case):
    """float32: agreement to float32 rounding (the two libraries sum in other orders)."""
    compare_with_torch(case, np.float32, rtol=1e-5, atol=1e-6)


def test_float32_cases_exist():
    """Every name in FLOAT32_CASES is in the table (a renamed case is not skipped)."""
    assert set(FLOAT32_CASES) <= {c.name for c in CASES}


# The table keeps its inputs away from kinks and ties, where central differences fail.
# At a kink the gradient is a convention; these inputs sit exactly on one, and nanotie
# must pick PyTorch's: ties share the gradient of amax/amin (evenly) and of maximum and
# minimum (1/2 each), relu'(0) = abs'(0) = 0, and clamp passes it at both ends.
ON_KINKS = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [-1.0, 0.0, 0.5]])
OTHER = np.array([[1.0, 0.0, 3.0], [2.0, 5.0, 2.0], [0.0, 0.0, 0.5]])
AT_A_KINK = {
    "amax_ties": lambda lib, a, b: lib.amax(a, dim=1) * b[:, 0],
    "amin_ties": lambda lib, a, b: a.amin(dim=0) * b[0],
    "amax_all_ties": lambda lib, a, b: (a * b).amax(),
    "maximum_ties": lambda lib, a, b: lib.maximum(a, b),
    "minimum_ties": lambda lib, a, b: lib.minimum(a, b),
    "relu_at_0": lambda lib, a, b: lib.relu(a) + b,
    "abs_at_0": lambda lib, a, b: lib.abs(a) + b,
    "clamp_at_both_ends": lambda lib, a, b: lib.clamp(a, min=0.0, max=2.0) + b,
}


@pytest.mark.parametrize("name", AT_A_KINK)
def test_at_a_kink_or_a_tie_the_gradient_is_pytorchs(name):
    fn = AT_A_KINK[name]
    upstream = None
    grads = {}
    for lib in (torch, nanotie):
        a, b = (lib.tensor(v, dtype=lib.float64, requires_grad=True) for v in (ON_KINKS, OTHER))
        out = fn(lib, a, b)
        if upstream is None:
            upstream = np.random.default_rng(0).standard_normal(tuple(out.shape))
        out.backward(lib.tensor(upstream))
        grads[lib.__name__] = [np.asarray(a.grad), np.asarray(b.grad)]
    for i, (got, want) in enumerate(zip(grads["nanotie"], grads["torch"])):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15,
                                   err_msg=f"{name}: gradient of input {i}")


@pytest.mark.parametrize("op", ["lt", "le", "gt", "ge", "eq", "ne"])
def test_comparisons_at_equal_values_match_pytorch(op):
    """Random inputs are never equal, so only equal ones tell < from <=."""
    got = getattr(nanotie.tensor(ON_KINKS), op)(nanotie.tensor(OTHER)).numpy()
    want = getattr(torch.tensor(ON_KINKS), op)(torch.tensor(OTHER)).numpy()
    np.testing.assert_array_equal(got, want)
