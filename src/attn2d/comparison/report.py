"""``attn2d report``: the comparison table and plots, rebuilt from finished runs.

Nothing is trained and nothing is measured here: accuracies come from each run's
``predictions.npz`` and ``metrics.jsonl``, cost columns from the ``costs.json`` that
``attn2d compare`` stored after its runs. Runs of several folders merge into one table
(e.g. a comparison finished over two sessions) when their settings agree; runs with
different settings are refused, naming the settings that differ.

The statistics are those of :mod:`attn2d.stats`: per-mechanism accuracy with a 95 %
interval, the paired difference from the baseline with its interval, an adjusted p, a
verdict and the smallest difference the comparison could have detected. One row is a
:class:`ComparisonRow`; a statistic is added there and in :func:`table`'s column list.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import stats
from .._base.errors import Attn2dError
from .._base.io import read_json, write_atomic, write_json
from .._base.log import plural
from .._base.records import ItemAccess
from .._base.tables import Table
from ..modules.registry import lookup
from .plan import DEFAULT_MARGIN_PP
from .records import BASELINE, Collected, RunRecord, collect_runs, comparable

__all__ = [
    "PLOTS",
    "Comparison",
    "ComparisonRow",
    "build_report",
    "markdown",
    "report",
    "table",
    "write_report",
]

PathLike = str | os.PathLike[str]
PLOTS = ("accuracy.png", "curves.png", "tradeoff.png")


@dataclass
class ComparisonRow(ItemAccess):
    """One mechanism's line of the table: what it is, how accurate, how it differs from the
    baseline, and what it costs. Accuracies are fractions; differences percentage points.

    Attributes:
        mechanism: the spec (``"none"`` for the baseline).
        family, placement, summary: from the registry (``"-"`` for the baseline).
        seeds: finished runs (one per seed) behind the accuracy.
        params, macs: of the model (MACs per image).
        acc, acc_low, acc_high: mean test accuracy over seeds with its interval.
        accs: each seed's test accuracy.
        delta_pp, delta_low_pp, delta_high_pp: Δ vs the baseline, paired by seed, with its
            interval (None without a paired baseline run).
        delta_seeds: the seeds Δ pairs with the baseline (may be fewer than ``seeds``).
        p, p_adjusted: p-value of "no difference", before and after the multiplicity
            adjustment.
        verdict: better / worse / no detectable difference (None for the baseline).
        detectable_pp: the smallest difference the comparison detects at 80 % power,
            adjusted for the number of mechanisms.
        test_set_p: exact McNemar p on the discordant test images: test-set noise only,
            never a verdict.
        forward_ms, train_step_ms, epoch_s, train_peak_mib: the cost pass's figures.
        forward_spread, train_step_spread: how far the cost pass's rounds disagreed
            (interquartile range over median).
        run_time_per_epoch_s, run_images_per_s: as the runs themselves measured them.
    """

    mechanism: str
    family: str
    placement: str
    summary: str
    seeds: int
    params: int
    macs: int
    acc: float
    acc_low: float
    acc_high: float
    accs: list[float]
    run_time_per_epoch_s: float
    delta_pp: float | None = None
    delta_low_pp: float | None = None
    delta_high_pp: float | None = None
    delta_seeds: int | None = None
    p: float | None = None
    p_adjusted: float | None = None
    verdict: str | None = None
    detectable_pp: float | None = None
    test_set_p: float | None = None
    forward_ms: float | None = None
    train_step_ms: float | None = None
    epoch_s: float | None = None
    train_peak_mib: float | None = None
    forward_spread: float | None = None
    train_step_spread: float | None = None
    run_images_per_s: float | None = None

    @property
    def is_baseline(self) -> bool:
        return self.mechanism == BASELINE

    @property
    def use(self) -> str:
        """The "typical use" column."""
        if self.is_baseline:
            return self.summary
        return f"{self.family}, {self.placement}: {self.summary}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Comparison(ItemAccess):
    """A comparison's table with everything needed to draw and explain it (``results.json``).

    Attributes:
        settings: the settings every run shares.
        seeds: the seeds present.
        images: test images per run.
        command: the command that made it, when known.
        method: how the statistics were computed, in words.
        selection: which epoch each run reports.
        costs: the cost pass's conditions (device, threads, batch, …), empty without one.
        cost_passes: how many cost passes the merged folders hold.
        rows: one per mechanism, the baseline first.
        curves: per mechanism, each seed's test accuracy per epoch.
        runs: one line per run (folder, seed, accuracy, timing).
        failed: runs that did not finish, and why.
    """

    settings: dict[str, Any]
    seeds: list[int]
    images: int
    command: str | None
    method: str
    selection: str
    costs: dict[str, Any]
    cost_passes: int
    rows: list[ComparisonRow]
    curves: dict[str, list[list[float]]]
    runs: list[dict[str, Any]]
    failed: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _typical_use(spec: str, placement: str | None) -> dict[str, str]:
    if spec == BASELINE:
        return {"family": "-", "placement": "-", "summary": "baseline, no attention"}
    row = lookup(spec)
    return {"family": row.family, "placement": placement or row.placement,
            "summary": row.summary}


def _pp(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _number(value: float | None, scale: float = 1.0) -> float | None:
    """``value`` × ``scale``, None where the statistics give none (NaN: untested)."""
    return None if value is None or math.isnan(value) else scale * value


def _row(spec: str, runs: list[RunRecord], outcomes: dict[int, np.ndarray],
         versus: stats.Versus | None, look: stats.Look | None, sequential: bool,
         cost: dict[str, Any], placement: str | None, margin: float) -> ComparisonRow:
    acc = stats.accuracy_interval(outcomes)
    v = versus
    row = ComparisonRow(
        mechanism=spec, **_typical_use(spec, placement), seeds=len(runs),
        params=runs[0].result.params, macs=runs[0].result.macs,
        acc=acc.estimate, acc_low=acc.low, acc_high=acc.high,
        accs=[r.result.test_acc for r in runs],
        run_time_per_epoch_s=float(np.mean([r.result.time_per_epoch_s for r in runs])),
        delta_pp=_number(v.delta, 100) if v else (0.0 if spec == BASELINE else None),
        delta_low_pp=_number(v.low, 100) if v else None,
        delta_high_pp=_number(v.high, 100) if v else None,
        delta_seeds=v.seeds if v else None,
        p=_number(v.p) if v else None, p_adjusted=_number(v.p_adjusted) if v else None,
        verdict=stats.verdict_text(v.verdict, margin) if v else None,
        detectable_pp=_number(v.detectable, 100) if v else None,
        test_set_p=_number(v.test_set_p) if v else None,
        forward_ms=cost.get("forward_ms"), train_step_ms=cost.get("train_step_ms"),
        epoch_s=cost.get("epoch_s"), train_peak_mib=cost.get("train_peak_mib"),
        forward_spread=cost.get("forward_spread"),
        train_step_spread=cost.get("train_step_spread"),
        run_images_per_s=_mean([r.result.images_per_s for r in runs]))
    if sequential and spec != BASELINE:  # decided by the looks' repeated intervals only
        row = dataclasses.replace(row, p=None, p_adjusted=None, detectable_pp=None,
                                  verdict=stats.OPEN)
        if look is not None:
            row = dataclasses.replace(
                row, delta_pp=100 * look.delta, delta_low_pp=100 * look.low,
                delta_high_pp=100 * look.high, delta_seeds=look.seeds,
                verdict=stats.verdict_text(look.verdict, margin))
    return row


def _sequential_method(state: dict[str, Any], images: int) -> str:
    design = state["design"]
    looks = ", ".join(map(str, design["looks"]))
    m = len(design["mechanisms"])
    return (f"{images:,} test images; accuracy: mean over the seeds each mechanism ran, with "
            f"a 95 % t-interval over seeds × test images; sequential design (--seeds auto): "
            f"looks at {looks} seeds, a mechanism stops at its first decisive look; Δ vs "
            f"baseline paired by seed and image, with its repeated confidence interval at the "
            f"look that decided it (Lan–DeMets O'Brien–Fleming boundaries, α = "
            f"{design['alpha']:g} over {m} mechanism{'s' if m > 1 else ''}, valid however "
            f"often the comparison looked): better/worse when it excludes 0, equivalent when "
            f"the 1 − 2α/m interval lies within ±{100 * design['margin']:g} pp; no p-values.")


def _settings_of(found: Collected) -> tuple[float, tuple[Path, dict[str, Any]] | None]:
    """The equivalence margin (accuracy fraction) and the one sequential state, if any."""
    from .sequential import STATE_FILE

    margins = {c.get("margin_pp", DEFAULT_MARGIN_PP) for _, c in found.comparisons}
    if len(margins) > 1:
        raise Attn2dError(f"expected comparisons with one --margin to merge, got "
                          f"{sorted(margins)} pp")
    states = [(folder, read_json(folder / STATE_FILE, "a sequential comparison's state"))
              for folder, _ in found.comparisons if (folder / STATE_FILE).is_file()]
    if states and len(found.comparisons) > 1:
        raise Attn2dError(f"expected a sequential comparison (--seeds auto) on its own, got it "
                          f"merged with other folders: {[str(f) for f, _ in found.comparisons]}")
    return (margins.pop() if margins else DEFAULT_MARGIN_PP) / 100, \
        (states[0] if states else None)


def build_report(dirs: Sequence[PathLike], command: str | None = None) -> Comparison:
    """The comparison's rows, statistics, curves and settings."""
    found = collect_runs(dirs)
    records, order, cost_files = found.records, found.order, found.costs
    margin, sequential = _settings_of(found)
    specs = list(dict.fromkeys([BASELINE, *order, *(r.spec for r in records)]))
    by_spec = {s: sorted((r for r in records if r.spec == s), key=lambda r: r.seed)
               for s in specs}
    specs = [s for s in specs if by_spec[s]]
    outcomes = {s: {r.seed: r.predictions == r.targets for r in by_spec[s]} for s in specs}
    base_seeds = set(outcomes.get(BASELINE, {}))
    versus = {}
    if base_seeds:
        paired = {s: o for s, o in outcomes.items() if s != BASELINE and base_seeds & set(o)}
        versus = stats.compare_to_baseline(outcomes[BASELINE], paired, margin=margin) \
            if paired else {}
    looks: dict[str, stats.Look] = {}
    if sequential is not None:
        from .sequential import sequential_result

        result = sequential_result(*sequential)
        looks = {name: found_looks[-1] for name, found_looks in result.looks.items()
                 if found_looks}
    costs = {spec: row for c in cost_files for spec, row in c["rows"].items()}
    first = records[0]
    seeds = sorted({r.seed for r in records})
    images = len(first.targets)
    rows = [_row(spec, by_spec[spec], outcomes[spec], versus.get(spec), looks.get(spec),
                 sequential is not None, costs.get(spec, {}), first.config.get("placement"),
                 margin) for spec in specs]
    method = stats.method_footnote(len(seeds), images, margin=margin)
    if sequential is not None:
        method = _sequential_method(sequential[1], images)
    return Comparison(
        settings=comparable(first.config), seeds=seeds, images=images,
        command=command or (found.commands[0] if len(found.commands) == 1 else None),
        method=method,
        selection=first.result.selection or "final epoch",
        costs={k: v for k, v in (cost_files[0] if cost_files else {}).items() if k != "rows"},
        cost_passes=len(cost_files), rows=rows,
        curves={spec: [[h["test_acc"] for h in r.history] for r in by_spec[spec]]
                for spec in specs},
        runs=[{"mechanism": r.spec, "seed": r.seed, "dir": str(r.dir),
               "test_acc": r.result.test_acc, "test_epoch": r.result.test_epoch,
               "time_per_epoch_s": r.result.time_per_epoch_s,
               "images_per_s": r.result.images_per_s,
               "compile_time_s": r.result.compile_time_s or 0.0} for r in records])


