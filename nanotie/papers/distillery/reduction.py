"""Model-order reduction: a long convolution filter -> a small modal state-space model.

Laughing Hyena (arXiv:2310.18780, Section 3). A trained filter h_0..h_{L-1} is
replaced by the impulse response of an order-d system in modal form (``recurrence.py``),
ĥ_0 = D, ĥ_t = Re Σ_k R_k λ_k^(t-1). Filter-level NumPy/SciPy on float64 arrays; a
model's filters are distilled one by one. The recipe, one function per step:

1. **Hankel analysis** (:func:`hankel_matrix`). H_ij = h_{1+i+j}. An order-d system has
   h_{1+i+j} = C A^i A^j B, so H = (observability) x (controllability) has rank <= d:
   the significant singular values of H count the states the filter needs.
2. **Lower bounds** (:func:`error_lower_bound`, :func:`tight_lower_bound`). H is linear
   in h and holds each h_t at most n = min(rows, cols) times, so with Eckart–Young, for
   ANY order-d system ||h - ĥ||_2 >= ||H(h) - H(ĥ)||_2 / sqrt(n) >= σ_{d+1}(H) / sqrt(n).
   This l2 corollary is loose (trained filters sit ~4x above it whatever the fitter);
   the Frobenius norm over every block height gives a tighter one, and the
   Hankel-norm statement itself is ||H(h) - H(ĥ)||_2 / σ_{d+1} >= 1
   (:func:`hankel_norm_ratio`).
3. **Ho–Kalman / ERA start** (:func:`era`). With H = U Σ V^T truncated to d and H↑ the
   Hankel matrix shifted by one step, A = Σ_d^{-1/2} U_d^T H↑ V_d Σ_d^{-1/2},
   B = Σ_d^{1/2} V_d^T[:, 0], C = U_d[0] Σ_d^{1/2}, D = h_0; then A = W diag(λ) W^{-1}
   gives poles λ and residues R = (C W) ⊙ (W^{-1} B).
4. **Modal refinement** (:func:`refine`): the optimal residues for those poles (linear
   least squares), then (λ, R) jointly by ``scipy.optimize.least_squares`` with
   |λ| < max_radius < 1 built into the parametrisation; never worse than its start.
   **Balanced truncation** (:func:`balanced_truncation`), the textbook reduction, runs
   beside it; the sweep refines from it too whenever it is better.
5. **Order selection** (:func:`distill_filter`): the smallest d whose relative error
   meets a tolerance (a bisection that skips the orders a bound rules out), or one
   fixed order.

Conjugate pairs. A pair (λ, λ̄) with residues (R, R̄) contributes Re(2 R λ^t), so only
the member with Im λ > 0 is kept, with its residue doubled: a real pole is one real
state, a complex one two. The direct term h_0 touches only the current input: D
matches it exactly and it never enters H; Hyena's skip Dskip has the same role, so a
model folds it in as D = h_0 + Dskip (:meth:`ModalFilterBank.recurrence`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special

from nanotie import backend
from .recurrence import ModalRecurrence, modal_impulse_response, mode_powers

__all__ = ["DistillConfig", "ModalFit", "ModalFilterBank", "hankel_matrix",
           "hankel_singular_values", "error_lower_bound", "tight_lower_bound",
           "hankel_norm_ratio", "fir_realisation", "gramians", "balanced_truncation", "era",
           "fit_residues", "refine", "one_blas_thread", "distill_filter", "distill_filters",
           "order_sweep", "modal_impulse_response"]


def one_blas_thread(fn):
    """Run ``fn`` with NumPy's BLAS on one thread. The products here are small (a few
    dozen rows), where more threads cannot help, and on a machine with other work
    running OpenBLAS's waiting threads stall them: one np.convolve at L = 16384 took
    over 60 s with 2 threads and 0.18 s with one."""
    @functools.wraps(fn)
    def pinned(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)
    return pinned


@dataclass
class DistillConfig:
    """How each filter is distilled: its order, or the error to reach, and the method."""
    order: int | None = None     # fixed real state size for every filter; None: select by tol
    tol: float = 1e-2            # relative l2 error ||h - ĥ|| / ||h|| to reach (order=None)
    max_order: int = 16          # largest real state size tried when selecting by tol
    refine: bool = True          # modal least-squares refinement after ERA
    max_radius: float = 1 - 1e-6  # |λ| <= max_radius < 1: the poles stay stable
    max_nfev: int = 100          # function evaluations per least_squares refinement

    def __post_init__(self):     # a bad order or radius would give a wrong fit, silently
        for name, ok in (("order", self.order is None or self.order >= 0),
                         ("max_order", self.max_order >= 0), ("tol", self.tol > 0),
                         ("max_radius", 0 < self.max_radius < 1)):
            if not ok:
                raise ValueError(f"DistillConfig: {name} = {getattr(self, name)} is out of "
                                 "range (orders >= 0, tol > 0, 0 < max_radius < 1)")


def _as_filter(h, name: str = "h", ndim=(1,)) -> np.ndarray:
    """A float64 NumPy copy of a filter (from the GPU too), of a usable shape."""
    h = np.asarray(backend.asnumpy(h), dtype=np.float64)
    if h.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimension(s), "
                         f"got shape {h.shape}")
    if h.shape[-1] < 4:
        raise ValueError(f"{name} must have length >= 4 (got {h.shape[-1]}): the "
                         "Hankel matrix needs a few Markov parameters")
    return h


# ---------------------------------------------------------------- 1. Hankel analysis


def hankel_matrix(h, shift: int = 0) -> np.ndarray:
    """H_ij = h_{1+shift+i+j} for i < m = (L - 1) // 2, j < k = L - 1 - m: (m, k).

    shift=0 is the Hankel matrix of the filter, shift=1 the shifted one ERA needs:
    H uses h_1..h_{L-2}, so that its shift H↑ (h_2..h_{L-1}) still fits in the filter.
    (shift=-1 puts h_0 in: the wrong matrix an exercise asks about.)
    """
    h = _as_filter(h)
    m = (len(h) - 1) // 2
    markov = h[1 + shift:]                                  # h_{1+shift}, ...
    return scipy.linalg.hankel(markov[:m], markov[m - 1:len(h) - 2])   # k = L - 1 - m


def hankel_singular_values(h) -> np.ndarray:
    """σ_1 >= σ_2 >= ... of the Hankel matrix: (n,) for h (L,), (C, n) for h (C, L)."""
    h = _as_filter(h, ndim=(1, 2))
    if h.ndim == 2:
        return np.stack([hankel_singular_values(row) for row in h])
    return scipy.linalg.svdvals(hankel_matrix(h))


def error_lower_bound(h, order, sigma=None):
    """σ_{d+1} / sqrt(n): no order-d system gets closer to h in l2 (see module doc).

    ``order`` is an int or an array of ints; ``sigma`` reuses precomputed singular
    values. n = min(rows, cols) of the Hankel matrix = (L - 1) // 2. Orders >= n give 0.
    """
    h = _as_filter(h)
    sigma = hankel_singular_values(h) if sigma is None else np.asarray(sigma)
    padded = np.concatenate([sigma, [0.0]])                 # σ_{d+1} is sigma[d]
    bound = padded[np.minimum(np.asarray(order), len(sigma))] / np.sqrt((len(h) - 1) // 2)
    return float(bound) if bound.ndim == 0 else bound


def tight_lower_bound(h, order):
    """max over block heights m of sqrt(Σ_{i>d} σ_i(H_m)²) / sqrt(m): no order-d system
    gets closer to h in l2. H_m is the m-row Hankel matrix of ALL the Markov
    parameters, (H_m)_ij = h_{1+i+j} (m rows, L - m columns, m <= L/2).

    Proof. (i) For an order-d system ĥ_t = C A^(t-1) B, H_m(ĥ) = O_m Q factors through
    the d states, so rank H_m(ĥ) <= d, and Eckart–Young in the Frobenius norm gives
    ||H_m(h) - H_m(ĥ)||_F² >= Σ_{i>d} σ_i(H_m(h))². (ii) H_m is linear in h and each tap
    appears in at most m entries, so ||H_m(h - ĥ)||_F² <= m ||h - ĥ||². (iii) Chain
    them and take the best m. (d = 0 and m = 1 give ||h_{1:}||: exact.)

    ``order``: an int or an array of ints. Returns a float or an array like ``order``.
    """
    h = _as_filter(h)
    d = np.asarray(order)
    markov = h[1:]                                          # h_1 .. h_{L-1}
    best = np.zeros(d.shape)
    for m in range(1, len(h) // 2 + 1):
        sigma = scipy.linalg.svdvals(scipy.linalg.hankel(markov[:m], markov[m - 1:]))  # H_m
        tail = np.concatenate([np.cumsum((sigma ** 2)[::-1])[::-1], [0.0]])   # tail[d] = Σ_{i>d}
        best = np.maximum(best, np.sqrt(np.maximum(tail[np.minimum(d, len(sigma))], 0.0) / m))
    return float(best) if best.ndim == 0 else best


def hankel_norm_ratio(h, h_hat, order: int) -> float:
    """||H(h) - H(ĥ)||_2 / σ_{d+1}(H(h)): >= 1 for any order-d ĥ (Eckart–Young on the
    Hankel matrix of :func:`hankel_matrix`; AAK for the infinite one). 1 would be the
    best Hankel-norm fit; inf if σ_{d+1} = 0 and the fit is not exact."""
    h, h_hat = _as_filter(h), _as_filter(h_hat, "h_hat")
    if h.shape != h_hat.shape:
        raise ValueError(f"hankel_norm_ratio: h {h.shape} and h_hat {h_hat.shape} differ")
    sigma = hankel_singular_values(h)
    gap = float(scipy.linalg.norm(hankel_matrix(h) - hankel_matrix(h_hat), 2))
    s = sigma[order] if order < len(sigma) else 0.0
    if s <= sigma[0] * 1e-14:
        return 1.0 if gap <= sigma[0] * 1e-10 else np.inf
    return gap / s


# ----------------------------------------------------------------- a fitted filter


@dataclass
class ModalFit:
    """One distilled filter: ĥ_0 = direct, ĥ_t = Re Σ_k residues_k poles_k^(t-1)."""

    poles: np.ndarray         # (K,) complex; Im λ >= 0 (one member per conjugate pair)
    residues: np.ndarray      # (K,) complex; real for a real pole, doubled for a pair
    direct: float             # D = h_0
    error: float = np.nan     # ||h - ĥ||_2 over t = 0..L-1
    norm: float = np.nan      # ||h||_2
    bound: float = np.nan     # σ_{d+1}/sqrt(n): no order-d fit can do better
    era_error: float = np.nan  # the error of the ERA start, before refinement
    method: str = "era"       # which candidate won: era, residues, refined, warm, balanced
    tight_bound: float = np.nan  # max_m sqrt(Σ_{i>d} σ_i(H_m)²)/sqrt(m): also unbeatable
    bt_error: float = np.nan  # the error of balanced truncation at the same order

    @property
    def order(self) -> int:
        """The real state size d: 1 per real pole, 2 per complex pole (a pair)."""
        return int(np.sum(np.where(self.poles.imag == 0, 1, 2)))

    @property
    def rel_error(self) -> float:
        return self.error / self.norm if self.norm > 0 else 0.0

    def impulse_response(self, length: int) -> np.ndarray:
        return modal_impulse_response(self.poles, self.residues, self.direct, length)


def _canonical(poles, residues):
    """Real poles get real residues; complex ones keep Im λ > 0 (conjugate if needed)."""
    poles = np.asarray(poles, dtype=np.complex128).copy()
    residues = np.asarray(residues, dtype=np.complex128).copy()
    lower = poles.imag < 0
    poles[lower], residues[lower] = poles[lower].conj(), residues[lower].conj()
    real = poles.imag == 0
    residues[real] = residues[real].real
    return poles, residues


def _score(fit: ModalFit, h: np.ndarray, method: str, bound: float) -> ModalFit:
    """Fill in the error of ``fit`` against ``h``."""
    err = float(np.linalg.norm(h - fit.impulse_response(len(h))))
    return replace(fit, error=err, norm=float(np.linalg.norm(h)), bound=bound,
                   method=method)


# ------------------------------------------------------------------- 3. ERA start


class _HankelSVD:
    """The SVD of H and the shifted H↑ of one filter, shared by every order."""

    def __init__(self, h: np.ndarray):
        self.U, self.sigma, self.Vt = scipy.linalg.svd(hankel_matrix(h), full_matrices=False)
        self.H_up = hankel_matrix(h, shift=1)
        # numerical rank: singular values above the usual SVD round-off threshold
        tol = self.sigma[0] * max(self.U.shape[0], self.Vt.shape[1]) * np.finfo(float).eps
        self.rank = int(np.sum(self.sigma > tol))


def era(h, order: int, max_radius: float = 1 - 1e-6, _svd: _HankelSVD | None = None
        ) -> ModalFit:
    """Ho–Kalman / ERA realisation of order d (capped at the numerical rank of H), with
    its error filled in. ERA can put poles on or outside the unit circle on a finite
    filter: :func:`_modal_fit` pulls them inside."""
    h = _as_filter(h)
    svd = _svd if _svd is not None else _HankelSVD(h)
    d = min(int(order), svd.rank)
    root = np.sqrt(svd.sigma[:d])                              # Σ_d^{1/2}
    U_d, V_d = svd.U[:, :d], svd.Vt[:d].T                      # (m, d), (k, d)
    A = (U_d.T @ svd.H_up @ V_d) / root[:, None] / root[None, :]  # (d, d)
    B = root * svd.Vt[:d, 0]                                   # first column of Q
    C = svd.U[0, :d] * root                                    # first row of O
    return _modal_fit(h, A, B, C, max_radius, "era", error_lower_bound(h, d, svd.sigma))


def _modal_fit(h, A, B, C, max_radius: float, method: str, bound: float) -> ModalFit:
    """The scored fit of h whose poles and residues are those of the state-space system
    (A, B, C) (d = 0: no modes): with A = W diag(λ) W^{-1},
    C A^(t-1) B = Σ_k (C W)_k (W^{-1} B)_k λ_k^(t-1). One member of each conjugate pair
    is kept with a doubled residue (module doc); poles on or outside the unit circle
    are pulled inside to ``max_radius``, keeping their angle.

    A nearly defective A has no reliable eigenvectors: at the order of an exactly FIR
    response's realisation, A is (close to) a shift register, a Jordan block at 0, and
    W^{-1} B blows up (relative errors of 1e12 were seen). Its poles are still usable;
    the residues are then the least-squares ones (:func:`fit_residues`)."""
    if len(A) == 0:                     # d = 0 (SciPy before 1.14 fails on a 0 x 0 eig)
        lam = R = np.zeros(0, np.complex128)
    else:
        lam, W = scipy.linalg.eig(A)                           # A = W diag(λ) W^{-1}
        R = (C @ W) * scipy.linalg.solve(W, B.astype(np.complex128))
    keep = lam.imag >= 0
    R = np.where(lam.imag > 0, 2 * R, R)
    poles, residues = _canonical(lam[keep], R[keep])
    radius = np.abs(poles)
    outside = radius > max_radius
    poles[outside] *= max_radius / radius[outside]
    fit = _score(ModalFit(poles, residues, float(h[0])), h, method, bound)
    if len(A) and np.linalg.cond(W) > 1e8:                     # defective: see above
        fit = _score(replace(fit, residues=fit_residues(h, poles)), h, method, bound)
    return fit


# ---------------------------------------------------- 4b. balanced truncation


def fir_realisation(h):
    """(A, B, C, D) of order n = L - 1 whose impulse response is exactly h: a shift
    register that remembers the last n inputs,

        x_{t+1} = A x_t + B u_t,  y_t = C x_t + D u_t,   A = down-shift (n, n),
        B = e_1,  C = [h_1 .. h_{L-1}],  D = h_0,

    so C A^(t-1) B = h_t for 1 <= t <= L-1 and 0 after."""
    h = _as_filter(h)
    n = len(h) - 1
    A = np.eye(n, k=-1)                                        # (n, n): x_{i+1} <- x_i
    B = np.zeros(n)
    B[0] = 1.0
    return A, B, h[1:].copy(), float(h[0])


def gramians(A, B, C):
    """The controllability and observability Gramians of a stable (A, B, C):

        P = A P A^T + B B^T   (P = Σ_t A^t B B^T A^tT),
        Q = A^T Q A + C^T C   (Q = Σ_t A^tT C^T C A^t),

    solved by ``scipy.linalg.solve_discrete_lyapunov``. The Hankel singular values
    are sqrt(eig(P Q))."""
    B, C = np.atleast_2d(B).reshape(len(A), -1), np.atleast_2d(C).reshape(-1, len(A))
    P = scipy.linalg.solve_discrete_lyapunov(A, B @ B.T)
    Q = scipy.linalg.solve_discrete_lyapunov(A.T, C.T @ C)
    return (P + P.T) / 2, (Q + Q.T) / 2                       # symmetric up to round-off


def _psd_factor(M: np.ndarray) -> np.ndarray:
    """F with F F^T = M for a symmetric positive SEMI-definite M (Cholesky fails on the
    singular Gramians of a filter with trailing zeros; an eigendecomposition does not)."""
    w, V = scipy.linalg.eigh(M)
    return V * np.sqrt(np.maximum(w, 0.0))


class _Balanced:
    """The square-root balancing of one filter's FIR realisation, shared by every order."""

    def __init__(self, h: np.ndarray):
        self.A, self.B, self.C, _ = fir_realisation(h)
        P, Q = gramians(self.A, self.B, self.C)
        self.Lp, self.Lq = _psd_factor(P), _psd_factor(Q)
        self.U, self.hsv, Vt = scipy.linalg.svd(self.Lq.T @ self.Lp)   # hsv: descending
        self.V = Vt.T
        self.rank = int(np.sum(self.hsv > self.hsv[0] * len(self.hsv) * np.finfo(float).eps * 1e3))


