"""The measurements behind docs/performance.md, one section per run (CPU or CUDA).

    python benchmarks/targets.py cross-time    # criss-cross/RCCA: before (explicit) vs now
    python benchmarks/targets.py scaling       # fwd+bwd peak: non-local, PAM, criss-cross, RCCA
    python benchmarks/targets.py timm          # fwd+bwd vs timm, repeated: median and spread
    python benchmarks/targets.py cbam-memory   # CBAM peak vs naive, time vs timm
    python benchmarks/targets.py memory-rss    # peak RSS in fresh processes: CBAM vs naive,
                                               # RCCA vs non-local (benchmarks/memory_rss.py)

Common options: ``--device cpu|cuda``, ``--threads N``, ``--clock wall|cpu``, ``--budget S``
(timing per repeat), ``--repeats N``, ``--quick`` (tiny sizes: checks the pipeline),
``--out DIR`` (writes ``<section>.md`` and ``<section>.json``). Run from the repository
root with ``PYTHONPATH=src``; ``benchmarks/gpu.sh`` runs every section on a GPU.

*Before* for criss-cross is :func:`attn2d.modules._cross.criss_cross_explicit`, the
einsum code the module ran before the linear-memory operator (the capture path now), with
the same weights; both run interleaved in one process. Ratios are attn2d ÷ other.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

import attn2d
from attn2d._base.io import write_json
from attn2d._base.shape import parse_shape
from attn2d._base.tables import Table
from attn2d.modules import CrissCrossAttention
from attn2d.tools import bench
from attn2d.tools.timing import CLOCKS, peak_memory, time_interleaved

SECTIONS = ("cross-time", "scaling", "timm", "cbam-memory", "memory-rss")
TIMM_MECHANISMS = ("eca", "gc", "se", "cbam", "coord", "nonlocal")
TIMM_SIZES = ("32x256x32x32", "16x64x64x64", "8x512x16x16", "8x64x32x32", "8x256x16x16",
              "2x64x64x64")
CBAM_SIZES = ("8x64x32x32", "8x256x16x16", "2x64x64x64")
MIB = 1024**2


class ExplicitCrissCross(CrissCrossAttention):
    """Criss-cross as it ran before the linear-memory operator: autograd through einsums
    that stores the (B, H, W, H + W) energies and weights. That is the path the module
    takes while its map is captured, so capture stays on here."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.attention.weights.capture = True


def repeated(steps: dict[str, Callable[[], None]], ours: str, theirs: str,
             args: argparse.Namespace) -> dict[str, float]:
    """Medians of ``repeats`` interleaved timings: ms of each step, and the ratio
    ours/theirs with its min and max over the repeats (the run-to-run noise)."""
    runs = [time_interleaved(steps, args.budget, device=args.device, clock=args.clock)
            for _ in range(args.repeats)]
    ratios = [r[ours] / r[theirs] for r in runs]
    return {"ours_ms": statistics.median(r[ours] for r in runs) * 1e3,
            "theirs_ms": statistics.median(r[theirs] for r in runs) * 1e3,
            "ratio": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios)}


