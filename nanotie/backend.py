"""The array backend: NumPy on the CPU, CuPy on an NVIDIA GPU, one code path.

This is the ONLY module in nanotie that imports cupy (a test enforces it). Every op
asks ``xp = xp_of(array)`` for the array module that owns its data, so the same code
runs on both devices (Chainer's ``get_array_module`` pattern). The few places where
the two libraries differ (scatter-add, FFTs, special functions, random generators,
reuse of freed CPU memory) are wrapped here and nowhere else.

A GPU is used only when three things hold: cupy imports, ``cupy.is_available()`` is
true, and a tiny allocation works. Otherwise everything silently runs on NumPy, and
asking for ``"cuda"`` raises a :class:`DeviceError` that says why.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache

import numpy as np

DEVICES = ("cpu", "cuda")


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
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}: expected one of {DEVICES}")
    if device == "cuda":
        _require_cupy()
    return device


def default_device() -> str:
    """The device new tensors go to: ``$NANOTIE_DEVICE`` ('cpu' unless set)."""
    return check_device(os.environ.get("NANOTIE_DEVICE", "cpu").strip().lower() or "cpu")


# ----------------------------------------------------------------- array modules


def is_cupy_array(array) -> bool:
    cupy = _cupy_status()[0]
    return cupy is not None and isinstance(array, cupy.ndarray)


def device_of(array) -> str:
    """'cuda' for a CuPy array, 'cpu' for anything else."""
    return "cpu" if type(array) is np.ndarray or not is_cupy_array(array) else "cuda"


def xp_of(*arrays):
    """The array module (numpy or cupy) that owns ``arrays``.

    Arguments that are not arrays (Python scalars, None) are ignored. Arrays from both
    devices raise a :class:`DeviceError`.
    """
    found = None
    for a in arrays:
        if a is None or isinstance(a, (int, float, bool, np.generic)):
            continue
        mod = np if type(a) is np.ndarray or not is_cupy_array(a) else _cupy_status()[0]
        if found is not None and mod is not found:
            raise DeviceError("arrays on different devices (cpu and cuda) were mixed; "
                              "move them to one device first with .to(device)")
        found = mod
    return found if found is not None else np


def to_device(array, device: str):
    """Return ``array`` on ``device``; no copy when it is already there."""
    check_device(device)
    if device == "cpu":
        return asnumpy(array)
    cupy = _require_cupy()
    return cupy.asarray(array)


def asnumpy(array) -> np.ndarray:
    """A NumPy array with the same values (copies from the GPU if needed)."""
    if is_cupy_array(array):
        return array.get()
    return np.asarray(array)


def synchronize(device: str = "cuda") -> None:
    """Wait until the device has finished its queued work (a no-op on the CPU).
    GPU kernels run asynchronously, so a timer must call this before reading the clock."""
    if device == "cuda":
        _require_cupy().cuda.Device().synchronize()


def xp_for(device: str):
    """The array module for a device name."""
    return _require_cupy() if check_device(device) == "cuda" else np


# ------------------------------------------------- the places the libraries differ


def scatter_add(target, index, values):
    """In place: ``target[index] += values``, summing over repeated indices.

    ``target[index] += values`` alone is wrong when ``index`` repeats (the last write
    wins), which is exactly the embedding-backward case: a token that appears twice
    must receive both gradients.
    """
    xp = xp_of(target)
    if xp is np:
        if isinstance(index, np.ndarray) and index.ndim == 1 and target.ndim == 2 \
                and np.issubdtype(index.dtype, np.integer) and values.ndim == 2:
            _scatter_rows_numpy(target, index, values)
        else:
            np.add.at(target, index, values)
    else:
        cupy = _cupy_status()[0]
        if hasattr(cupy.add, "at"):       # CuPy >= 13; cupyx.scatter_add is deprecated
            cupy.add.at(target, index, values)
        else:
            import cupyx

            cupyx.scatter_add(target, index, values)
    return target


def _scatter_rows_numpy(target, index, values):
    # A row scatter as a sparse (V, N) one-hot matrix times values (N, D): the same
    # sum as np.add.at, done in one compiled loop (about 3x faster for embeddings).
    import scipy.sparse

    n = index.shape[0]
    index = np.where(index < 0, index + target.shape[0], index)
    onehot = scipy.sparse.csr_matrix(
        (np.ones(n, dtype=values.dtype), (index, np.arange(n))), shape=(target.shape[0], n))
    target += onehot @ values


def erf(x):
    """The error function, elementwise, on either device."""
    if xp_of(x) is np:
        import scipy.special

        return scipy.special.erf(x)
    import cupyx.scipy.special

    return cupyx.scipy.special.erf(x)


def _cpu_threads() -> int:
    """Threads for CPU FFTs: as many as NumPy's BLAS (OpenBLAS or MKL) starts with,
    from the first of these variables that is set, else every core this process
    may run on."""
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


# On the CPU, FFTs go through scipy.fft rather than numpy.fft: it zero-pads to ``n``
# several times faster and can split a batch of transforms over threads (``workers``).
# It must only ever see NumPy arrays; CuPy arrays use cupy.fft.
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
    return out if out.dtype == dtype else out.astype(dtype)


def fft_size(n: int) -> int:
    """A fast FFT length >= n (the next power of two)."""
    return 1 << max(0, int(n - 1).bit_length())


# ----------------------------------------------------- CPU threads: the speed switch

# NumPy runs every elementwise pass (a ufunc, a reduction) on ONE core, and a stack of
# small matrix products (attention's (B, H) batch of T x hd @ hd x T) goes to BLAS one
# product at a time, each too small for BLAS's own threads to pay off. parallel_rows()
# splits such work into contiguous blocks of rows, one per thread of a small pool: NumPy
# releases the GIL inside ufuncs, reductions and BLAS calls, so the blocks really run at
# once. The fused ops that use it (gelu, layer_norm, scaled_dot_product_attention in
# nn/functional.py) write their formula once, as work on a block of rows; with one
# thread that work is called once on all the rows, which is the plain NumPy version.
# What it saves on a 2-core machine is measured in benchmarks/README.md.
#
# The switch is OFF by default: on an idle 2-core machine the plain code was faster
# (benchmarks/README.md: a step took 1.3x longer with it on), while with other processes
# competing for the cores it was 2-5x faster, because BLAS's own threads stop spinning
# for a core. ``NANOTIE_THREADS=N`` (the environment) or ``set_cpu_threads(N)`` (in the
# process) turns it on with N threads; the environment's N is capped by BLAS's current
# limit (threadpoolctl), so a run that the protocol pins to one BLAS thread per process
# (nanotie/protocol.py) always runs the plain code. CuPy arrays never take this path.

_THREADS_OVERRIDE = None   # set_cpu_threads(n): n threads, whatever BLAS's limit
_POOL = None               # the ThreadPoolExecutor, made on first use


def set_cpu_threads(n: int | None) -> None:
    """Use ``n`` threads for large CPU array passes from now on (1: off, the plain NumPy
    code); ``None`` goes back to the default (``$NANOTIE_THREADS`` capped by BLAS's
    current limit; off when unset). Values and gradients do not depend on it."""
    global _THREADS_OVERRIDE
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_cpu_threads: n must be a positive int or None, got {n!r}")
    _THREADS_OVERRIDE = n


@lru_cache(maxsize=1)
def _blas_controllers() -> tuple:
    """threadpoolctl's handles on the BLAS libraries NumPy loaded (found once)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return ()
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


