"""attn2d.stats: closed-form cases (identical runs, k extra images right), a synthetic
comparison, Holm by hand, t-intervals and t-tests by hand and against scipy, bootstraps
against resampling image indices, the smallest detectable difference and its power."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from attn2d.stats import (
    BETTER,
    NO_DIFFERENCE,
    WORSE,
    accuracy_interval,
    compare_to_baseline,
    holm,
    method_footnote,
    t_interval,
    versus_baseline,
)


def runs(seeds: int, images: int, accuracy: float, seed: int = 0) -> np.ndarray:
    """(seeds, images) outcomes, each right with probability ``accuracy``."""
    return np.random.default_rng(seed).random((seeds, images)) < accuracy


def corrected(baseline: np.ndarray, share: float) -> np.ndarray:
    """The baseline with the first ``share`` of its wrong images (per seed) made right."""
    mechanism = baseline.copy()
    for row in mechanism:
        wrong = np.flatnonzero(~row)
        row[wrong[: round(share * wrong.size)]] = True
    return mechanism


def with_extra(baseline: np.ndarray, extra: list[int]) -> np.ndarray:
    """The baseline, right on ``extra[s]`` more images in seed ``s`` and wrong on none."""
    mechanism = baseline.copy()
    for row, k in zip(mechanism, extra, strict=True):
        row[np.flatnonzero(~row)[:k]] = True
    return mechanism


def t_quantile_df2(p: float) -> float:
    """Student t quantile with 2 degrees of freedom, in closed form."""
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def t_two_sided_p_df2(t: float) -> float:
    """Two-sided p of a t statistic with 2 degrees of freedom, in closed form."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


# -- closed-form cases ------------------------------------------------------------------------
@pytest.mark.parametrize("seeds", [1, 3])
def test_identical_predictions_give_no_difference(seeds):
    base = runs(seeds, 1000, 0.75)
    v = versus_baseline(base, base.copy())
    assert v.delta == 0 and v.low <= 0 <= v.high
    assert v.p == 1 and v.verdict == NO_DIFFERENCE
    assert (v.mechanism_only, v.baseline_only, v.seeds, v.images) == (0, 0, seeds, 1000)


@pytest.mark.parametrize("k", [3, 6, 10])
def test_k_extra_images_right_give_the_exact_mcnemar_p(k):
    base = runs(1, 500, 0.8)
    v = versus_baseline(base, with_extra(base, [k]))
    assert v.p == pytest.approx(2 * 0.5**k, rel=1e-12)  # both tails of Binomial(k, 1/2)
    assert v.p == pytest.approx(sps.binomtest(k, k, 0.5).pvalue, rel=1e-12)
    assert v.delta == pytest.approx(k / 500)
    assert (v.mechanism_only, v.baseline_only) == (k, 0)


def test_mcnemar_pools_the_discordant_images_of_two_seeds():
    base = runs(2, 500, 0.8)
    mech = with_extra(base, [4, 3])
    mech[1, np.flatnonzero(base[1])[:2]] = False  # and wrong on 2 the baseline got right
    v = versus_baseline(base, mech)
    # 7 for the mechanism, 2 for the baseline: P(X <= 2) + P(X >= 7), X ~ Binomial(9, 1/2)
    by_hand = 2 * sum(math.comb(9, i) for i in range(3)) / 2**9
    assert v.p == pytest.approx(by_hand, rel=1e-12)
    assert v.delta == pytest.approx((4 / 500 + 1 / 500) / 2)


# -- a synthetic comparison -------------------------------------------------------------------
@pytest.mark.parametrize("seeds", [1, 3])
def test_three_percent_of_the_wrong_images_corrected_is_better(seeds):
    base = runs(seeds, 10_000, 0.88, seed=seeds)
    mech = corrected(base, 0.03)  # about 36 of ~1,200 wrong images, +0.36 points
    result = compare_to_baseline(base, {"fixes": mech, "renamed": base.copy()})
    fixes, renamed = result["fixes"], result["renamed"]
    assert fixes.verdict == BETTER and fixes.p_adjusted < 0.05
    assert fixes.low > 0 and fixes.detectable < fixes.delta
    assert fixes.p_adjusted == pytest.approx(min(1.0, 2 * fixes.p))  # Holm, 2 mechanisms
    assert renamed.verdict == NO_DIFFERENCE and renamed.delta == 0


