"""``attn2d bench``: latency and peak memory against naive references and timm."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from .._base.errors import Attn2dError
from .._base.io import write_atomic
from .._base.shape import parse_shape
from ..modules.registry import available
from ..tools import bench
from ..tools.timing import CLOCKS

HELP = "time mechanisms (forward, forward+backward) and their peak memory vs naive code and timm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mechanisms", nargs="*",
                        help="registry names or spec strings (default: every mechanism)")
    parser.add_argument("--sizes", nargs="+", metavar="BxCxHxW",
                        help="input sizes (default: 8x64x32x32 8x256x16x16 2x64x64x64)")
    parser.add_argument("--dtype", nargs="+", choices=bench.DTYPES, default=None,
                        help="fp32 and/or bf16 (autocast) (default: fp32)")
    parser.add_argument("--layout", nargs="+", choices=bench.LAYOUTS, default=None,
                        help="contiguous and/or channels_last (default: contiguous)")
    parser.add_argument("--against", nargs="*", choices=("naive", "timm"),
                        default=["naive", "timm"], help="what to compare with (default: both)")
    parser.add_argument("--quick", action="store_true",
                        help="one small size, fp32, contiguous, short timing (about a minute)")
    parser.add_argument("--time-budget", type=float, default=None, metavar="S",
                        help="seconds of timing per case and pass (default: 0.5; quick: 0.1)")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall time, or the process's CPU time (steadier on a shared "
                             "machine with --threads 1) (default: wall)")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory measurement")
    parser.add_argument("--scaling", action="store_true",
                        help="also measure the fwd+bwd peak memory of "
                             f"{', '.join(bench.SCALING_MECHANISMS)} on square maps "
                             "(B=1, C=64); up to 256x256 this takes minutes on a CPU")
    parser.add_argument("--scaling-sides", nargs="+", type=int, default=list(bench.SCALING_SIDES),
                        metavar="S", help="map sides for --scaling (default: %(default)s)")
    parser.add_argument("--plot", metavar="PNG", help="with --scaling: write the log-log plot here")
    parser.add_argument("--memory-budget-gb", type=float, default=3.0,
                        help="skip naive sizes whose N×N maps would need more (default: 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: PyTorch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    parser.add_argument("--output", metavar="PATH", help="write the report here, not to stdout")


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise Attn2dError(f"attn2d bench: expected --threads >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.memory_budget_gb <= 0:
        raise Attn2dError(f"attn2d bench: expected --memory-budget-gb > 0, "
                          f"got {args.memory_budget_gb}")
    if any(side < 1 for side in args.scaling_sides):
        raise Attn2dError(f"attn2d bench: expected --scaling-sides >= 1, got {args.scaling_sides}")
    mechanisms = args.mechanisms or [m.name for m in available()]
    sizes = ([parse_shape(s, (4,), name="--sizes") for s in args.sizes]
             if args.sizes else bench.QUICK_SIZES if args.quick else bench.DEFAULT_SIZES)
    budget = args.time_budget if args.time_budget is not None else (0.1 if args.quick else 0.5)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    memory_budget = int(args.memory_budget_gb * bench.GIB)
    cases = bench.run_benchmarks(
        mechanisms, sizes, args.dtype or ["fp32"], args.layout or ["contiguous"],
        args.against, budget, not args.no_memory, memory_budget, args.device, progress,
        args.clock)
    scaling = []
    if args.scaling:
        scaling = bench.memory_scaling(sides=args.scaling_sides, memory_budget=memory_budget,
                                       device=args.device, against=args.against,
                                       progress=progress)
        if args.plot:
            bench.plot_scaling(scaling, args.plot)
    targets = bench.check_targets(cases, scaling)
    if args.format == "json":
        report = json.dumps({"environment": bench.environment(),
                             "cases": [c.to_dict() for c in cases],
                             "scaling": [vars(r) for r in scaling], "targets": targets},
                            indent=1) + "\n"
    else:
        parts = [bench.cases_table(cases).render(args.format)]
        if scaling:
            parts.append(bench.scaling_table(scaling).render(args.format))
        if targets:
            parts.append(bench.targets_table(targets).render(args.format))
        report = "\n".join(parts)
    if args.output:
        write_atomic(args.output, report)
    else:
        sys.stdout.write(report)
    return 0
