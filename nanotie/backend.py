"""The array backend: NumPy on the CPU, CuPy on an NVIDIA GPU, one code path.

This is the ONLY module in nanotie that imports cupy (a test enforces it). Every op
asks ``xp = xp_of(array)`` for the array module that owns its data, so the same code
runs on both devices (Chainer's ``get_array_module`` pattern). The few places where
the two libraries differ (scatter-add, FFTs, special functions, random generators)
are wrapped here and nowhere else, with the two CPU speed settings (threads, memory).

A GPU is used only when cupy imports, ``cupy.is_available()`` is true, and a tiny
allocation works. Otherwise everything runs on NumPy, and asking for ``"cuda"`` raises
a :class:`DeviceError` that says why.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache

import numpy as np


class DeviceError(RuntimeError):
    """A device was asked for that cannot be used, or two devices were mixed."""


# --------------------------------------------------------------------------- GPU


@lru_cache(maxsize=1)
def _cupy_status():
    """Return ``(cupy_module_or_None, reason_if_unusable)``; probed once."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return None, f"cupy could not be imported ({type(exc).__name__}: {exc})"
    try:
        if not cupy.is_available():
            return None, "cupy is installed but reports no usable GPU"
        cupy.zeros(1, dtype=cupy.float32).sum().item()  # a tiny allocation + kernel
    except Exception as exc:
        return None, f"cupy is installed but the GPU failed a test allocation ({exc})"
    return cupy, ""


def cuda_available() -> bool:
    """True when cupy imports, sees a GPU and can allocate on it."""
    return _cupy_status()[0] is not None


def _require_cupy():
    cupy, reason = _cupy_status()
    if cupy is None:
        raise DeviceError(f"device 'cuda' was requested but no GPU can be used: {reason}. "
                          "Install the 'gpu' extra on a machine with an NVIDIA GPU, or use "
                          "device='cpu'.")
    return cupy


def check_device(device: str) -> str:
    """Validate a device name ('cpu' or 'cuda') and return it."""
    if device not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")
    if device == "cuda":
        _require_cupy()
    return device


def default_device() -> str:
    """The device new tensors go to: ``$NANOTIE_DEVICE`` ('cpu' unless set)."""
    return check_device(os.environ.get("NANOTIE_DEVICE", "cpu").strip().lower() or "cpu")


# ----------------------------------------------------------------- array modules


def is_cupy_array(array) -> bool:
    """Whether ``array`` is a CuPy array (False when CuPy is not installed)."""
    cupy = _cupy_status()[0]
    return cupy is not None and isinstance(array, cupy.ndarray)


def device_of(array) -> str:
    """'cuda' for a CuPy array, 'cpu' for anything else."""
    return "cpu" if type(array) is np.ndarray or not is_cupy_array(array) else "cuda"


def xp_of(*arrays):
    """The array module (numpy or cupy) that owns ``arrays``; Python scalars and None
    are ignored. Arrays from both devices raise a :class:`DeviceError`."""
    found = None
    for a in arrays:
        if a is None or isinstance(a, (int, float, bool, np.generic)):
            continue
        mod = np if device_of(a) == "cpu" else _cupy_status()[0]
        if found is not None and mod is not found:
            raise DeviceError("arrays on different devices (cpu and cuda) were mixed; "
                              "move them to one device first with .to(device)")
        found = mod
    return found if found is not None else np


def xp_for(device: str):
    """The array module for a device name."""
    return _require_cupy() if check_device(device) == "cuda" else np


def to_device(array, device: str):
    """Return ``array`` on ``device``; no copy when it is already there."""
    return asnumpy(array) if check_device(device) == "cpu" else _require_cupy().asarray(array)


def asnumpy(array) -> np.ndarray:
    """A NumPy array with the same values (copies from the GPU if needed)."""
    return array.get() if is_cupy_array(array) else np.asarray(array)


def synchronize(device: str = "cuda") -> None:
    """Wait until the device has finished its queued work (a no-op on the CPU).
    GPU kernels run asynchronously, so a timer must call this before reading the clock."""
    if device == "cuda":
        _require_cupy().cuda.Device().synchronize()


# ------------------------------------------------- the places the libraries differ


