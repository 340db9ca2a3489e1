"""Exercise 10: the Hankel lower bound on a distillation's error (Hyena distillation).

For ANY order-d system h_hat, ||h - h_hat||_2 >= sigma_{d+1}(H(h)) / sqrt(n): H(h_hat)
has rank <= d, and H holds each h_t at most n = min(m, k) times (step 2 of
``nanotie.papers.distillery.reduction``'s docstring derives it and says why it is
loose). The check compares with that module's ``hankel_matrix`` and
``error_lower_bound``.
"""

from __future__ import annotations

import numpy as np

from ..papers.distillery.reduction import error_lower_bound, hankel_matrix
from . import Planted
from .checking import Checker, CheckResult, Mistake

TITLE = "Hyena distillation: the (loose) Hankel bound"
GOAL = ("Build the Hankel matrix of a filter's Markov parameters and read off, from its "
        "singular values, the smallest error any order-d recurrence can reach: "
        "sigma_{d+1} / sqrt(n).")
FUNCTION = "hankel_bound"

STUB = '''
import numpy as np


def hankel_bound(h, d):
    """The Hankel matrix of the filter h, and the lower bound on the error of any
    order-d system: returns (H, bound).

    h: (L,) float, the filter h_0 .. h_{L-1};  d: int >= 0, the state size

    1. H, of shape (m, k) with m = (L - 1) // 2 and k = L - 1 - m:

           H[i, j] = h[1 + i + j]

       h_0 is the direct term D (matched exactly by the recurrence), so it is NOT in H.

    2. The singular values sigma_1 >= sigma_2 >= ... of H (np.linalg.svd(H,
       compute_uv=False), largest first), and with n = min(m, k):

           bound = sigma_{d+1} / sqrt(n)        (0 when d >= n)

       Mind the indexing: sigma_{d+1}, the largest one an order-d system cannot
       match, is sigma[d] in a 0-based array.
    """
    H = ...      # your code
    bound = ...  # your code
    return H, bound
'''


def reference(h, d):
    """The solution."""
    L = len(h)
    m = (L - 1) // 2
    k = L - 1 - m
    i, j = np.arange(m)[:, None], np.arange(k)[None, :]
    H = h[1 + i + j]                                      # (m, k), from h_1
    sigma = np.linalg.svd(H, compute_uv=False)            # largest first
    n = min(m, k)
    bound = sigma[d] / np.sqrt(n) if d < n else 0.0       # sigma_{d+1}
    return H, bound


def _filters(rng):
    """A few filters: decaying oscillations plus a little noise, odd and even L."""
    out = []
    for L in (16, 21):
        t = np.arange(L)
        h = (0.9 ** t * np.cos(0.7 * t) + 0.5 * 0.6 ** t * np.sin(1.9 * t)
             + 0.05 * rng.standard_normal(L))
        h[0] = 2.0                                        # a large direct term
        out.append(h)
    return out


ORDERS = (0, 1, 3, 5)


def _wrong_bounds(h, d):
    n = (len(h) - 1) // 2                                 # min(m, k)
    known = [(error_lower_bound(h, d) * np.sqrt(n),
              f"it is sigma_{d + 1} without the 1/sqrt(n): the bound is "
              f"sigma_{d + 1} / sqrt(n), with n = min(m, k) = {n}, the most entries of H "
              f"any one h_t sits in.")]
    if 1 <= d < n:
        known.append((error_lower_bound(h, d - 1),
                      f"it uses sigma_{d} (sigma[{d - 1}]); an order-{d} system can "
                      f"match the largest {d} singular value(s), so the bound is the next "
                      f"one, sigma_{d + 1} = sigma[{d}] in a 0-based array."))
    if d + 1 < n:
        known.append((error_lower_bound(h, d + 1),
                      f"it uses sigma_{d + 2} (sigma[{d + 1}]): the singular values are "
                      f"numbered from 1, so sigma_{d + 1} is sigma[{d}] in a 0-based array."))
    if d >= n:
        known.append((error_lower_bound(h, n - 1),
                      f"it uses sigma_{n} (sigma[{n - 1}]), but H has only n = {n} singular "
                      f"values: an order-{d} system (d >= n) can match all of them, so "
                      f"there is no sigma_{d + 1} and the bound is 0."))
    return known


