"""The array backend: NumPy/CuPy dispatch, scatter-add, seeds, devices, GPU detection.

No GPU is needed: the GPU-detection tests install fake ``cupy`` modules in
``sys.modules`` and re-probe (``backend._cupy_status`` is cached, so each test clears
the cache before and after).
"""

import ast
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import nanotie as nt
from nanotie import backend

PACKAGE = Path(nt.__file__).resolve().parent


# ------------------------------------------------------------------ dispatch


@pytest.mark.parametrize("value", [
    np.zeros(3), np.zeros((2, 2), dtype=np.float32), np.float32(1.0), np.int64(3), 1.0, 2,
    True, None,
])
def test_xp_of_is_numpy_for_cpu_values(value):
    assert backend.xp_of(value) is np


def test_xp_of_with_no_arrays_and_with_several():
    assert backend.xp_of() is np
    assert backend.xp_of(np.ones(2), 3.0, np.zeros((1, 2)), None) is np


def test_to_device_cpu_and_asnumpy_round_trip():
    x = np.arange(6.0).reshape(2, 3)
    y = backend.to_device(x, "cpu")
    assert isinstance(y, np.ndarray) and y.dtype == x.dtype
    np.testing.assert_array_equal(backend.asnumpy(y), x)
    assert backend.device_of(y) == "cpu"
    assert [backend.device_of(v) for v in (2.5, np.float32(1), [1, 2], None)] == ["cpu"] * 4
    np.testing.assert_array_equal(backend.asnumpy([1, 2]), [1, 2])


def test_to_device_rejects_unknown_names():
    with pytest.raises(nt.DeviceError, match="unknown device"):
        backend.to_device(np.zeros(2), "gpu0")


# -------------------------------------------------------------- scatter-add


def scatter_add_loop(target, index, values):
    """The reference: a plain Python loop, one += per index, so repeats add up."""
    out = target.copy()
    for k, i in enumerate(index):
        out[i] += values[k]
    return out


def test_scatter_add_rows_fast_path_sums_repeated_ids():
    """The embedding-backward case: (V, D) target, 1-D ids, (N, D) values."""
    rng = np.random.default_rng(0)
    target = rng.standard_normal((6, 4))
    index = np.array([0, 3, 3, 5, 0, 0, -1, 2])            # repeats, and a negative id
    values = rng.standard_normal((len(index), 4))
    expected = scatter_add_loop(target, index, values)
    out = backend.scatter_add(target, index, values)
    assert out is target                                   # in place
    np.testing.assert_allclose(target, expected, rtol=1e-12)


def test_scatter_add_rows_fast_path_keeps_float32():
    target = np.zeros((3, 2), dtype=np.float32)
    backend.scatter_add(target, np.array([1, 1]), np.ones((2, 2), dtype=np.float32))
    assert target.dtype == np.float32
    np.testing.assert_array_equal(target, [[0, 0], [2, 2], [0, 0]])


@pytest.mark.parametrize("shape, index, vshape", [
    ((5,), np.array([1, 1, 4, 0, 1]), (5,)),               # 1-D target: np.add.at
    ((4, 3), np.array([[0, 2], [2, 2]]), (2, 2, 3)),       # 2-D index: np.add.at
])
def test_scatter_add_general_path_sums_repeated_ids(shape, index, vshape):
    rng = np.random.default_rng(1)
    target = rng.standard_normal(shape)
    values = rng.standard_normal(vshape)
    expected = target.copy()
    for pos in np.ndindex(index.shape):                    # the loop reference
        expected[index[pos]] += values[pos]
    backend.scatter_add(target, index, values)
    np.testing.assert_allclose(target, expected, rtol=1e-12)


def test_scatter_add_general_path_with_a_tuple_index():
    target = np.zeros((3, 3))
    rows, cols = np.array([0, 0, 2, 0]), np.array([1, 1, 2, 1])
    values = np.array([1.0, 2.0, 3.0, 4.0])
    backend.scatter_add(target, (rows, cols), values)
    expected = np.zeros((3, 3))
    for r, c, v in zip(rows, cols, values):
        expected[r, c] += v
    np.testing.assert_array_equal(target, expected)


# ---------------------------------------------------------------------- FFT size


def test_fft_size_is_the_next_power_of_two():
    for n in range(1, 1100):
        m = backend.fft_size(n)
        assert m >= n and m & (m - 1) == 0, n              # big enough, a power of two
        assert m // 2 < n, n                               # and the smallest such


# ----------------------------------------------------------------- random seeds


@pytest.fixture
def restore_seed():
    yield
    nt.manual_seed(0)


def test_manual_seed_makes_randn_reproducible(restore_seed):
    nt.manual_seed(7)
    a = nt.randn(4, 3).numpy()
    nt.manual_seed(7)
    b = nt.randn(4, 3).numpy()
    nt.manual_seed(8)
    c = nt.randn(4, 3).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32


def test_manual_seed_covers_rand_and_randint(restore_seed):
    nt.manual_seed(3)
    a = (nt.rand(5).numpy(), nt.randint(0, 100, (5,)).numpy())
    nt.manual_seed(3)
    b = (nt.rand(5).numpy(), nt.randint(0, 100, 5).numpy())     # one int: as rand(5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert ((a[0] >= 0) & (a[0] < 1)).all()


def test_restoring_a_state_taken_before_any_draw_restarts_from_the_seed(restore_seed):
    """A snapshot taken right after manual_seed (no generator yet) restores to the
    seed's stream, even though draws since then made a generator."""
    nt.manual_seed(5)
    snapshot = backend.random_state()
    first = nt.randn(4).numpy()
    nt.randn(3)
    backend.restore_random_state(snapshot)
    np.testing.assert_array_equal(nt.randn(4).numpy(), first)


