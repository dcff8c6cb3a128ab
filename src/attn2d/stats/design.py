"""A comparison with a fixed number of seeds: every mechanism against the baseline, paired by
seed and by test image, verdicts that control the chance of any false one at α
(docs/statistics.md, "Fixed seeds").

For mechanism j the paired difference Δ_j is a mean over seeds × test images of
(mechanism − baseline) outcomes; its standard error has a seed term (that mechanism's own
per-seed differences) and a test-set term (:mod:`attn2d.stats.variance`); its t-test and
interval use the seed term's S − 1 degrees of freedom. Each mechanism keeps its own
variance: in the demo's own runs the seed spread of Δ ranges from 0.18 pp (criss-cross) to
1.06 pp (CBAM) over 10 seeds (Bartlett p = 3e-6), and pooling it over mechanisms, as a
seed-blocked two-way analysis with Dunnett's procedure would, then calls false verdicts
for the noisy ones (benchmarks/aa_test.py, tests/stats/test_design.py). The family is
controlled by Holm's step-down procedure over the mechanisms' t-test p-values; with a
margin M, a mechanism whose (1 − 2α/m) interval lies within ±M is ``equivalent`` (two
one-sided tests, Bonferroni over m).

Fewer than 3 paired seeds give no verdict (:data:`UNTESTED`): one or two seeds cannot
measure how much Δ moves between seeds. The exact McNemar test on the discordant images
stays as a labelled test-set-only figure (``Versus.test_set_p``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from .._base.errors import Attn2dError
from ._inputs import Outcomes, outcomes, paired, probability
from .quantiles import detectable_shift, many_to_one_quantile
from .testset import mcnemar_p
from .variance import MeanEstimate, crossed_mean
from .verdicts import BETTER, EQUIVALENT, MIN_SEEDS, NO_DIFFERENCE, UNTESTED, WORSE

__all__ = ["Versus", "compare_to_baseline", "holm", "method_footnote", "paired_verdicts",
           "pooled_dunnett_verdicts", "versus_baseline"]


@dataclass(frozen=True)
class Versus:
    """One mechanism against the baseline; accuracy differences in fraction units.

    Attributes:
        delta: mean over the paired seeds and test images of (mechanism − baseline).
        low, high: confidence interval of ``delta`` at the level given, unadjusted (seed
            and test-set noise; one seed: test-set noise only, conditional on that seed).
        p: two-sided p-value of "no difference" (t-test, S − 1 df); NaN below 3 seeds.
        p_adjusted: ``p`` after Holm's adjustment over the mechanisms compared.
        verdict: ``better``, ``worse``, ``equivalent`` (with a margin),
            ``no detectable difference`` or ``untested: needs ≥ 3 seeds``.
        detectable: the smallest |Δ| this comparison detects with the stated power at the
            family's level (Bonferroni α/m, Holm's first step), from its own noise; NaN
            below 3 seeds.
        detectable_unadjusted: the same at α for this comparison alone.
        seeds: seeds present for both (the pairs used).
        images: test images per seed.
        se, df: standard error of ``delta`` (seed and test-set terms) and the degrees of
            freedom of its test, S − 1 (``inf`` with one seed: test-set term only).
        seed_sd: sd of the per-seed differences (NaN with one seed).
        mechanism_only: images only the mechanism got right, summed over those seeds.
        baseline_only: images only the baseline got right, summed over those seeds.
        test_set_p: exact McNemar p on those discordant images pooled over seeds: test-set
            noise only, never a verdict.
        margin: the equivalence margin used (None: no equivalence verdict).
        method: which interval and test were used, in words.
    """

    delta: float
    low: float
    high: float
    p: float
    p_adjusted: float
    verdict: str
    detectable: float
    detectable_unadjusted: float
    seeds: int
    images: int
    se: float
    df: float
    seed_sd: float
    mechanism_only: int
    baseline_only: int
    test_set_p: float
    margin: float | None
    method: str


# -- the family's decisions (vectorised: the simulations call them too) ---------------------
def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm's step-down adjustment (Scand. J. Statist. 6:65, 1979) along the last axis.

    The i-th smallest of m p-values becomes max over j <= i of min(1, (m − j + 1) p_(j)):
    rejecting where the adjusted p < α controls the family-wise error rate at α.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim < 1 or np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise Attn2dError(f"holm: expected p-values in [0, 1] along the last axis, got {p!r}")
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * np.take_along_axis(p, order, axis=-1))
    adjusted = np.empty_like(p)
    np.put_along_axis(adjusted, order, np.maximum.accumulate(scaled, axis=-1), axis=-1)
    return adjusted


def paired_verdicts(mean: ArrayLike, se: ArrayLike, df: ArrayLike, alpha: float = 0.05,
                    margin: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The default design's decisions for m mechanisms along the last axis: two-sided
    t-test p-values, Holm-adjusted, and verdict codes 1 better, 2 worse, 3 equivalent,
    4 no detectable difference (equivalence: the (1 − 2α/m) interval within ±margin).

    Returns ``(p, p_adjusted, codes)``; a zero ``se`` gives p = 1 when the mean is 0, else 0.
    """
    mean, se, df = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (mean, se, df)))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, np.abs(mean) / se, np.where(mean == 0, 0.0, np.inf))
    p = 2 * sps.t.sf(t, df)
    p_adjusted = holm(p) if p.shape[-1] else p
    m = max(mean.shape[-1], 1)
    reach = sps.t.isf(alpha / m, df) * se  # one-sided α/m each way: TOST
    equivalent = (margin is not None) & (mean - reach > -(margin or 0)) & \
        (mean + reach < (margin or 0))
    significant = p_adjusted < alpha
    codes = np.select([significant & (mean > 0), significant & (mean < 0), equivalent],
                      [1, 2, 3], default=4)
    return p, p_adjusted, codes