def balanced_truncation(h, order: int, max_radius: float = 1 - 1e-6,
                        _bal: _Balanced | None = None) -> ModalFit:
    """Balanced truncation of h's FIR realisation to order d (capped at its rank).

    Square-root method: with Gramians P = Lp Lp^T, Q = Lq Lq^T and the SVD
    Lq^T Lp = U Σ V^T (Σ: the Hankel singular values),

        T = Lp V_d Σ_d^{-1/2},  T_i = Σ_d^{-1/2} U_d^T Lq^T,
        A_d = T_i A T,  B_d = T_i B,  C_d = C T,

    the d states that are both the most reachable and the most observable. The
    truncated system is stable, and its error is bounded in the H∞ norm, hence in l2:
    ||h - ĥ||_2 <= ||G - G_d||_∞ <= 2 Σ_{i>d} σ_i. (Its modal form can miss the bound
    at the full order L - 1, where A_d is the shift register itself: see _modal_fit.)
    """
    h = _as_filter(h)
    bal = _bal if _bal is not None else _Balanced(h)
    d = min(int(order), bal.rank)
    scale = 1.0 / np.sqrt(bal.hsv[:d])                         # Σ_d^{-1/2}
    T = (bal.Lp @ bal.V[:, :d]) * scale                        # (n, d)
    Ti = scale[:, None] * (bal.U[:, :d].T @ bal.Lq.T)          # (d, n)
    return _modal_fit(h, Ti @ bal.A @ T, Ti @ bal.B, bal.C @ T, max_radius, "balanced", np.nan)


