"""The CPU speed switch (``backend.parallel_rows``): on or off, the same values and gradients.

The fused ops that use it (gelu, layer_norm, scaled_dot_product_attention) write their
formula as work on a block of rows; with the switch off that work runs once on all
rows. These tests check the helper itself (every row exactly once, errors and BLAS's
thread count handled, off where the protocol pins BLAS to one thread) and then that the
ops, and a whole GPT training step, give the same numbers with the switch on and off.
"""

from __future__ import annotations

import multiprocessing
import threading

import numpy as np
import pytest

import nanotie as nt
from nanotie import backend, nn
from nanotie.nn import functional as F

threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture(autouse=True)
def default_switch(monkeypatch):
    """Every test starts from the default (no override, no NANOTIE_THREADS) and ends so."""
    monkeypatch.delenv("NANOTIE_THREADS", raising=False)
    backend.set_cpu_threads(None)
    yield
    backend.set_cpu_threads(None)


@pytest.fixture
def blocks_seen(monkeypatch):
    """Wraps backend.parallel_rows: records the (start, stop, thread) of every block run."""
    seen = []
    real = backend.parallel_rows

    def spy(work, n_rows, xp=np, min_rows=1):
        def recorded(rows):
            seen.append((rows.start, rows.stop, threading.get_ident()))
            return work(rows)

        return real(recorded, n_rows, xp, min_rows)

    monkeypatch.setattr(backend, "parallel_rows", spy)
    return seen


# ------------------------------------------------------------------ the helper


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("n_rows", [0, 1, 2, 7, 64, 1001])
def test_parallel_rows_covers_every_row_once(threads, n_rows):
    backend.set_cpu_threads(threads)
    hits = np.zeros(n_rows, dtype=int)
    calls = []

    def work(rows):
        calls.append(rows)
        hits[rows] += 1

    backend.parallel_rows(work, n_rows)
    assert np.all(hits == 1), f"rows covered {hits.tolist()} times, want once each"
    assert len(calls) == max(1, min(threads, n_rows))


def test_blocks_run_on_several_threads_only_when_switched_on():
    seen = []

    def work(rows):
        seen.append(threading.get_ident())

    backend.set_cpu_threads(2)
    backend.parallel_rows(work, 10)
    assert len(set(seen)) == 2, "the two blocks should run on two threads"
    seen.clear()
    backend.set_cpu_threads(1)
    backend.parallel_rows(work, 10)
    assert seen == [threading.get_ident()], "switched off: one call, on this thread"


def test_min_rows_keeps_small_work_in_one_call():
    backend.set_cpu_threads(4)
    calls = []
    backend.parallel_rows(calls.append, 100, min_rows=60)   # fewer than 2 x 60 rows
    assert calls == [slice(0, 100)]


def test_a_block_error_reaches_the_caller_and_blas_threads_come_back():
    controllers = backend._blas_controllers()
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = [c.num_threads for c in controllers]
        backend.set_cpu_threads(2)

        def work(rows):
            assert all(c.num_threads == 1 for c in controllers), "BLAS not held to 1"
            if rows.start > 0:
                raise RuntimeError("block failed")

        with pytest.raises(RuntimeError, match="block failed"):
            backend.parallel_rows(work, 8)
        assert [c.num_threads for c in controllers] == before


def test_switch_follows_blas_limit_and_environment(monkeypatch):
    if not backend._blas_controllers():
        pytest.skip("threadpoolctl sees no BLAS library")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        assert backend.cpu_threads() == 1                              # off by default
        monkeypatch.setenv("NANOTIE_THREADS", "2")                     # the on switch
        assert backend.cpu_threads() == 2
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):   # as protocol runs
        assert backend.cpu_threads() == 1                              # capped by BLAS
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        monkeypatch.setenv("NANOTIE_THREADS", "1")                     # the off switch
        assert backend.cpu_threads() == 1
        backend.set_cpu_threads(3)                  # an explicit choice in the process wins
        assert backend.cpu_threads() == 3


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_forked_child_makes_its_own_pool():
    """A forked process inherits the pool object but none of its threads: without a new
    pool, the child's first parallel_rows would wait forever for them."""
    backend.set_cpu_threads(2)
    backend.parallel_rows(lambda rows: None, 10)               # the parent's pool exists

    def child():
        hits = np.zeros(10, dtype=int)
        backend.parallel_rows(lambda rows: hits.__setitem__(rows, 1), 10)
        raise SystemExit(0 if hits.all() else 1)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(timeout=60)
    try:
        assert process.exitcode == 0, f"the child {'hung' if process.is_alive() else 'failed'}"
    finally:
        process.kill()


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_set_cpu_threads_refuses_bad_values(bad):
    with pytest.raises(ValueError, match="set_cpu_threads"):
        backend.set_cpu_threads(bad)