@pytest.mark.parametrize("dtype", [np.float16, "float64", np.float32])
def test_samples_come_in_the_asked_dtype(dtype, restore_seed):
    """The generators draw float32 and float64 only; other float types are cast."""
    for draw in (backend.randn, backend.rand):
        out = draw((3, 2), dtype, "cpu")
        assert out.dtype == np.dtype(dtype) and out.shape == (3, 2)


# --------------------------------------------------------------- CPU settings


def test_fft_threads_follow_the_first_blas_variable_that_is_set(monkeypatch):
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    assert backend._cpu_threads() == backend.usable_cores()
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert backend._cpu_threads() == 5
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "0")        # not a thread count: skipped
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    assert backend._cpu_threads() == 3
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")        # the usual pin is a count too
    assert backend._cpu_threads() == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
@pytest.mark.parametrize("setting, kept", [(None, "True"), ("0", "False")])
def test_keeping_freed_memory_and_its_off_switch(setting, kept):
    """In a process of its own: the setting changes the whole process."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "NANOTIE_KEEP_FREED_MEMORY"}
    if setting is not None:
        env["NANOTIE_KEEP_FREED_MEMORY"] = setting
    code = "from nanotie import backend; print(backend.keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == kept, out.stderr


# --------------------------------------------------------------- default device


@pytest.mark.parametrize("value", ["cpu", "CPU", " cpu ", ""])
def test_default_device_honours_the_environment(monkeypatch, value):
    monkeypatch.setenv("NANOTIE_DEVICE", value)
    assert backend.default_device() == "cpu"
    assert nt.tensor([1.0]).device == "cpu"


@pytest.mark.skipif(nt.cuda_available(), reason="checks the no-GPU message")
def test_default_device_cuda_without_a_gpu(monkeypatch):
    monkeypatch.setenv("NANOTIE_DEVICE", "cuda")
    with pytest.raises(nt.DeviceError, match="no GPU can be used"):
        backend.default_device()
    with pytest.raises(nt.DeviceError, match="no GPU can be used"):
        nt.tensor([1.0])


def test_default_device_junk_name(monkeypatch):
    monkeypatch.setenv("NANOTIE_DEVICE", "quantum")
    with pytest.raises(nt.DeviceError, match="unknown device 'quantum'"):
        backend.default_device()


# ---------------------------------------------------------------- GPU detection


@pytest.fixture
def fresh_probe(monkeypatch):
    """Re-probe cupy inside the test, and forget the fake afterwards."""
    backend._cupy_status.cache_clear()
    yield monkeypatch
    monkeypatch.undo()                  # restore sys.modules before the next probe
    backend._cupy_status.cache_clear()


def fake_cupy(available=True, allocation_error=None):
    mod = types.ModuleType("cupy")
    mod.float32 = np.float32
    mod.ndarray = type("ndarray", (), {})
    mod.is_available = lambda: available

    def zeros(*args, **kwargs):
        if allocation_error is not None:
            raise allocation_error
        return np.zeros(*args, **kwargs)

    mod.zeros = zeros
    return mod


def assert_no_gpu(reason_pattern):
    assert not backend.cuda_available()
    assert re.search(reason_pattern, backend._cupy_status()[1])
    with pytest.raises(nt.DeviceError, match="no GPU can be used.*" + reason_pattern):
        nt.tensor([1.0], device="cuda")
    # The CPU keeps working.
    assert nt.tensor([1.0, 2.0]).sum().item() == 3.0


def test_no_gpu_when_cupy_cannot_be_imported(fresh_probe):
    fresh_probe.setitem(sys.modules, "cupy", None)          # makes `import cupy` fail
    assert_no_gpu("could not be imported")


def test_no_gpu_when_cupy_reports_none(fresh_probe):
    fresh_probe.setitem(sys.modules, "cupy", fake_cupy(available=False))
    assert_no_gpu("reports no usable GPU")


def test_no_gpu_when_the_test_allocation_fails(fresh_probe):
    error = RuntimeError("cudaErrorNoDevice: fake driver failure")
    fresh_probe.setitem(sys.modules, "cupy", fake_cupy(allocation_error=error))
    assert_no_gpu("failed a test allocation.*fake driver failure")


def test_a_working_fake_gpu_is_detected(fresh_probe):
    """The positive case, so the three tests above cannot pass by accident."""
    fresh_probe.setitem(sys.modules, "cupy", fake_cupy())
    assert backend.cuda_available()
    assert backend._cupy_status()[1] == ""


# ------------------------------------------------------- only backend.py imports cupy


def cupy_imports(path: Path) -> list:
    """Line numbers of ``import cupy[x]...`` / ``from cupy[x]... import ...`` in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        else:
            continue
        if any(n.split(".")[0] in ("cupy", "cupyx") for n in names):
            hits.append(node.lineno)
    return hits


def test_only_backend_imports_cupy():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "backend.py":
            continue
        for line in cupy_imports(path):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert not offenders, ("only nanotie/backend.py may import cupy; use backend.xp_of() "
                           "instead in: " + ", ".join(offenders))


def test_the_cupy_import_scanner_finds_imports(tmp_path):
    """The scanner itself works: it sees backend.py's imports and every spelling."""
    assert cupy_imports(PACKAGE / "backend.py")
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nimport cupy as cp\nfrom cupyx.scipy import special\n"
                      "def f():\n    import cupy.fft\nfrom . import cupy_like\n")
    assert cupy_imports(sample) == [2, 3, 5]
