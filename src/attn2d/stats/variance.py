"""The standard error of a mean over seeds × test images, both of them random.

Every seed's run is scored on the same N test images, so a mean over an (S, N) table
y[s, i] (right/wrong, or the paired difference of two models) carries two kinds of noise:
the seeds' (another seed trains another model) and the test set's (another draw of N
images from the same distribution), which all seeds share and which more seeds never
average away. With the crossed random-effects model y = μ + A_s + B_i + (AB)_si and the
two-way ANOVA mean squares MS_seeds, MS_images and MS_residual,

    Var(ȳ) = σ²_A / S + σ²_B / N + σ²_AB / (S N) = (MS_seeds + MS_images − MS_residual) / (S N)

(e.g. Searle, Casella & McCulloch, *Variance Components*, 1992, §4.5). Written as

    Var(ȳ) = s²_seeds / S + σ̂²_B / N,   σ̂²_B = max(0, (MS_images − MS_residual) / S),

the first term is the familiar one of a t-test over per-seed means (which conditions on this
test set) and the second the test-set term, estimated from N images and so nearly exact.

Degrees of freedom. Satterthwaite's (Biometrics Bull. 2:110, 1946) combine both terms; with
a few seeds they are optimistic (a 2-df seed term that comes out small by chance also makes
the df large: a nominal 5 % test rejects up to 7.8 % at 3 seeds, 5.8 % at 5). Tests and
their intervals therefore use S − 1, the seed term's own: adding a nearly known variance to
a t-statistic's denominator only lightens its tails, so this is conservative, and exact
when the test-set term is 0. Accuracy intervals, where the test-set term dominates, use
Satterthwaite's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MeanEstimate", "crossed_mean", "studentised"]


@dataclass(frozen=True)
class MeanEstimate:
    """A mean over seeds × test images with its standard error.

    Attributes:
        mean: the mean of y over seeds and images.
        se: its standard error (seed and test-set terms).
        df: S − 1, the degrees of freedom of the tests (``inf`` with one seed, where only
            the test-set term is known).
        satterthwaite_df: Satterthwaite's degrees of freedom of ``se`` (accuracy intervals).
        seed_se: the seed term alone, sd of the per-seed means / √S (0 with one seed).
        image_se: the test-set term alone, σ̂_B / √N.
        per_seed: the per-seed means.
    """

    mean: float
    se: float
    df: float
    satterthwaite_df: float
    seed_se: float
    image_se: float
    per_seed: np.ndarray


def studentised(per_seed: np.ndarray, image_var: np.ndarray | float = 0.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, standard error and test df (S − 1) from per-seed means (…, S), vectorised.

    ``image_var`` is the test-set term σ̂²_B / N (default 0: conditional on the test set);
    simulations pass per-seed values alone.
    """
    values = np.asarray(per_seed, dtype=float)
    seeds = values.shape[-1]
    var = values.var(axis=-1, ddof=1) / seeds + image_var
    return values.mean(axis=-1), np.sqrt(var), np.full(var.shape, seeds - 1.0)


def crossed_mean(y: np.ndarray) -> MeanEstimate:
    """The mean of an (S, N) table of outcomes (or paired differences) over seeds and test
    images, with the standard error of both sources of noise (see the module docstring).

    With one seed only the test-set term exists: the standard error is the sd of the N
    values / √N with ``df = inf``, conditional on that seed.
    """
    y = np.asarray(y, dtype=float)
    seeds, images = y.shape
    per_seed = y.mean(axis=1)
    grand = float(per_seed.mean())
    if seeds == 1:
        image_se = float(y[0].std(ddof=1) / np.sqrt(images)) if images > 1 else 0.0
        return MeanEstimate(grand, image_se, np.inf, np.inf, 0.0, image_se, per_seed)
    per_image = y.mean(axis=0)
    ss_seeds = images * float(((per_seed - grand) ** 2).sum())
    ss_images = seeds * float(((per_image - grand) ** 2).sum())
    ss_total = float(((y - grand) ** 2).sum())
    residual_df = (seeds - 1) * (images - 1)
    ms_images = ss_images / (images - 1) if images > 1 else 0.0
    ms_residual = max(ss_total - ss_seeds - ss_images, 0.0) / residual_df if images > 1 else 0.0
    b = 1.0 / (seeds * images)  # σ̂²_B / N = b (MS_images − MS_residual)
    image_var = b * max(ms_images - ms_residual, 0.0)
    mean, se, df = (float(v) for v in studentised(per_seed, image_var))
    seed_var = se**2 - image_var
    satterthwaite = se**4 / (seed_var**2 / (seeds - 1) + (b * ms_images) ** 2 / (images - 1)
                             + (b * ms_residual) ** 2 / residual_df) \
        if image_var > 0 else seeds - 1.0
    return MeanEstimate(mean, se, df, float(satterthwaite) if se > 0 else seeds - 1.0,
                        float(np.sqrt(max(seed_var, 0.0))), float(np.sqrt(image_var)), per_seed)
