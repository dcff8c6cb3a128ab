"""Critical values and power of studentised tests, computed by deterministic quadrature.

A studentised statistic is T = Z / W with Z normal and W = s / σ the ratio of an estimated
to the true standard error, W² ~ χ²(ν) / ν independent of Z. Everything here integrates
over W on a fixed Gauss–Legendre grid in its probability scale (ν = inf: W = 1), so the
same inputs give the same numbers on every machine and no random numbers are drawn (a
resumed comparison must reproduce its verdicts).

- :func:`many_to_one_quantile`: the two-sided critical value c with
  P(max_j |T_j| <= c) = 1 − α for k statistics sharing one W whose normal parts are
  equicorrelated with ρ >= 0 — Dunnett's many-to-one quantile (Dunnett, JASA 50:1096,
  1955; balanced comparisons with a common control have ρ = 1/2). Z_j = √ρ U + √(1 − ρ) E_j
  reduces the k-variate normal to one integral over U (Gauss–Hermite).
- :func:`two_sided_power` and :func:`detectable_shift`: power of |T| > c at a true shift
  of the mean, and the shift that reaches a given power. This replaces the noncentral t,
  whose ``scipy.stats.nct.cdf`` returns NaN at large noncentrality (issue 19).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

from .._base.errors import Attn2dError

__all__ = ["detectable_shift", "many_to_one_quantile", "two_sided_power"]

_W_NODES = 96  # Gauss–Legendre nodes over W's probability scale
_U_NODES = 64  # Gauss–Hermite nodes over the common normal factor


@functools.lru_cache(maxsize=256)
def _w_grid(df: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes w_i and weights of E[h(W)], W = √(χ²(df)/df), as ∫₀¹ h(W(q)) dq."""
    if math.isinf(df):
        return np.ones(1), np.ones(1)
    x, weights = special.roots_legendre(_W_NODES)
    q = (x + 1) / 2
    return np.sqrt(sps.chi2.ppf(q, df) / df), weights / 2


@functools.lru_cache(maxsize=1)
def _u_grid() -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of E[h(U)], U standard normal (probabilists' Gauss–Hermite)."""
    u, weights = special.roots_hermitenorm(_U_NODES)
    return u, weights / math.sqrt(2 * math.pi)


def _check_df(df: float, owner: str) -> float:
    df = float(df)
    if not df > 0:
        raise Attn2dError(f"{owner}: expected degrees of freedom > 0 (or inf), got {df}")
    return df


def _within(c: float, comparisons: int, df: float, rho: float) -> float:
    """P(max_j |T_j| <= c)."""
    w, w_weights = _w_grid(df)
    u, u_weights = _u_grid()
    scale = math.sqrt(1 - rho)
    bound = c * w[:, None]  # (W, 1)
    shift = math.sqrt(rho) * u[None, :]  # (1, U)
    one = sps.norm.cdf((bound - shift) / scale) - sps.norm.cdf((-bound - shift) / scale)
    return float(w_weights @ (one**comparisons) @ u_weights)


@functools.lru_cache(maxsize=1024)
def many_to_one_quantile(comparisons: int, df: float, alpha: float = 0.05,
                         rho: float = 0.5) -> float:
    """Two-sided critical value of ``comparisons`` equicorrelated studentised statistics.

    Args:
        comparisons: k >= 1 statistics (k = 1 gives Student's t quantile).
        df: degrees of freedom of the shared variance estimate (``inf``: known variance).
        alpha: family-wise level: P(any |T_j| > c) = α under the null.
        rho: correlation of the statistics' normal parts, 0 <= ρ < 1 (1/2: Dunnett's
            balanced many-to-one comparisons).
    """
    owner = "many_to_one_quantile"
    if int(comparisons) != comparisons or comparisons < 1:
        raise Attn2dError(f"{owner}: expected comparisons >= 1, got {comparisons}")
    if not 0 < alpha < 1:
        raise Attn2dError(f"{owner}: expected alpha in (0, 1), got {alpha}")
    if not 0 <= rho < 1:
        raise Attn2dError(f"{owner}: expected rho in [0, 1), got {rho}")
    df = _check_df(df, owner)
    if comparisons == 1:
        return float(sps.t.ppf(1 - alpha / 2, df) if math.isfinite(df)
                     else sps.norm.ppf(1 - alpha / 2))
    low = sps.norm.ppf(1 - alpha / 2)  # one comparison with known variance: a lower bound
    high = float(sps.t.ppf(1 - alpha / (2 * comparisons), df)) if math.isfinite(df) else \
        float(sps.norm.ppf(1 - alpha / (2 * comparisons)))  # Bonferroni: an upper bound
    return float(optimize.brentq(lambda c: _within(c, comparisons, df, rho) - (1 - alpha),
                                 low, high * 1.01 + 1e-9, xtol=1e-10))


def two_sided_power(shift: float | np.ndarray, critical: float, df: float) -> np.ndarray:
    """P(|Z + shift| > critical · W): the power of a two-sided studentised test whose mean
    is ``shift`` standard errors away from the null."""
    w, weights = _w_grid(_check_df(df, "two_sided_power"))
    shift = np.asarray(shift, dtype=float)[..., None]
    bound = critical * w
    return (sps.norm.sf(bound - shift) + sps.norm.cdf(-bound - shift)) @ weights


def detectable_shift(critical: float, df: float, power: float = 0.8) -> float:
    """The shift, in standard errors, at which |T| > ``critical`` has the given power."""
    if not 0 < power < 1:
        raise Attn2dError(f"detectable_shift: expected power in (0, 1), got {power}")
    if float(two_sided_power(0.0, critical, df)) >= power:
        return 0.0
    high = critical + sps.norm.ppf(power) + 1.0
    while float(two_sided_power(high, critical, df)) < power:
        high *= 2
    return float(optimize.brentq(lambda d: float(two_sided_power(d, critical, df)) - power,
                                 0.0, high, xtol=1e-10))
