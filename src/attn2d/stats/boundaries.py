"""Group-sequential boundaries: Lan–DeMets α-spending with the O'Brien–Fleming-type spending
function, and the studentised form used at each look.

A statistic Z_k observed at information fractions 0 < t_1 < … < t_K = 1 behaves, under the
null, like B(t_k)/√t_k for a standard Brownian motion B (Jennison & Turnbull, *Group
Sequential Methods with Applications to Clinical Trials*, 2000, ch. 3). Lan & DeMets
(Biometrika 70:659, 1983) choose the boundaries so that the probability of first crossing
at look k is the increment of a spending function. Here the boundaries are symmetric and each
side spends α/2 with the O'Brien–Fleming-type function

    α_side(t) = 2 − 2 Φ(z_{1−α/4} / √t)        (α_side(1) = α/2),

the convention of ``ldbounds`` and ``gsDesign`` (``sfLDOF``), whose published boundaries the
tests reproduce. It spends almost nothing early and nearly the whole α at the last look.
The crossing probabilities come from the recursive numerical integration of Armitage,
McPherson & Rowe (JRSS A 132:235, 1969; Jennison & Turnbull ch. 19): the density of the
not-yet-stopped score B(t_k) on a fixed grid, carried from look to look with the Gaussian
transition — no random numbers, so the boundaries are the same on every machine.

With an estimated variance each look's statistic is studentised; :func:`t_bounds` keeps each
look's nominal two-sided level 2(1 − Φ(c_k)) and converts it to Student's t with that look's
degrees of freedom (the "significance level approach", Jennison & Turnbull §3.8). With the
few degrees of freedom of a few seeds that approximation crosses too often (α = 0.05 over
looks at 4, 6, 8, 10 seeds: 5.4 %), so :func:`calibrated_bounds` lowers the spent level
until the studentised looks cross with probability α, measured once per plan on 2²¹
simulated null sequences from a fixed seed (deterministic; the plan stores the result).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize
from scipy import stats as sps

from .._base.errors import Attn2dError

__all__ = ["calibrated_bounds", "crossing_probabilities", "obrien_fleming_spending",
           "spending_bounds", "t_bounds", "t_crossing"]

_GRID = 301  # points of the score's density per look (odd: Simpson's rule; 1e-6 accurate)
_DRAWS = 1 << 21  # simulated null sequences behind calibrated_bounds
_CALIBRATION_SEED = 19


def obrien_fleming_spending(fraction: float | np.ndarray, alpha: float) -> np.ndarray:
    """Cumulative two-sided α spent by information fraction t: both sides' Lan–DeMets
    O'Brien–Fleming-type spending at α/2 each."""
    t = np.asarray(fraction, dtype=float)
    with np.errstate(divide="ignore"):
        per_side = 2 * sps.norm.sf(sps.norm.isf(alpha / 4) / np.sqrt(t))
    return np.where(t > 0, 2 * per_side, 0.0)


def _check_fractions(fractions: Sequence[float], owner: str) -> np.ndarray:
    t = np.asarray(fractions, dtype=float)
    if t.ndim != 1 or t.size == 0 or not (np.diff(t) > 0).all() or t[0] <= 0 or t[-1] > 1:
        raise Attn2dError(f"{owner}: expected increasing information fractions in (0, 1], got "
                          f"{list(map(float, t))}")
    return t


