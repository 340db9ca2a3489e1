"""Laughing Hyena distillation at the level of one filter: the Hankel analysis, the
lower bound, ERA, modal refinement, order selection, and the modal recurrence.

Filters are synthetic: exact low-order systems (whose answer is known), and
"implicit-like" filters (a sine MLP of positional features times a decay window,
the shape of a Hyena filter), whose answer is not.
"""

import numpy as np
import pytest

import nanotie as nt
from nanotie import backend, tensor
from nanotie.nn import functional as F
from nanotie.papers.distillery import reduction as ds
from nanotie.papers.distillery import recurrence as rc

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not nt.cuda_available(), reason="no CUDA GPU")])]


def implicit_like(seed: int, length: int = 128, decay: float = 8.0) -> np.ndarray:
    """A Hyena-shaped filter: sine MLP of [t, cos, -sin] features, times exp(-decay t)."""
    rng = np.random.default_rng(seed)
    t, tau = np.linspace(0, 1, length), np.arange(length)
    bands = np.arange(1, 4)[:, None]
    pe = np.concatenate([t[None], np.cos(2 * np.pi * bands * tau / length),
                         -np.sin(2 * np.pi * bands * tau / length)])      # (7, L)
    z = np.sin(rng.standard_normal((16, 7)) @ pe)
    z = np.sin(rng.standard_normal((16, 16)) / 4 @ z)
    return (rng.standard_normal(16) / 4 @ z) * np.exp(-decay * t)


def random_modal(seed: int, n_real: int, n_pairs: int, radius=(0.5, 0.95)):
    """A random stable modal system with n_real real poles and n_pairs complex pairs."""
    rng = np.random.default_rng(seed)
    real = rng.uniform(*radius, n_real) * rng.choice([-1, 1], n_real)
    pairs = rng.uniform(*radius, n_pairs) * np.exp(1j * rng.uniform(0.2, 2.9, n_pairs))
    poles = np.concatenate([real + 0j, pairs])
    residues = np.concatenate([rng.standard_normal(n_real) + 0j,
                               rng.standard_normal(n_pairs) + 1j * rng.standard_normal(n_pairs)])
    return poles, residues, float(rng.standard_normal())


def direct_causal_conv(u: np.ndarray, h: np.ndarray) -> np.ndarray:
    """y[..., t] = sum_{s<=t} h[..., s] u[..., t-s], by a plain loop over lags."""
    y = np.zeros(np.broadcast_shapes(u.shape, h.shape))
    for s in range(u.shape[-1]):
        y[..., s:] += h[..., s:s + 1] * u[..., :u.shape[-1] - s]
    return y


# ------------------------------------------------------------- the modal recurrence


@pytest.mark.parametrize("device", DEVICES)
def test_recurrence_reproduces_the_fft_convolution_of_its_own_filter(device):
    """Spec property: running y_t = Re(R·s_{t-1}) + D u_t, s_t = λ s_{t-1} + u_t token
    by token gives the causal convolution with ĥ, to ~1e-12 in float64."""
    poles, residues, direct = zip(*(random_modal(s, 2, 3) for s in range(3)))
    bank = ds.ModalFilterBank(np.stack(poles), np.stack(residues), np.array(direct), 64)
    rec = bank.recurrence(device=device)
    u = np.random.default_rng(0).standard_normal((2, 3, 96))               # (B, C, T)
    h = bank.impulse_response(96)                                           # (C, T)
    reference = F.fftconv(tensor(u), tensor(h)).numpy()
    np.testing.assert_allclose(reference, direct_causal_conv(u, h), atol=1e-12)

    u_dev = backend.to_device(u, device)
    state, outputs = rec.init_state(u.shape[:-1]), []
    for t in range(u.shape[-1]):
        y, state = rec.step(u_dev[..., t], state)
        outputs.append(backend.asnumpy(y))
    scale = np.abs(reference).max()
    assert np.abs(np.stack(outputs, -1) - reference).max() <= 1e-12 * scale
    assert np.abs(backend.asnumpy(rec.forward(u_dev)) - reference).max() <= 1e-12 * scale