def test_the_same_gain_hidden_in_realistic_disagreement_is_below_the_detectable_size():
    rng = np.random.default_rng(5)
    base = runs(1, 10_000, 0.88, seed=4)
    mech = corrected(base, 0.03)
    # Two trained models disagree on ~6 % of images: as many more lost as won.
    lost = rng.choice(np.flatnonzero(base[0] & mech[0]), 300, replace=False)
    won = rng.choice(np.flatnonzero(~base[0] & ~mech[0]), 300, replace=False)
    mech[0, lost], mech[0, won] = False, True
    v = versus_baseline(base, mech)
    assert v.delta == pytest.approx(0.0036, abs=2e-4)
    assert v.mechanism_only + v.baseline_only == pytest.approx(636, abs=5)
    assert v.detectable > 1.5 * v.delta


def test_holm_turns_a_borderline_better_into_no_difference_among_three():
    base = runs(1, 1000, 0.8)
    borderline = with_extra(base, [6])  # p = 2 / 64 = 0.03125
    alone = compare_to_baseline(base, {"x": borderline})["x"]
    assert alone.verdict == BETTER and alone.p_adjusted == pytest.approx(0.03125)
    among = compare_to_baseline(base, {"x": borderline, "a": base.copy(), "b": base.copy()})
    assert among["x"].p == pytest.approx(0.03125)
    assert among["x"].p_adjusted == pytest.approx(3 * 0.03125)
    assert among["x"].verdict == NO_DIFFERENCE


def test_worse_when_the_mechanism_breaks_images():
    base = runs(1, 1000, 0.8)
    mech = base.copy()
    mech[0, np.flatnonzero(base[0])[:12]] = False
    v = versus_baseline(base, mech)
    assert v.verdict == WORSE and v.delta < 0 and v.high < 0


# -- Holm by hand -----------------------------------------------------------------------------
def test_holm_matches_a_hand_computation():
    # sorted: .005*4 = .02, .01*3 = .03, .03*2 = .06, .04*1 = .04 -> monotone .06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.04, 0.01, 0.03]), [0.06, 0.03, 0.06])
    np.testing.assert_allclose(holm([0.01, 0.02]), [0.02, 0.02])  # Bonferroni gives .04
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(holm([0.2]), [0.2])
    assert holm([]).shape == (0,)


@pytest.mark.parametrize("bad", [[0.1, 1.5], [np.nan], [[0.1]]])
def test_holm_rejects_what_is_not_a_list_of_p_values(bad):
    with pytest.raises(ValueError, match="holm: expected"):
        holm(bad)


# -- t-intervals and t-tests ------------------------------------------------------------------
def test_three_seeds_use_the_t_interval_and_t_test_of_the_per_seed_differences():
    base = np.zeros((3, 100), bool)
    base[:, :50] = True
    mech = with_extra(base, [1, 2, 3])  # differences 0.01, 0.02, 0.03
    v = versus_baseline(base, mech)
    half = t_quantile_df2(0.975) * 0.01 / math.sqrt(3)  # sd 0.01, 2 df
    assert (v.delta, v.low, v.high) == pytest.approx((0.02, 0.02 - half, 0.02 + half))
    assert v.p == pytest.approx(t_two_sided_p_df2(0.02 / (0.01 / math.sqrt(3))))  # t = √12
    assert v.p == pytest.approx(sps.ttest_1samp([0.01, 0.02, 0.03], 0).pvalue)
    assert "t-test" in v.method and v.seeds == 3


def test_accuracy_t_interval_matches_scipy():
    correct = np.zeros((4, 200), bool)
    for row, right in zip(correct, [150, 156, 149, 160], strict=True):
        row[:right] = True
    interval = accuracy_interval(correct)
    accs = np.array([150, 156, 149, 160]) / 200
    low, high = sps.t.interval(0.95, 3, loc=accs.mean(), scale=sps.sem(accs))
    assert (interval.estimate, interval.low, interval.high) == pytest.approx(
        (accs.mean(), low, high))
    assert interval.method == "t-interval over 4 seeds"
    assert t_interval(accs, 0.9).high == pytest.approx(
        sps.t.interval(0.9, 3, loc=accs.mean(), scale=sps.sem(accs))[1])


def test_equal_per_seed_differences_fall_back_to_mcnemar():
    base = runs(3, 500, 0.8)
    v = versus_baseline(base, with_extra(base, [4, 4, 4]))  # zero spread: no t-test
    assert v.p == pytest.approx(2 * 0.5**12)
    assert "McNemar" in v.method and "no spread" in v.method
    assert v.low < v.delta < v.high


# -- bootstraps -------------------------------------------------------------------------------
def test_bootstrap_interval_is_reproducible_for_a_seed():
    correct = runs(1, 300, 0.7)
    assert accuracy_interval(correct, seed=3) == accuracy_interval(correct, seed=3)
    assert accuracy_interval(correct, seed=3) != accuracy_interval(correct, seed=4)
    base = runs(2, 300, 0.7, seed=1)
    other = runs(2, 300, 0.72, seed=2)
    assert versus_baseline(base, other, seed=3) == versus_baseline(base, other, seed=3)


