"""Is a mechanism's difference from the baseline real? Confidence intervals, paired tests,
the Holm adjustment, verdicts and the smallest detectable difference (docs/statistics.md).

Inputs are per-test-image outcomes: ``correct[s, i]`` says whether the run with seed ``s``
classified test image ``i`` correctly. Every run sees the same N test images in the same
order, and baseline and mechanism share their seeds, so outcomes pair by seed and by image.
An outcome set is either an (S, N) array (or (N,) for one seed) of booleans or 0/1, where
a row of NaN marks a seed that has not finished, or a mapping ``{seed: (N,) row or None}``.
Pairs use the seeds present in both.

- **< 3 seeds**: only test-set noise can be assessed. Accuracy: percentile bootstrap over
  test images. Δ: paired bootstrap over test images, exact McNemar test pooled over seeds.
- **≥ 3 seeds**: seed-to-seed variation counts. Accuracy: t-interval over the per-seed
  accuracies. Δ: t-interval and one-sample t-test of the per-seed differences.
  If the per-seed values do not vary at all, the test-set analysis above is used instead.
- p-values are Holm-adjusted over the mechanisms compared; a verdict needs p_adj < α.
- The smallest detectable difference (80 % power, two-sided α, unadjusted): Connor
  (Biometrics 43:207, 1987) for McNemar; the noncentral t for the t-test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize
from scipy import stats as sps

__all__ = [
    "BETTER",
    "NO_DIFFERENCE",
    "WORSE",
    "Interval",
    "Outcomes",
    "Versus",
    "accuracy_interval",
    "compare_to_baseline",
    "holm",
    "method_footnote",
    "t_interval",
    "versus_baseline",
]

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference"
MIN_SEEDS_FOR_T = 3  # below this only test-set noise can be assessed

Outcomes = ArrayLike | Mapping[int, ArrayLike | None]


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval and the method that gave it."""

    estimate: float
    low: float
    high: float
    method: str


@dataclass(frozen=True)
class Versus:
    """One mechanism against the baseline; accuracy differences in fraction units.

    Attributes:
        delta: mean over the paired seeds of (mechanism − baseline) accuracy.
        low, high: confidence interval of ``delta`` (unadjusted).
        p: two-sided p-value of "no difference".
        p_adjusted: ``p`` after the Holm adjustment (equal to ``p`` for one comparison).
        verdict: ``"better"``, ``"worse"`` or ``"no detectable difference"`` (p_adjusted < α).
        detectable: the smallest difference this comparison detects with the stated power
            at two-sided α, unadjusted; ``inf`` when too few images make any detectable.
        seeds: seeds present for both (the pairs used).
        images: test images per seed.
        mechanism_only: images only the mechanism got right, summed over those seeds.
        baseline_only: images only the baseline got right, summed over those seeds.
        method: which interval and test were used, in words.
    """

    delta: float
    low: float
    high: float
    p: float
    p_adjusted: float
    verdict: str
    detectable: float
    seeds: int
    images: int
    mechanism_only: int
    baseline_only: int
    method: str


