"""The verdicts a comparison can give a mechanism, and how a table prints them."""

from __future__ import annotations

__all__ = ["BETTER", "EQUIVALENT", "MIN_SEEDS", "NO_DIFFERENCE", "OPEN", "UNTESTED", "WORSE",
           "verdict_text"]

MIN_SEEDS = 3  # fewer seeds cannot measure seed-to-seed noise well enough for a verdict
BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference"
EQUIVALENT = "equivalent"  # its interval lies within ±margin of the baseline (TOST)
UNTESTED = f"untested: needs ≥ {MIN_SEEDS} seeds"
OPEN = "open"  # a sequential comparison that still adds seeds to this mechanism


def verdict_text(verdict: str, margin: float | None = None) -> str:
    """The verdict as a table prints it: ``equivalent`` with its margin in percentage points
    ("within ±0.5 pp"), the others as they are."""
    if verdict == EQUIVALENT and margin is not None:
        return f"within ±{100 * margin:g} pp"
    return verdict