def scatter_add(target, index, values):
    """In place: ``target[index] += values``, summing over repeated indices.

    ``target[index] += values`` alone is wrong when ``index`` repeats (the last write
    wins), which is exactly the embedding-backward case: a token that appears twice
    must receive both gradients.
    """
    if xp_of(target) is not np:
        cupy = _cupy_status()[0]
        if hasattr(cupy.add, "at"):       # CuPy >= 13; cupyx.scatter_add is deprecated
            cupy.add.at(target, index, values)
        else:
            import cupyx
            cupyx.scatter_add(target, index, values)
    elif isinstance(index, np.ndarray) and index.ndim == 1 and target.ndim == 2 \
            and np.issubdtype(index.dtype, np.integer) and values.ndim == 2:
        # Rows: a sparse (V, N) one-hot matrix times values (N, D) is the same sum as
        # np.add.at, in one compiled loop (about 3x faster for embeddings).
        import scipy.sparse

        n = index.shape[0]
        index = index.astype(np.intp, copy=False)   # uint8 ids (bytes) cannot hold id + V
        index = np.where(index < 0, index + target.shape[0], index)
        onehot = scipy.sparse.csr_matrix((np.ones(n, dtype=values.dtype),
                                          (index, np.arange(n))), shape=(target.shape[0], n))
        target += onehot @ values
    else:
        np.add.at(target, index, values)
    return target


def erf(x):
    """The error function, elementwise, on either device."""
    if xp_of(x) is np:
        import scipy.special
        return scipy.special.erf(x)
    import cupyx.scipy.special
    return cupyx.scipy.special.erf(x)


def usable_cores() -> int:
    """The number of cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def _cpu_threads() -> int:
    """Threads for CPU FFTs: as many as NumPy's BLAS starts with (the first of these
    variables that is set), else :func:`usable_cores`."""
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return usable_cores()


# CPU FFTs go through scipy.fft, not numpy.fft: it zero-pads to ``n`` several times
# faster and splits a batch of transforms over threads (``workers``).
_FFT_WORKERS = _cpu_threads()


def rfft(x, n: int):
    """Real FFT of length ``n`` along the last axis; float32 stays complex64."""
    if xp_of(x) is np:
        import scipy.fft
        return scipy.fft.rfft(x, n=n, axis=-1, workers=_FFT_WORKERS)
    return xp_of(x).fft.rfft(x, n=n, axis=-1)


def irfft(X, n: int, dtype):
    """Inverse of :func:`rfft`, cast back to the real ``dtype`` of the inputs."""
    if xp_of(X) is np:
        import scipy.fft
        out = scipy.fft.irfft(X, n=n, axis=-1, workers=_FFT_WORKERS)
    else:
        out = xp_of(X).fft.irfft(X, n=n, axis=-1)
    return out.astype(dtype, copy=False)


def fft_size(n: int) -> int:
    """A fast FFT length >= n (the next power of two)."""
    return 1 << max(0, int(n - 1).bit_length())


# ----------------------------------------------------- CPU threads: the speed switch

# NumPy runs each elementwise pass on ONE core, and a stack of small matrix products
# (attention's (B, H) batch) goes to BLAS one product at a time. parallel_rows() cuts
# such work (linear, gelu, layer_norm, attention) into contiguous blocks of rows, one
# per thread (NumPy releases the GIL in ufuncs and BLAS). On a 2-core machine it made a
# step 1.3x slower when idle, 2-5x faster when busy (benchmarks/README.md), so it is
# opt-in: ``NANOTIE_THREADS=N`` or ``set_cpu_threads(N)`` (see :func:`cpu_threads`).

_THREADS_OVERRIDE = None   # set_cpu_threads(n): n threads, whatever BLAS's limit
_POOL = None               # the ThreadPoolExecutor, made on first use


def set_cpu_threads(n: int | None) -> None:
    """Use ``n`` threads for large CPU array passes from now on (1: off); ``None`` goes
    back to the default. Values and gradients do not depend on it."""
    global _THREADS_OVERRIDE
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_cpu_threads: n must be a positive int or None, got {n!r}")
    _THREADS_OVERRIDE = n


@lru_cache(maxsize=1)
def _blas_controllers() -> tuple:
    """threadpoolctl's handles on the BLAS libraries NumPy loaded (found once)."""
    from threadpoolctl import ThreadpoolController

    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


def cpu_threads() -> int:
    """How many threads :func:`parallel_rows` uses now: ``set_cpu_threads(n)`` if called,
    else ``$NANOTIE_THREADS`` capped by BLAS's current thread limit, else 1 (off)."""
    if _THREADS_OVERRIDE is not None:
        return _THREADS_OVERRIDE
    env = os.environ.get("NANOTIE_THREADS", "").strip()
    if not (env.isdigit() and int(env) > 0):
        return 1
    blas = _blas_controllers()
    n = min(c.num_threads for c in blas) if blas else _cpu_threads()
    return max(1, min(n, int(env)))


