"""The test-set-only figure: exact McNemar test on the discordant images pooled over seeds.

It treats the trained models as fixed and asks only whether another draw of test images
could produce the observed split of discordant images. Seed-to-seed variation is left out,
so it is anti-conservative for the question "does the mechanism help?" (the A/A test in
docs/statistics.md: 43 % false verdicts with one seed). It is reported as a labelled field,
never as a verdict.
"""

from __future__ import annotations

from scipy import stats as sps

__all__ = ["mcnemar_p"]


def mcnemar_p(mechanism_only: int, baseline_only: int) -> float:
    """Exact two-sided McNemar (McNemar, Psychometrika 12:153, 1947): under H0 each
    discordant image favours either model with probability 1/2."""
    discordant = mechanism_only + baseline_only
    if discordant == 0:
        return 1.0
    return float(sps.binomtest(mechanism_only, discordant, 0.5).pvalue)
