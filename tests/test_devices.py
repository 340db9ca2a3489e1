"""Every op in the table in float32 on each device, against float64 on NumPy.

On "cuda" the op runs on CuPy; on "cpu" the same test body runs on NumPy float32, so
it is exercised on every machine. The float64 references are the NumPy formula (for
the value) and nanotie's float64 CPU gradients, which test_ops.py checks against
finite differences.
"""

import numpy as np
import pytest

import nanotie
from op_table import CASES, run_nanotie

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not nanotie.cuda_available(), reason="no CUDA GPU")])]

RTOL, ATOL = 1e-4, 1e-5   # float32 carries about 7 digits; sums of a few terms lose some


def assert_float32_close(got, want, what):
    """Compare a float32 result with a float64 one; ``atol`` scales with the largest
    reference value, since float32 rounding is relative to the magnitudes involved."""
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}, expected float32"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * scale,
                               err_msg=what)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_float32_on_device_matches_float64(case, device):
    """Values and every input's gradient, float32 on ``device``, within float32
    tolerance of the float64 results, with the same upstream gradient."""
    arrays = case.sample()
    out32, inputs32 = run_nanotie(case, arrays, dtype=np.float32, device=device)
    assert out32.device == device, f"{case.name}: output landed on {out32.device}"
    _, inputs64 = run_nanotie(case, arrays, dtype=np.float64, device="cpu")

    label = f"{case.name} on {device}"
    want = np.asarray(case.ref(*arrays))
    assert_float32_close(out32.numpy(), want, f"{label}: forward value")
    for i, (t32, t64) in enumerate(zip(inputs32, inputs64)):
        assert t32.grad is not None, f"{label}: no gradient reached input {i}"
        grad = nanotie.tensor(t32.grad).numpy()   # brings a CuPy array back to NumPy
        assert_float32_close(grad, t64.grad, f"{label}: gradient of input {i}")
