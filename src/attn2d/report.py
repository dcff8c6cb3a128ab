"""``attn2d report``: the comparison table and plots, rebuilt from finished runs.

Nothing is trained and nothing is measured here: accuracies come from each run's
``predictions.npz`` and ``metrics.jsonl``, cost columns from the ``costs.json`` that
``attn2d compare`` stored after its runs. Runs of several folders merge into one table
(e.g. a comparison finished over two sessions) when their settings agree; runs with
different settings are refused, naming the settings that differ.

The statistics are those of :mod:`attn2d.stats`: per-mechanism accuracy with a 95 %
interval, the paired difference from the baseline with its interval, a Holm-adjusted p,
a verdict and the smallest difference the comparison could have detected.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import stats
from ._io import write_atomic, write_json
from .registry import lookup
from .tables import Table
from .train import RUNTIME_FIELDS

__all__ = [
    "BASELINE",
    "Collected",
    "RunRecord",
    "build_report",
    "collect_runs",
    "comparable",
    "describe_differences",
    "markdown",
    "report",
    "write_report",
]

PathLike = str | os.PathLike[str]
PLOTS = ("accuracy.png", "curves.png", "tradeoff.png")
BASELINE = "none"  # the mechanism name of the runs without attention


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that must agree for two runs to stand in one table."""
    skip = RUNTIME_FIELDS | {"attention", "seed", "resume"}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()
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
    result: dict[str, Any]
    history: list[dict[str, Any]]
    predictions: np.ndarray
    targets: np.ndarray

    @property
    def config(self) -> dict[str, Any]:
        return self.result["config"]


def _read_run(run_dir: Path) -> RunRecord | None:
    result_path = run_dir / "result.json"
    if not result_path.is_file():
        return None
    result = json.loads(result_path.read_text())
    if result.get("status") != "finished":
        return None
    with np.load(run_dir / "predictions.npz") as saved:
        predictions, targets = saved["predictions"], saved["targets"]
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    config = result["config"]
    spec = config.get("attention") or BASELINE
    return RunRecord(run_dir, spec, int(config["seed"]), result, history,
                     predictions.astype(np.int64), targets.astype(np.int64))


@dataclass
class Collected:
    """What the folders hold: finished runs, the mechanism order and the commands their
    comparisons recorded, and their stored cost measurements."""

    records: list[RunRecord]
    order: list[str]
    commands: list[str]
    costs: list[dict[str, Any]]


def collect_runs(dirs: Sequence[PathLike]) -> Collected:
    """Finished runs under each folder (a comparison's ``OUT`` or one run's folder), with
    what the comparisons recorded about them."""
    found = Collected([], [], [], [])
    seen: dict[tuple[str, int], Path] = {}
    for folder in map(Path, dirs):
        if not folder.is_dir():
            raise ValueError(f"attn2d report: expected a folder of runs, got {folder} "
                             "(no such folder)")
        run_dirs = [folder] if (folder / "result.json").is_file() else sorted(
            p for p in (folder / "runs").glob("*") if p.is_dir())
        if (folder / "comparison.json").is_file():
            comparison = json.loads((folder / "comparison.json").read_text())
            found.order += comparison["specs"]
            if comparison.get("command"):
                found.commands.append(comparison["command"])
        if (folder / "costs.json").is_file():
            found.costs.append(json.loads((folder / "costs.json").read_text()))
        for run_dir in run_dirs:
            record = _read_run(run_dir)
            if record is None:
                continue
            key = (record.spec, record.seed)
            if key in seen:
                raise ValueError(f"attn2d report: expected one run per mechanism and seed, got "
                                 f"{record.spec} seed {record.seed} in {seen[key]} and "
                                 f"{run_dir}")
            seen[key] = run_dir
            found.records.append(record)
    if not found.records:
        raise ValueError(f"attn2d report: expected finished runs (result.json) under "
                         f"{', '.join(map(str, dirs))}, got none")
    return found