def pooled_dunnett_verdicts(baseline: ArrayLike, mechanisms: ArrayLike,
                            alpha: float = 0.05) -> np.ndarray:
    """The candidate this module does not use, kept to measure it: per-seed accuracies in a
    seed-blocked two-way layout (baseline (…, S), mechanisms (…, m, S)), residual variance
    pooled over all models (m(S − 1) df) and Dunnett's many-to-one critical value
    (:func:`attn2d.stats.quantiles.many_to_one_quantile`, ρ = 1/2). Valid only when every
    mechanism's Δ has the same seed variance; returns verdict codes as
    :func:`paired_verdicts` does (1 better, 2 worse, 4 no detectable difference).
    """
    b = np.asarray(baseline, dtype=float)[..., None, :]
    y = np.concatenate([b, np.asarray(mechanisms, dtype=float)], axis=-2)  # (…, m + 1, S)
    models, seeds = y.shape[-2:]
    residual = (y - y.mean(axis=-1, keepdims=True) - y.mean(axis=-2, keepdims=True)
                + y.mean(axis=(-2, -1), keepdims=True))
    df = (models - 1) * (seeds - 1)
    var = (residual**2).sum(axis=(-2, -1)) / df
    delta = y[..., 1:, :].mean(axis=-1) - y[..., :1, :].mean(axis=-1)
    t = delta / np.sqrt(2 * var[..., None] / seeds)
    critical = many_to_one_quantile(models - 1, df, alpha)
    return np.select([t > critical, t < -critical], [1, 2], default=4)


_VERDICTS = {1: BETTER, 2: WORSE, 3: EQUIVALENT, 4: NO_DIFFERENCE}


# -- a comparison's statistics --------------------------------------------------------------
def _interval(e: MeanEstimate, confidence: float) -> tuple[float, float]:
    half = float(sps.t.ppf((1 + confidence) / 2, e.df)) * e.se if e.se > 0 else 0.0
    return e.mean - half, e.mean + half


def _detectable(e: MeanEstimate, level: float, power: float) -> float:
    return detectable_shift(float(sps.t.isf(level / 2, e.df)), e.df, power) * e.se


@dataclass(frozen=True)
class _Paired:
    """One mechanism's paired difference and its discordant images."""

    est: MeanEstimate
    images: int
    mechanism_only: int
    baseline_only: int

    @property
    def seeds(self) -> int:
        return self.est.per_seed.size


def _paired(base: Mapping[int, np.ndarray], mech: Mapping[int, np.ndarray],
            owner: str) -> _Paired:
    _, b, m = paired(base, mech, owner)
    return _Paired(crossed_mean(m.astype(np.int8) - b.astype(np.int8)), b.shape[1],
                   int((m & ~b).sum()), int((b & ~m).sum()))