# -- inputs -----------------------------------------------------------------------------------
def _row(values: ArrayLike, owner: str, seed: int) -> np.ndarray | None:
    """One seed's outcomes as booleans, or None when the row is all NaN (seed missing)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{owner}: expected one row of N outcomes per seed, got shape "
                         f"{arr.shape} for seed {seed}")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{owner}: expected booleans or 0/1, got dtype {arr.dtype}")
    nan = np.isnan(arr) if np.issubdtype(arr.dtype, np.floating) else np.zeros(arr.shape, bool)
    if arr.size and nan.all():
        return None
    if nan.any() or not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{owner}: expected booleans or 0/1 (a whole row of NaN for a missing "
                         f"seed), got other values for seed {seed}")
    return arr.astype(bool)


def _outcomes(correct: Outcomes, owner: str) -> dict[int, np.ndarray]:
    """``{seed: (N,) bool}`` for the seeds present; checks N >= 1, one N, >= 1 seed."""
    if isinstance(correct, Mapping):
        items = list(correct.items())
    else:
        arr = np.asarray(correct)
        if arr.ndim not in (1, 2):
            raise ValueError(f"{owner}: expected an (S, N) or (N,) array of outcomes, got "
                             f"shape {arr.shape}")
        items = list(enumerate(arr if arr.ndim == 2 else arr[None]))
    rows = {}
    for seed, values in items:
        row = None if values is None else _row(values, owner, seed)
        if row is not None:
            rows[seed] = row
    sizes = {row.size for row in rows.values()}
    if not rows:
        raise ValueError(f"{owner}: expected the outcomes of at least one seed, got none")
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"{owner}: expected the same N >= 1 test images for every seed, got "
                         f"{sorted(sizes)}")
    return rows


def _probability(value: float, name: str, owner: str) -> float:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{owner}: expected {name} in (0, 1), got {value}")
    return float(value)


# -- intervals --------------------------------------------------------------------------------
def t_interval(values: ArrayLike, confidence: float = 0.95) -> Interval:
    """Mean of ``values`` with its Student t confidence interval (needs 2 or more values)."""
    confidence = _probability(confidence, "confidence", "t_interval")
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"t_interval: expected a 1-D array of at least 2 values, got shape "
                         f"{x.shape}")
    mean = float(x.mean())
    half = float(sps.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, f"t-interval over {x.size} values")


def _quantiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    low, high = np.quantile(samples, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def accuracy_interval(correct: Outcomes, confidence: float = 0.95, *, resamples: int = 10_000,
                      seed: int = 0) -> Interval:
    """Mean over seeds of per-seed accuracy, with a confidence interval.

    With 3 or more seeds whose accuracies differ: a t-interval over the per-seed accuracies.
    Otherwise a percentile bootstrap over test images, each seed resampled independently;
    resampling N outcomes with replacement is drawing a Binomial(N, accuracy) count, so the
    counts are drawn directly. The interval is clipped to [0, 1].

    Args:
        correct: outcomes (S, N), see the module docstring.
        confidence: coverage of the interval.
        resamples: bootstrap resamples.
        seed: seed of the bootstrap's random numbers (the same seed gives the same interval).
    """
    confidence = _probability(confidence, "confidence", "accuracy_interval")
    rows = _outcomes(correct, "accuracy_interval")
    images = next(iter(rows.values())).size
    acc = np.array([row.mean() for row in rows.values()])
    if acc.size >= MIN_SEEDS_FOR_T and np.ptp(acc) > 0:
        t = t_interval(acc, confidence)
        return Interval(t.estimate, max(0.0, t.low), min(1.0, t.high),
                        f"t-interval over {acc.size} seeds")
    counts = np.random.default_rng(seed).binomial(images, acc, size=(resamples, acc.size))
    low, high = _quantiles(counts.mean(axis=1) / images, confidence)
    spread = " (no spread over seeds)" if acc.size >= MIN_SEEDS_FOR_T else ""
    return Interval(float(acc.mean()), low, high,
                    f"percentile bootstrap over {images:,} test images{spread}")


# -- one mechanism against the baseline -------------------------------------------------------
def _mcnemar_p(mechanism_only: int, baseline_only: int) -> float:
    """Exact two-sided McNemar: under H0 each discordant image favours either model with
    probability 1/2."""
    discordant = mechanism_only + baseline_only
    if discordant == 0:
        return 1.0
    return float(sps.binomtest(mechanism_only, discordant, 0.5).pvalue)


def _fewest_discordant(alpha: float) -> int:
    """Smallest k for which k discordant images all one way reach p < α (p = 2 · 0.5^k)."""
    k = 1
    while 2.0 * 0.5**k >= alpha:
        k += 1
    return k


def _mcnemar_detectable(discordant: int, pairs: int, alpha: float, power: float) -> float:
    """Smallest |p10 − p01| the exact McNemar test detects with ``power`` on ``pairs``
    paired images, at the observed discordance rate ψ. Connor's (1987) sample size
    n = (z_{α/2} √ψ + z_β √(ψ − δ²))² / δ², solved for δ; never below the fewest
    discordant images that can reach p < α, divided by the pairs."""
    fewest = _fewest_discordant(alpha)
    if pairs < fewest:
        return math.inf
    floor = fewest / pairs
    if discordant == 0:
        return floor
    psi = discordant / pairs
    z_alpha, z_beta = sps.norm.ppf(1 - alpha / 2), sps.norm.ppf(power)

    def excess(delta: float) -> float:
        return (z_alpha * math.sqrt(psi) + z_beta * math.sqrt(max(psi - delta**2, 0.0))
                - delta * math.sqrt(pairs))

    if excess(1.0) >= 0:
        return math.inf
    return max(floor, float(optimize.brentq(excess, 1e-12, 1.0, xtol=1e-12)))


def _t_power(noncentrality: float, df: int, alpha: float) -> float:
    critical = sps.t.ppf(1 - alpha / 2, df)
    return float(sps.nct.sf(critical, df, noncentrality) + sps.nct.cdf(-critical, df,
                                                                        noncentrality))


def _t_detectable(sd: float, seeds: int, alpha: float, power: float) -> float:
    """Smallest mean difference the two-sided one-sample t-test on ``seeds`` differences
    with standard deviation ``sd`` detects with ``power`` (noncentral t, S − 1 df)."""
    df = seeds - 1
    high = 1.0
    while _t_power(high, df, alpha) < power:
        high *= 2
    noncentrality = optimize.brentq(lambda nc: _t_power(nc, df, alpha) - power, 0.0, high,
                                    xtol=1e-10)
    return float(noncentrality * sd / math.sqrt(seeds))


def _verdict(delta: float, p_adjusted: float, alpha: float) -> str:
    if p_adjusted < alpha and delta > 0:
        return BETTER
    if p_adjusted < alpha and delta < 0:
        return WORSE
    return NO_DIFFERENCE


def versus_baseline(baseline: Outcomes, mechanism: Outcomes, confidence: float = 0.95, *,
                    alpha: float = 0.05, power: float = 0.8, resamples: int = 10_000,
                    seed: int = 0) -> Versus:
    """One mechanism against the baseline on the seeds both have, unadjusted
    (``p_adjusted == p``; :func:`compare_to_baseline` adjusts over several mechanisms).

    Fewer than 3 paired seeds (or per-seed differences that are all equal): Δ's interval
    from a paired bootstrap over test images within each seed (the four cells right/wrong ×
    right/wrong drawn as a multinomial), averaged over seeds; p from the exact McNemar test
    on the discordant images pooled over seeds. Otherwise: t-interval and one-sample t-test
    of the per-seed differences.

    Args:
        baseline, mechanism: outcomes (S, N) with the same N, see the module docstring.
        confidence: coverage of Δ's interval.
        alpha: two-sided level of the verdict and of the smallest detectable difference.
        power: power of the smallest detectable difference.
        resamples: bootstrap resamples.
        seed: seed of the bootstrap's random numbers.
    """
    owner = "versus_baseline"
    confidence = _probability(confidence, "confidence", owner)
    alpha = _probability(alpha, "alpha", owner)
    power = _probability(power, "power", owner)
    base = _outcomes(baseline, f"{owner}: baseline")
    mech = _outcomes(mechanism, f"{owner}: mechanism")
    images = next(iter(base.values())).size
    if next(iter(mech.values())).size != images:
        raise ValueError(f"{owner}: expected the same test images for baseline and mechanism, "
                         f"got N = {images} and N = {next(iter(mech.values())).size}")
    seeds = sorted(base.keys() & mech.keys())
    if not seeds:
        raise ValueError(f"{owner}: expected a seed present for both baseline and mechanism, "
                         f"got baseline seeds {sorted(base)} and mechanism seeds {sorted(mech)}")
    b = np.stack([base[s] for s in seeds])
    m = np.stack([mech[s] for s in seeds])
    mech_only = (m & ~b).sum(axis=1)
    base_only = (b & ~m).sum(axis=1)
    deltas = (mech_only - base_only) / images  # exact: equal counts give equal floats
    delta = float(deltas.mean())
    if len(seeds) >= MIN_SEEDS_FOR_T and np.ptp(deltas) > 0:
        t = t_interval(deltas, confidence)
        low, high = t.low, t.high
        p = float(sps.ttest_1samp(deltas, 0.0).pvalue)
        detectable = _t_detectable(float(deltas.std(ddof=1)), len(seeds), alpha, power)
        method = (f"t-interval and one-sample t-test over {len(seeds)} per-seed differences")
    else:
        cells = np.stack([mech_only, base_only, images - mech_only - base_only], axis=1) / images
        draws = np.random.default_rng(seed).multinomial(images, cells,
                                                        size=(resamples, len(seeds)))
        low, high = _quantiles((draws[..., 0] - draws[..., 1]).mean(axis=1) / images,
                               confidence)
        p = _mcnemar_p(int(mech_only.sum()), int(base_only.sum()))
        detectable = _mcnemar_detectable(int((mech_only + base_only).sum()),
                                         len(seeds) * images, alpha, power)
        why = ("no spread over seeds, so " if len(seeds) >= MIN_SEEDS_FOR_T else "")
        method = (f"{why}paired bootstrap over test images and exact McNemar test pooled over "
                  f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} (test-set noise only)")
    return Versus(delta=delta, low=float(low), high=float(high), p=p, p_adjusted=p,
                  verdict=_verdict(delta, p, alpha), detectable=detectable, seeds=len(seeds),
                  images=images, mechanism_only=int(mech_only.sum()),
                  baseline_only=int(base_only.sum()), method=method)


# -- several mechanisms -----------------------------------------------------------------------
def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm's step-down adjustment (Scand. J. Statist. 6:65, 1979), in the input's order.

    The i-th smallest of m p-values becomes max over j <= i of min(1, (m − j + 1) p_(j)):
    rejecting where the adjusted p < α controls the family-wise error rate at α.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"holm: expected a 1-D array of p-values in [0, 1], got {p!r}")
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (p.size - np.arange(p.size)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def compare_to_baseline(baseline: Outcomes, mechanisms: Mapping[str, Outcomes],
                        alpha: float = 0.05, *, confidence: float = 0.95, power: float = 0.8,
                        resamples: int = 10_000, seed: int = 0) -> dict[str, Versus]:
    """Every mechanism against the baseline (:func:`versus_baseline`), p-values
    Holm-adjusted over ``mechanisms`` (pass them without the baseline), verdicts at ``alpha``.
    Each mechanism's bootstrap uses ``seed``, so its interval does not depend on the others.
    """
    results = {name: versus_baseline(baseline, outcomes, confidence, alpha=alpha, power=power,
                                     resamples=resamples, seed=seed)
               for name, outcomes in mechanisms.items()}
    adjusted = holm([v.p for v in results.values()])
    return {name: replace(v, p_adjusted=float(a), verdict=_verdict(v.delta, float(a), alpha))
            for (name, v), a in zip(results.items(), adjusted, strict=True)}


def method_footnote(seeds: int, images: int, alpha: float = 0.05, *, confidence: float = 0.95,
                    power: float = 0.8) -> str:
    """One line for under the table: which intervals and tests, Holm, α, power, seeds, images."""
    if seeds < 1 or images < 1:
        raise ValueError(f"method_footnote: expected seeds >= 1 and images >= 1, got {seeds} "
                         f"and {images}")
    level, a = f"{100 * confidence:g} %", f"α = {alpha:g}"
    seed_words = f"{seeds} seed{'s' if seeds > 1 else ''}"
    if seeds >= MIN_SEEDS_FOR_T:
        analysis = (f"accuracy: mean over {seed_words} with a {level} t-interval; Δ vs baseline: "
                    f"paired by seed, {level} t-interval and one-sample t-test of the per-seed "
                    "differences")
    else:
        analysis = (f"accuracy: mean over {seed_words} with a {level} percentile bootstrap over "
                    f"test images; Δ vs baseline: {level} paired bootstrap over test images and "
                    "exact McNemar test pooled over seeds — test-set noise only, fewer than 3 "
                    "seeds cannot measure seed-to-seed variation")
    return (f"{images:,} test images, {analysis}; p Holm-adjusted over the mechanisms "
            f"compared, verdict at {a}; smallest detectable difference at "
            f"{100 * power:g} % power, two-sided {a}, unadjusted.")