def _check_mergeable(records: Sequence[RunRecord]) -> None:
    first = records[0]
    for record in records[1:]:
        diff = describe_differences(first.config, record.config)
        if diff:
            raise ValueError(f"attn2d report: expected runs with the same settings to merge, "
                             f"got {first.dir} and {record.dir} differing in {diff}")
        if not np.array_equal(first.targets, record.targets):
            raise ValueError(f"attn2d report: expected runs evaluated on the same test images, "
                             f"got different labels in {first.dir} and {record.dir}")


def _typical_use(spec: str, placement: str | None) -> dict[str, str]:
    if spec == BASELINE:
        return {"family": "-", "placement": "-", "summary": "baseline, no attention"}
    row = lookup(spec)
    return {"family": row.family, "placement": placement or row.placement,
            "summary": row.summary}


def _pp(value: float | None) -> float | None:
    return None if value is None else 100 * value


def build_report(dirs: Sequence[PathLike], command: str | None = None) -> dict[str, Any]:
    """The comparison's rows, statistics, curves and settings (JSON-ready)."""
    found = collect_runs(dirs)
    records, order, cost_files = found.records, found.order, found.costs
    _check_mergeable(records)
    specs = list(dict.fromkeys([BASELINE, *order, *(r.spec for r in records)]))
    by_spec = {s: sorted((r for r in records if r.spec == s), key=lambda r: r.seed)
               for s in specs}
    specs = [s for s in specs if by_spec[s]]
    outcomes = {s: {r.seed: r.predictions == r.targets for r in runs}
                for s, runs in by_spec.items() if runs}
    base_seeds = set(outcomes.get(BASELINE, {}))
    versus = {}
    if base_seeds:
        paired = {s: o for s, o in outcomes.items() if s != BASELINE and base_seeds & set(o)}
        versus = stats.compare_to_baseline(outcomes[BASELINE], paired) if paired else {}
    costs = {spec: row for c in cost_files for spec, row in c["rows"].items()}
    first = records[0]
    settings = comparable(first.config)
    seeds = sorted({r.seed for r in records})
    images = len(first.targets)
    rows = []
    for spec in specs:
        runs = by_spec[spec]
        acc = stats.accuracy_interval(outcomes[spec])
        v = versus.get(spec)
        cost = costs.get(spec, {})
        rows.append({
            "mechanism": spec, **_typical_use(spec, first.config.get("placement")),
            "seeds": len(runs), "params": runs[0].result["params"],
            "macs": runs[0].result["macs"],
            "acc": acc.estimate, "acc_low": acc.low, "acc_high": acc.high,
            "accs": [r.result["test_acc"] for r in runs],
            "delta_pp": _pp(v.delta) if v else (0.0 if spec == BASELINE else None),
            "delta_low_pp": _pp(v.low) if v else None, "delta_high_pp": _pp(v.high) if v else None,
            "p": v.p if v else None, "p_holm": v.p_adjusted if v else None,
            "verdict": v.verdict if v else None,
            "detectable_pp": _pp(v.detectable) if v else None,
            "forward_ms": cost.get("forward_ms"), "train_step_ms": cost.get("train_step_ms"),
            "epoch_s": cost.get("epoch_s"), "train_peak_mib": cost.get("train_peak_mib"),
            "run_time_per_epoch_s": float(np.mean([r.result["time_per_epoch_s"] for r in runs])),
            "run_images_per_s": _mean([r.result.get("images_per_s") for r in runs]),
        })
    curves = {spec: [[h["test_acc"] for h in r.history] for r in by_spec[spec]]
              for spec in specs}
    return {
        "settings": settings, "seeds": seeds, "images": images,
        "command": command or (found.commands[0] if len(found.commands) == 1 else None),
        "method": stats.method_footnote(len(seeds), images),
        "selection": first.result.get("selection", "final epoch"),
        "costs": {k: v for k, v in (cost_files[0] if cost_files else {}).items() if k != "rows"},
        "cost_passes": len(cost_files),
        "rows": rows, "curves": curves,
        "runs": [{"mechanism": r.spec, "seed": r.seed, "dir": str(r.dir),
                  "test_acc": r.result["test_acc"], "test_epoch": r.result["test_epoch"],
                  "time_per_epoch_s": r.result["time_per_epoch_s"],
                  "images_per_s": r.result.get("images_per_s"),
                  "compile_time_s": r.result.get("compile_time_s", 0.0)} for r in records],
    }


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