# ----------------------------------------------------------------------------- the table


def _interval(row: ComparisonRow) -> str:
    return f"{100 * row.acc:.2f} [{100 * row.acc_low:.2f}, {100 * row.acc_high:.2f}]"


def _delta(row: ComparisonRow) -> str:
    if row.is_baseline:
        return "—"
    if row.delta_low_pp is None:
        return "no paired baseline run"
    return f"{row.delta_pp:+.2f} [{row.delta_low_pp:+.2f}, {row.delta_high_pp:+.2f}]"


def _seeds(row: ComparisonRow) -> str:
    """The runs behind the accuracy, and behind Δ when fewer seeds pair with the baseline."""
    if row.delta_seeds is None or row.delta_seeds == row.seeds:
        return str(row.seeds)
    return f"{row.seeds} (Δ: {row.delta_seeds})"


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}"


def _batch_size(comparison: Comparison) -> int:
    """The batch of the cost columns: the cost pass's, else the runs'."""
    return comparison.costs.get("batch_size") or comparison.settings["batch_size"]


def table(comparison: Comparison) -> Table:
    """The comparison table; raw values in CSV/JSON, formatted ones in text/Markdown."""
    batch = _batch_size(comparison)
    columns = [
        ("mechanism", "mechanism"), ("params", "params (M)"), ("macs", "MACs (M)"),
        ("seeds_text", "seeds"),
        ("acc_text", "test acc (%) [95 % CI]"), ("delta_text", "Δ vs baseline (pp) [95 % CI]"),
        ("p_adjusted", "p (Holm)"), ("verdict", "verdict"),
        ("detectable_pp", "detectable Δ (pp, adjusted)"),
        ("train_step_ms", f"train step (ms, batch {batch})"), ("epoch_s", "epoch (s, est.)"),
        ("forward_ms", f"latency (ms, batch {batch})"),
        ("train_peak_mib", "train peak (MiB)"), ("use", "typical use"),
    ]
    rows = [{**r.to_dict(), "acc_text": _interval(r), "delta_text": _delta(r),
             "seeds_text": _seeds(r),
             "verdict": r.verdict or ("baseline" if r.is_baseline else "—"), "use": r.use}
            for r in comparison.rows]
    display = {"mechanism": "`{}`".format, "params": lambda v: f"{v / 1e6:.3f}",
               "macs": lambda v: f"{v / 1e6:.1f}", "p_adjusted": _p,
               "detectable_pp": "{:.2f}".format, "train_step_ms": "{:.1f}".format,
               "epoch_s": "{:.1f}".format, "forward_ms": "{:.1f}".format,
               "train_peak_mib": "{:.0f}".format}
    return Table(columns, rows, display, align_left=("mechanism", "seeds_text", "verdict", "use"),
                 notes=_notes(comparison))


