"""The fixed-seed design by simulation (synthetic per-seed accuracies, no training): false
verdicts at most α + 3 Monte-Carlo standard errors with equal and with the measured unequal
seed noise of the demo's mechanisms and with a test-set term, the equivalence verdict at
the margin, the candidates the measurements rule out (pooled two-way + Dunnett, with or
without a test of equal spread first; Satterthwaite's df), and the vectorised rules
agreeing with :func:`compare_to_baseline` on outcome tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from attn2d.stats import compare_to_baseline, paired_verdicts
from attn2d.stats.design import pooled_dunnett_verdicts
from attn2d.stats.variance import studentised

ALPHA = 0.05
SIMULATIONS = 4000
# Covariance (pp²) of per-seed test accuracy over 10 seeds at the demo's settings (2 epochs,
# 3,000 training images, 10,000 test images, small CNN), measured by
# `python benchmarks/aa_test.py --ab`: none, se, eca, cbam, nonlocal, danet, criss-cross.
# The seed sd of Δ ranges from 0.18 pp (criss-cross) to 1.06 pp (CBAM).
MEASURED = np.array([
    [0.1378, 0.1093, 0.0942, 0.1303, 0.0806, 0.0282, 0.0994],
    [0.1093, 0.2676, 0.0719, 0.1118, 0.0751, 0.0604, 0.0784],
    [0.0942, 0.0719, 0.2216, 0.0814, 0.0651, 0.0350, 0.1071],
    [0.1303, 0.1118, 0.0814, 1.2542, -0.0155, -0.1580, 0.0139],
    [0.0806, 0.0751, 0.0651, -0.0155, 0.0849, 0.0423, 0.0760],
    [0.0282, 0.0604, 0.0350, -0.1580, 0.0423, 0.1157, 0.0350],
    [0.0994, 0.0784, 0.1071, 0.0139, 0.0760, 0.0350, 0.0934],
]) / 100**2
EQUAL = np.eye(7) * 0.0041**2  # the A/A seed sd of accuracy, 0.41 pp, for every model


def accuracies(cov: np.ndarray, seeds: int, seed: int, shift: np.ndarray | None = None
               ) -> np.ndarray:
    """(SIMULATIONS, models, seeds) per-seed accuracies, N(shift, cov) across models."""
    rng = np.random.default_rng(seed)
    y = np.linalg.cholesky(cov) @ rng.standard_normal((SIMULATIONS, len(cov), seeds))
    return y if shift is None else y + shift[None, :, None]


def default_codes(y: np.ndarray, margin: float | None = None) -> np.ndarray:
    """The default design's verdict codes (mechanisms along axis 1) from per-seed values."""
    mean, se, df = studentised(y[:, 1:] - y[:, :1])
    return paired_verdicts(mean, se, df, ALPHA, margin)[2]


def bound(alpha: float = ALPHA) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / SIMULATIONS)


def any_false(codes: np.ndarray) -> float:
    """Share of simulated tables with at least one better/worse (all null here)."""
    return float(((codes == 1) | (codes == 2)).any(axis=1).mean())


@pytest.mark.parametrize("seeds", [3, 5, 10])
@pytest.mark.parametrize("cov", [EQUAL, MEASURED], ids=["equal noise", "measured noise"])
def test_the_default_design_keeps_false_verdicts_below_alpha(cov, seeds):
    assert any_false(default_codes(accuracies(cov, seeds, seeds))) <= bound()


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_the_pooled_dunnett_candidate_holds_only_with_equal_noise(seeds):
    equal = accuracies(EQUAL, seeds, 10 + seeds)
    assert any_false(pooled_dunnett_verdicts(equal[:, 0], equal[:, 1:])) <= bound()
    measured = accuracies(MEASURED, seeds, 20 + seeds)
    codes = pooled_dunnett_verdicts(measured[:, 0], measured[:, 1:])
    assert any_false(codes) > 0.08  # CBAM's seed noise is charged to all
    assert ((codes[:, 2] == 1) | (codes[:, 2] == 2)).mean() > 0.07  # cbam alone


@pytest.mark.parametrize("cov", [EQUAL, MEASURED], ids=["equal noise", "measured noise"])
def test_pooling_only_when_bartlett_accepts_equal_spread_still_calls_false_verdicts(cov):
    # a pretest at 3 seeds: pooled + Dunnett where Bartlett's p > 0.25, else the default
    y = accuracies(cov, 3, 7)
    bartlett = np.array([sps.bartlett(*row).pvalue for row in y[:, 1:] - y[:, :1]])
    codes = np.where((bartlett > 0.25)[:, None], pooled_dunnett_verdicts(y[:, 0], y[:, 1:]),
                     default_codes(y))
    assert any_false(codes) > bound()