# ------------------------------------------------------------- 4. modal refinement


def fit_residues(h, poles) -> np.ndarray:
    """The residues minimising ||h - ĥ||_2 for fixed poles (linear least squares).

    ĥ_t = Σ_real r_k λ_k^(t-1) + Σ_pairs (Re R_k · Re λ_k^(t-1) - Im R_k · Im λ_k^(t-1)),
    a linear model in (r, Re R, Im R): a Vandermonde-type least-squares problem.
    """
    h = _as_filter(h)
    poles = np.asarray(poles, dtype=np.complex128)
    real = poles.imag == 0
    P = mode_powers(poles, len(h) - 1)                         # P[k, p] = λ_k^p: (K, L-1)
    columns = np.concatenate([P[real].real, P[~real].real, -P[~real].imag]).T
    coef = scipy.linalg.lstsq(columns, h[1:])[0]
    nr, nc = int(real.sum()), int((~real).sum())
    residues = np.zeros(len(poles), dtype=np.complex128)
    residues[real] = coef[:nr]
    residues[~real] = coef[nr:nr + nc] + 1j * coef[nr + nc:]
    return residues


# Stability by construction: the optimiser moves unconstrained numbers z, and the
# poles are  a = ρmax·tanh(z)  (real)  and  λ = ρmax·sigmoid(z)·e^{iθ}  (complex), so
# |λ| < ρmax < 1 at every step. Without box constraints, scipy can use MINPACK's
# Levenberg–Marquardt ("lm"), which is fast on these small dense problems.


