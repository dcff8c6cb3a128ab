"""``attn2d compare``: a baseline and a list of mechanisms, several seeds each, one table.

    plans = plan_runs(...)       # every (mechanism, seed), seed-major; finished ones skipped
    executor.run(plans)          # K runs at once in K worker processes (or a cluster)
    measure_costs(...)           # one process times every model, interleaved: fair columns
    write_report(...)            # table with CIs and paired tests, plots, HTML

Each run is an ordinary training run (:func:`attn2d.training.train`, its settings in
``OUT/runs/<mechanism>-seed<k>/config.json``, its output in ``train.log`` there). A run with
a ``result.json`` is finished and skipped when the command is repeated; one with only a
``last.pt`` resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._base.errors import Attn2dError
from .._base.io import write_json
from .._base.validate import check_int, check_number
from ..stats import MIN_SEEDS
from ..training import TrainConfig, resolve_device
from .costs import costs_measured, measure_costs
from .local import LocalExecutor, default_threads
from .plan import (
    DEFAULT_MARGIN_PP,
    DEFAULT_MAX_SEEDS,
    DEFAULT_SEEDS,
    CompareConfig,
    ComparisonInterrupted,
    check_specs,
    parse_seeds,
    plan_runs,
    run_name,
)
from .report import Comparison, build_report, write_report
from .sequential import run_sequential

__all__ = ["compare"]

log = logging.getLogger(__name__)


def compare(
    mechanisms: Sequence[str],
    base: TrainConfig | None = None,
    seeds: int | str | Sequence[int] = DEFAULT_SEEDS,
    out: str | Path = "runs/compare",
    *,
    jobs: int = 1,
    in_process: bool = False,
    datasets: tuple[Any, Any] | None = None,
    num_classes: int | None = None,
    command: str | None = None,
    costs: bool = True,
    html: bool = True,
    max_seeds: int = DEFAULT_MAX_SEEDS,
    margin: float = DEFAULT_MARGIN_PP,
) -> Comparison:
    """Train every mechanism with every seed (skipping finished runs) and write the report.

    Args:
        mechanisms: spec strings; ``"none"`` (the baseline) is added first if absent.
        base: settings shared by every run; ``attention``, ``seed`` and ``out`` are set here
            (default: :class:`CompareConfig`'s, which ``attn2d compare`` uses too).
        seeds: a count N (seeds 0..N-1), a range ``"A-B"`` (to add seeds to an earlier
            comparison, merged with :func:`report`), the seeds themselves, or ``"auto"``:
            add seeds in batches only to mechanisms whose verdict is open, up to
            ``max_seeds``, under a sequential design (:mod:`attn2d.comparison.sequential`).
        out: output folder.
        jobs: runs at once (separate processes). On a CPU each gets cores/jobs threads
            unless ``base.threads`` is set; on a GPU they share the device.
        in_process: train in this process, one run after another (starts faster; a crash
            stops the comparison).
        datasets: a ``(train, test)`` pair of :class:`torch.utils.data.Dataset` objects
            instead of ``base.dataset``. Dataset objects cannot cross into the per-run
            subprocesses, so with them every run goes in-process, one at a time. Images
            are (C, H, W) tensors, uint8 (normalised with the training set's statistics)
            or float (used as given); attn2d adds no augmentation.
        num_classes: with ``datasets``: the number of classes (default:
            ``len(train.classes)``).
        command: the command line, recorded in the report.
        costs: measure the cost columns after the runs (:func:`measure_costs`), unless
            ``costs.json`` already holds every mechanism.
        html: also write the self-contained ``results.html``.
        max_seeds: with ``seeds="auto"``: seeds per mechanism at the last look.
        margin: equivalence margin in percentage points: a mechanism whose interval lies
            within ±margin of the baseline is ``equivalent`` ("within ±0.5 pp").
    """
    base = CompareConfig() if base is None else base
    specs = check_specs(mechanisms)
    sequential = isinstance(seeds, str) and seeds.strip().lower() == "auto"
    seed_list = list(range(check_int(max_seeds, "--max-seeds", minimum=MIN_SEEDS))) \
        if sequential else parse_seeds(seeds)
    check_number(margin, "--margin", lambda v: 0 < v < 100, "in (0, 100) percentage points")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise Attn2dError(f"expected --jobs >= 1, got {jobs!r}")
    names = [run_name(spec, s) for spec in specs for s in seed_list]
    if len(set(names)) != len(names):
        raise Attn2dError(f"expected specs with distinct folder names, got {specs}")
    in_process = in_process or datasets is not None
    if in_process and jobs > 1:
        raise Attn2dError("expected --jobs 1 with in-process runs (dataset "
                          f"objects or --in-process), got --jobs {jobs}")
    device = resolve_device(base.device)
    data = None
    if datasets is not None:
        from ..data import data_from_datasets

        train_set, test_set = datasets
        if num_classes is None and not hasattr(train_set, "classes"):
            raise Attn2dError("expected num_classes with datasets that have no "
                              ".classes attribute, got none")
        classes = num_classes if num_classes is not None else len(train_set.classes)
        data = data_from_datasets(train_set, test_set, classes, device, seed=0,
                                  num_workers=base.num_workers)
        base = dataclasses.replace(base, dataset=data.info.name)
    base = base.resolved()
    jobs = min(jobs, len(specs) * len(seed_list))  # no more workers than runs
    if base.threads is None and device.type == "cpu" and jobs > 1:
        base = dataclasses.replace(base, threads=default_threads(jobs))
    base = dataclasses.replace(base, progress=base.progress and in_process).check()
    out = Path(out)
    plans = plan_runs(specs, base, seed_list, out)
    todo = sum(not p.finished for p in plans)
    if sequential:
        log.info("%d models, seeds added where a verdict is open (up to %d each, margin ±%g pp), "
                 "%d at a time, in %s", len(specs), max_seeds, margin, jobs, out)
    else:
        log.info("%d models x %d seeds = %d runs (%d finished), %d at a time, in %s",
                 len(specs), len(seed_list), len(plans), len(plans) - todo,
                 max(1, min(jobs, todo)), out)
    write_json(out / "comparison.json", {
        "specs": specs, "seeds": "auto" if sequential else seed_list, "command": command,
        "margin_pp": margin, **({"max_seeds": max_seeds} if sequential else {})})
    executor = LocalExecutor(jobs, in_process=in_process, data=data)
    try:
        if sequential:
            failed = run_sequential(out, specs, base, executor, max_seeds, margin)
        else:
            failed = executor.run(plans)
    except ComparisonInterrupted as stopped:
        how = (f"run the same command again: {command}" if command else
               "call compare() again with the same arguments")
        raise ComparisonInterrupted(stopped.signal, f"stopped by signal {stopped.signal}; "
                                    f"the runs in flight saved their checkpoints; to continue, "
                                    f"{how}") from None
    if costs and not costs_measured(out, specs):
        measure_costs(out, specs, device)
    comparison = build_report([out])
    comparison.failed = [dataclasses.asdict(f) for f in failed]
    write_report(comparison, out, html=html)
    return comparison

