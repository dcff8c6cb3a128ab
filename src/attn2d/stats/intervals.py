"""Confidence intervals of a mechanism's accuracy (docs/statistics.md, "Accuracy")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from .._base.errors import Attn2dError
from ._inputs import Outcomes, outcomes, probability
from .variance import crossed_mean

__all__ = ["Interval", "accuracy_interval", "t_interval"]


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval and the method that gave it.

    ``seeds`` is the number of seeds behind an accuracy (None for :func:`t_interval`).
    """

    estimate: float
    low: float
    high: float
    method: str
    seeds: int | None = None


def t_interval(values: ArrayLike, confidence: float = 0.95) -> Interval:
    """Mean of ``values`` with its Student t confidence interval (needs 2 or more values)."""
    confidence = probability(confidence, "confidence", "t_interval")
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise Attn2dError(f"t_interval: expected a 1-D array of at least 2 values, got shape "
                          f"{x.shape}")
    mean = float(x.mean())
    half = float(sps.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, f"t-interval over {x.size} values")


def accuracy_interval(correct: Outcomes, confidence: float = 0.95) -> Interval:
    """Mean over seeds of per-seed accuracy, with a confidence interval for the accuracy this
    mechanism reaches on the images' distribution (not only on this test set).

    - 2 or more seeds: ā ± t(df) · se with the crossed seeds × images standard error
      (:func:`attn2d.stats.variance.crossed_mean`): seed-to-seed variation plus the
      test-set term that all seeds share, Satterthwaite df (with 3 seeds and a small
      test-set term it covers a little less than stated, at worst ~92 % for 95 %).
    - 1 seed: the Wilson score interval of that run's N outcomes
      (``scipy.stats.binomtest``): test-set noise only, conditional on that seed.

    The interval is clipped to [0, 1]; ``Interval.seeds`` is the number of seeds used.
    """
    confidence = probability(confidence, "confidence", "accuracy_interval")
    rows = outcomes(correct, "accuracy_interval")
    table = np.stack(list(rows.values()))
    seeds, images = table.shape
    if seeds == 1:
        right = int(table.sum())
        ci = sps.binomtest(right, images).proportion_ci(confidence, method="wilson")
        return Interval(right / images, float(ci.low), float(ci.high),
                        f"Wilson interval over {images:,} test images, one seed: test-set "
                        "noise only, conditional on that seed", seeds=1)
    est = crossed_mean(table)
    df = est.satterthwaite_df
    half = float(sps.t.ppf((1 + confidence) / 2, df)) * est.se if est.se > 0 else 0.0
    return Interval(est.mean, max(0.0, est.mean - half), min(1.0, est.mean + half),
                    f"t-interval over {seeds} seeds × {images:,} test images (seed and "
                    f"test-set noise, Satterthwaite {df:.0f} df)", seeds=seeds)