def _pack(fit: ModalFit, max_radius: float):
    """Parameters for least_squares: [z_a, r] for the real modes (a = ρmax tanh z_a,
    residue r), then [z_ρ, θ, Re R, Im R] for the complex ones (ρ = ρmax sigmoid z_ρ)."""
    real = fit.poles.imag == 0
    a, r = fit.poles[real].real, fit.residues[real].real
    lam, R = fit.poles[~real], fit.residues[~real]
    edge = 1e-12
    z_a = np.arctanh(np.clip(a / max_radius, -1 + edge, 1 - edge))
    q = np.clip(np.abs(lam) / max_radius, edge, 1 - edge)
    z_rho = np.log(q) - np.log1p(-q)                           # logit
    x = np.concatenate([z_a, r, z_rho, np.angle(lam), R.real, R.imag])
    return x, int(real.sum()), int((~real).sum())


def _unpack(x, nr: int, nc: int, max_radius: float):
    """Poles and residues from the parameters (see :func:`_pack`)."""
    z_a, r = x[:nr], x[nr:2 * nr]
    z_rho, theta, Rre, Rim = (x[2 * nr + i * nc: 2 * nr + (i + 1) * nc] for i in range(4))
    rho = max_radius * scipy.special.expit(z_rho)             # ρmax sigmoid(z)
    poles = np.concatenate([max_radius * np.tanh(z_a) + 0j, rho * np.exp(1j * theta)])
    residues = np.concatenate([r + 0j, Rre + 1j * Rim])
    return poles, residues


