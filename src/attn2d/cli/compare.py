"""``attn2d compare``: baseline plus mechanisms, several seeds, one table, plots and HTML."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from typing import TYPE_CHECKING

from .train import add_training_arguments, config_from_args

if TYPE_CHECKING:
    from ..train import TrainConfig

HELP = "train a baseline and each mechanism over several seeds; table with CIs, tests, plots"

# What compare changes from train's defaults: BatchNorm statistics that have settled before
# every evaluation (short runs otherwise compare the statistics' lag, not the mechanisms),
# and compiled steps where they pay (CUDA graphs on a GPU; eager on a CPU).
def defaults() -> TrainConfig:
    from ..train import TrainConfig

    return dataclasses.replace(TrainConfig(), precise_bn=20, compile="auto")


DEFAULT_MECHANISMS = "none,se,eca,cbam,nonlocal,danet,criss-cross"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attention", default=DEFAULT_MECHANISMS,
                        help="comma-separated spec strings; commas inside parentheses belong "
                             "to the spec, e.g. 'none,se,cbam(reduction=8)' "
                             "(default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once, each its own process; on a CPU each gets "
                             "cores/jobs threads unless --threads is given (default: 1)")
    add_training_arguments(parser, defaults(), attention=False)
    parser.add_argument("--out", default="runs/compare",
                        help="output folder; rerunning skips finished runs (default: %(default)s)")
    parser.add_argument("--in-process", action="store_true",
                        help="train in this process, one run after another (starts faster; a "
                             "crash stops the comparison) (default: off)")
    parser.add_argument("--no-costs", dest="costs", action="store_false",
                        help="skip the cost pass after the runs (default: measure)")
    parser.add_argument("--no-html", dest="html", action="store_false",
                        help="skip results.html (default: write it)")
    _add_executor_arguments(parser)


def _add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the runs go: this machine, or a SLURM cluster (docs/cluster.md)."""
    from ..slurm import SlurmOptions

    default = SlurmOptions()
    group = parser.add_argument_group("executor")
    group.add_argument("--executor", choices=("local", "slurm"), default="local",
                       help="local: worker processes here (--jobs); slurm: one job array, "
                            "each run a requeue-safe task (needs attn2d[slurm])")
    group.add_argument("--detach", action="store_true",
                       help="slurm: submit (or attach) and return; rerun the same command to "
                            "attach, attn2d report OUT for a table of what finished")
    group.add_argument("--slurm-partition", help="partition of every task (default: the "
                       "cluster's)")
    group.add_argument("--slurm-time", type=int, metavar="MINUTES",
                       help="time limit of one task; a longer run requeues itself and resumes "
                            f"(default: {default.time_min})")
    group.add_argument("--slurm-gpus-per-run", type=int, metavar="N",
                       help=f"GPUs of one task (default: {default.gpus_per_run})")
    group.add_argument("--slurm-cpus-per-run", type=int, metavar="N",
                       help="CPUs of one task, also its torch threads unless --threads "
                            "(default: the partition's)")
    group.add_argument("--slurm-mem", help="memory of one task, e.g. 16G (default: the "
                       "partition's)")
    group.add_argument("--slurm-array-parallelism", type=int, metavar="N",
                       help="tasks of the array running at once (default: all)")
    group.add_argument("--slurm-opt", action="append", metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. qos=high (repeatable)")
    group.add_argument("--slurm-setup", action="append", metavar="LINE",
                       help="shell line run before each task, e.g. 'module load cuda' "
                            "(repeatable)")


_SLURM_FIELDS = {"slurm_partition": "partition", "slurm_time": "time_min",
                 "slurm_gpus_per_run": "gpus_per_run", "slurm_cpus_per_run": "cpus_per_run",
                 "slurm_mem": "mem", "slurm_array_parallelism": "array_parallelism",
                 "slurm_opt": "sbatch", "slurm_setup": "setup"}


def _executor(args: argparse.Namespace) -> object | None:
    """None for the local pool, else the SLURM executor the options describe."""
    given = {k: v for k, v in vars(args).items() if k in _SLURM_FIELDS and v is not None}
    if args.executor == "local":
        flags = ["--detach"] * args.detach + [f"--{k.replace('_', '-')}" for k in given]
        if flags:
            raise ValueError(f"attn2d compare: expected {', '.join(flags)} with --executor "
                             "slurm, got --executor local")
        return None
    from ..slurm import SlurmExecutor, SlurmOptions, parse_sbatch_options

    if "slurm_opt" in given:
        given["slurm_opt"] = parse_sbatch_options(given["slurm_opt"])
    if "slurm_setup" in given:
        given["slurm_setup"] = tuple(given["slurm_setup"])
    options = SlurmOptions(**{_SLURM_FIELDS[k]: v for k, v in given.items()})
    return SlurmExecutor(options, detach=args.detach)


def run(args: argparse.Namespace) -> int:
    from ..compare import compare, split_specs
    from ..report import markdown

    base = config_from_args(args, defaults(), attention=None, seed=0, out=args.out)
    command = "attn2d " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] \
        else None
    report = compare(split_specs(args.attention), base, seeds=args.seeds, out=args.out,
                     jobs=args.jobs, in_process=args.in_process, command=command,
                     costs=args.costs, html=args.html, executor=_executor(args))
    if report.get("pending"):
        print(f"attn2d compare: {len(report['pending'])} run(s) under way in SLURM; rerun the "
              f"same command to attach, or attn2d report {args.out} for a table of what has "
              "finished")
        return 1 if report["failed"] else 0
    print(f"\n{args.out.rstrip('/')}/results.md:\n\n{markdown(report)}")
    return 1 if report["failed"] else 0