def test_bootstrap_of_counts_matches_resampling_image_indices():
    rng = np.random.default_rng(7)
    base = runs(2, 300, 0.7, seed=8)
    mech = base ^ (rng.random(base.shape) < 0.1)
    draws = rng.integers(0, 300, size=(4000, 2, 300))  # the slow, obvious way
    rows = np.arange(2)[None, :, None]
    acc = base[rows, draws].mean(axis=(1, 2))
    delta = (mech[rows, draws].mean(axis=2) - base[rows, draws].mean(axis=2)).mean(axis=1)
    a, v = accuracy_interval(base), versus_baseline(base, mech)
    np.testing.assert_allclose([a.low, a.high], np.quantile(acc, [0.025, 0.975]), atol=0.004)
    np.testing.assert_allclose([v.low, v.high], np.quantile(delta, [0.025, 0.975]), atol=0.004)


def test_bootstrap_intervals_cover_the_truth():
    rng = np.random.default_rng(11)
    covered_acc = covered_delta = 0
    trials = 200
    for i in range(trials):
        correct = rng.random((1, 400)) < 0.8
        a = accuracy_interval(correct, resamples=2000, seed=i)
        covered_acc += a.low <= 0.8 <= a.high
        cells = rng.multinomial(1, [0.05, 0.03, 0.72, 0.20], size=400)  # 10, 01, 11, 00
        base = (cells[:, 1] + cells[:, 2]).astype(bool)[None]
        mech = (cells[:, 0] + cells[:, 2]).astype(bool)[None]
        v = versus_baseline(base, mech, resamples=2000, seed=i)
        covered_delta += v.low <= 0.02 <= v.high
    assert 0.89 <= covered_acc / trials <= 0.99
    assert 0.89 <= covered_delta / trials <= 0.99


