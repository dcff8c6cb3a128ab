"""Outcome sets as the statistics read them, and the checks that refuse anything else.

An outcome set is an (S, N) array (or (N,) for one seed) of booleans or 0/1, where a row of
NaN marks a seed that has not finished, or a mapping ``{seed: (N,) row or None}``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from .._base.errors import Attn2dError

Outcomes = ArrayLike | Mapping[int, ArrayLike | None]


def _row(values: ArrayLike, owner: str, seed: int) -> np.ndarray | None:
    """One seed's outcomes as booleans, or None when the row is all NaN (seed missing)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise Attn2dError(f"{owner}: expected one row of N outcomes per seed, got shape "
                          f"{arr.shape} for seed {seed}")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise Attn2dError(f"{owner}: expected booleans or 0/1, got dtype {arr.dtype}")
    nan = np.isnan(arr) if np.issubdtype(arr.dtype, np.floating) else np.zeros(arr.shape, bool)
    if arr.size and nan.all():
        return None
    if nan.any() or not np.isin(arr, (0, 1)).all():
        raise Attn2dError(f"{owner}: expected booleans or 0/1 (a whole row of NaN for a missing "
                          f"seed), got other values for seed {seed}")
    return arr.astype(bool)


def outcomes(correct: Outcomes, owner: str) -> dict[int, np.ndarray]:
    """``{seed: (N,) bool}`` for the seeds present; checks N >= 1, one N, >= 1 seed."""
    if isinstance(correct, Mapping):
        items = list(correct.items())
    else:
        arr = np.asarray(correct)
        if arr.ndim not in (1, 2):
            raise Attn2dError(f"{owner}: expected an (S, N) or (N,) array of outcomes, got "
                              f"shape {arr.shape}")
        items = list(enumerate(arr if arr.ndim == 2 else arr[None]))
    rows = {}
    for seed, values in items:
        row = None if values is None else _row(values, owner, seed)
        if row is not None:
            rows[int(seed)] = row
    sizes = {row.size for row in rows.values()}
    if not rows:
        raise Attn2dError(f"{owner}: expected the outcomes of at least one seed, got none")
    if len(sizes) != 1 or 0 in sizes:
        raise Attn2dError(f"{owner}: expected the same N >= 1 test images for every seed, got "
                          f"{sorted(sizes)}")
    return dict(sorted(rows.items()))


def images_of(rows: Mapping[int, np.ndarray]) -> int:
    return next(iter(rows.values())).size


def paired(base: Mapping[int, np.ndarray], mech: Mapping[int, np.ndarray], owner: str,
           seeds: list[int] | None = None) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The seeds both have (or ``seeds``, which both must have) and their stacked outcomes."""
    images = images_of(base)
    if images_of(mech) != images:
        raise Attn2dError(f"{owner}: expected the same test images for baseline and mechanism, "
                          f"got N = {images} and N = {images_of(mech)}")
    if seeds is None:
        seeds = sorted(base.keys() & mech.keys())
    if not seeds:
        raise Attn2dError(f"{owner}: expected a seed present for both baseline and mechanism, "
                          f"got baseline seeds {sorted(base)} and mechanism seeds {sorted(mech)}")
    return seeds, np.stack([base[s] for s in seeds]), np.stack([mech[s] for s in seeds])


def probability(value: float, name: str, owner: str) -> float:
    if not 0.0 < value < 1.0:
        raise Attn2dError(f"{owner}: expected {name} in (0, 1), got {value}")
    return float(value)