# ------------------------------------------------- the ops: same values either way


def _run(fn, arrays, threads, seed=0):
    """Values and gradients of ``fn(*tensors)`` under a random upstream gradient."""
    backend.set_cpu_threads(threads)
    nt.manual_seed(seed)
    tensors = [nt.tensor(a, requires_grad=True) if a is not None else None for a in arrays]
    y = fn(*tensors)
    g = np.random.default_rng(99).standard_normal(y.shape).astype(y.dtype)
    y.backward(nt.tensor(g))
    return [y.numpy()] + [t.grad for t in tensors if t is not None]


def _assert_same(fn, arrays, blocks_seen):
    off = _run(fn, arrays, threads=1)
    blocks_seen.clear()
    on = _run(fn, arrays, threads=3)
    assert len({start for start, _, _ in blocks_seen}) > 1, "the switch did not split the work"
    for i, (a, b) in enumerate(zip(off, on)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"output {i}: {a.shape} vs {b.shape}"
        # Elementwise work gives the same bits; a float32 sum that BLAS makes (linear's
        # weight and bias gradients) may be blocked and ordered otherwise with another
        # thread count, so it may round differently: relative to the largest entry.
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * float(np.abs(a).max()),
                                   err_msg=f"output {i} differs with the switch on")


def _randn(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed + len(shape)).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_same_with_switch_on(approximate, dtype, blocks_seen):
    x = _randn(3, 300, 257, dtype=dtype)                     # > 2 blocks of 2^16 elements
    _assert_same(lambda t: F.gelu(t, approximate), [x], blocks_seen)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_same_with_switch_on(affine, blocks_seen):
    x = _randn(40, 1000, 4, 8)                               # normalized over (4, 8)
    w, b = (_randn(4, 8, seed=1), _randn(4, 8, seed=2)) if affine else (None, None)
    _assert_same(lambda t, *wb: F.layer_norm(t, (4, 8), *wb), [x, w, b], blocks_seen)


@pytest.mark.parametrize("case", ["causal", "float_mask", "broadcast_key", "dropout"])
def test_attention_same_with_switch_on(case, blocks_seen):
    B, H, T, E = 6, 3, 17, 8
    q, k, v = _randn(B, H, T, E, seed=1), _randn(B, H, T, E, seed=2), _randn(B, H, T, E, seed=3)
    if case == "causal":
        fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
        arrays = [q, k, v]
    elif case == "float_mask":       # a per-batch mask that takes a gradient of its own
        fn = lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m)  # noqa: E731
        arrays = [q, k, v, _randn(B, 1, T, T, seed=4)]
    elif case == "broadcast_key":    # one key/value set for every batch row
        fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
        arrays = [q, _randn(H, T, E, seed=5), _randn(H, T, E, seed=6)]
    else:                            # the dropped weights are drawn before the split
        fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.3)  # noqa: E731
        arrays = [q, k, v]
    _assert_same(fn, arrays, blocks_seen)


def test_gpt_training_step_same_with_switch_on():
    """A whole step (forward, loss, backward, AdamW): same loss, gradients and weights."""
    config = nn.GPTConfig(vocab_size=64, context=32, d_model=32, n_layer=2, n_head=4)
    rng = np.random.default_rng(0)
    idx, targets = (nt.tensor(rng.integers(0, 64, size=(8, 32))) for _ in range(2))
    results = []
    for threads in (1, 2):
        backend.set_cpu_threads(threads)
        nt.manual_seed(0)
        model = nn.GPT(config)
        opt = nn.optim.AdamW(model.parameters(), lr=1e-2)
        _, loss = model(idx, targets)
        loss.backward()
        grads = {n: p.grad.copy() for n, p in model.named_parameters()}
        opt.step()
        results.append((loss.item(), grads, {n: p.numpy() for n, p in model.named_parameters()}))
    (loss_off, grads_off, w_off), (loss_on, grads_on, w_on) = results
    assert loss_on == pytest.approx(loss_off, rel=1e-6)
    for name in grads_off:
        np.testing.assert_allclose(grads_on[name], grads_off[name], rtol=1e-5, atol=1e-7,
                                   err_msg=f"gradient of {name}")
        np.testing.assert_allclose(w_on[name], w_off[name], rtol=1e-5, atol=1e-7,
                                   err_msg=f"{name} after AdamW")


@pytest.mark.parametrize("bias", [True, False])
def test_linear_same_with_switch_on(bias, blocks_seen):
    x, w = _randn(4, 300, 96), _randn(160, 96, seed=1)       # N = 1200 rows, out 160
    b = _randn(160, seed=2) if bias else None
    _assert_same(lambda x, w, *b: F.linear(x, w, *b), [x, w, b], blocks_seen)