def _residual_and_jacobian(x, h, nr: int, nc: int, max_radius: float,
                           jacobian: bool = True):
    """e_t = ĥ_t - h_t for t = 1..L-1, and de/dx (L-1, len(x)), analytically.

    real mode  r a^p:          d/dr = a^p,  d/da = r p a^(p-1)
    pair  Re(R λ^p), λ = ρe^{iθ}: d/dReR = Re λ^p,  d/dImR = -Im λ^p,
                               d/dρ = Re(R p λ^(p-1) e^{iθ}),  d/dθ = Re(i p R λ^p)
    and the chain rule through the pole maps:
        da/dz_a = ρmax (1 - tanh² z_a),   dρ/dz_ρ = ρ (1 - ρ/ρmax).
    """
    poles, residues = _unpack(x, nr, nc, max_radius)
    P = mode_powers(poles, len(h) - 1)                          # λ_k^p: (K, L-1)
    e = np.real(np.sum(residues[:, None] * P, axis=0)) - h[1:]   # no BLAS: tiny
    if not jacobian:
        return e, None
    p = np.arange(len(h) - 1)
    P1 = np.concatenate([np.zeros((len(poles), 1), P.dtype), P[:, :-1]], axis=1)  # λ_k^(p-1)
    a, rho = poles[:nr].real, np.abs(poles[nr:])
    Pr, P1r, R = P[:nr].real, P1[:nr].real, residues[:nr].real
    Pc, P1c, Rc = P[nr:], P1[nr:], residues[nr:]
    unit = np.exp(1j * x[2 * nr + nc: 2 * nr + 2 * nc])[:, None]  # e^{iθ}
    da_dz = (max_radius - a * a / max_radius)[:, None]
    drho_dz = (rho * (1 - rho / max_radius))[:, None]
    J = np.concatenate([
        R[:, None] * p * P1r * da_dz,                          # d/dz_a
        Pr,                                                    # d/dr
        np.real(Rc[:, None] * p * P1c * unit) * drho_dz,       # d/dz_ρ
        np.real(1j * p * Rc[:, None] * Pc),                    # d/dθ
        Pc.real,                                               # d/dRe R
        -Pc.imag,                                              # d/dIm R
    ]).T
    return e, J