def compare_to_baseline(baseline: Outcomes, mechanisms: Mapping[str, Outcomes],
                        alpha: float = 0.05, *, confidence: float = 0.95, power: float = 0.8,
                        margin: float | None = None) -> dict[str, Versus]:
    """Every mechanism against the baseline on the seeds each shares with it.

    Mechanisms with 3 or more paired seeds form the family: t-tests (S − 1 df) of their
    paired differences over seeds × test images, Holm-adjusted over the family, verdicts
    at α; with ``margin`` (accuracy fraction, 0.005 = 0.5 pp) also ``equivalent``.
    Mechanisms with fewer seeds are ``untested: needs ≥ 3 seeds``.

    Args:
        baseline: the baseline's outcomes (S, N), see :mod:`attn2d.stats`.
        mechanisms: outcomes per mechanism, without the baseline.
        alpha: family-wise level of the verdicts.
        confidence: coverage of each Δ interval (unadjusted).
        power: power of the smallest detectable difference.
        margin: equivalence margin, None for no equivalence verdict.
    """
    owner = "compare_to_baseline"
    alpha = probability(alpha, "alpha", owner)
    confidence = probability(confidence, "confidence", owner)
    power = probability(power, "power", owner)
    if margin is not None and not 0 < margin < 1:
        raise Attn2dError(f"{owner}: expected margin in (0, 1) (accuracy fractions: 0.005 = "
                          f"0.5 pp) or None, got {margin}")
    base = outcomes(baseline, f"{owner}: baseline")
    stats = {name: _paired(base, outcomes(o, f"{owner}: {name}"), f"{owner}: {name}")
             for name, o in mechanisms.items()}
    family = [name for name, s in stats.items() if s.seeds >= MIN_SEEDS]
    p, p_adj, codes = paired_verdicts([stats[n].est.mean for n in family],
                                      [stats[n].est.se for n in family],
                                      [stats[n].est.df for n in family], alpha, margin)
    decided = {name: (float(p[i]), float(p_adj[i]), _VERDICTS[int(codes[i])])
               for i, name in enumerate(family)}
    results = {}
    for name, s in stats.items():
        e = s.est
        low, high = _interval(e, confidence)
        tested = name in decided
        p_one, p_family, verdict = decided.get(name, (math.nan, math.nan, UNTESTED))
        results[name] = Versus(
            delta=e.mean, low=low, high=high, p=p_one, p_adjusted=p_family, verdict=verdict,
            detectable=_detectable(e, alpha / len(family), power) if tested else math.nan,
            detectable_unadjusted=_detectable(e, alpha, power) if tested else math.nan,
            seeds=s.seeds, images=s.images, se=e.se, df=e.df,
            seed_sd=float(e.per_seed.std(ddof=1)) if s.seeds > 1 else math.nan,
            mechanism_only=s.mechanism_only, baseline_only=s.baseline_only,
            test_set_p=mcnemar_p(s.mechanism_only, s.baseline_only),
            margin=margin, method=_method(s.seeds, s.images))
    return results


def versus_baseline(baseline: Outcomes, mechanism: Outcomes, confidence: float = 0.95, *,
                    alpha: float = 0.05, power: float = 0.8,
                    margin: float | None = None) -> Versus:
    """One mechanism against the baseline: :func:`compare_to_baseline` with a family of one
    (``p_adjusted == p``)."""
    return compare_to_baseline(baseline, {"mechanism": mechanism}, alpha,
                               confidence=confidence, power=power, margin=margin)["mechanism"]


def _method(seeds: int, images: int) -> str:
    if seeds >= MIN_SEEDS:
        return (f"paired over {seeds} seeds × {images:,} test images: t-interval and t-test "
                f"with {seeds - 1} df (seed and test-set noise)")
    return (f"paired over {seeds} seed{'s' if seeds > 1 else ''} × {images:,} test images: "
            f"no test, {UNTESTED}; interval "
            + ("conditional on that seed (test-set noise only)" if seeds == 1
               else "over seeds and test images, 1 df"))


def method_footnote(seeds: int, images: int, alpha: float = 0.05, *, confidence: float = 0.95,
                    power: float = 0.8, margin: float | None = None) -> str:
    """One line for under the table: intervals, tests, Holm, α, power, seeds, images."""
    if seeds < 1 or images < 1:
        raise Attn2dError(f"method_footnote: expected seeds >= 1 and images >= 1, got {seeds} "
                          f"and {images}")
    level, a = f"{100 * confidence:g} %", f"α = {alpha:g}"
    seed_words = f"{seeds} seed{'s' if seeds > 1 else ''}"
    accuracy = ("accuracy: one seed, Wilson interval over the test images (test-set noise "
                "only, conditional on that seed)" if seeds == 1 else
                f"accuracy: mean over {seed_words} with a {level} t-interval over seeds × test "
                "images (seed and test-set noise)")
    if seeds < MIN_SEEDS:
        return (f"{images:,} test images, {accuracy}; Δ vs baseline: paired by seed and image, "
                f"{level} interval; no verdicts: {UNTESTED} to measure seed-to-seed noise; "
                "test-set-only p: exact McNemar pooled over seeds.")
    equivalence = (f"; equivalent: the 1 − 2α/m interval (two one-sided tests, Bonferroni) "
                   f"within ±{100 * margin:g} pp" if margin is not None else "")
    return (f"{images:,} test images, {accuracy}; Δ vs baseline: paired by seed and image, "
            f"{level} t-interval and t-test (S − 1 df), each mechanism its own seed noise; "
            f"p Holm-adjusted over the mechanisms compared, verdict at {a}{equivalence}; "
            f"smallest detectable difference at {100 * power:g} % power, two-sided, "
            "Bonferroni-adjusted over the mechanisms.")