# ----------------------------------------------------------------------------- the table


def _interval(row: dict[str, Any]) -> str:
    return f"{100 * row['acc']:.2f} [{100 * row['acc_low']:.2f}, {100 * row['acc_high']:.2f}]"


def _delta(row: dict[str, Any]) -> str:
    if row["mechanism"] == BASELINE:
        return "—"
    if row["delta_low_pp"] is None:
        return "no paired baseline run"
    return f"{row['delta_pp']:+.2f} [{row['delta_low_pp']:+.2f}, {row['delta_high_pp']:+.2f}]"


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}"


def _batch_size(report: dict[str, Any]) -> int:
    """The batch of the cost columns: the cost pass's, else the runs'."""
    return report["costs"].get("batch_size") or report["settings"]["batch_size"]


def table(report: dict[str, Any]) -> Table:
    """The comparison table; raw values in CSV/JSON, formatted ones in text/Markdown."""
    batch = _batch_size(report)
    columns = [
        ("mechanism", "mechanism"), ("params", "params (M)"), ("macs", "MACs (M)"),
        ("acc_text", "test acc (%) [95 % CI]"), ("delta_text", "Δ vs baseline (pp) [95 % CI]"),
        ("p_holm", "p (Holm)"), ("verdict", "verdict"), ("detectable_pp", "detectable Δ (pp)"),
        ("train_step_ms", f"train step (ms, batch {batch})"), ("epoch_s", "epoch (s, est.)"),
        ("forward_ms", f"latency (ms, batch {batch})"),
        ("train_peak_mib", "train peak (MiB)"), ("use", "typical use"),
    ]
    rows = [{**r, "acc_text": _interval(r), "delta_text": _delta(r),
             "verdict": r["verdict"] or ("baseline" if r["mechanism"] == BASELINE else "—"),
             "use": r["summary"] if r["mechanism"] == BASELINE
             else f"{r['family']}, {r['placement']}: {r['summary']}"} for r in report["rows"]]
    display = {"mechanism": "`{}`".format, "params": lambda v: f"{v / 1e6:.3f}",
               "macs": lambda v: f"{v / 1e6:.1f}", "p_holm": _p,
               "detectable_pp": "{:.2f}".format, "train_step_ms": "{:.1f}".format,
               "epoch_s": "{:.1f}".format, "forward_ms": "{:.1f}".format,
               "train_peak_mib": "{:.0f}".format}
    return Table(columns, rows, display, align_left=("mechanism", "verdict", "use"),
                 notes=_notes(report))


def _notes(report: dict[str, Any]) -> list[str]:
    costs = report["costs"]
    selection = ("the epoch with the best validation accuracy"
                 if report["selection"].startswith("best") else "the final epoch")
    notes = [f"Test accuracy of {selection}. Statistics: {report['method']}"]
    if report.get("failed"):  # set by compare: runs that failed are missing from the table
        runs = "; ".join(f"{f['mechanism']} seed {f['seed']} ({f['error']})"
                         for f in report["failed"])
        notes.append(f"Failed, so not in the table: {runs}.")
    if costs:
        where = f"{costs['device']}, torch {costs['torch']}, {costs['threads']} threads"
        notes.append(
            f"Cost columns: every model timed in one process after the runs, interleaved "
            f"({costs['execution']}, {where}, amp {costs['amp']}, channels-last "
            f"{'on' if costs['channels_last'] else 'off'}): median training step (forward, "
            f"loss, backward, SGD step) and eval-mode forward latency of one batch; epoch = "
            f"steps per epoch × step time; train peak = the allocator's peak of one training "
            f"step above what was allocated before it. MACs per image.")
        if report["cost_passes"] > 1:
            notes.append("The merged folders' costs come from separate passes; compare them "
                         "with care.")
    return notes