def refine(h, start: ModalFit, max_radius: float = 1 - 1e-6, max_nfev: int = 100
           ) -> ModalFit:
    """Modal refinement of ``start`` (e.g. an ERA fit, module doc step 4): the best of
    ``start``, the optimal residues for its poles (:func:`fit_residues`), and
    ``least_squares`` on poles and residues from the better of those two (|λ| <
    max_radius by :func:`_pack`'s construction): never worse than its start, with as
    many real and complex modes, hence the same order."""
    h = _as_filter(h)
    start = _score(start, h, start.method, start.bound)
    if start.poles.size == 0:
        return replace(start, era_error=start.error)
    optimal = _score(replace(start, residues=fit_residues(h, start.poles)), h, "residues",
                     start.bound)                      # the optimal residues for its poles
    best = min(start, optimal, key=lambda f: f.error)  # a tie keeps the start
    # Joint nonlinear least squares on poles and residues.
    x0, nr, nc = _pack(best, max_radius)
    args = (h, nr, nc, max_radius)
    result = scipy.optimize.least_squares(
        lambda x: _residual_and_jacobian(x, *args, jacobian=False)[0], x0,
        jac=lambda x: _residual_and_jacobian(x, *args)[1], x_scale="jac", max_nfev=max_nfev,
        method="lm" if len(h) - 1 >= len(x0) else "trf")   # lm needs residuals >= params
    poles, residues = _canonical(*_unpack(result.x, nr, nc, max_radius))
    candidate = _score(ModalFit(poles, residues, float(h[0])), h, "refined", start.bound)
    if np.all(np.abs(poles) < 1) and candidate.error < best.error:
        best = candidate
    return replace(best, era_error=start.error)


