"""Run every benchmark and write the tables of benchmarks/README.md.

    python benchmarks/run_all.py            # full grid + memory scaling (~30 min, 1 thread)
    python benchmarks/run_all.py --quick    # smoke run of the same pipeline (~2 min)

Writes benchmarks/results/{latency.json, latency.md, scaling.json, scaling.md, scaling.png,
targets.md, environment.json} and replaces the part of benchmarks/README.md between the
``<!-- results:begin -->`` and ``<!-- results:end -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from attn2d import available, bench
from attn2d._io import write_atomic

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
# glibc returns freed blocks above these sizes to the OS and faults fresh pages in on the
# next allocation; which implementation pays for that depends on allocation order, not on
# its code (ECA measured 1.5× timm that way and 1.02× without). Keeping freed memory, as
# a long training loop effectively does, makes the latency ratios reproducible.
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30),
                 "MALLOC_TOP_PAD_": str(2**26)}


def _geomean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def summary(cases: Sequence[bench.Case]) -> str:
    """Per mechanism: geometric means of the ratios over every size, dtype and layout."""
    header = ("mechanism", "cases", "fwd vs naive", "fwd+bwd vs naive", "fwd vs timm",
              "fwd+bwd vs timm", "worst fwd+bwd vs timm", "peak (fwd+bwd) vs naive")
    rows = []
    for name in dict.fromkeys(c.mechanism for c in cases):
        mine = [c for c in cases if c.mechanism == name]
        timm = [c.ratio("timm", "train_ms") for c in mine if c.ratio("timm", "train_ms")]

        def cell(other: str, metric: str, group: list[bench.Case] = mine) -> str:
            value = _geomean([c.ratio(other, metric) for c in group])
            return "–" if value is None else f"{value:.2f}×"

        rows.append((name, str(len(mine)), cell("naive", "forward_ms"),
                     cell("naive", "train_ms"), cell("timm", "forward_ms"),
                     cell("timm", "train_ms"), f"{max(timm):.2f}×" if timm else "–",
                     cell("naive", "train_peak")))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


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
        "(contiguous, channels-last)\n", summary(cases),
        "### float32, contiguous\n", bench.format_cases(fp32, "markdown"),
        "### Memory scaling (B=1, C=64, float32, forward+backward)\n",
        bench.format_scaling(scaling, "markdown"),
        "![memory scaling](results/scaling.png)\n",
        "### Targets\n", bench.format_targets(targets, "markdown"),
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
    naive = bench.load_naive(HERE / "naive.py")
    names = [m.name for m in available()]

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    sizes = bench.QUICK_SIZES if args.quick else bench.DEFAULT_SIZES
    cases = bench.run_benchmarks(names, sizes, bench.DTYPES, bench.LAYOUTS,
                                 budget_s=0.05 if args.quick else 0.2,
                                 memory_budget=int(args.memory_budget_gb * bench.GIB),
                                 naive=naive, progress=progress, clock="cpu")
    scaling: list[bench.ScalingRow] = []
    if not args.skip_scaling:
        sides = (16, 32, 64) if args.quick else bench.SCALING_SIDES
        scaling = bench.memory_scaling(sides=sides, naive=naive, progress=progress,
                                       memory_budget=int(args.memory_budget_gb * bench.GIB))
        bench.plot_scaling(scaling, RESULTS / "scaling.png")
    env = bench.environment()
    command = "python benchmarks/run_all.py" + (" --quick" if args.quick else "")
    write_atomic(RESULTS / "environment.json", json.dumps(env, indent=1) + "\n")
    write_atomic(RESULTS / "latency.json", bench.format_cases(cases, "json"))
    write_atomic(RESULTS / "latency.md", bench.format_cases(cases, "markdown"))
    write_atomic(RESULTS / "scaling.json", bench.format_scaling(scaling, "json"))
    write_atomic(RESULTS / "scaling.md", bench.format_scaling(scaling, "markdown"))
    targets = bench.check_targets(cases, scaling)
    write_atomic(RESULTS / "targets.md", bench.format_targets(targets, "markdown"))
    readme = HERE / "README.md"
    text = readme.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        section = readme_section(cases, scaling, env, command)
        write_atomic(readme, f"{head}{BEGIN}\n{section}\n{END}{tail}")
    print(bench.format_targets(targets))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
