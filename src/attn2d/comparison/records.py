"""Finished runs read back from their folders, checked, and grouped for one table.

A run folder holds ``result.json`` (:class:`~attn2d.training.RunResult`),
``metrics.jsonl`` and ``predictions.npz``; each file is checked as it is read, so a
truncated or inconsistent file is named in one line instead of surfacing as a traceback or,
worse, as a wrong table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._base.errors import Attn2dError
from .._base.io import read_json, read_jsonl, read_npz
from ..modules.registry import NO_ATTENTION
from ..training import RUNTIME_FIELDS, RunResult
from ..training.config import with_defaults

__all__ = [
    "BASELINE",
    "Collected",
    "RunRecord",
    "collect_runs",
    "comparable",
    "describe_differences",
    "outcomes_by_spec",
    "read_run",
]

PathLike = str | os.PathLike[str]
BASELINE = NO_ATTENTION  # the mechanism name of the runs without attention
# A stored accuracy and the one recomputed from the stored predictions agree to rounding.
_ACCURACY_TOLERANCE = 1e-9


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that must agree for two runs to stand in one table."""
    skip = RUNTIME_FIELDS | {"attention", "seed", "resume"}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in with_defaults(config).items()
            if k not in skip}


def describe_differences(a: dict[str, Any], b: dict[str, Any]) -> str:
    """``"epochs: 2 vs 3, lr: 0.05 vs 0.1"`` for the comparable settings that differ."""
    a, b = comparable(a), comparable(b)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys)


@dataclass
class RunRecord:
    """One finished run: its folder, mechanism, seed, result, per-epoch metrics and the
    predicted class of every test image."""

    dir: Path
    spec: str
    seed: int
    result: RunResult
    history: list[dict[str, Any]]
    predictions: np.ndarray
    targets: np.ndarray

    @property
    def config(self) -> dict[str, Any]:
        return self.result.config


def read_run(run_dir: PathLike) -> RunRecord | None:
    """The finished run in ``run_dir``, checked; None while it is unfinished."""
    run_dir = Path(run_dir)
    result_path = run_dir / "result.json"
    if not result_path.is_file():
        return None
    result = RunResult.read(result_path)
    if not result.finished:
        return None
    seed = result.config.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise Attn2dError(f"expected an integer seed in the config of {result_path}, got "
                          f"{seed!r}")
    npz = run_dir / "predictions.npz"
    saved = read_npz(npz, ("predictions", "targets"), "a run's predictions.npz")
    for name, values in saved.items():
        if not np.issubdtype(values.dtype, np.integer):
            raise Attn2dError(f"expected integer {name} (class indices) in {npz}, got "
                              f"{values.dtype}")
    predictions = saved["predictions"].astype(np.int64)
    targets = saved["targets"].astype(np.int64)
    _check_predictions(npz, predictions, targets, result)
    history = _history(run_dir / "metrics.jsonl")
    spec = result.config.get("attention") or BASELINE
    return RunRecord(run_dir, spec, seed, result, history, predictions, targets)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _history(path: Path) -> list[dict[str, Any]]:
    """A run's ``metrics.jsonl``: one object per epoch, each with its test accuracy (the
    report's curves)."""
    rows = read_jsonl(path, "a run's metrics.jsonl")
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not _is_number(row.get("test_acc")):
            got = f"keys {sorted(row)}" if isinstance(row, dict) else f"a JSON {type(row).__name__}"
            raise Attn2dError(f"expected an epoch's metrics with a numeric test_acc on line "
                              f"{number} of {path}, got {got}")
    return rows


