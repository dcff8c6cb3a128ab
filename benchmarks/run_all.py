"""Run every benchmark and write the tables of benchmarks/README.md.

    python benchmarks/run_all.py            # full grid + memory scaling (~30 min, 1 thread)
    python benchmarks/run_all.py --quick    # smoke run of the same pipeline (~2 min)

Writes benchmarks/results/{latency.json, latency.md, scaling.json, scaling.md, scaling.png,
targets.md, environment.json} and replaces the part of benchmarks/README.md between the
``<!-- results:begin -->`` and ``<!-- results:end -->`` markers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from attn2d import available
from attn2d._base.io import write_atomic, write_json
from attn2d._base.tables import Table
from attn2d.tools import bench

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
# glibc returns freed blocks above these sizes to the OS and faults fresh pages in on the
# next allocation; which implementation pays for that depends on allocation order, not on
# its code (ECA measured 1.5× timm that way and 1.02× without). Keeping freed memory, as
# a long training loop effectively does, makes the latency ratios reproducible.
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30),
                 "MALLOC_TOP_PAD_": str(2**26)}


def summary(cases: Sequence[bench.Case]) -> Table:
    """Per mechanism: geometric means of the ratios over every size, dtype and layout."""
    rows = []
    for name in dict.fromkeys(c.mechanism for c in cases):
        mine = [c for c in cases if c.mechanism == name]
        timm = [c.ratio("timm", "train_ms") for c in mine if c.ratio("timm", "train_ms")]
        row: dict[str, object] = {"mechanism": name, "cases": len(mine),
                                  "worst_vs_timm": max(timm) if timm else None}
        for other, metric in (("naive", "forward_ms"), ("naive", "train_ms"),
                              ("timm", "forward_ms"), ("timm", "train_ms"),
                              ("naive", "train_peak")):
            row[f"{metric}_vs_{other}"] = bench.geomean([c.ratio(other, metric) for c in mine])
        rows.append(row)
    columns = [("mechanism", "mechanism"), ("cases", "cases"),
               ("forward_ms_vs_naive", "fwd vs naive"), ("train_ms_vs_naive", "fwd+bwd vs naive"),
               ("forward_ms_vs_timm", "fwd vs timm"), ("train_ms_vs_timm", "fwd+bwd vs timm"),
               ("worst_vs_timm", "worst fwd+bwd vs timm"),
               ("train_peak_vs_naive", "peak (fwd+bwd) vs naive")]
    return Table(columns, rows, {k: "{:.2f}×".format for k, _ in columns[2:]},
                 align_left=("mechanism",))


def readme_section(cases: Sequence[bench.Case], scaling: Sequence[bench.ScalingRow],
                   env: dict[str, object], command: str) -> str:
    fp32 = [c for c in cases if c.dtype == "fp32" and c.layout == "contiguous"]
    targets = bench.check_targets(cases, scaling)
    parts = [
        f"Measured with `{command}` on {env['cpu_count']} CPU cores ({env['processor']}, "
        f"{env['machine']}), torch {env['torch']}, {env['threads']} thread, CPU-time clock, "
        "glibc told to keep freed memory (see Method). "
        "Ratios are attn2d ÷ other: below 1 means attn2d is faster or uses less memory.\n",
        "### Summary over every size, dtype (fp32, bf16 autocast) and layout "
        "(contiguous, channels-last)\n", summary(cases).render("markdown"),
        "### float32, contiguous\n", bench.cases_table(fp32).render("markdown"),
        "### Memory scaling (B=1, C=64, float32, forward+backward)\n",
        bench.scaling_table(scaling).render("markdown"),
        "![memory scaling](results/scaling.png)\n",
        "### Targets\n", bench.targets_table(targets).render("markdown"),
        "The full grid (bf16, channels-last) is in [results/latency.md](results/latency.md).\n",
    ]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small size, short timings")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--memory-budget-gb", type=float, default=3.0)
    args = parser.parse_args(argv)
    if sys.platform.startswith("linux") and any(k not in os.environ for k in STEADY_MALLOC):
        # The allocator reads these at process start only.
        os.execve(sys.executable, [sys.executable, __file__, *(argv or sys.argv[1:])],
                  {**os.environ, **STEADY_MALLOC})
    torch.set_num_threads(1)  # the machine is shared; one thread and CPU time stay comparable
    names = [m.name for m in available()]

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    sizes = bench.QUICK_SIZES if args.quick else bench.DEFAULT_SIZES
    cases = bench.run_benchmarks(names, sizes, bench.DTYPES, bench.LAYOUTS,
                                 budget_s=0.05 if args.quick else 0.2,
                                 memory_budget=int(args.memory_budget_gb * bench.GIB),
                                 progress=progress, clock="cpu")
    scaling: list[bench.ScalingRow] = []
    if not args.skip_scaling:
        sides = (16, 32, 64) if args.quick else bench.SCALING_SIDES
        scaling = bench.memory_scaling(sides=sides, progress=progress,
                                       memory_budget=int(args.memory_budget_gb * bench.GIB))
        bench.plot_scaling(scaling, RESULTS / "scaling.png")
    env = bench.environment()
    command = "python benchmarks/run_all.py" + (" --quick" if args.quick else "")
    write_json(RESULTS / "environment.json", env, indent=1)
    write_json(RESULTS / "latency.json", [c.to_dict() for c in cases], indent=1)
    bench.cases_table(cases).save(RESULTS / "latency.md")
    write_json(RESULTS / "scaling.json", [vars(r) for r in scaling], indent=1)
    bench.scaling_table(scaling).save(RESULTS / "scaling.md")
    targets = bench.check_targets(cases, scaling)
    bench.targets_table(targets).save(RESULTS / "targets.md")
    readme = HERE / "README.md"
    text = readme.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        section = readme_section(cases, scaling, env, command)
        write_atomic(readme, f"{head}{BEGIN}\n{section}\n{END}{tail}")
    print(bench.targets_table(targets).render("text"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