def _settings_line(report: dict[str, Any]) -> str:
    s = report["settings"]
    subset = f"{s['subset']:,} (stratified)" if s.get("subset") else "all"
    val = f", validation images held out: {s['val_split']:,}" if s.get("val_split") else ""
    return (f"{s['model']} on {s['dataset']}: {s['epochs']} epochs, batch {s['batch_size']}, "
            f"{s['optimizer']} lr {s['lr']}, precise BN {s.get('precise_bn') or 'off'}, "
            f"training images: {subset}{val}, test images: {report['images']:,}; seeds "
            f"{', '.join(map(str, report['seeds']))}.")


def markdown(report: dict[str, Any], results: Table | None = None) -> str:
    """``results.md``: settings, the table (``results``, else built here), the footnotes."""
    lines = ["# attn2d compare", ""]
    if report["command"]:
        lines += ["```", report["command"], "```", ""]
    results = results or table(report)
    lines += [_settings_line(report), "", results.to_markdown().rstrip("\n"), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- files


def _plot_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**r, "latency_ms": r["forward_ms"]} for r in report["rows"]]


def write_report(report: dict[str, Any], out: PathLike, html: bool = True) -> list[Path]:
    """``results.md/.csv/.json``, the three plots and (``html``) ``results.html``."""
    from .viz.comparison import plot_accuracy, plot_curves, plot_tradeoff

    out = Path(out)
    results = table(report)
    written = [write_atomic(out / "results.md", markdown(report, results)),
               write_atomic(out / "results.csv", results.to_csv()),
               write_json(out / "results.json", report)]
    rows, method = _plot_rows(report), report["method"]
    batch = _batch_size(report)
    plot_accuracy(rows, method=method, path=out / "accuracy.png")
    plot_curves({k: np.array(v) for k, v in report["curves"].items() if _rectangular(v)},
                path=out / "curves.png")
    plot_tradeoff(rows, method=method, latency_label=f"latency (ms per batch of {batch})",
                  path=out / "tradeoff.png")
    written += [out / name for name in PLOTS]
    if html:
        written.append(write_html(report, out, results))
    return written


def _rectangular(curves: list[list[float]]) -> bool:
    return len({len(c) for c in curves}) == 1


def report(dirs: Sequence[PathLike], out: PathLike | None = None, *, html: bool = True,
           command: str | None = None) -> dict[str, Any]:
    """Rebuild (and merge) the table, plots and HTML from finished runs; nothing is measured.

    Args:
        dirs: comparison folders (``attn2d compare --out``) or single run folders.
        out: where to write; default the only folder given.
        html: also write ``results.html``.
        command: the command line to record; default the comparison's own.
    """
    if out is None:
        if len(dirs) != 1:
            raise ValueError("attn2d report: expected --out when merging several folders, got "
                             "none")
        out = dirs[0]
    result = build_report(dirs, command)
    write_report(result, out, html=html)
    return result