# ------------------------------------------------------------ 5. order selection


def _iter_orders(h, orders, cfg: DistillConfig, svd: _HankelSVD,
                 bal: _Balanced | None = None):
    """Yield one fit per order in ``orders`` (ascending), each ERA + refinement.

    When the fit from ERA ends worse than the previous order's fit, that previous fit
    plus idle real modes (R = 0: same error, higher order) is refined too, and the
    better one kept. So along a sweep the error never rises with the order.
    With ``bal`` (a balancing of h), balanced truncation runs at each order too: its
    error is recorded (``bt_error``), and when it beats the fit so far it is refined
    and kept if better, so the result is never worse than balanced truncation.
    """
    def polish(fit):        # refinement if asked for; era_error is the start's error
        return refine(h, fit, cfg.max_radius, cfg.max_nfev) if cfg.refine else \
            replace(fit, era_error=fit.error)

    previous = None
    tight = tight_lower_bound(h, np.asarray(orders)) if len(orders) else []
    for d, tight_d in zip(orders, tight):
        fit = polish(era(h, d, cfg.max_radius, _svd=svd))
        if previous is not None and previous.error < fit.error:
            # the same impulse response at this order: idle real modes (λ = 0, R = 0)
            idle = np.zeros(max(0, min(int(d), svd.rank) - previous.order), np.complex128)
            warm = polish(replace(previous, poles=np.append(previous.poles, idle),
                                  residues=np.append(previous.residues, idle)))
            if warm.error < fit.error:
                fit = replace(warm, bound=fit.bound, era_error=fit.era_error,
                              method="warm")
        if bal is not None:
            bt = balanced_truncation(h, d, cfg.max_radius, _bal=bal)
            if bt.error < fit.error:
                start = polish(bt)
                if start.error < fit.error:
                    fit = replace(start, bound=fit.bound, era_error=fit.era_error,
                                  method="balanced")
            fit = replace(fit, bt_error=bt.error)
        yield replace(fit, tight_bound=float(tight_d))
        previous = fit


@one_blas_thread
def order_sweep(h, orders, config: DistillConfig | None = None) -> list[ModalFit]:
    """Distil ``h`` (L,) at every order in ``orders`` (ascending ints): one
    :class:`ModalFit` per order, with errors that never rise with the order, nor rise
    above balanced truncation's, whose error each fit records."""
    h = _as_filter(h)
    orders = [int(d) for d in orders]
    if orders != sorted(set(orders)) or (orders and orders[0] < 0):
        raise ValueError(f"order_sweep: orders must be distinct ascending ints >= 0, got {orders}")
    return list(_iter_orders(h, orders, config or DistillConfig(), _HankelSVD(h), _Balanced(h)))


def distill_filter(h, config: DistillConfig | None = None, **overrides) -> ModalFit:
    """Distil one filter h (L,) into a modal system.

    config.order set: that order (capped at the rank of the Hankel matrix).

    Otherwise the smallest order d <= config.max_order whose refined fit has
    rel_error <= config.tol, found by bisection (this assumes the error falls with the
    order, which it does up to the quirks of a local optimiser):

    * orders whose (tight) lower bound is already above tol·||h|| are ruled out
      unfitted;
    * the first order at which plain ERA meets tol is an upper end (refinement is
      never worse than ERA), found cheaply since ERA costs one small eigenproblem;
    * then bisect between the two with ERA + refinement.

    If no order meets tol, the fit at max_order is returned (check ``fit.rel_error``).
    """
    cfg = replace(config or DistillConfig(), **overrides)
    h = _as_filter(h)
    svd = _HankelSVD(h)
    if cfg.order is not None:
        return next(_iter_orders(h, [cfg.order], cfg, svd))
    target = cfg.tol * float(np.linalg.norm(h))
    max_order = min(cfg.max_order, svd.rank)
    orders = np.arange(max_order + 1)
    possible = orders[tight_lower_bound(h, orders) <= target]
    lo = int(possible[0]) if possible.size else max_order
    hi = next((d for d in range(lo, max_order + 1)
               if era(h, d, cfg.max_radius, _svd=svd).error <= target), max_order)
    best = next(_iter_orders(h, [hi], cfg, svd))
    while lo < hi:
        mid = (lo + hi) // 2
        fit = next(_iter_orders(h, [mid], cfg, svd))
        if fit.error <= target:
            hi, best = mid, fit
        else:
            lo = mid + 1
    return best