def check(fn) -> CheckResult:
    rng = np.random.default_rng(10)
    filters = _filters(rng)
    with Checker(f"Exercise 10: {TITLE}") as c:
        with c.step("H[i, j] = h[1 + i + j], shape ((L-1)//2, L-1-(L-1)//2)"):
            for h in filters:
                c.case = f"h of length {len(h)}"
                out = c.returns(fn, h, 2, what="hankel_bound(h, d)", names="H, bound")
                m, k = hankel_matrix(h).shape
                if m != k and getattr(out[0], "shape", None) == (k, m):
                    raise Mistake(f"`H` has shape {(k, m)}, but it should have shape {(m, k)}"
                                  f": m = (L - 1) // 2 = {m} rows (not L // 2) and k = L - 1 "
                                  f"- m = {k} columns. Swapping m and k transposes H.")
                c.expect_array(out[0], hankel_matrix(h), "H", known=[(
                    hankel_matrix(h, shift=-1),               # H[i, j] = h[i + j]
                    "it starts at h_0. H[i, j] = h[1 + i + j]: h_0 is the direct term D, "
                    "which the recurrence matches exactly, so it stays out of H (a "
                    "system's h_0 is not C A^i A^j B).")])
        with c.step(f"bound = sigma_(d+1) / sqrt(n), as nanotie.papers.distillery.reduction."
                    f"error_lower_bound (d in {ORDERS} and d = n)"):
            for h in filters:
                n = (len(h) - 1) // 2
                for d in ORDERS + (n,):
                    c.case = f"h of length {len(h)}, d = {d}"
                    _, bound = c.returns(fn, h, d, what="hankel_bound(h, d)",
                                         names="H, bound")
                    c.expect_array(bound, error_lower_bound(h, d), "bound",
                                   known=_wrong_bounds(h, d))
    return c.result


# ------------------------------------------------ wrong answers, for the tests

def _with_h0(h, d):
    return reference(np.concatenate([[0.0], h[:-1]]), d)  # shifted: H[i, j] = h[i + j]


def _m_is_half_of_L(h, d):
    m = len(h) // 2                                       # should be (L - 1) // 2
    k = len(h) - 1 - m
    H = h[1 + np.arange(m)[:, None] + np.arange(k)[None, :]]
    return H, reference(h, d)[1]


def _sigma_d(h, d):
    return reference(h, max(d - 1, 0))                    # sigma_d, one index early


def _sigma_d_plus_2(h, d):
    return reference(h, d + 1)                            # "sigma_{d+1}" read as sigma[d + 1]


def _no_sqrt_n(h, d):
    H, bound = reference(h, d)
    return H, bound * np.sqrt(min(H.shape))               # sigma_{d+1} alone


def _last_sigma_for_a_large_d(h, d):
    H, _ = reference(h, 0)
    sigma = np.linalg.svd(H, compute_uv=False)
    return H, sigma[min(d, len(sigma) - 1)] / np.sqrt(min(H.shape))   # never 0


MISTAKES = [
    Planted("H includes h_0", _with_h0, ("starts at h_0", "direct term")),
    Planted("m = L // 2 rows", _m_is_half_of_L, ("(L - 1) // 2 = 7 rows", "not L // 2")),
    Planted("sigma_d instead of sigma_{d+1}", _sigma_d,
            ("uses sigma_1 (sigma[0])", "sigma_2 = sigma[1]")),
    Planted("sigma[d + 1] for sigma_{d+1}", _sigma_d_plus_2,
            ("uses sigma_2 (sigma[1])", "sigma_1 is sigma[0]")),
    Planted("the 1/sqrt(n) forgotten", _no_sqrt_n,
            ("it is sigma_1 without the 1/sqrt(n)", "sigma_1 / sqrt(n), with n = min(m, k) = 7")),
    Planted("d >= n: the last sigma instead of 0", _last_sigma_for_a_large_d,
            ("H has only n = 7 singular values", "the bound is 0")),
]