def _notes(comparison: Comparison) -> list[str]:
    costs = comparison.costs
    selection = ("the epoch with the best validation accuracy"
                 if comparison.selection.startswith("best") else "the final epoch")
    notes = [f"Test accuracy of {selection}. Statistics: {comparison.method}"]
    if costs:
        where = f"{costs['device']}, torch {costs['torch']}, {costs['threads']} threads"
        notes.append(
            f"Cost columns: every model timed in one process after the runs, interleaved "
            f"({costs['execution']}, {where}, amp {costs['amp']}, channels-last "
            f"{'on' if costs['channels_last'] else 'off'}): median training step (forward, "
            f"loss, backward, SGD step) and eval-mode forward latency of one batch; epoch = "
            f"steps per epoch × step time; train peak = the allocator's peak of one training "
            f"step above what was allocated before it. MACs per image.")
        spreads = [v for r in comparison.rows for v in (r.forward_spread, r.train_step_spread)
                   if v is not None]
        if spreads:
            notes.append(
                f"Each cost figure is the median of its rounds; rounds that spread more than "
                f"{100 * costs.get('max_spread', 0.25):.0f} % (interquartile range over median) "
                f"were measured again, up to {costs.get('passes', 3)} passes; the largest "
                f"spread left is {100 * max(spreads):.0f} %.")
        load = costs.get("load_before")
        if load is not None and load > 1:
            notes.append(f"The machine was busy when the costs were measured (load {load:.1f} "
                         "per core): compare the cost columns with care.")
        if comparison.cost_passes > 1:
            notes.append("The merged folders' costs come from separate passes; compare them "
                         "with care.")
    if comparison.failed:
        runs = ", ".join(f"{f['mechanism']} seed {f['seed']}" for f in comparison.failed)
        notes.append(f"Runs that failed and are not in the table: {runs}.")
    return notes