@pytest.mark.parametrize("split", [0, 1, 37, 120])
def test_prefill_then_steps_equals_one_pass(split, monkeypatch):
    """A prompt of `split` tokens prefilled at once (in several chunks), then the rest
    token by token, gives the same outputs as the parallel form on the whole sequence."""
    monkeypatch.setattr(rc, "_PREFILL_BLOCK", 4 * 5 * 3 * 16)  # force chunks of 16 steps
    poles, residues, direct = zip(*(random_modal(s, 1, 2) for s in range(4)))
    bank = ds.ModalFilterBank(np.stack(poles), np.stack(residues), np.array(direct), 64)
    rec = bank.recurrence(skip=np.array([0.5, -1.0, 0.0, 2.0]))
    u = np.random.default_rng(1).standard_normal((5, 4, 120))
    full = rec.forward(u)
    y, state = rec.prefill(u[..., :split])
    outputs = [y]
    for t in range(split, u.shape[-1]):
        y_t, state = rec.step(u[..., t], state)
        outputs.append(y_t[..., None])
    np.testing.assert_allclose(np.concatenate(outputs, -1), full, rtol=0, atol=1e-11)


def test_prefill_continues_from_a_state():
    """prefill(b, state=prefill(a)[1]) leaves the same state as prefill(a ++ b), and
    its outputs are the last len(b) outputs of a ++ b (the past's share included)."""
    poles, residues, direct = random_modal(3, 2, 2)
    rec = ds.ModalFilterBank(poles[None], residues[None], np.array([direct]), 8).recurrence()
    u = np.random.default_rng(2).standard_normal((3, 1, 50))
    y_all, s_all = rec.prefill(u)
    _, s_a = rec.prefill(u[..., :20])
    y_b, s_ab = rec.prefill(u[..., 20:], state=s_a)
    np.testing.assert_allclose(s_ab, s_all, atol=1e-12)
    np.testing.assert_allclose(y_b, y_all[..., 20:], atol=1e-12)
    np.testing.assert_allclose(y_all, direct_causal_conv(u, rec.impulse_response(50)),
                               atol=1e-12)


def test_one_filter_per_head_broadcasts_over_the_heads_channels():
    """MultiHyena layout: a (M,) bank with trailing_dims=2 runs on u (B, M, N, N, T),
    and each head's N² channels see that head's filter."""
    M, N, T = 2, 3, 40
    poles, residues, direct = zip(*(random_modal(s, 1, 1) for s in range(M)))
    bank = ds.ModalFilterBank(np.stack(poles), np.stack(residues), np.array(direct), T)
    rec = bank.recurrence(trailing_dims=2)
    u = np.random.default_rng(3).standard_normal((2, M, N, N, T))
    reference = direct_causal_conv(u, bank.impulse_response(T)[:, None, None, :])
    state = rec.init_state(u.shape[:-1])
    assert state.shape == (2, M, N, N, rec.n_modes)
    outputs = []
    for t in range(T):
        y, state = rec.step(u[..., t], state)
        outputs.append(y)
    np.testing.assert_allclose(np.stack(outputs, -1), reference, atol=1e-12)
    np.testing.assert_allclose(rec.prefill(u)[0], reference, atol=1e-12)


def test_float32_recurrence_uses_a_complex64_state():
    poles, residues, direct = random_modal(4, 1, 1)
    rec = ds.ModalFilterBank(poles[None], residues[None], np.array([direct]), 8) \
        .recurrence(dtype=np.float32)
    y, state = rec.step(np.ones((2, 1), np.float32), rec.init_state((2, 1)))
    assert state.dtype == np.complex64 and y.dtype == np.float32


# --------------------------------------------------------- Hankel matrix and bound


