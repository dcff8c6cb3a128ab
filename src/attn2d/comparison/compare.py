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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._base.errors import Attn2dError
from .._base.io import write_json
from .._base.lock import FolderLock
from .._base.log import plural
from .._base.validate import check_int, check_number
from ..stats import MIN_SEEDS
from ..training import TrainConfig, resolve_device
from .costs import costs_measured
from .executor import Executor
from .local import LocalExecutor, default_threads
from .plan import (
    DEFAULT_MARGIN_PP,
    DEFAULT_MAX_SEEDS,
    DEFAULT_SEEDS,
    CompareConfig,
    ComparisonInterrupted,
    Failure,
    RunPlan,
    check_specs,
    parse_seeds,
    plan_runs,
    run_name,
)
from .report import Comparison, build_report, write_report
from .sequential import run_sequential
from .slurm import refuse_jobs_in_flight

__all__ = ["UnderWay", "compare"]

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
    executor: Executor | None = None,
) -> Comparison | UnderWay:
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
        executor: where the runs go (e.g. :class:`~attn2d.comparison.slurm.SlurmExecutor`);
            default this machine, as ``jobs`` and ``in_process`` say. When runs are left
            under way (a detached SLURM array) the result is :class:`UnderWay` and no report
            is written yet.

    Only one ``compare`` or ``train`` writes a folder at a time (:mod:`attn2d._base.lock`).
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
    if executor is not None and (jobs > 1 or in_process or datasets is not None):
        raise Attn2dError("expected --jobs, --in-process and dataset objects only with the "
                          "local executor, got them with another executor")
    in_process = in_process or datasets is not None
    if in_process and jobs > 1:
        raise Attn2dError("expected --jobs 1 with in-process runs (dataset "
                          f"objects or --in-process), got --jobs {jobs}")
    # With another executor each run resolves its device where it runs.
    device = resolve_device(base.device) if executor is None else None
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
    if base.threads is None and device is not None and device.type == "cpu" and jobs > 1:
        base = dataclasses.replace(base, threads=default_threads(jobs))
    base = dataclasses.replace(base, progress=base.progress and in_process).check()
    out = Path(out)
    if executor is None:
        executor = LocalExecutor(jobs, in_process=in_process, data=data, device=device)
    with FolderLock(out, "attn2d compare"):
        return _run(executor, specs, base, seed_list, out, sequential, max_seeds, margin,
                    command, costs, html)


@dataclass
class UnderWay:
    """A comparison whose runs are still going on elsewhere (a detached SLURM array): no
    table yet; the same command attaches, ``attn2d report`` shows what finished."""

    failed: list[dict[str, Any]]
    pending: list[str]


def _run(executor: Executor, specs: list[str], base: TrainConfig, seed_list: list[int],
         out: Path, sequential: bool, max_seeds: int, margin: float, command: str | None,
         costs: bool, html: bool) -> Comparison | UnderWay:
    plans = plan_runs(specs, base, seed_list, out)
    todo = sum(not p.finished for p in plans)
    if isinstance(executor, LocalExecutor):  # not while SLURM tasks may write these runs
        refuse_jobs_in_flight(out, [*(p.dir.name for p in plans if not p.finished), "costs"])
    if sequential:
        log.info("%d models, seeds added where a verdict is open (up to %d each, margin "
                 "±%g pp), %s, in %s", len(specs), max_seeds, margin, executor.describe(), out)
    else:
        log.info("%d models x %s = %s (%d finished), %s, in %s", len(specs),
                 plural(len(seed_list), "seed"), plural(len(plans), "run"), len(plans) - todo,
                 executor.describe(), out)
    write_json(out / "comparison.json", {
        "specs": specs, "seeds": "auto" if sequential else seed_list, "command": command,
        "margin_pp": margin, **({"max_seeds": max_seeds} if sequential else {}),
        "executor": executor.settings()})
    try:
        if sequential:
            failed, pending = run_sequential(out, specs, base, executor, max_seeds, margin)
        else:
            failed = executor.run(plans)
            pending = _pending(plans, failed)
    except ComparisonInterrupted as stopped:
        if str(stopped):  # the executor said how things stand
            raise
        how = (f"run the same command again: {command}" if command else
               "call compare() again with the same arguments")
        raise ComparisonInterrupted(stopped.signal, f"stopped by signal {stopped.signal}; "
                                    f"the runs in flight saved their checkpoints; to continue, "
                                    f"{how}") from None
    if costs and not costs_measured(out, specs):
        executor.measure_costs(out, specs)
    failures = [dataclasses.asdict(f) for f in failed]
    if pending:
        return UnderWay(failures, pending)
    comparison = build_report([out])
    comparison.failed = failures
    write_report(comparison, out, html=html)
    return comparison


def _pending(plans: Sequence[RunPlan], failed: Sequence[Failure]) -> list[str]:
    """The plans neither finished nor failed: under way elsewhere."""
    given_up = {(f.mechanism, f.seed) for f in failed}
    return [p.label for p in plans if not p.finished and (p.spec, p.seed) not in given_up]