# -- smallest detectable difference -----------------------------------------------------------
def discordant_runs(images: int, mechanism_only: int, baseline_only: int) -> tuple:
    base = np.zeros((1, images), bool)
    base[0, : images // 2] = True
    mech = base.copy()
    mech[0, images // 2: images // 2 + mechanism_only] = True
    mech[0, :baseline_only] = False
    return base, mech


def test_detectable_difference_solves_connors_sample_size():
    base, mech = discordant_runs(10_000, 360, 340)
    d = versus_baseline(base, mech).detectable
    psi, za, zb = 0.07, sps.norm.ppf(0.975), sps.norm.ppf(0.8)
    n = (za * math.sqrt(psi) + zb * math.sqrt(psi - d * d)) ** 2 / d**2  # Connor (1987)
    assert n == pytest.approx(10_000, rel=1e-6)
    assert d == pytest.approx((za + zb) * math.sqrt(psi / 10_000), rel=0.01)  # no δ² term


def test_detectable_difference_shrinks_with_more_images_and_more_seeds():
    small = versus_baseline(*discordant_runs(2000, 72, 68)).detectable
    large = versus_baseline(*discordant_runs(8000, 288, 272)).detectable  # same rate, 4x N
    assert large == pytest.approx(small / 2, rel=0.01)
    base = np.zeros((6, 1000), bool)
    extra = [5, 8, 11, 5, 8, 11]
    three = versus_baseline(base[:3], with_extra(base[:3], extra[:3])).detectable
    six = versus_baseline(base, with_extra(base, extra)).detectable
    assert six < three


def test_power_at_the_detectable_difference_is_80_percent():
    rng = np.random.default_rng(2)
    base, mech = discordant_runs(10_000, 360, 340)
    d, psi, draws = versus_baseline(base, mech).detectable, 0.07, 400
    counts = rng.multinomial(10_000, [(psi + d) / 2, (psi - d) / 2, 1 - psi], size=draws)
    power = np.mean([sps.binomtest(int(k), int(k + j)).pvalue < 0.05 for k, j, _ in counts])
    assert 0.72 <= power <= 0.88

    base = np.zeros((5, 1000), bool)
    v = versus_baseline(base, with_extra(base, [2, 6, 10, 14, 18]))  # sd of Δ_s = 0.0063
    sd = 0.004 * math.sqrt(2.5)
    samples = rng.normal(v.detectable, sd, size=(draws, 5))
    power = np.mean(sps.ttest_1samp(samples, 0, axis=1).pvalue < 0.05)
    assert 0.72 <= power <= 0.88


def test_no_discordance_reports_the_fewest_images_that_could_reach_significance():
    base = runs(1, 1000, 0.8)
    assert versus_baseline(base, base).detectable == pytest.approx(6 / 1000)  # 2/2^6 < .05
    base = runs(3, 1000, 0.8)
    assert versus_baseline(base, base).detectable == pytest.approx(6 / 3000)
    assert versus_baseline(runs(1, 5, 0.8), runs(1, 5, 0.8)).detectable == math.inf


# -- inputs -----------------------------------------------------------------------------------
def test_missing_seeds_are_left_out_of_the_pairs():
    base = runs(3, 400, 0.8)
    mech = with_extra(base, [3, 4, 9]).astype(float)
    mech[2] = np.nan  # seed 2 not finished
    v = versus_baseline(base, mech)
    assert v.seeds == 2 and "McNemar" in v.method
    assert v == versus_baseline(base[:2], mech[:2])
    as_mapping = versus_baseline({0: base[0], 1: base[1], 2: base[2]},
                                 {0: mech[0], 1: mech[1], 2: None})
    assert as_mapping == v
    assert accuracy_interval(mech).estimate == pytest.approx(mech[:2].mean())


@pytest.mark.parametrize(("baseline", "mechanism", "message"), [
    (np.ones((1, 10)), np.ones((1, 12)), "same test images"),
    (np.ones((1, 10)), np.full((1, 10), 2), "booleans or 0/1"),
    (np.ones((1, 10)), np.array([[1.0, np.nan] * 5]), "booleans or 0/1"),
    (np.ones((1, 0)), np.ones((1, 0)), "N >= 1"),
    (np.ones((0, 10)), np.ones((0, 10)), "at least one seed"),
    (np.ones((2, 2, 2)), np.ones((2, 2, 2)), r"\(S, N\)"),
    ({0: np.ones(4)}, {1: np.ones(4)}, "present for both"),
])
def test_bad_outcomes_are_refused_clearly(baseline, mechanism, message):
    with pytest.raises(ValueError, match=message):
        versus_baseline(baseline, mechanism)


def test_bad_levels_are_refused():
    with pytest.raises(ValueError, match="confidence in"):
        accuracy_interval(np.ones(5, bool), 95)
    with pytest.raises(ValueError, match="alpha in"):
        versus_baseline(np.ones(5, bool), np.ones(5, bool), alpha=0)
    with pytest.raises(TypeError, match="booleans or 0/1"):
        accuracy_interval(np.array(["a", "b"]))


def test_method_footnote_says_what_was_done():
    few = method_footnote(1, 1000)
    assert "1 seed " in few and "1,000 test images" in few and "McNemar" in few
    assert "test-set noise only" in few
    many = method_footnote(3, 10_000, alpha=0.01)
    assert "3 seeds" in many and "t-test" in many and "McNemar" not in many
    for text in (few, many):
        assert "Holm" in text and "80 % power" in text and "\n" not in text
    assert "α = 0.01" in many


def test_the_worked_example_of_the_docs():
    def pair(right: int, mechanism_only: int, baseline_only: int, images: int) -> tuple:
        base = np.zeros(images, bool)
        base[:right] = True
        mech = base.copy()
        mech[right:right + mechanism_only] = True
        mech[:baseline_only] = False
        return base, mech

    base, se = pair(750, 60, 81, 1000)
    _, danet = pair(750, 70, 57, 1000)
    demo = compare_to_baseline([base], {"se": [se], "danet": [danet]})
    assert (demo["se"].delta, demo["se"].p) == pytest.approx(
        (-0.021, sps.binomtest(60, 141).pvalue))
    assert demo["se"].p_adjusted == pytest.approx(0.1835, abs=1e-4)
    assert demo["se"].detectable == pytest.approx(0.0332, abs=1e-4)
    assert (demo["se"].low, demo["se"].high) == pytest.approx((-0.044, 0.002), abs=1.5e-3)
    assert demo["danet"].verdict == NO_DIFFERENCE
    seeds = [pair(r, m, b, 10_000) for r, m, b in [(9050, 310, 270), (9080, 295, 280),
                                                     (9030, 320, 262)]]
    full = versus_baseline(np.stack([b for b, _ in seeds]), np.stack([m for _, m in seeds]))
    assert full.p == pytest.approx(sps.ttest_1samp([0.004, 0.0015, 0.0058], 0).pvalue)
    assert (full.p, full.detectable) == pytest.approx((0.0943, 0.00705), abs=1e-4)
    assert full.verdict == NO_DIFFERENCE
    assert sps.binomtest(925, 925 + 812).pvalue < 0.01  # what pooled McNemar would say
