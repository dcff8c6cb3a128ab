"""attn2d.stats quantiles and boundaries against independent references: Dunnett's
many-to-one quantile against scipy's multivariate t and ``scipy.stats.dunnett``, the
studentised power against the noncentral t, Lan–DeMets O'Brien–Fleming boundaries against
ldbounds/gsDesign's published values and O'Brien–Fleming's constants (Jennison & Turnbull,
Table 2.3), crossing probabilities against scipy's multivariate normal, and the calibrated
studentised boundaries against a fresh simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from attn2d.stats.boundaries import (
    calibrated_bounds,
    crossing_probabilities,
    obrien_fleming_spending,
    spending_bounds,
    t_bounds,
)
from attn2d.stats.quantiles import detectable_shift, many_to_one_quantile, two_sided_power


@pytest.mark.parametrize(("k", "df"), [(2, 5), (6, 12), (6, 2), (3, math.inf)])
def test_many_to_one_quantile_reaches_its_level_under_scipys_multivariate_t(k, df):
    c = many_to_one_quantile(k, df, 0.05)
    corr = np.full((k, k), 0.5) + 0.5 * np.eye(k)
    if math.isinf(df):
        dist = sps.multivariate_normal(np.zeros(k), corr, seed=1)
        inside = dist.cdf(np.full(k, c), lower_limit=np.full(k, -c))
    else:
        dist = sps.multivariate_t(np.zeros(k), corr, df=df, seed=1)
        inside = dist.cdf(np.full(k, c), lower_limit=np.full(k, -c), maxpts=400_000 * k)
    assert inside == pytest.approx(0.95, abs=2e-4)


@pytest.mark.parametrize(("k", "n"), [(6, 3), (16, 3), (2, 4)])
def test_many_to_one_quantile_is_where_scipys_dunnett_gives_p_alpha(k, n):
    # k treatments and a control of n values each: one-way ANOVA, (k + 1)(n − 1) df; the
    # first treatment's t statistic is set to the quantile, so its Dunnett p must be 0.05.
    c = many_to_one_quantile(k, (k + 1) * (n - 1), 0.05)
    spread = np.linspace(-1, 1, n)
    shift = c * spread.std(ddof=1) * math.sqrt(2 / n)
    treatments = [spread + (shift if j == 0 else 0.0) for j in range(k)]
    p = sps.dunnett(*treatments, control=spread, random_state=np.random.default_rng(3)).pvalue
    assert p[0] == pytest.approx(0.05, abs=1e-3)
    assert many_to_one_quantile(1, 7, 0.05) == pytest.approx(sps.t.ppf(0.975, 7))


@pytest.mark.parametrize("df", [2, 5, 30])
@pytest.mark.parametrize("shift", [0.5, 2.0, 4.0])
def test_two_sided_power_matches_the_noncentral_t(df, shift):
    c = sps.t.ppf(0.975, df)
    by_nct = sps.nct.sf(c, df, shift) + sps.nct.cdf(-c, df, shift)
    assert float(two_sided_power(shift, c, df)) == pytest.approx(by_nct, abs=1e-5)


def test_detectable_shift_reaches_the_power_where_the_noncentral_t_gives_nan():
    c = float(sps.t.isf(0.0005, 2))  # α = 0.001 on 2 df: nct.cdf gives NaN out there
    shift = detectable_shift(c, 2, 0.99)
    assert math.isfinite(shift)
    assert float(two_sided_power(shift, c, 2)) == pytest.approx(0.99, abs=1e-8)
    rng = np.random.default_rng(0)  # and by simulation: Z + shift against c · W
    z = rng.standard_normal(200_000) + shift
    w = np.sqrt(rng.chisquare(2, 200_000) / 2)
    assert np.mean(np.abs(z) > c * w) == pytest.approx(0.99, abs=0.002)


# -- group-sequential boundaries ----------------------------------------------------------
@pytest.mark.parametrize(("fractions", "published"), [
    # ldbounds::ldBounds(t, iuse = 1, alpha = 0.05) and gsDesign's sfLDOF, 2 sides 0.025 each
    ([0.2, 0.4, 0.6, 0.8, 1.0], [4.8769, 3.3569, 2.6803, 2.2898, 2.0310]),
    ([0.25, 0.5, 0.75, 1.0], [4.3326, 2.9631, 2.3590, 2.0141]),
    ([1 / 3, 2 / 3, 1.0], [3.7103, 2.5114, 1.9930]),
])
def test_obrien_fleming_spending_bounds_match_published_tables(fractions, published):
    np.testing.assert_allclose(spending_bounds(fractions, 0.05), published, atol=2e-4)


@pytest.mark.parametrize(("looks", "constant"), [(2, 1.977), (3, 2.004), (4, 2.024),
                                                  (5, 2.040)])
def test_crossing_probabilities_of_obrien_flemings_constant_boundaries_sum_to_alpha(looks,
                                                                                  constant):
    # O'Brien & Fleming (1979): c_k = C √(K / k); C_B(K, 0.05) from Jennison & Turnbull
    k = np.arange(1, looks + 1)
    total = crossing_probabilities(k / looks, constant * np.sqrt(looks / k)).sum()
    assert total == pytest.approx(0.05, abs=3e-4)


def test_crossing_probabilities_match_scipys_multivariate_normal():
    t = np.array([0.3, 0.55, 0.8, 1.0])
    bounds = np.array([3.1, 2.6, 2.3, 2.1])
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))  # corr of B(t)/√t
    dist = sps.multivariate_normal(np.zeros(4), cov, seed=2)
    stay = dist.cdf(bounds, lower_limit=-bounds)
    assert crossing_probabilities(t, bounds).sum() == pytest.approx(1 - stay, abs=2e-5)


def test_spending_is_what_each_look_crosses():
    t = [0.4, 0.6, 0.8, 1.0]
    spent = obrien_fleming_spending(np.array(t), 0.05)
    crossed = crossing_probabilities(t, spending_bounds(t, 0.05))
    np.testing.assert_allclose(np.cumsum(crossed), spent, rtol=1e-6)
    assert spent[-1] == pytest.approx(0.05)


def test_t_bounds_keep_each_looks_nominal_level():
    c = np.array([3.0, 2.2])
    t = t_bounds(c, [3, 9])
    np.testing.assert_allclose(sps.t.sf(t, [3, 9]), sps.norm.sf(c), rtol=1e-10)


def test_calibrated_studentised_boundaries_cross_at_alpha_in_a_fresh_simulation():
    looks, alpha = (4, 6, 8, 10), 0.05
    calibrated = calibrated_bounds(looks, alpha)
    plain = spending_bounds([n / 10 for n in looks], alpha)
    assert (calibrated > plain).all()  # the significance-level approach crosses too often
    rng = np.random.default_rng(123)  # not the calibration's seed
    x = rng.standard_normal((400_000, 10))
    crossed = np.zeros(len(x), bool)
    crossed_plain = crossed.copy()
    for n, c, p in zip(looks, t_bounds(calibrated, [n - 1 for n in looks]),
                       t_bounds(plain, [n - 1 for n in looks]), strict=True):
        t = np.abs(sps.ttest_1samp(x[:, :n], 0, axis=1).statistic)
        crossed |= t > c
        crossed_plain |= t > p
    se = math.sqrt(alpha * (1 - alpha) / len(x))
    assert abs(crossed.mean() - alpha) < 3 * se + 2e-4
    assert crossed_plain.mean() > alpha + 3 * se


@pytest.mark.parametrize(("call", "message"), [
    (lambda: spending_bounds([0.5, 0.4], 0.05), "increasing information fractions"),
    (lambda: spending_bounds([0.5, 1.0], 1.5), "alpha in"),
    (lambda: many_to_one_quantile(0, 5), "comparisons >= 1"),
    (lambda: many_to_one_quantile(3, -1), "degrees of freedom"),
    (lambda: calibrated_bounds([1, 3], 0.05), "looks of >= 2"),
    (lambda: detectable_shift(2.0, 5, 1.2), "power in"),
])
def test_bad_arguments_are_refused_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()