# ----------------------------------------------------------------------------- HTML


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f4f4f4} td.l,th.l{text-align:left} code{font-size:12px}
pre{white-space:pre-wrap;word-break:break-all;background:#f7f7f7;padding:.5em}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5em 0}
.note{color:#555;font-size:12px} .better{color:#1a7f37;font-weight:600}
.worse{color:#c62828;font-weight:600} details{margin:.6em 0}
.gallery{display:flex;flex-wrap:wrap;gap:8px} .gallery img{width:380px}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _verdict_class(key: str, row: dict[str, Any]) -> str:
    return row["verdict"] if key == "verdict" and row.get("verdict") in ("better", "worse") \
        else ""


def write_html(report: dict[str, Any], out: PathLike, results: Table | None = None) -> Path:
    """One self-contained ``results.html``: every image embedded, no external asset."""
    out = Path(out)
    t = results or table(report)
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>attn2d compare: {html.escape(str(report['settings']['dataset']))}</title>",
             f"<style>{_STYLE}</style></head><body>", "<h1>attn2d compare</h1>"]
    if report["command"]:
        parts.append(f"<pre><code>{html.escape(report['command'])}</code></pre>")
    parts += [f"<p>{html.escape(_settings_line(report))}</p>", t.to_html(_verdict_class)]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in t.notes]
    parts.append("<h2>Plots</h2>")
    parts += [_img(out / name, name) for name in PLOTS if (out / name).is_file()]
    parts.append("<h2>Runs</h2>")
    parts.append(_settings_table(report["settings"]))
    parts += _run_sections(report, out)
    gallery = _gallery(report)
    if gallery:
        parts += ["<h2>Attention maps</h2>", *gallery]
    parts.append("</body></html>")
    return write_atomic(out / "results.html", "\n".join(parts))


def _settings_table(settings: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td class='l'>{html.escape(k)}</td><td class='l'>"
                   f"{html.escape(json.dumps(v))}</td></tr>" for k, v in sorted(settings.items()))
    return f"<details><summary>Settings shared by every run</summary><table>{rows}</table>" \
           "</details>"


def _run_sections(report: dict[str, Any], out: Path) -> list[str]:
    from .viz.plots import plot_training_curves

    parts = []
    runs = report["runs"]
    with tempfile.TemporaryDirectory() as tmp:
        for spec in (r["mechanism"] for r in report["rows"]):
            mine = sorted((r for r in runs if r["mechanism"] == spec), key=lambda r: r["seed"])
            run_table = Table(
                [("seed", "seed"), ("test_acc", "test acc (%)"), ("test_epoch", "epoch"),
                 ("time_per_epoch_s", "time/epoch (s, this run)"),
                 ("images_per_s", "images/s"), ("compile_time_s", "compile (s)")],
                mine, {"test_acc": lambda v: f"{100 * v:.2f}",
                       "time_per_epoch_s": "{:.1f}".format, "images_per_s": "{:.0f}".format,
                       "compile_time_s": "{:.1f}".format})
            png = Path(tmp) / f"{len(parts)}.png"
            metrics = [Path(r["dir"]) / "metrics.jsonl" for r in mine]
            plot_training_curves(metrics, labels=[f"seed {r['seed']}" for r in mine],
                                 keys=["train_acc", "test_acc"], title=f"{spec}: accuracy",
                                 path=png)
            parts.append(f"<details><summary><code>{html.escape(spec)}</code>: {len(mine)} "
                         f"run(s)</summary>{run_table.to_html()}{_img(png, spec)}</details>")
    return parts


def _gallery(report: dict[str, Any], per_mechanism: int = 2) -> list[str]:
    """A few attention pictures per mechanism, for one test image, from its first run's
    selected checkpoint; a note instead when the checkpoint or the data are not at hand."""
    from .viz.report import gallery_pictures

    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in (r["mechanism"] for r in report["rows"] if r["mechanism"] != BASELINE):
            run = min((r for r in report["runs"] if r["mechanism"] == spec),
                      key=lambda r: r["seed"])
            try:
                pictures = gallery_pictures(Path(run["dir"]) / "best.pt", Path(tmp) / spec,
                                            limit=per_mechanism)
            except (OSError, ValueError) as err:
                parts.append(f'<p class="note">{html.escape(spec)}: no pictures '
                             f"({html.escape(str(err))})</p>")
                continue
            if pictures:
                parts.append(f"<h3><code>{html.escape(spec)}</code></h3><div class='gallery'>"
                             + "".join(_img(p, p.stem) for p in pictures) + "</div>")
    return parts
