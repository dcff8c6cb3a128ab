"""``attn2d compare``: a baseline and a list of mechanisms, several seeds each, one table.

Each run is an ordinary ``attn2d train`` run in ``OUT/runs/<mechanism>-seed<k>/``. A run
with a ``result.json`` is finished and skipped when the command is repeated; one with only a
``last.pt`` resumes where it stopped. By default every run is a separate process, so its
peak memory (resident set high-water mark on CPU) is its own and a crash in one mechanism
does not stop the others.

Outputs: ``results.md``, ``results.csv``, ``results.json``, and ``accuracy.png`` (mean ±
std per mechanism), ``curves.png`` (test accuracy per epoch, mean over seeds),
``tradeoff.png`` (accuracy against parameters and against latency).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._io import save_figure, write_atomic, write_json
from .registry import lookup
from .train import RUNTIME_FIELDS, TrainConfig, train

__all__ = ["compare", "run_name", "split_specs", "summarize"]

BASELINE = "none"


def split_specs(text: str) -> list[str]:
    """Split ``"none,se,cbam(reduction=8, spatial_kernel=3)"`` on top-level commas only."""
    if not isinstance(text, str):
        raise TypeError(f"attn2d compare: expected a comma-separated string, got "
                        f"{type(text).__name__}")
    specs, depth, current = [], 0, []
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"attn2d compare: expected balanced parentheses, got {text!r}")
        if char == "," and depth == 0:
            specs.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if depth:
        raise ValueError(f"attn2d compare: expected balanced parentheses, got {text!r}")
    specs.append("".join(current).strip())
    if any(not s for s in specs):
        raise ValueError(f"attn2d compare: expected non-empty names between commas, got {text!r}")
    return specs


def run_name(spec: str, seed: int) -> str:
    """Folder name of one run: the spec made filesystem-safe, then the seed."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", spec.strip().lower()).strip("_")
    return f"{slug}-seed{seed}"


def _typical_use(spec: str, placement: str | None) -> dict[str, str]:
    if spec == BASELINE:
        return {"family": "-", "placement": "-", "summary": "baseline, no attention"}
    row = lookup(spec)
    return {"family": row.family, "placement": placement or row.placement,
            "summary": row.summary}


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RUNTIME_FIELDS}