def test_hankel_rank_is_the_state_size():
    """H_ij = h_{1+i+j} of an order-d system has exactly d nonzero singular values."""
    for n_real, n_pairs in [(1, 0), (0, 2), (3, 1)]:
        poles, residues, direct = random_modal(5, n_real, n_pairs)
        h = ds.modal_impulse_response(poles, residues, direct, 100)
        H = ds.hankel_matrix(h)
        assert H[2, 5] == h[1 + 2 + 5] and H.shape == (49, 50)
        sigma = ds.hankel_singular_values(h)
        d = n_real + 2 * n_pairs
        assert sigma[d - 1] > 1e-8 * sigma[0] and sigma[d] < 1e-11 * sigma[0]


def test_lower_bound_holds_for_arbitrary_order_d_systems():
    """The bound σ_{d+1}/sqrt(n) is about ANY order-d system, not only our fits: random
    order-d modal systems never get closer to the filter than it says. Its value is
    σ_{d+1} (sigma[d]) of H_ij = h_{1+i+j} over sqrt(n), n = (L - 1) // 2: a smaller one
    (σ_{d+2}, or over n) would hold as well and say less."""
    h = implicit_like(0)
    n = (len(h) - 1) // 2
    sigma = ds.hankel_singular_values(h)
    by_hand = np.linalg.svd([[h[1 + i + j] for j in range(len(h) - 1 - n)] for i in range(n)],
                            compute_uv=False)
    for d in [1, 2, 4, 6]:
        bound = ds.error_lower_bound(h, d, sigma)
        assert bound == pytest.approx(by_hand[d] / np.sqrt(n), rel=1e-12)
        assert ds.error_lower_bound(h, d) == bound
        for trial in range(20):
            poles, _, _ = random_modal(100 * d + trial, d % 2, d // 2, radius=(0.3, 0.99))
            # the best residues for these poles make the system as close as it gets
            residues = ds.fit_residues(h, poles)
            h_hat = ds.modal_impulse_response(poles, residues, h[0], len(h))
            assert np.linalg.norm(h - h_hat) >= bound


def test_tight_bound_holds_for_arbitrary_order_d_systems_and_beats_the_loose_one():
    """max_m sqrt(Σ_{i>d} σ_i(H_m)²)/sqrt(m) is also about ANY order-d system (random
    poles with their best residues never get closer), and it is never below
    σ_{d+1}/sqrt(n): it is the tighter of the two."""
    for seed in range(2):
        h = implicit_like(seed, length=96, decay=5.0)
        sigma = ds.hankel_singular_values(h)
        orders = np.array([1, 2, 3, 4, 6, 9])
        tight = ds.tight_lower_bound(h, orders)
        assert tight.shape == orders.shape
        assert np.all(tight >= ds.error_lower_bound(h, orders, sigma))
        for d, bound in zip(orders, tight):
            for trial in range(15):
                poles, _, _ = random_modal(1000 * seed + 100 * d + trial, d % 2, d // 2,
                                           radius=(0.3, 0.99))
                residues = ds.fit_residues(h, poles)
                h_hat = ds.modal_impulse_response(poles, residues, h[0], len(h))
                assert np.linalg.norm(h - h_hat) >= bound


def test_tight_bound_is_exact_at_order_zero_and_vanishes_at_the_true_order():
    """Order 0 can only match h_0, so the best error is ||h_1..h_{L-1}|| and the bound
    must equal it; a filter that is an order-d system has a zero bound at d."""
    h = implicit_like(3)
    assert ds.tight_lower_bound(h, 0) == pytest.approx(np.linalg.norm(h[1:]), rel=1e-12)
    poles, residues, direct = random_modal(4, 1, 2)
    exact = ds.modal_impulse_response(poles, residues, direct, 80)
    assert ds.tight_lower_bound(exact, 5) < 1e-9 * np.linalg.norm(exact)
    assert ds.tight_lower_bound(exact, 4) > 1e-6 * np.linalg.norm(exact)


def test_hankel_norm_ratio_is_at_least_one_for_order_d_fits():
    """||H(h) - H(ĥ)||_2 / σ_{d+1} >= 1 for every order-d ĥ (Eckart–Young): for the
    sweep's own fits and for random order-d systems."""
    h = implicit_like(1)
    orders = [1, 2, 4, 8]
    for d, fit in zip(orders, ds.order_sweep(h, orders)):
        assert ds.hankel_norm_ratio(h, fit.impulse_response(len(h)), d) >= 1.0
        poles, _, _ = random_modal(7 + d, d % 2, d // 2)
        h_hat = ds.modal_impulse_response(poles, ds.fit_residues(h, poles), h[0], len(h))
        assert ds.hankel_norm_ratio(h, h_hat, d) >= 1.0
    with pytest.raises(ValueError, match="differ"):
        ds.hankel_norm_ratio(h, h[:-1], 2)


# ---------------------------------------------------------- balanced truncation


def test_fir_realisation_has_the_filter_as_impulse_response():
    h = implicit_like(2, length=40)
    A, B, C, D = ds.fir_realisation(h)
    x, out = np.zeros(len(B)), []
    for t in range(60):                                      # impulse in, past the end
        u = 1.0 if t == 0 else 0.0
        out.append(C @ x + D * u)
        x = A @ x + B * u
    np.testing.assert_allclose(out[:40], h, atol=1e-15)
    np.testing.assert_allclose(out[40:], 0.0, atol=0)


def test_balanced_truncation_hankel_singular_values_and_error_bound():
    """The Gramians' Hankel singular values sqrt(eig(PQ)) equal the SVD of the FIR's
    (zero-padded) Hankel matrix, and the truncated model's l2 error is within the
    textbook H-infinity bound 2 Σ_{i>d} σ_i at every order."""
    import scipy.linalg

    for seed in range(3):
        h = implicit_like(seed, length=64, decay=3.0 + 3 * seed)
        hsv = scipy.linalg.svdvals(scipy.linalg.hankel(h[1:]))   # zeros below the anti-diagonal
        A, B, C, _ = ds.fir_realisation(h)
        P, Q = ds.gramians(A, B, C)
        np.testing.assert_allclose(np.sort(np.sqrt(np.abs(np.linalg.eigvals(P @ Q))))[::-1],
                                   hsv, rtol=1e-8, atol=1e-10 * hsv[0])
        for d in [1, 2, 4, 8, 12]:
            fit = ds.balanced_truncation(h, d)
            assert fit.order == d
            assert np.all(np.abs(fit.poles) < 1)
            assert fit.error <= 2 * hsv[d:].sum() * (1 + 1e-9)


@pytest.mark.parametrize("h", [[1, .5, .25, 0, 0, 0, 0, 0, 0, 0], [1, .5, .25, .1, 0, 0, 0, 0],
                               0.8 ** np.arange(8) * np.cos(np.arange(8))],
                         ids=["fir-rank-2", "fir-rank-3", "full-order"])
def test_era_and_balanced_truncation_survive_a_defective_realisation(h):
    """At the order of an exactly FIR response (its realisation a shift register, a
    Jordan block with no eigenvectors to speak of), the residues from W^{-1} B used to
    blow up: relative errors up to 1e12. Every order must now do better than predicting
    nothing, and on an exactly FIR response no order worse than the one before (its
    state-space truncation is exact from the rank on)."""
    h = np.asarray(h, dtype=np.float64)
    for fit in (ds.era, ds.balanced_truncation):
        errors = [fit(h, d).rel_error for d in range(1, len(h))]
        assert max(errors) < 1, (fit.__name__, errors)
        if h[-1] == 0:
            assert all(b <= a * 1.01 + 1e-9 for a, b in zip(errors, errors[1:])), \
                (fit.__name__, errors)


@pytest.mark.parametrize("refine", [True, False])
def test_modal_fit_is_never_worse_than_balanced_truncation_or_era(refine):
    """At every order of a sweep, the modal fit is at least as good as balanced
    truncation (whose error each fit records) and as its ERA start. Without
    refinement, plain ERA loses to balanced truncation at some orders, so the sweep
    must take balanced truncation's fit there."""
    methods = []
    for seed in range(3):
        h = implicit_like(seed, decay=4.0 + 2 * seed)
        sweep = ds.order_sweep(h, [1, 2, 4, 8, 16], ds.DistillConfig(refine=refine))
        for d, fit in zip([1, 2, 4, 8, 16], sweep):
            assert fit.bt_error == pytest.approx(ds.balanced_truncation(h, d).error)
            assert fit.error <= fit.bt_error * (1 + 1e-12)
            assert fit.error <= fit.era_error * (1 + 1e-12)
            assert fit.error >= fit.tight_bound
            methods.append(fit.method)
    assert refine or "balanced" in methods, methods


# ------------------------------------------------ ERA, refinement, order selection


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_respects_bound_falls_with_order_and_refinement_helps(seed):
    """Spec property: at every order the achieved error is >= σ_{d+1}/sqrt(n); the error
    falls as d grows; least-squares refinement is never worse than its ERA start."""
    h = implicit_like(seed, decay=4.0 + 4 * seed)
    orders = list(range(0, 11))
    fits = ds.order_sweep(h, orders)
    errors = np.array([f.error for f in fits])
    bounds = np.array([f.bound for f in fits])
    assert np.all(errors >= bounds)
    assert np.all(np.diff(errors) <= 1e-12 * errors[0])
    assert errors[-1] < 0.2 * errors[1]
    for f, d in zip(fits, orders):
        assert f.order == d
        assert f.error <= f.era_error * (1 + 1e-12)
    # and refinement earns its keep somewhere along the sweep
    assert any(f.error < 0.9 * f.era_error for f in fits)


@pytest.mark.parametrize("n_real,n_pairs", [(1, 0), (0, 1), (2, 2), (1, 3)])
def test_exact_low_order_system_is_recovered_at_its_true_order(n_real, n_pairs):
    """Spec property: a filter that IS an order-d SSM is recovered to near machine
    precision at order d, and order selection with a tiny tolerance picks exactly d."""
    poles, residues, direct = random_modal(10 + n_real + 7 * n_pairs, n_real, n_pairs)
    h = ds.modal_impulse_response(poles, residues, direct, 128)
    d = n_real + 2 * n_pairs
    fit = ds.distill_filter(h, order=d)
    assert fit.order == d
    assert fit.rel_error < 1e-10
    assert np.abs(np.sort_complex(fit.poles) - np.sort_complex(
        np.where(poles.imag < 0, poles.conj(), poles))).max() < 1e-8
    chosen = ds.distill_filter(h, tol=1e-9, max_order=d + 4)
    assert chosen.order == d and chosen.rel_error <= 1e-9


def test_order_selection_picks_the_smallest_order_meeting_tol():
    """The chosen order meets tol; one order less, fitted the same way, does not; and
    the lower bound alone rules out every order below the first one it allows."""
    h = implicit_like(3)
    tol = 0.05
    fit = ds.distill_filter(h, tol=tol, max_order=12)
    assert fit.rel_error <= tol
    assert ds.distill_filter(h, order=fit.order - 1).rel_error > tol
    ruled_out = ds.error_lower_bound(h, np.arange(fit.order)) > tol * np.linalg.norm(h)
    assert ruled_out[:2].all()


def test_poles_are_stable_even_when_era_is_not():
    """Spec property: |λ| < 1. A growing filter makes ERA find a pole outside the unit
    circle; the fit keeps its poles inside anyway (and so does every fit of a bank)."""
    t = np.arange(64)
    growing = 1.02 ** t * np.cos(0.3 * t)
    assert np.abs(np.linalg.eigvals(_era_matrix(growing, 2))).max() > 1
    for h in [growing, implicit_like(4), implicit_like(5, decay=1.0)]:
        for d in [1, 2, 5]:
            fit = ds.distill_filter(h, order=d)
            assert np.all(np.abs(fit.poles) < 1)
    bank = ds.distill_filters(np.stack([implicit_like(s) for s in range(3)]), tol=0.1)
    assert np.all(np.abs(bank.poles) < 1)


def _era_matrix(h, d):
    """ERA's A = Σ^{-1/2} U^T H↑ V Σ^{-1/2}, written out independently of ds.era."""
    U, s, Vt = np.linalg.svd(ds.hankel_matrix(h))
    root = np.sqrt(s[:d])
    return (U[:, :d].T @ ds.hankel_matrix(h, shift=1) @ Vt[:d].T) / np.outer(root, root)


def test_conjugate_pairs_give_a_real_impulse_response():
    """ERA keeps one pole per conjugate pair (Im λ > 0) with a doubled residue; the
    result matches the full realisation C A^(t-1) B, which is real."""
    h = implicit_like(6)
    d = 6
    fit = ds.era(h, d)
    assert np.all(fit.poles.imag >= 0) and fit.order == d
    A = _era_matrix(h, d)
    U, s, Vt = np.linalg.svd(ds.hankel_matrix(h))
    B, C = np.sqrt(s[:d]) * Vt[:d, 0], U[0, :d] * np.sqrt(s[:d])
    markov = [C @ np.linalg.matrix_power(A, t - 1) @ B for t in range(1, len(h))]
    np.testing.assert_allclose(fit.impulse_response(len(h))[1:], markov, atol=1e-10)


def test_modal_least_squares_jacobian_matches_finite_differences():
    """The hand-written Jacobian of the refinement residual, against central
    differences in float64, column by column (every coordinate)."""
    h = implicit_like(7, length=40)
    fit = ds.era(h, 5)
    rmax = 0.999
    x, nr, nc = ds._pack(fit, rmax)
    assert nr > 0 and nc > 0
    x = x + 0.01 * np.random.default_rng(8).standard_normal(x.shape)
    _, J = ds._residual_and_jacobian(x, h, nr, nc, rmax)
    eps = 1e-6
    for i in range(len(x)):
        step = np.zeros_like(x)
        step[i] = eps
        numeric = (ds._residual_and_jacobian(x + step, h, nr, nc, rmax)[0]
                   - ds._residual_and_jacobian(x - step, h, nr, nc, rmax)[0]) / (2 * eps)
        np.testing.assert_allclose(J[:, i], numeric, atol=1e-6,
                                   err_msg=f"Jacobian column {i} (nr={nr}, nc={nc})")


def test_bank_pads_modes_and_selects_orders_per_filter():
    """Filters of different orders share one K; padding modes do nothing."""
    rows = [ds.modal_impulse_response(*random_modal(20 + i, i, 1), 64) for i in range(3)]
    bank = ds.distill_filters(np.stack(rows), tol=1e-9, max_order=8)
    assert list(bank.orders) == [2, 3, 4]
    assert bank.poles.shape == (3, 3)
    np.testing.assert_allclose(bank.impulse_response(), np.stack(rows), atol=1e-9)


def test_a_filter_too_short_for_a_hankel_matrix_is_refused():
    with pytest.raises(ValueError, match="length"):
        ds.distill_filter(np.ones(3))
    with pytest.raises(ValueError, match=r"h must have 1 dimension\(s\), got shape \(2, 8\)"):
        ds.distill_filter(np.ones((2, 8)))                    # a bank goes to distill_filters


def test_prefill_refuses_a_state_with_another_number_of_modes():
    poles, residues, direct = random_modal(3, 2, 2)    # 2 real + 2 pairs: 4 modes (one a pair)
    rec = ds.ModalFilterBank(poles[None], residues[None], np.array([direct]), 8).recurrence()
    with pytest.raises(ValueError, match="state has 3 modes, the recurrence has 4"):
        rec.prefill(np.ones((1, 5)), state=np.zeros((1, 3), complex))


def test_out_of_range_settings_are_refused_not_fitted():
    for bad in [dict(order=-1), dict(tol=0.0), dict(max_radius=1.0), dict(max_radius=0.0),
                dict(max_order=-2)]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            ds.DistillConfig(**bad)
    ds.DistillConfig(order=0, max_order=0, max_radius=1e-3, tol=1e-300)   # the edges are in
    with pytest.raises(ValueError, match="ascending"):
        ds.order_sweep(np.ones(32), [3, 1])


# ------------------------------------------------------ the pieces, one by one


def test_fit_residues_recovers_the_residues_of_known_poles():
    """For the true poles of an order-d system, the least-squares residues are its
    residues (a real pole's real, a pair's with Im λ > 0); no poles, no residues."""
    poles, residues, direct = random_modal(31, 2, 2)
    h = ds.modal_impulse_response(poles, residues, direct, 64)
    np.testing.assert_allclose(ds.fit_residues(h, poles), residues, atol=1e-9)
    assert ds.fit_residues(h, []).shape == (0,)


def test_refine_answers_in_the_upper_half_plane_and_scores_an_unscored_start():
    """A pair given by its lower member (λ̄, R̄) is the same filter; refine returns the
    Im λ > 0 member, and its ``era_error`` is the start's own error, measured here."""
    poles, residues, direct = random_modal(32, 1, 2)
    h = ds.modal_impulse_response(poles, residues, direct, 64)
    h = h + 1e-3 * np.random.default_rng(33).standard_normal(64)     # not exact: it moves
    start = ds.ModalFit(poles.conj(), residues.conj(), direct)       # error: not filled in
    fit = ds.refine(h, start)
    assert np.all(fit.poles.imag >= 0) and fit.order == start.order == 5
    start_error = np.linalg.norm(h - ds.modal_impulse_response(poles, residues, direct, 64))
    assert fit.era_error == pytest.approx(start_error, rel=1e-12)
    assert fit.error <= start_error


def test_an_order_zero_fit_is_the_direct_term_alone():
    """Order 0: no modes, ĥ = (h_0, 0, 0, ...), so the error is ||h_1..||, refined or not."""
    h = implicit_like(34, length=32)
    for refine in (True, False):
        fit = ds.distill_filter(h, order=0, refine=refine)
        assert fit.order == 0 and fit.direct == h[0]
        assert fit.error == pytest.approx(np.linalg.norm(h[1:]), rel=1e-12)
        assert fit.era_error == fit.error


def test_hankel_norm_ratio_past_the_rank_is_one_for_an_exact_fit_and_inf_otherwise():
    """σ_{d+1} = 0 (an order-d system, or d past the Hankel matrix's size): the ratio is
    1 when ĥ = h and infinite when it is not (no order-d fit can be off at all)."""
    poles, residues, direct = random_modal(35, 1, 1)
    h = ds.modal_impulse_response(poles, residues, direct, 32)
    off = h + np.eye(32)[5] * 1e-3
    for d in (3, 15, 40):                                    # the order; n = 15
        assert ds.hankel_norm_ratio(h, h, d) == 1.0
        assert ds.hankel_norm_ratio(h, off, d) == np.inf


PER_FILTER = {
    "hankel_matrix": ds.hankel_matrix,
    "hankel_singular_values": ds.hankel_singular_values,
    "error_lower_bound": lambda h: ds.error_lower_bound(h, 1),
    "tight_lower_bound": lambda h: ds.tight_lower_bound(h, 1),
    "hankel_norm_ratio": lambda h: ds.hankel_norm_ratio(h, h, 1),
    "fir_realisation": lambda h: ds.fir_realisation(h)[2],
    "era": lambda h: ds.era(h, 1).impulse_response(len(h)),
    "balanced_truncation": lambda h: ds.balanced_truncation(h, 1).impulse_response(len(h)),
    "fit_residues": lambda h: ds.fit_residues(h, [0.5]),
    "refine": lambda h: ds.refine(h, ds.era(np.asarray(h, float), 1)).impulse_response(len(h)),
    "order_sweep": lambda h: ds.order_sweep(h, np.arange(2))[1].impulse_response(len(h)),
    "distill_filter": lambda h: ds.distill_filter(h, order=1).impulse_response(len(h)),
    "distill_filters": lambda h: ds.distill_filters(h, order=1).impulse_response(),
}


@pytest.mark.parametrize("name", PER_FILTER)
def test_every_step_takes_any_filter_in_float64_and_refuses_a_short_one(name):
    """A list or float32 array gives the float64 answer of the float64 filter (the steps
    work in float64 whatever they are handed); length 4 is the shortest filter a
    Hankel matrix can be made of, and 3 is refused by its message."""
    fn = PER_FILTER[name]
    h = implicit_like(36, length=12)
    want = fn(h)
    from_list, from_float32 = fn(list(h)), fn(h.astype(np.float32))
    for got in (from_list, from_float32):
        assert np.asarray(got).dtype == np.asarray(want).dtype
    np.testing.assert_array_equal(from_list, want)
    np.testing.assert_allclose(from_float32, want, rtol=1e-5, atol=1e-6)
    fn(h[:4])
    with pytest.raises(ValueError, match=r"length >= 4 \(got 3\)"):
        fn(h[:3])


def test_order_selection_agrees_with_trying_every_order():
    """The bisection's answer is the smallest order whose fit, made at that order alone,
    meets tol: the same as fitting every order and taking the first that does. The
    tolerances fall between the orders' errors, so each takes another path through the
    bisection."""
    h = implicit_like(37, length=96)
    errors = np.array([ds.distill_filter(h, order=d).rel_error for d in range(11)])
    assert np.all(np.diff(errors) < 0)               # the bisection's assumption holds here
    for d in range(1, 11):
        tol = np.sqrt(errors[d - 1] * errors[d])     # met from order d on, not before
        assert ds.distill_filter(h, tol=tol, max_order=10).order == d, f"tol {tol:.3g}"
    assert ds.distill_filter(h, tol=errors[10] / 2, max_order=10).order == 10   # none meets


def test_hankel_norm_ratio_is_the_spectral_norm_of_the_hankel_gap_over_the_next_sigma():
    h = implicit_like(38, length=40)
    for d in (1, 3, 6):
        h_hat = ds.distill_filter(h, order=d).impulse_response(len(h))
        gap = np.linalg.svd(ds.hankel_matrix(h) - ds.hankel_matrix(h_hat), compute_uv=False)
        want = gap[0] / np.linalg.svd(ds.hankel_matrix(h), compute_uv=False)[d]
        assert ds.hankel_norm_ratio(h, h_hat, d) == pytest.approx(want, rel=1e-10)


def test_every_fit_keeps_h0_as_its_direct_term_and_era_is_exact_at_the_true_order():
    """D = h_0 exactly (it never enters H); ERA alone, with no refinement, realises an
    order-d system at order d, and so does balanced truncation."""
    poles, residues, direct = random_modal(39, 2, 1)
    h = ds.modal_impulse_response(poles, residues, direct, 64)
    for fit in (ds.era(h, 4), ds.balanced_truncation(h, 4)):
        assert fit.direct == h[0] == direct
        assert fit.rel_error < 1e-8, fit.method


def test_a_zero_filter_is_order_zero_with_no_error():
    fit = ds.distill_filter(np.zeros(16))
    assert fit.order == 0 and fit.error == 0.0 and fit.rel_error == 0.0


@pytest.mark.parametrize("max_radius", [0.9, 1 - 1e-6])
def test_the_stable_parametrisation_round_trips(max_radius):
    """_pack's unconstrained numbers give back the same poles and residues, for poles
    inside max_radius, real and complex, of either sign and angle."""
    poles = np.array([0.85, -0.3, 0.5 * np.exp(2.5j), 0.8 * np.exp(0.4j)])
    residues = np.array([1.5, -0.7, 0.2 - 1.1j, -2.0 + 0.3j])
    x, nr, nc = ds._pack(ds.ModalFit(poles, residues, 0.0), max_radius)
    assert (nr, nc) == (2, 2) and x.shape == (2 * nr + 4 * nc,)
    back_poles, back_residues = ds._unpack(x, nr, nc, max_radius)
    np.testing.assert_allclose(back_poles, poles, atol=1e-12)
    np.testing.assert_allclose(back_residues, residues, atol=1e-12)