def _forget_pool():                 # a forked child inherits no running threads
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def parallel_rows(work, n_rows: int, xp=np, min_rows: int = 1) -> None:
    """Call ``work(rows)`` on slices ``rows`` that cover ``range(n_rows)`` once each.

    With the switch off, on CuPy, or with fewer than ``2 min_rows`` rows, it is the
    one call ``work(slice(0, n_rows))``. Otherwise one contiguous block per thread runs
    at once; ``work`` must then only write its own rows (of arrays made before the call)
    and draw no random numbers. Meanwhile BLAS is held to one thread.
    """
    global _POOL
    threads = min(cpu_threads(), n_rows // max(1, min_rows)) if xp is np else 1
    if threads <= 1:
        work(slice(0, n_rows))
        return
    edges = [n_rows * i // threads for i in range(threads + 1)]
    blocks = [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]
    if _POOL is None or _POOL._max_workers < threads - 1:
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="nanotie")
    blas = _blas_controllers()
    before = [c.num_threads for c in blas]
    for c in blas:
        c.set_num_threads(1)
    try:
        futures = [_POOL.submit(work, rows) for rows in blocks[1:]]
        try:
            work(blocks[0])                       # this thread takes the first block
        finally:
            for f in futures:
                f.result()                        # waits; re-raises a block's error
    finally:
        for c, n in zip(blas, before):
            c.set_num_threads(n)


# ------------------------------------------------------------------ CPU memory

KEPT_FREED_MEMORY = False   # set by keep_freed_memory()


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse, as CuPy's pool does on a GPU.

    glibc hands a freed block of a few MB back to the operating system, and the next
    array of that size is page-faulted back in, 4 KiB at a time: a training step frees
    all its activations, so each step paid about 20k page faults (a fifth of a small
    GPT's step). Serving blocks up to 32 MB from the heap (``M_MMAP_THRESHOLD``) and
    trimming it only past 1 GB free (``M_TRIM_THRESHOLD``) stops that; the process then
    keeps the memory of its peak. It changes the whole process, so only the training
    loop and the benchmarks call it; ``NANOTIE_KEEP_FREED_MEMORY=0`` turns it off.
    Returns whether the settings are in effect (never off Linux/glibc).
    """
    global KEPT_FREED_MEMORY
    if KEPT_FREED_MEMORY or not sys.platform.startswith("linux") or \
            os.environ.get("NANOTIE_KEEP_FREED_MEMORY", "1").strip() == "0":
        return KEPT_FREED_MEMORY
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt      # glibc only (not musl, macOS)
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3         # from glibc's <malloc.h>
    KEPT_FREED_MEMORY = bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(
        mallopt(m_trim_threshold, 1 << 30))
    return KEPT_FREED_MEMORY


# ------------------------------------------------------------- random generators

_seed = int(os.environ.get("NANOTIE_SEED", "0"))
_generators: dict = {}


def manual_seed(seed: int) -> None:
    """Reseed the random generators of every device."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def generator(device: str):
    """The seeded generator of ``device`` (created on first use after a seed)."""
    if device not in _generators:
        _generators[device] = xp_for(device).random.default_rng(_seed)
    return _generators[device]


def random_state():
    """A snapshot of the seed and of the NumPy generator, for :func:`restore_random_state`
    (code that must not move the user's random stream, like an exercise check)."""
    cpu = _generators.get("cpu")
    return _seed, (None if cpu is None else cpu.bit_generator.state)


def restore_random_state(snapshot) -> None:
    """Put the seed and the NumPy generator back as :func:`random_state` found them."""
    global _seed
    _seed, cpu_state = snapshot
    _generators.pop("cpu", None)          # recreated from the seed on first use ...
    if cpu_state is not None:
        generator("cpu").bit_generator.state = cpu_state     # ... or where it stood


def _sample(draw, shape, dtype):
    """``draw(size, dtype)`` in ``dtype``; the generators draw float32 and float64 only."""
    dtype = np.dtype(dtype)
    if dtype in (np.float32, np.float64):
        return draw(size=tuple(shape), dtype=dtype)
    return draw(size=tuple(shape)).astype(dtype)


def randn(shape, dtype, device: str):
    """Standard normal samples."""
    return _sample(generator(device).standard_normal, shape, dtype)


def rand(shape, dtype, device: str):
    """Uniform samples in [0, 1)."""
    return _sample(generator(device).random, shape, dtype)


def randint(low: int, high: int, shape, device: str):
    """Integers in [low, high), int64; ``shape`` a tuple or one int."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    return generator(device).integers(low, high, size=shape, dtype=np.int64)
