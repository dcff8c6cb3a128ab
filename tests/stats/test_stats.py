"""attn2d.stats, the fixed-seed comparison: closed-form cases, the crossed seeds × images
variance against a slow by-hand ANOVA, intervals that cover the population value, Holm by
hand, no verdict below 3 seeds, the test-set-only McNemar figure, the detectable difference
and its power, inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from attn2d.stats import (
    BETTER,
    EQUIVALENT,
    NO_DIFFERENCE,
    UNTESTED,
    WORSE,
    accuracy_interval,
    compare_to_baseline,
    crossed_mean,
    holm,
    method_footnote,
    t_interval,
    verdict_text,
    versus_baseline,
)


def runs(seeds: int, images: int, accuracy: float, seed: int = 0) -> np.ndarray:
    """(seeds, images) outcomes, each right with probability ``accuracy``."""
    return np.random.default_rng(seed).random((seeds, images)) < accuracy


def with_extra(baseline: np.ndarray, extra: list[int]) -> np.ndarray:
    """The baseline, right on ``extra[s]`` more images in seed ``s`` and wrong on none."""
    mechanism = baseline.copy()
    for row, k in zip(mechanism, extra, strict=True):
        row[np.flatnonzero(~row)[:k]] = True
    return mechanism


def crossed_by_hand(y: list[list[float]]) -> tuple[float, float, float]:
    """Mean, se and Satterthwaite df of a seeds × images mean, the textbook way: sums of
    squares by loops, E[MS] of the crossed random model, truncation of σ²_B at 0."""
    seeds, images = len(y), len(y[0])
    grand = sum(sum(row) for row in y) / (seeds * images)
    rows = [sum(y[s]) / images for s in range(seeds)]
    cols = [sum(y[s][i] for s in range(seeds)) / seeds for i in range(images)]
    ss_a = images * sum((r - grand) ** 2 for r in rows)
    ss_b = seeds * sum((c - grand) ** 2 for c in cols)
    ss_e = sum((y[s][i] - rows[s] - cols[i] + grand) ** 2
               for s in range(seeds) for i in range(images))
    ms_a, ms_b = ss_a / (seeds - 1), ss_b / (images - 1)
    ms_e = ss_e / ((seeds - 1) * (images - 1))
    sigma_b2 = max(0.0, (ms_b - ms_e) / seeds)
    seed_part, image_part = ms_a / (seeds * images), sigma_b2 / images
    var = seed_part + image_part
    if image_part > 0:
        b = 1 / (seeds * images)
        denominator = (seed_part**2 / (seeds - 1) + (b * ms_b) ** 2 / (images - 1)
                       + (b * ms_e) ** 2 / ((seeds - 1) * (images - 1)))
    else:
        denominator = seed_part**2 / (seeds - 1)
    return grand, math.sqrt(var), var**2 / denominator


# -- the crossed variance -----------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 40), (5, 25), (2, 60)])
def test_crossed_mean_matches_the_anova_by_hand(shape):
    rng = np.random.default_rng(sum(shape))
    difficulty = rng.random(shape[1])  # images differ, so σ²_B > 0
    y = (rng.random(shape) < difficulty * 0.8 + rng.normal(0, 0.05, (shape[0], 1))).astype(float)
    est = crossed_mean(y)
    mean, se, df = crossed_by_hand(y.tolist())
    assert (est.mean, est.se, est.satterthwaite_df) == pytest.approx((mean, se, df), rel=1e-10)
    assert est.df == shape[0] - 1  # what the tests use: the seed term's own
    assert est.image_se > 0 and est.se**2 == pytest.approx(est.seed_se**2 + est.image_se**2)


def test_crossed_mean_without_image_effects_is_the_t_test_over_seeds():
    # Every seed right on a different block of images: the per-image means are flat, so the
    # test-set term is truncated to 0 and the t-test over per-seed means remains.
    y = np.zeros((3, 300))
    for s, k in enumerate([30, 45, 60]):
        y[s, 100 * s: 100 * s + k] = 1
    est = crossed_mean(y)
    t = t_interval(y.mean(axis=1))
    assert est.image_se == 0 and est.df == 2
    assert est.se * sps.t.ppf(0.975, 2) == pytest.approx(t.high - t.estimate)


def test_one_seed_has_only_the_test_set_term():
    y = np.zeros((1, 400))
    y[0, :300] = 1
    est = crossed_mean(y)
    assert est.seed_se == 0 and math.isinf(est.df)
    assert est.se == pytest.approx(np.std(y[0], ddof=1) / 20)


# -- accuracy -----------------------------------------------------------------------------
def population_runs(rng: np.random.Generator, seeds: int, images: int) -> np.ndarray:
    """Right/wrong of ``seeds`` models on ``images`` fresh test images: each image's
    log-odds of being right drawn from a wide normal (easy and hard images), plus a small
    per-seed shift; every seed scores the same images."""
    logit = rng.normal(2.5, 4.0, images)[None, :] + rng.normal(0, 0.05, (seeds, 1))
    return rng.random((seeds, images)) < 1 / (1 + np.exp(-logit))


def population_accuracy() -> float:
    z = np.random.default_rng(99).normal(2.5, 4.0, 2_000_000)
    shift = np.random.default_rng(98).normal(0, 0.05, 2_000_000)
    return float(np.mean(1 / (1 + np.exp(-(z + shift)))))


def test_accuracy_interval_covers_the_population_accuracy():
    # The t-interval over seeds alone conditions on the test set: it under-covers the
    # population value, because all seeds share the same images.
    rng, truth = np.random.default_rng(4), population_accuracy()
    trials, covered, conditional = 300, 0, 0
    for _ in range(trials):
        correct = population_runs(rng, 5, 1000)
        a = accuracy_interval(correct)
        covered += a.low <= truth <= a.high
        t = t_interval(correct.mean(axis=1))
        conditional += t.low <= truth <= t.high
    assert 0.91 <= covered / trials <= 0.99
    assert conditional / trials < 0.8
    assert a.seeds == 5 and "seed and test-set noise" in a.method


def test_one_seed_gets_a_wilson_interval_conditional_on_it():
    correct = np.zeros(400, bool)
    correct[:300] = True
    a = accuracy_interval(correct)
    ci = sps.binomtest(300, 400).proportion_ci(0.95, method="wilson")
    assert (a.estimate, a.low, a.high) == pytest.approx((0.75, ci.low, ci.high))
    assert a.seeds == 1 and "conditional on that seed" in a.method


def test_t_interval_matches_scipy():
    accs = np.array([150, 156, 149, 160]) / 200
    for level in (0.9, 0.95):
        low, high = sps.t.interval(level, 3, loc=accs.mean(), scale=sps.sem(accs))
        assert (t_interval(accs, level).low, t_interval(accs, level).high) == pytest.approx(
            (low, high))


# -- verdicts -----------------------------------------------------------------------------
@pytest.mark.parametrize("seeds", [1, 2])
def test_one_or_two_seeds_never_give_a_verdict(seeds):
    base = runs(seeds, 2000, 0.7)
    huge = with_extra(base, [300] * seeds)  # +15 points: still no verdict
    result = compare_to_baseline(base, {"huge": huge, "same": base.copy()})
    for v in result.values():
        assert v.verdict == UNTESTED and math.isnan(v.p) and math.isnan(v.detectable)
        assert v.seeds == seeds and "no test" in v.method
    assert result["huge"].test_set_p < 1e-50  # the labelled test-set-only figure
    assert UNTESTED == "untested: needs ≥ 3 seeds"


def test_mixed_seed_counts_test_only_the_mechanisms_with_three():
    base = runs(4, 1000, 0.7, seed=1)
    mech = with_extra(base, [40, 44, 48, 52])
    short = {0: mech[0], 1: mech[1]}
    result = compare_to_baseline(base, {"full": mech, "short": short})
    assert result["full"].verdict == BETTER and result["full"].seeds == 4
    assert result["short"].verdict == UNTESTED and result["short"].seeds == 2
    assert result["full"].p_adjusted == result["full"].p  # a family of one tested mechanism


def test_identical_predictions_give_no_difference():
    base = runs(3, 1000, 0.75)
    v = versus_baseline(base, base.copy())
    assert (v.delta, v.low, v.high, v.se) == (0, 0, 0, 0)
    assert v.p == 1 and v.verdict == NO_DIFFERENCE and v.test_set_p == 1
    assert (v.mechanism_only, v.baseline_only, v.seeds, v.images) == (0, 0, 3, 1000)


def test_the_mcnemar_figure_pools_the_discordant_images_of_two_seeds():
    base = runs(2, 500, 0.8)
    mech = with_extra(base, [4, 3])
    mech[1, np.flatnonzero(base[1])[:2]] = False  # and wrong on 2 the baseline got right
    v = versus_baseline(base, mech)
    # 7 for the mechanism, 2 for the baseline: P(X <= 2) + P(X >= 7), X ~ Binomial(9, 1/2)
    assert v.test_set_p == pytest.approx(2 * sum(math.comb(9, i) for i in range(3)) / 2**9)
    assert v.verdict == UNTESTED and v.delta == pytest.approx((4 / 500 + 1 / 500) / 2)


def test_per_seed_differences_give_the_t_test_when_images_do_not_vary():
    base = np.zeros((3, 300), bool)
    mech = base.copy()
    for s, k in enumerate([3, 6, 9]):  # each seed wins on its own block of images
        mech[s, 100 * s: 100 * s + k] = True
    v = versus_baseline(base, mech)
    deltas = [0.01, 0.02, 0.03]
    assert v.p == pytest.approx(sps.ttest_1samp(deltas, 0).pvalue)
    assert v.df == 2 and v.seed_sd == pytest.approx(0.01)
    assert (v.low, v.high) == pytest.approx(sps.t.interval(0.95, 2, 0.02, 0.01 / math.sqrt(3)))


def test_the_same_images_won_in_every_seed_are_judged_by_the_test_set_term():
    # No seed spread at all: only another draw of test images could undo the gain. The
    # standard error is the test-set term, the sd over images of the per-image differences
    # / √N; the test keeps the seeds' 2 df (conservative: 12 of 500 images is not enough).
    base = np.zeros((3, 500), bool)
    mech = base.copy()
    mech[:, :12] = True
    v = versus_baseline(base, mech)
    per_image = (mech.astype(int) - base).mean(axis=0)
    se = per_image.std(ddof=1) / math.sqrt(500)
    assert v.se == pytest.approx(se) and v.df == 2
    assert v.p == pytest.approx(2 * sps.t.sf(per_image.mean() / se, 2))
    assert v.verdict == NO_DIFFERENCE and v.seed_sd == pytest.approx(0, abs=1e-15)
    assert versus_baseline(base, with_extra(base, [60] * 3)).verdict == BETTER  # 60 images


def test_a_consistent_gain_is_better_and_a_consistent_loss_worse():
    base = runs(5, 4000, 0.85, seed=3)
    gain = with_extra(base, [36, 40, 44, 38, 42])  # about +1 point in every seed
    loss = base.copy()
    for row in loss:
        row[np.flatnonzero(row)[:40]] = False
    result = compare_to_baseline(base, {"gain": gain, "loss": loss, "same": base.copy()})
    assert result["gain"].verdict == BETTER and result["gain"].low > 0
    assert result["loss"].verdict == WORSE and result["loss"].high < 0
    assert result["same"].verdict == NO_DIFFERENCE
    p = [result[k].p for k in ("gain", "loss", "same")]
    assert [result[k].p_adjusted for k in ("gain", "loss", "same")] == pytest.approx(holm(p))


def test_holm_turns_a_borderline_verdict_into_no_difference_among_three():
    base = np.zeros((3, 300), bool)
    mech = base.copy()
    for s, k in enumerate([5, 7, 9]):  # t = 7/√(4/3) = 6.06 on 2 df: p = 0.026
        mech[s, 100 * s: 100 * s + k] = True
    alone = compare_to_baseline(base, {"x": mech})["x"]
    assert alone.verdict == BETTER
    among = compare_to_baseline(base, {"x": mech, "a": base.copy(), "b": base.copy()})
    assert among["x"].p == pytest.approx(alone.p)
    assert among["x"].p_adjusted == pytest.approx(3 * alone.p)
    assert among["x"].verdict == NO_DIFFERENCE


def test_equivalence_needs_the_bonferroni_tost_interval_within_the_margin():
    base = np.zeros((4, 1000), bool)
    base[:, 500:] = True  # right on the second half
    tiny = base.copy()
    for s, k in enumerate([1, -1, 2, -1]):  # +0.025 points, sd 0.15: well within ±0.5
        if k > 0:
            tiny[s, 100 * s: 100 * s + k] = True  # wins k images of the first half
        else:
            tiny[s, 500 + 100 * s: 500 + 100 * s - k] = False  # loses -k of the second
    v = versus_baseline(base, tiny, margin=0.005)
    reach = sps.t.isf(0.05, v.df) * v.se
    assert v.verdict == EQUIVALENT and v.delta + reach < 0.005
    assert verdict_text(v.verdict, v.margin) == "within ±0.5 pp"
    assert versus_baseline(base, tiny, margin=0.001).verdict == NO_DIFFERENCE
    assert versus_baseline(base, tiny).verdict == NO_DIFFERENCE  # no margin, no equivalence


# -- Holm by hand -------------------------------------------------------------------------
def test_holm_matches_a_hand_computation():
    # sorted: .005*4 = .02, .01*3 = .03, .03*2 = .06, .04*1 = .04 -> monotone .06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.04, 0.01, 0.03]), [0.06, 0.03, 0.06])
    np.testing.assert_allclose(holm([0.01, 0.02]), [0.02, 0.02])  # Bonferroni gives .04
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(holm([0.2]), [0.2])
    assert holm([]).shape == (0,)
    np.testing.assert_allclose(holm([[0.04, 0.01, 0.03], [0.5, 0.6, 0.01]]),
                               [[0.06, 0.03, 0.06], [1.0, 1.0, 0.03]])  # row by row


@pytest.mark.parametrize("bad", [[0.1, 1.5], [np.nan], 0.3])
def test_holm_rejects_what_is_not_a_list_of_p_values(bad):
    with pytest.raises(ValueError, match="holm: expected"):
        holm(bad)


# -- the smallest detectable difference ---------------------------------------------------
def test_power_at_the_detectable_difference_is_80_percent():
    rng = np.random.default_rng(2)
    base = np.zeros((5, 1000), bool)
    mech = base.copy()
    for s, k in enumerate([2, 6, 10, 14, 18]):  # per-seed Δ sd 0.0063, no image term
        mech[s, 200 * s: 200 * s + k] = True
    v = versus_baseline(base, mech)
    sd = v.seed_sd
    for size, level in ((v.detectable_unadjusted, 0.05), (v.detectable, 0.05)):
        samples = rng.normal(size, sd, size=(4000, 5))
        power = np.mean(sps.ttest_1samp(samples, 0, axis=1).pvalue < level)
        assert 0.76 <= power <= 0.84
    among = compare_to_baseline(base, {"a": mech, "b": mech.copy(), "c": base.copy()})["a"]
    samples = rng.normal(among.detectable, sd, size=(4000, 5))
    power = np.mean(sps.ttest_1samp(samples, 0, axis=1).pvalue < 0.05 / 3)  # Bonferroni
    assert 0.76 <= power <= 0.84 and among.detectable > among.detectable_unadjusted


@pytest.mark.parametrize(("alpha", "power"), [(0.01, 0.8), (0.05, 0.99), (0.001, 0.999)])
def test_strict_levels_with_three_seeds_give_a_finite_detectable_difference(alpha, power):
    # scipy's nct.cdf returned NaN here and brentq raised "function value at x=8.0 is NaN"
    base = np.zeros((3, 300), bool)
    mech = base.copy()
    for s, k in enumerate([3, 6, 9]):
        mech[s, 100 * s: 100 * s + k] = True
    v = versus_baseline(base, mech, alpha=alpha, power=power)
    assert math.isfinite(v.detectable) and v.detectable > v.seed_sd


# -- inputs -------------------------------------------------------------------------------
def test_missing_seeds_are_left_out_of_the_pairs():
    base = runs(4, 400, 0.8)
    mech = with_extra(base, [3, 4, 9, 5]).astype(float)
    mech[3] = np.nan  # seed 3 not finished
    v = versus_baseline(base, mech)
    assert v.seeds == 3
    assert v == versus_baseline(base[:3], mech[:3])
    as_mapping = versus_baseline(dict(enumerate(base)), {0: mech[0], 1: mech[1], 2: mech[2],
                                                         3: None})
    assert as_mapping == v
    assert accuracy_interval(mech).estimate == pytest.approx(mech[:3].mean())
    assert accuracy_interval(mech).seeds == 3


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
    with pytest.raises(ValueError, match="accuracy_interval: expected confidence in"):
        accuracy_interval(np.ones(5, bool), 95)
    with pytest.raises(ValueError, match="compare_to_baseline: expected alpha in"):
        versus_baseline(np.ones(5, bool), np.ones(5, bool), alpha=0)
    with pytest.raises(ValueError, match="expected margin in"):
        versus_baseline(np.ones(5, bool), np.ones(5, bool), margin=0.5 * 100)
    with pytest.raises(ValueError, match="booleans or 0/1"):
        accuracy_interval(np.array(["a", "b"]))


def test_method_footnote_says_what_was_done():
    few = method_footnote(2, 1000)
    assert "1,000 test images" in few and UNTESTED in few and "McNemar" in few
    one = method_footnote(1, 500)
    assert "Wilson" in one and "conditional on that seed" in one
    many = method_footnote(3, 10_000, alpha=0.01, margin=0.005)
    assert "3 seeds" in many and "t-test" in many and "Holm" in many and "α = 0.01" in many
    assert "±0.5 pp" in many and "seed and test-set noise" in many
    for text in (few, one, many):
        assert "\n" not in text
    with pytest.raises(ValueError, match="method_footnote: expected seeds >= 1"):
        method_footnote(0, 10)