def _grid(half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Points and Simpson weights over [−half_width, half_width]."""
    s = np.linspace(-half_width, half_width, _GRID)
    weights = np.ones(_GRID)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    return s, weights * (s[1] - s[0]) / 3


class _Recursion:
    """The density of the score B(t_k) on paths that have not crossed looks 1..k."""

    def __init__(self) -> None:
        self.t = 0.0
        self.points: np.ndarray | None = None  # grid in the last continuation region
        self.mass: np.ndarray | None = None  # density × quadrature weight at those points

    def exit(self, t: float, bound: float) -> float:
        """P(not crossed so far, |B(t)| > bound · √t)."""
        edge = bound * math.sqrt(t)
        if self.points is None:
            return float(2 * sps.norm.sf(bound))
        step = math.sqrt(t - self.t)
        return float(self.mass @ (sps.norm.sf((edge - self.points) / step)
                                  + sps.norm.cdf((-edge - self.points) / step)))

    def advance(self, t: float, bound: float) -> None:
        """Condition on not crossing ``bound`` at fraction t."""
        points, weights = _grid(bound * math.sqrt(t))
        if self.points is None:
            density = sps.norm.pdf(points / math.sqrt(t)) / math.sqrt(t)
        else:
            step = math.sqrt(t - self.t)
            density = sps.norm.pdf((points[:, None] - self.points[None, :]) / step) @ \
                self.mass / step
        self.t, self.points, self.mass = t, points, density * weights


def crossing_probabilities(fractions: Sequence[float], bounds: Sequence[float]) -> np.ndarray:
    """Under the null, P(the first crossing of |Z_k| > c_k is at look k), for each k."""
    t = _check_fractions(fractions, "crossing_probabilities")
    c = np.asarray(bounds, dtype=float)
    if c.shape != t.shape:
        raise Attn2dError(f"crossing_probabilities: expected one bound per look, got {c.size} "
                          f"bounds for {t.size} looks")
    recursion, out = _Recursion(), []
    for tk, ck in zip(t, c):
        out.append(recursion.exit(tk, ck))
        recursion.advance(tk, ck)
    return np.array(out)


@functools.lru_cache(maxsize=256)
def _spending_bounds(fractions: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    spent = obrien_fleming_spending(np.array(fractions), alpha)
    increments = np.diff(spent, prepend=0.0)
    recursion, bounds = _Recursion(), []
    for tk, target in zip(fractions, increments):
        if target < 1e-15:  # nothing to spend this early: the boundary is out of reach
            bound = float(sps.norm.isf(1e-15 / 2))
        else:
            bound = float(optimize.brentq(lambda c, tk=tk, target=target:
                                          recursion.exit(tk, c) - target,
                                          0.0, 40.0, xtol=1e-12))
        bounds.append(bound)
        recursion.advance(tk, bound)
    return tuple(bounds)


def spending_bounds(fractions: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """Two-sided normal boundaries c_k of Lan–DeMets O'Brien–Fleming spending at level α:
    under the null, P(|Z_k| > c_k at some look) = α(t_K) (= α when the last look is at 1)."""
    t = _check_fractions(fractions, "spending_bounds")
    if not 0 < alpha < 1:
        raise Attn2dError(f"spending_bounds: expected alpha in (0, 1), got {alpha}")
    return np.array(_spending_bounds(tuple(map(float, t)), float(alpha)))


def t_bounds(normal_bounds: Sequence[float], df: Sequence[float]) -> np.ndarray:
    """Studentised boundaries: the t quantiles (``df`` per look) at each normal boundary's
    nominal two-sided level."""
    c = np.asarray(normal_bounds, dtype=float)
    level = 2 * sps.norm.sf(c)
    return np.where(np.isinf(df), c, sps.t.isf(level / 2, np.asarray(df, dtype=float)))



@functools.lru_cache(maxsize=2)  # 2²¹ × looks float32: 32 MiB for 4 looks
def _null_t_statistics(looks: tuple[int, ...]) -> np.ndarray:
    """|t| of the one-sample t-test at each look, (draws, looks), for standard normal data."""
    rng = np.random.default_rng(_CALIBRATION_SEED)
    out = np.empty((_DRAWS, len(looks)), dtype=np.float32)
    chunk = 1 << 18
    for start in range(0, _DRAWS, chunk):
        x = rng.standard_normal((chunk, looks[-1]))
        sums, squares = np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)
        for k, n in enumerate(looks):
            mean = sums[:, n - 1] / n
            var = (squares[:, n - 1] - n * mean * mean) / (n - 1)
            out[start:start + chunk, k] = np.abs(mean) / np.sqrt(var / n)
    return out


def t_crossing(looks: Sequence[int], normal_bounds: Sequence[float]) -> float:
    """Simulated null probability that a one-sample t-test over the first n_k of normal
    observations crosses its studentised boundary (:func:`t_bounds`, df n_k − 1) at some
    look (2²¹ sequences from a fixed seed)."""
    plan = tuple(int(n) for n in looks)
    if len(plan) != len(normal_bounds) or plan[0] < 2:
        raise Attn2dError(f"t_crossing: expected one bound per look of >= 2 observations, got "
                          f"looks {list(plan)} and {len(normal_bounds)} bounds")
    bounds = t_bounds(normal_bounds, [n - 1 for n in plan]).astype(np.float32)
    return float((_null_t_statistics(plan) > bounds).any(axis=1).mean())


@functools.lru_cache(maxsize=64)
def _calibrated(looks: tuple[int, ...], alpha: float) -> tuple[float, ...]:
    fractions = [n / looks[-1] for n in looks]

    def excess(level: float) -> float:
        return t_crossing(looks, spending_bounds(fractions, level)) - alpha

    if excess(alpha) <= 0:
        return tuple(map(float, spending_bounds(fractions, alpha)))
    level = optimize.brentq(excess, alpha / 4, alpha, xtol=alpha * 1e-4)
    # brentq stops at a step of the simulated (step) function: keep the side at or below α
    while excess(level) > 0:
        level *= 1 - 1e-4
    return tuple(map(float, spending_bounds(fractions, level)))


def calibrated_bounds(looks: Sequence[int], alpha: float = 0.05) -> np.ndarray:
    """Normal boundaries of O'Brien–Fleming spending at the level whose studentised looks
    (:func:`t_bounds` with df n_k − 1) cross with null probability α: the spending shape
    of :func:`spending_bounds`, valid for a t-test at a few seeds.

    Args:
        looks: observations (seeds) at each look, increasing; fractions n_k / n_K.
        alpha: two-sided level of the whole sequence.
    """
    plan = tuple(int(n) for n in looks)
    if not plan or plan[0] < 2 or list(plan) != sorted(set(plan)):
        raise Attn2dError(f"calibrated_bounds: expected increasing looks of >= 2 observations, "
                          f"got {list(plan)}")
    if not 0 < alpha < 1:
        raise Attn2dError(f"calibrated_bounds: expected alpha in (0, 1), got {alpha}")
    return np.array(_calibrated(plan, float(alpha)))