def _run_one(config: TrainConfig, in_process: bool) -> None:
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    if in_process:
        result = train(config)
        if result["status"] != "finished":
            raise KeyboardInterrupt
        return
    config_path = run_dir / "config.json"
    write_json(config_path, dataclasses.asdict(config))
    with open(run_dir / "train.log", "a") as log:
        code = subprocess.call([sys.executable, "-m", "attn2d", "train", "--config",
                                str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    if code in (128 + 2, 128 + 15, -2, -15):  # SIGINT / SIGTERM: the run saved and stopped
        raise KeyboardInterrupt
    if code != 0:
        tail = (run_dir / "train.log").read_text().splitlines()[-5:]
        raise RuntimeError(f"exit code {code}: " + " | ".join(tail))


def compare(
    mechanisms: Sequence[str],
    base: TrainConfig,
    seeds: int | Sequence[int] = 3,
    out: str | Path = "runs/compare",
    in_process: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Train every mechanism with every seed (skipping finished runs) and write the report.

    Args:
        mechanisms: spec strings; ``"none"`` (the baseline) is added first if absent.
        base: settings shared by every run; ``attention``, ``seed`` and ``out`` are set here.
        seeds: a count N (seeds 0..N-1) or the seeds themselves.
        out: output folder.
        in_process: train in this process (faster start, but peak memory is then this
            process's high-water mark, and a crash stops the comparison).
        command: the command line, recorded in ``results.md``.
    """
    specs = list(dict.fromkeys(s.strip() for s in mechanisms))
    if BASELINE not in specs:
        specs.insert(0, BASELINE)
    for spec in specs:
        if spec != BASELINE:
            lookup(spec)  # an unknown name fails now, not after an hour of training
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError(f"attn2d compare: expected at least one seed, got {seeds!r}")
    names = [run_name(spec, s) for spec in specs for s in seed_list]
    if len(set(names)) != len(names):
        raise ValueError(f"attn2d compare: expected specs with distinct folder names, got {specs}")
    out = Path(out)
    failed: list[dict[str, str]] = []
    total = len(specs) * len(seed_list)
    # Seed-major: a comparison stopped early still has every mechanism at the first seeds.
    for i, (seed, spec) in enumerate(((s, m) for s in seed_list for m in specs), 1):
        run_dir = out / "runs" / run_name(spec, seed)
        config = dataclasses.replace(
            base, attention=None if spec == BASELINE else spec, seed=seed, out=str(run_dir),
            resume=(run_dir / "last.pt").exists(), progress=base.progress and in_process)
        label = f"[{i}/{total}] {spec} seed {seed}"
        if (run_dir / "result.json").exists():
            saved = json.loads((run_dir / "result.json").read_text())["config"]
            wanted = _comparable(dataclasses.asdict(config))
            if any(saved.get(k) != v for k, v in wanted.items()):
                raise ValueError(f"attn2d compare: expected {run_dir} to hold a run with the "
                                 "same settings, got a different one; use another --out")
            print(f"{label}: finished before, skipped", flush=True)
            continue
        print(f"{label}: {'resuming' if config.resume else 'training'}...", flush=True)
        started = time.perf_counter()
        try:
            _run_one(config, in_process)
        except KeyboardInterrupt:
            print(f"attn2d compare: interrupted during {spec} seed {seed}; rerun the same "
                  "command to continue", file=sys.stderr)
            raise
        except Exception as err:  # one broken mechanism must not cost the others' hours
            print(f"{label}: FAILED ({err})", file=sys.stderr, flush=True)
            failed.append({"mechanism": spec, "seed": str(seed), "error": str(err)})
            continue
        result = json.loads((run_dir / "result.json").read_text())
        print(f"{label}: test acc {result['last_test_acc']:.2%} in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    report = summarize(out, specs, seed_list, base, command=command)
    report["failed"] = failed
    write_json(out / "results.json", report)
    return report


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(out: str | Path, specs: Sequence[str], seeds: Sequence[int], base: TrainConfig,
              command: str | None = None) -> dict[str, Any]:
    """Read the finished runs under ``out`` and write results.md/.csv/.json and the plots."""
    out = Path(out)
    rows, curves = [], {}
    for spec in specs:
        results, histories = [], []
        for seed in seeds:
            run_dir = out / "runs" / run_name(spec, seed)
            if (run_dir / "result.json").exists():
                results.append(json.loads((run_dir / "result.json").read_text()))
                histories.append([json.loads(line)["test_acc"] for line in
                                  (run_dir / "metrics.jsonl").read_text().splitlines()])
        if not results:
            continue
        accs = [r["last_test_acc"] for r in results]
        acc_mean, acc_std = _mean_std(accs)
        curves[spec] = [statistics.mean(epoch) for epoch in zip(*histories, strict=True)]
        rows.append({
            "mechanism": spec,
            **_typical_use(spec, base.placement),
            "seeds": len(results),
            "params_m": results[0]["params"] / 1e6,
            "macs_m": results[0]["macs"] / 1e6,
            "acc_mean": acc_mean, "acc_std": acc_std, "accs": accs,
            "best_acc_mean": statistics.mean(r["best_test_acc"] for r in results),
            "time_per_epoch_s": statistics.mean(r["time_per_epoch_s"] for r in results),
            "images_per_s": statistics.mean(r["images_per_s"] for r in results),
            "latency_ms": statistics.mean(r["latency_ms_per_batch"] for r in results),
            "latency_batch_size": results[0]["latency_batch_size"],
            "peak_memory_mb": max(r["peak_memory_mb"] for r in results),
            "peak_memory_kind": results[0]["peak_memory_kind"],
        })
    baseline = next((r for r in rows if r["mechanism"] == BASELINE), None)
    for row in rows:
        row["delta_pp"] = (100 * (row["acc_mean"] - baseline["acc_mean"])
                           if baseline is not None else None)
    settings = {k: v for k, v in dataclasses.asdict(base).items()
                if k not in RUNTIME_FIELDS | {"attention", "seed", "resume"}}
    report = {"settings": settings, "seeds": list(seeds), "command": command, "rows": rows,
              "curves": curves}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.md", _markdown(report))
    write_atomic(out / "results.csv", _csv(rows))
    write_json(out / "results.json", report)
    if rows:
        _plots(out, rows, curves)
    return report


_COLUMNS = ("mechanism", "params (M)", "MACs (M)", "test acc (%)", "Δ vs baseline (pp)",
            "time/epoch (s)", "latency (ms/batch)", "peak mem (MB)", "typical use")


def _cells(row: dict[str, Any]) -> list[str]:
    delta = "—" if row["delta_pp"] is None or row["mechanism"] == BASELINE else \
        f"{row['delta_pp']:+.2f}"
    use = row["summary"] if row["mechanism"] == BASELINE else \
        f"{row['family']}, {row['placement']}: {row['summary']}"
    return [f"`{row['mechanism']}`", f"{row['params_m']:.3f}", f"{row['macs_m']:.1f}",
            f"{100 * row['acc_mean']:.2f} ± {100 * row['acc_std']:.2f}", delta,
            f"{row['time_per_epoch_s']:.1f}", f"{row['latency_ms']:.1f}",
            f"{row['peak_memory_mb']:.0f}", use]


def _markdown(report: dict[str, Any]) -> str:
    s, rows = report["settings"], report["rows"]
    lines = ["# attn2d compare", ""]
    if report["command"]:
        lines += ["```", report["command"], "```", ""]
    subset = f"{s['subset']} (stratified)" if s["subset"] else "all"
    test = f"{s['test_subset']} (stratified)" if s["test_subset"] else "all"
    lines += [
        f"{s['model']} on {s['dataset']}: {s['epochs']} epochs, batch {s['batch_size']}, "
        f"{s['optimizer']} lr {s['lr'] or 'default'}, training images: {subset}, test "
        f"images: {test}; seeds {', '.join(map(str, report['seeds']))}.",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "|".join(" --- " for _ in _COLUMNS) + "|",
        *("| " + " | ".join(_cells(r)) + " |" for r in rows),
        "",
    ]
    if rows:
        r = rows[0]
        lines += [
            "Test accuracy: final epoch (not the best epoch, which would select on the test "
            "set), mean ± sample standard deviation over seeds; Δ in percentage points. "
            f"MACs per image. Latency: median forward time of a batch of "
            f"{r['latency_batch_size']} in eval mode. Time per epoch: training only. "
            f"Peak memory: {r['peak_memory_kind']}, the maximum over seeds.",
            "",
        ]
    return "\n".join(lines)


def _csv(rows: list[dict[str, Any]]) -> str:
    fields = ["mechanism", "family", "placement", "seeds", "params_m", "macs_m", "acc_mean",
              "acc_std", "delta_pp", "best_acc_mean", "time_per_epoch_s", "images_per_s",
              "latency_ms", "peak_memory_mb", "summary"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _plots(out: Path, rows: list[dict[str, Any]], curves: dict[str, list[float]]) -> None:
    # Figure without pyplot: no global backend is chosen, nothing depends on a display.
    from matplotlib.figure import Figure

    names = [r["mechanism"] for r in rows]
    means = [100 * r["acc_mean"] for r in rows]
    stds = [100 * r["acc_std"] for r in rows]

    fig = Figure(figsize=(1.1 * len(rows) + 2, 4), layout="constrained")
    ax = fig.subplots()
    ax.bar(names, means, yerr=stds, capsize=4, color="tab:blue")
    low = min(m - s for m, s in zip(means, stds, strict=True))
    ax.set_ylim(max(0.0, low - 2), min(100.0, max(means) + max(stds) + 1))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("final test accuracy, mean ± std over seeds")
    ax.tick_params(axis="x", labelrotation=30)
    _save_figure(fig, out / "accuracy.png")

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), [100 * a for a in curve], marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("test accuracy per epoch (mean over seeds)")
    ax.legend(fontsize="small")
    _save_figure(fig, out / "curves.png")

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    for ax, key, label in zip(fig.subplots(1, 2), ("params_m", "latency_ms"),
                              ("parameters (M)", f"latency (ms per batch of "
                                                 f"{rows[0]['latency_batch_size']})"),
                              strict=True):
        for r, m, s in zip(rows, means, stds, strict=True):
            ax.errorbar(r[key], m, yerr=s, fmt="o", capsize=3)
            ax.annotate(r["mechanism"], (r[key], m), textcoords="offset points", xytext=(4, 4),
                        fontsize="small")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
    fig.suptitle("accuracy against cost")
    _save_figure(fig, out / "tradeoff.png")


def _save_figure(fig: Any, path: Path) -> None:
    save_figure(fig, path, dpi=120)