def cpu_threads() -> int:
    """How many threads :func:`parallel_rows` uses now (1 means the switch is off, the
    default): ``set_cpu_threads(n)`` if called, else ``$NANOTIE_THREADS`` capped by
    BLAS's current thread limit, else 1."""
    if _THREADS_OVERRIDE is not None:
        return _THREADS_OVERRIDE
    env = os.environ.get("NANOTIE_THREADS", "").strip()
    if not (env.isdigit() and int(env) > 0):
        return 1
    blas = _blas_controllers()
    n = min(c.num_threads for c in blas) if blas else _cpu_threads()
    return max(1, min(n, int(env)))


def _pool(workers: int):
    global _POOL
    if _POOL is None or _POOL._max_workers < workers:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nanotie")
    return _POOL


def _forget_pool():                 # a forked child inherits no running threads
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def parallel_rows(work, n_rows: int, xp=np, min_rows: int = 1) -> None:
    """Call ``work(rows)`` on slices ``rows`` that cover ``range(n_rows)`` once each.

    With :func:`cpu_threads` = 1 (the switch off), on CuPy (``xp`` not NumPy), or with
    fewer than ``2 min_rows`` rows, it is the one call ``work(slice(0, n_rows))``.
    Otherwise the rows are cut into one contiguous block per thread and the blocks run
    at once; ``work`` must then only write the rows it is given (into arrays made
    before the call) and draw no random numbers. Meanwhile BLAS is held to one thread,
    so that the blocks' matrix products do not queue for BLAS's own pool.
    """
    threads = min(cpu_threads(), n_rows // max(1, min_rows)) if xp is np else 1
    if threads <= 1:
        work(slice(0, n_rows))
        return
    edges = [n_rows * i // threads for i in range(threads + 1)]
    blocks = [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]
    blas = _blas_controllers()
    before = [c.num_threads for c in blas]
    for c in blas:
        c.set_num_threads(1)
    try:
        futures = [_pool(threads - 1).submit(work, rows) for rows in blocks[1:]]
        try:
            work(blocks[0])                       # this thread takes the first block
        finally:
            for f in futures:
                f.result()                        # waits; re-raises a block's error
    finally:
        for c, n in zip(blas, before):
            c.set_num_threads(n)


# ------------------------------------------------------------------ CPU memory


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back.

    CuPy keeps freed GPU memory in a pool, and the next array of that size reuses it.
    glibc, which allocates NumPy's arrays on Linux, does not: a block of a few MB is
    returned to the operating system when it is freed (``munmap``, or a trim of the
    heap), and the next array is page-faulted back in, 4 KiB at a time, each page
    zero-filled by the kernel. A training step frees all its activations at its end, so
    every step paid for all of them again: about 20k page faults and a fifth of the
    time of a small GPT's step. Two settings make glibc behave like a pool: serve
    blocks up to 32 MB from the heap (``M_MMAP_THRESHOLD``) and shrink the heap only
    when more than 1 GB at its top is free (``M_TRIM_THRESHOLD``). The price: the
    process keeps the memory of its peak until it exits.

    It changes the whole process, so nanotie never calls it on import: the training
    loop (:func:`nanotie.train.train`) and the benchmarks do, and
    ``NANOTIE_KEEP_FREED_MEMORY=0`` turns it off. Returns whether the settings are in
    effect (never off Linux/glibc).
    """
    global KEPT_FREED_MEMORY
    if KEPT_FREED_MEMORY:
        return True
    if not sys.platform.startswith("linux") or \
            os.environ.get("NANOTIE_KEEP_FREED_MEMORY", "1").strip() == "0":
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt      # glibc only (not musl, macOS)
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3         # from glibc's <malloc.h>
    KEPT_FREED_MEMORY = bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(
        mallopt(m_trim_threshold, 1 << 30))
    return KEPT_FREED_MEMORY


KEPT_FREED_MEMORY = False   # set by keep_freed_memory()


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
        xp = xp_for(device)
        _generators[device] = xp.random.default_rng(_seed)
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


def randn(shape, dtype, device: str):
    """Standard normal samples."""
    g = generator(device)
    return g.standard_normal(size=tuple(shape), dtype=np.dtype(dtype)) if np.dtype(dtype) in (
        np.float32, np.float64) else g.standard_normal(size=tuple(shape)).astype(dtype)


def rand(shape, dtype, device: str):
    """Uniform samples in [0, 1)."""
    g = generator(device)
    return g.random(size=tuple(shape), dtype=np.dtype(dtype)) if np.dtype(dtype) in (
        np.float32, np.float64) else g.random(size=tuple(shape)).astype(dtype)


def randint(low: int, high: int, shape, device: str):
    """Integers in [low, high), int64."""
    return generator(device).integers(low, high, size=tuple(shape), dtype=np.int64)