# ------------------------------------------------------------------- a filter bank


@dataclass
class ModalFilterBank:
    """Distilled filters for C channels (or heads), padded to K modes each.

    Padding modes have λ = 0 and R = 0 and do nothing. ``fits`` keeps the per-filter
    results (errors, bounds, ERA errors) for reports.
    """

    poles: np.ndarray        # (C, K) complex128
    residues: np.ndarray     # (C, K) complex128
    direct: np.ndarray       # (C,) float64: h_0 of each filter
    length: int              # L, the filter length that was distilled
    fits: list = field(default_factory=list, repr=False)  # C ModalFit

    @classmethod
    def from_fits(cls, fits: list[ModalFit], length: int) -> "ModalFilterBank":
        K = max([len(f.poles) for f in fits] + [1])
        poles = np.zeros((len(fits), K), dtype=np.complex128)
        residues = np.zeros_like(poles)
        for c, f in enumerate(fits):
            poles[c, :len(f.poles)] = f.poles
            residues[c, :len(f.residues)] = f.residues
        direct = np.array([f.direct for f in fits], dtype=np.float64)
        return cls(poles, residues, direct, int(length), list(fits))

    @property
    def orders(self) -> np.ndarray:
        """(C,) real state size of each filter."""
        return np.array([f.order for f in self.fits])

    @property
    def rel_errors(self) -> np.ndarray:
        return np.array([f.rel_error for f in self.fits])

    def impulse_response(self, length: int | None = None) -> np.ndarray:
        """ĥ (C, length), float64 (length defaults to the distilled length L)."""
        return modal_impulse_response(self.poles, self.residues, self.direct,
                                      self.length if length is None else length)

    def recurrence(self, skip=None, trailing_dims: int = 0, dtype=np.float64,
                   device: str = "cpu") -> ModalRecurrence:
        """A :class:`~.recurrence.ModalRecurrence` for this bank, ready to run.

        skip: optional (C,) term added to the direct term (Hyena's Dskip: ĥ_0 + Dskip).
        trailing_dims: singleton axes after the channel axis, so that one filter per
            head broadcasts over the head's channels (MultiHyena: 2, for u (B, M, N, N)).
        dtype: the real dtype of the inputs (float32 -> complex64 state).
        """
        direct = self.direct if skip is None else \
            self.direct + np.asarray(backend.asnumpy(skip), np.float64).reshape(-1)
        cdtype = np.result_type(dtype, np.complex64)
        shape = (len(self.direct),) + (1,) * trailing_dims   # the head tie: broadcast
        arrays = (self.poles.reshape(shape + (-1,)).astype(cdtype),
                  self.residues.reshape(shape + (-1,)).astype(cdtype),
                  direct.reshape(shape).astype(dtype))
        return ModalRecurrence(*(backend.to_device(a, device) for a in arrays))


@one_blas_thread
def distill_filters(h, config: DistillConfig | None = None, progress: bool = False,
                    desc: str = "distill", **overrides) -> ModalFilterBank:
    """Distil every row of h (C, L) (or one filter (L,)) into a :class:`ModalFilterBank`.

    Works on a copy in float64 NumPy whatever the device and dtype of ``h``.
    """
    cfg = replace(config or DistillConfig(), **overrides)
    h = _as_filter(h, ndim=(1, 2))
    rows = h[None] if h.ndim == 1 else h
    from tqdm.auto import tqdm

    fits = [distill_filter(row, cfg)
            for row in tqdm(rows, desc=desc, disable=not progress, leave=False)]
    return ModalFilterBank.from_fits(fits, rows.shape[-1])