def _num(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _x(v: float) -> str:
    return f"{v:.3f}×"


def cross_time(args: argparse.Namespace) -> Table:
    """Fwd+bwd time and peak of criss-cross and RCCA (B=1, C=64): before vs now."""
    rows = []
    for side in args.sides or ((16, 24) if args.quick else (64, 128)):
        for recurrence in (1, 2):
            now = CrissCrossAttention(64, recurrence=recurrence)
            torch.nn.init.constant_(now.gamma, 0.5)
            before = ExplicitCrissCross(64, recurrence=recurrence)
            before.load_state_dict(now.state_dict())
            x = torch.randn(1, 64, side, side, device=args.device, requires_grad=True)
            steps = {name: bench.train_step(m.to(args.device).train(), x, "fp32")
                     for name, m in (("before", before), ("now", now))}
            row = {"mechanism": "criss-cross" if recurrence == 1 else "rcca",
                   "map": f"{side}×{side}", **repeated(steps, "now", "before", args)}
            row["before_peak"], row["now_peak"] = (peak_memory(steps[k], args.device) / MIB
                                                   for k in ("before", "now"))
            rows.append(row)
            print(f"cross-time {row['mechanism']} {side}: {row['ratio']:.3f}", file=sys.stderr)
    return Table([("mechanism", "mechanism"), ("map", "map"), ("theirs_ms", "before ms"),
                  ("ours_ms", "now ms"), ("ratio", "now/before (median)"),
                  ("ratio_min", "min"), ("ratio_max", "max"), ("before_peak", "before MiB"),
                  ("now_peak", "now MiB")], rows,
                 {"ratio": _x, "ratio_min": _x, "ratio_max": _x, "theirs_ms": _num,
                  "ours_ms": _num, "before_peak": _num, "now_peak": _num},
                 align_left=("mechanism", "map"))


def scaling(args: argparse.Namespace) -> Table:
    """Fwd+bwd peak of the global mechanisms on square maps (B=1, C=64), vs non-local."""
    sides = args.sides or ((16, 24) if args.quick else (64, 96, 128, 192, 256))
    rows = bench.memory_scaling(bench.SCALING_MECHANISMS, sides, device=args.device,
                                against=(), progress=lambda line: print(line, file=sys.stderr))
    table = []
    for side in sides:
        peaks = {r.mechanism: r for r in rows if r.side == side}
        base = peaks["nonlocal"].train_peak
        for name, r in peaks.items():
            table.append({"map": f"{side}×{side}", "mechanism": name,
                          "train_peak": r.train_peak / MIB, "train_s": r.train_s,
                          "vs_nonlocal": r.train_peak / base})
    return Table([("map", "map"), ("mechanism", "mechanism"), ("train_peak", "fwd+bwd MiB"),
                  ("vs_nonlocal", "vs non-local"), ("train_s", "one step s")], table,
                 {"train_peak": lambda v: f"{v:.1f}", "vs_nonlocal": _x, "train_s": _num},
                 align_left=("map", "mechanism"))


def timm(args: argparse.Namespace) -> Table:
    """Fwd+bwd of attn2d vs timm at the same widths, per size and dtype, then geomeans."""
    mechanisms = args.mechanisms or (("eca", "gc") if args.quick else TIMM_MECHANISMS)
    sizes = _sizes(args, ("2x16x8x8",) if args.quick else TIMM_SIZES)
    rows, summary = [], []
    for name in mechanisms:
        for dtype in args.dtype:
            ratios = []
            for shape in sizes:
                ours = attn2d.create(name, shape[1]).to(args.device).train()
                theirs = bench.timm_counterpart(name, ours)
                if theirs is None:
                    continue
                x = torch.randn(shape, device=args.device, requires_grad=True)
                steps = {"attn2d": bench.train_step(ours, x, dtype),
                         "timm": bench.train_step(theirs.to(args.device).train(), x, dtype)}
                row = {"mechanism": name, "dtype": dtype, "size": "x".join(map(str, shape)),
                       **repeated(steps, "attn2d", "timm", args)}
                rows.append(row)
                ratios.append(row["ratio"])
                print(f"timm {name} {row['size']} {dtype}: {row['ratio']:.3f} "
                      f"({row['ratio_min']:.3f}–{row['ratio_max']:.3f})", file=sys.stderr)
            if ratios:
                summary.append({"mechanism": name, "dtype": dtype, "size": "geomean",
                                "ratio": bench.geomean(ratios), "ratio_max": max(ratios)})
    return Table([("mechanism", "mechanism"), ("dtype", "dtype"), ("size", "input"),
                  ("ours_ms", "attn2d ms"), ("theirs_ms", "timm ms"),
                  ("ratio", "attn2d/timm (median)"), ("ratio_min", "min"), ("ratio_max", "max")],
                 rows + summary,
                 {"ratio": _x, "ratio_min": _x, "ratio_max": _x, "ours_ms": _num,
                  "theirs_ms": _num},
                 align_left=("mechanism", "dtype", "size"),
                 notes=["geomean rows: the geometric mean of the medians; max: the worst size."])


def cbam_memory(args: argparse.Namespace) -> Table:
    """CBAM's fwd+bwd peak against the naive version, and its time against timm."""
    sizes = _sizes(args, ("2x16x8x8",) if args.quick else CBAM_SIZES)
    cases = [bench.run_case("cbam", shape, dtype, against=("naive", "timm"),
                            budget_s=args.budget, device=args.device, clock=args.clock)
             for shape in sizes for dtype in args.dtype]
    return bench.cases_table(cases)


def memory_rss(args: argparse.Namespace) -> Table:
    """Issue 17's two figures: the fwd+bwd peak RSS of CBAM against a naive CBAM and of
    RCCA against non-local, each in fresh processes (``--repeats`` per side), under both
    allocator regimes of benchmarks/memory_rss.py. CPU only: it is the process's RSS."""
    import memory_rss as rss  # benchmarks/ is on the path when this runs as a script

    if args.device != "cpu":
        raise SystemExit(f"targets: expected --device cpu for memory-rss, got {args.device}")
    settings = argparse.Namespace(repeats=args.repeats, threads=args.threads or 1, warmup=1,
                                  regimes=list(rss.REGIMES))
    pairs = [rss.parse_pair(p) for p in (rss.QUICK_PAIRS if args.quick else rss.TARGET_PAIRS)]
    return rss.table(rss.measure_pairs(pairs, settings), settings)


def _sizes(args: argparse.Namespace, default: Sequence[str]) -> list[tuple[int, ...]]:
    return [parse_shape(s, (4,), owner="targets", name="--sizes") for s in args.sizes or default]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=SECTIONS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=CLOCKS, default="wall")
    parser.add_argument("--budget", type=float, default=0.4, help="seconds per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sides", nargs="+", type=int)
    parser.add_argument("--sizes", nargs="+", metavar="BxCxHxW")
    parser.add_argument("--mechanisms", nargs="+")
    parser.add_argument("--dtype", nargs="+", choices=bench.DTYPES, default=["fp32"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--out", type=Path, help="write <section>.md and <section>.json here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:  # tiny sizes whatever was asked: a check of the pipeline
        args.repeats, args.budget, args.sides, args.sizes = 1, min(args.budget, 0.05), None, None
    table = {"cross-time": cross_time, "scaling": scaling, "timm": timm,
             "cbam-memory": cbam_memory, "memory-rss": memory_rss}[args.section](args)
    table.meta = {"section": args.section, "environment": bench.environment(),
                  "command": " ".join(sys.argv)}
    print(table.render("text"))
    if args.out:
        table.save(args.out / f"{args.section}.md")
        write_json(args.out / f"{args.section}.json", {**table.meta, "rows": table.rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