def _check_predictions(path: Path, predictions: np.ndarray, targets: np.ndarray,
                       result: RunResult) -> None:
    """The stored predictions must be what the run reported: one per test image, classes in
    range, and the accuracy of ``result.json``."""
    if predictions.ndim != 1 or predictions.shape != targets.shape:
        raise Attn2dError(f"expected one prediction per test image in {path}, got "
                          f"{predictions.shape} predictions for {targets.shape} targets")
    classes = result.config.get("num_classes")
    for name, values in (("predictions", predictions), ("targets", targets)):
        if classes and values.size and (values.min() < 0 or values.max() >= classes):
            raise Attn2dError(f"expected {name} in [0, {classes}) in {path}, got values in "
                              f"[{values.min()}, {values.max()}]")
    accuracy = float((predictions == targets).mean()) if targets.size else 0.0
    if not _is_number(result.test_acc) or abs(accuracy - result.test_acc) > _ACCURACY_TOLERANCE:
        raise Attn2dError(f"expected the predictions in {path} to give the test accuracy of "
                          f"its result.json ({result.test_acc!r}), got {accuracy}")


@dataclass
class Collected:
    """What the folders hold: finished runs, the mechanism order and the commands their
    comparisons recorded, their stored cost measurements, and each comparison folder with
    its ``comparison.json``."""

    records: list[RunRecord]
    order: list[str]
    commands: list[str]
    costs: list[dict[str, Any]]
    comparisons: list[tuple[Path, dict[str, Any]]]


def collect_runs(dirs: Sequence[PathLike]) -> Collected:
    """Finished runs under each folder (a comparison's ``OUT`` or one run's folder), with
    what the comparisons recorded about them.

    Runs must share their settings (checked first, so a refusal names the settings). The
    same run found twice (one mechanism and seed, identical predictions: a folder merged
    with a copy of itself) counts once; two different runs under one mechanism and seed
    are refused, naming both folders.
    """
    found = Collected([], [], [], [], [])
    for folder in map(Path, dirs):
        if not folder.is_dir():
            raise Attn2dError(f"expected a folder of runs, got {folder} (no such folder)")
        run_dirs = [folder] if (folder / "result.json").is_file() else sorted(
            p for p in (folder / "runs").glob("*") if p.is_dir())
        if (folder / "comparison.json").is_file():
            comparison = read_json(folder / "comparison.json", "a comparison.json")
            found.comparisons.append((folder, comparison))
            found.order += comparison["specs"]
            if comparison.get("command"):
                found.commands.append(comparison["command"])
        if (folder / "costs.json").is_file():
            found.costs.append(read_json(folder / "costs.json", "a comparison's costs.json"))
        found.records += [r for r in map(read_run, run_dirs) if r is not None]
    if not found.records:
        raise Attn2dError(f"expected finished runs (result.json) under "
                          f"{', '.join(map(str, dirs))}, got none")
    _check_mergeable(found.records)
    found.records = _distinct(found.records)
    return found


def _check_mergeable(records: Sequence[RunRecord]) -> None:
    first = records[0]
    for record in records[1:]:
        diff = describe_differences(first.config, record.config)
        if diff:
            raise Attn2dError(f"expected runs with the same settings to merge, got "
                              f"{first.dir} and {record.dir} differing in {diff}")
        if not np.array_equal(first.targets, record.targets):
            raise Attn2dError(f"expected runs evaluated on the same test images, got "
                              f"different labels in {first.dir} and {record.dir}")


def _distinct(records: Sequence[RunRecord]) -> list[RunRecord]:
    kept: dict[tuple[str, int], RunRecord] = {}
    for record in records:
        key = (record.spec, record.seed)
        other = kept.get(key)
        if other is None:
            kept[key] = record
        elif not np.array_equal(other.predictions, record.predictions):
            raise Attn2dError(f"expected one run per mechanism and seed, got two different "
                              f"runs of {record.spec} seed {record.seed}: {other.dir} and "
                              f"{record.dir}")
    return list(kept.values())


def outcomes_by_spec(records: Sequence[RunRecord]) -> dict[str, dict[int, np.ndarray]]:
    """``{mechanism: {seed: (N,) bool}}``: which test images each run got right."""
    found: dict[str, dict[int, np.ndarray]] = {}
    for record in records:
        found.setdefault(record.spec, {})[record.seed] = record.predictions == record.targets
    return found