@pytest.mark.parametrize("share", [0.1, 0.3])
def test_satterthwaites_df_would_reject_too_often_at_three_seeds(share):
    # why the tests keep S − 1 df: Z / √(â + b), â a 2-df seed term, b a nearly known one
    rng = np.random.default_rng(9)
    n, a, b = 400_000, 1.0, share
    z = rng.standard_normal(n) * math.sqrt(a + b)
    seed_term = a * rng.chisquare(2, n) / 2
    df = (seed_term + b) ** 2 / (seed_term**2 / 2)
    t = np.abs(z) / np.sqrt(seed_term + b)
    assert (t > sps.t.isf(0.025, df)).mean() > 0.07  # Satterthwaite: ~7.8 %, 7.4 %
    assert (t > sps.t.isf(0.025, 2)).mean() < 0.05  # S − 1: conservative


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_equivalence_at_the_margin_is_rarely_claimed(seeds):
    # Every mechanism exactly 0.5 pp better: "equivalent within ±0.5 pp" is false for all;
    # small noise (0.15 pp per seed) makes it as tempting as it gets.
    shift = np.array([0.0] + [0.005] * 6)
    y = accuracies(np.eye(7) * 0.0015**2, seeds, 30 + seeds, shift)
    codes = default_codes(y, margin=0.005)
    assert float(((codes == 3) | (codes == 2)).any(axis=1).mean()) <= bound()
    assert (codes == 1).mean() > 0  # and some are rightly better


@pytest.mark.parametrize("share", [0.1, 0.3, 1.0, 3.0])
def test_the_test_set_term_keeps_false_verdicts_below_alpha(share):
    # The mechanism beats the baseline on some images and loses on others, so this test set
    # may favour either by chance: a term d̄ shared by all seeds, of variance ``share``
    # times the seeds' term. Conditioning on the test set (today's t-test) then calls
    # false verdicts; the default design's test-set term with S − 1 df does not.
    rng = np.random.default_rng(int(10 * share))
    seeds, seed_var = 3, 0.004**2
    image_var = share * seed_var / seeds
    per_seed = rng.normal(0, 0.004, (SIMULATIONS, 6, seeds)) + \
        rng.normal(0, math.sqrt(image_var), (SIMULATIONS, 6, 1))
    estimated = image_var * rng.chisquare(5000, (SIMULATIONS, 6)) / 5000  # from N images
    mean, se, df = studentised(per_seed, estimated)
    assert any_false(paired_verdicts(mean, se, df)[2]) <= bound()
    if share >= 1:
        conditional = paired_verdicts(*studentised(per_seed))[2]
        assert any_false(conditional) > bound()


def test_power_at_one_point_is_what_the_seeds_allow():
    # One mechanism +1 pp with the A/A noise: a valid design cannot do much at 3 seeds.
    shift = np.array([0.0, 0.01] + [0.0] * 5)
    power = {s: float((default_codes(accuracies(EQUAL, s, 40 + s, shift))[:, 0] == 1).mean())
             for s in (3, 5, 10)}
    assert power[3] < 0.2 < power[5] < 0.6 < power[10]


def test_the_vectorised_rules_are_compare_to_baseline():
    # Outcome tables whose per-seed differences are known and whose images hardly vary
    # (each seed changes its own block), so both paths see the same per-seed values.
    rng = np.random.default_rng(8)
    images, seeds = 6000, 4
    counts = rng.integers(-30, 60, size=(5, seeds))  # images won (+) or lost (−) per seed
    base = np.zeros((seeds, images), bool)
    base[:, images // 2:] = True
    mechanisms = {}
    for j, row in enumerate(counts):
        mech = base.copy()
        for s, k in enumerate(row):
            start = 500 * s
            if k > 0:
                mech[s, start:start + k] = True
            else:
                mech[s, images // 2 + start: images // 2 + start - k] = False
        mechanisms[f"m{j}"] = mech
    result = compare_to_baseline(base, mechanisms, margin=0.004)
    mean, se, df = studentised(counts / images)
    p, p_adj, codes = paired_verdicts(mean, se, df, ALPHA, 0.004)
    verdicts = {1: "better", 2: "worse", 3: "equivalent", 4: "no detectable difference"}
    for j, name in enumerate(mechanisms):
        v = result[name]
        # the outcome path adds a test-set term, here at most a few parts per million
        assert (v.delta, v.se, v.p, v.p_adjusted) == pytest.approx((mean[j], se[j], p[j],
                                                                    p_adj[j]), rel=1e-4)
        assert v.verdict == verdicts[int(codes[j])] and v.df == pytest.approx(seeds - 1,
                                                                              rel=1e-3)
