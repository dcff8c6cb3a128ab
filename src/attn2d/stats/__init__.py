"""Is a mechanism's difference from the baseline real? Verdicts that survive another seed
(docs/statistics.md).

Inputs are per-test-image outcomes: ``correct[s, i]`` says whether the run with seed ``s``
classified test image ``i`` correctly. Every run sees the same N test images in the same
order, and baseline and mechanism share their seeds, so outcomes pair by seed and by image.
An outcome set is either an (S, N) array (or (N,) for one seed) of booleans or 0/1, where
a row of NaN marks a seed that has not finished, or a mapping ``{seed: (N,) row or None}``.

- :func:`accuracy_interval`: a mechanism's accuracy with an interval over seeds × test
  images (:mod:`.variance`), or, with one seed, conditional on it.
- :func:`compare_to_baseline`: the fixed-seed design (:mod:`.design`): each mechanism's
  paired difference with its own seed noise, Holm over the mechanisms, no verdict below 3
  seeds, optional equivalence within a margin.
- :func:`sequential_design` / :func:`sequential_update`: ``compare --seeds auto``
  (:mod:`.sequential`): group-sequential looks with Lan–DeMets O'Brien–Fleming boundaries
  (:mod:`.boundaries`), seeds added only to open mechanisms, a pure, resumable controller.
- :mod:`.quantiles`: Dunnett's many-to-one quantile and the power of studentised tests by
  deterministic quadrature.
"""

from __future__ import annotations

from ._inputs import Outcomes
from .boundaries import calibrated_bounds, spending_bounds
from .design import (
    Versus,
    compare_to_baseline,
    holm,
    method_footnote,
    paired_verdicts,
    versus_baseline,
)
from .intervals import Interval, accuracy_interval, t_interval
from .quantiles import detectable_shift, many_to_one_quantile
from .sequential import (
    Look,
    SequentialDesign,
    SequentialResult,
    sequential_design,
    sequential_update,
)
from .testset import mcnemar_p
from .variance import MeanEstimate, crossed_mean
from .verdicts import (
    BETTER,
    EQUIVALENT,
    MIN_SEEDS,
    NO_DIFFERENCE,
    OPEN,
    UNTESTED,
    WORSE,
    verdict_text,
)

__all__ = [
    "BETTER",
    "EQUIVALENT",
    "MIN_SEEDS",
    "NO_DIFFERENCE",
    "OPEN",
    "UNTESTED",
    "WORSE",
    "Interval",
    "Look",
    "MeanEstimate",
    "Outcomes",
    "SequentialDesign",
    "SequentialResult",
    "Versus",
    "accuracy_interval",
    "calibrated_bounds",
    "compare_to_baseline",
    "crossed_mean",
    "detectable_shift",
    "holm",
    "many_to_one_quantile",
    "mcnemar_p",
    "method_footnote",
    "paired_verdicts",
    "sequential_design",
    "sequential_update",
    "spending_bounds",
    "t_interval",
    "verdict_text",
    "versus_baseline",
]