def settings_line(comparison: Comparison) -> str:
    """One sentence of the settings every run shares (Markdown and HTML reports)."""
    s = comparison.settings
    drawn = ", drawn per seed" if s.get("resample_train") else ""
    subset = f"{s['subset']:,} (stratified{drawn})" if s.get("subset") else "all"
    val = f", validation images held out: {s['val_split']:,}" if s.get("val_split") else ""
    return (f"{s['model']} on {s['dataset']}: {plural(s['epochs'], 'epoch')}, "
            f"batch {s['batch_size']}, "
            f"{s['optimizer']} lr {s['lr']}, precise BN {s.get('precise_bn') or 'off'}, "
            f"training images: {subset}{val}, test images: {comparison.images:,}; seeds "
            f"{', '.join(map(str, comparison.seeds))}.")


def markdown(comparison: Comparison, results: Table | None = None) -> str:
    """``results.md``: settings, the table (``results``, else built here), the footnotes."""
    lines = ["# attn2d compare", ""]
    if comparison.command:
        lines += ["```", comparison.command, "```", ""]
    results = results or table(comparison)
    lines += [settings_line(comparison), "", results.to_markdown().rstrip("\n"), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- files


def write_report(comparison: Comparison, out: PathLike, html: bool = True) -> list[Path]:
    """``results.md/.csv/.json``, the three plots and (``html``) ``results.html``."""
    from ..viz.comparison import plot_accuracy, plot_curves, plot_tradeoff
    from .html import write_html

    out = Path(out)
    results = table(comparison)
    written = [write_atomic(out / "results.md", markdown(comparison, results)),
               write_atomic(out / "results.csv", results.to_csv()),
               write_json(out / "results.json", comparison.to_dict())]
    rows = [{**r.to_dict(), "latency_ms": r.forward_ms} for r in comparison.rows]
    method, batch = comparison.method, _batch_size(comparison)
    plot_accuracy(rows, method=method, path=out / "accuracy.png")
    plot_curves({k: np.array(v) for k, v in comparison.curves.items() if _rectangular(v)},
                path=out / "curves.png")
    plot_tradeoff(rows, method=method, latency_label=f"latency (ms per batch of {batch})",
                  path=out / "tradeoff.png")
    written += [out / name for name in PLOTS]
    if html:
        written.append(write_html(comparison, out, results))
    return written


def _rectangular(curves: list[list[float]]) -> bool:
    return len({len(c) for c in curves}) == 1


def report(dirs: Sequence[PathLike], out: PathLike | None = None, *, html: bool = True,
           command: str | None = None) -> Comparison:
    """Rebuild (and merge) the table, plots and HTML from finished runs; nothing is measured.

    Args:
        dirs: comparison folders (``attn2d compare --out``) or single run folders.
        out: where to write; default the only folder given.
        html: also write ``results.html``.
        command: the command line to record; default the comparison's own.
    """
    if out is None:
        if len(dirs) != 1:
            raise Attn2dError("expected --out when merging several folders, got none")
        out = dirs[0]
    result = build_report(dirs, command)
    write_report(result, out, html=html)
    return result
