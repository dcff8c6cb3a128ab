"""``attn2d compare``: baseline plus mechanisms, several seeds, one table and plots."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..compare import compare, split_specs
from .train import add_training_arguments, config_from_args

HELP = "train a baseline and each mechanism over several seeds; write a table and plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attention", default="none,se,eca,cbam,nonlocal,danet,criss-cross",
                        help="comma-separated spec strings; commas inside parentheses belong "
                             "to the spec, e.g. 'none,se,cbam(reduction=8)' "
                             "(default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    add_training_arguments(parser)
    parser.add_argument("--out", default="runs/compare",
                        help="output folder; rerunning skips finished runs (default: %(default)s)")
    parser.add_argument("--in-process", action="store_true",
                        help="train in this process instead of one process per run (starts "
                             "faster; peak memory is then this process's high-water mark)")


def run(args: argparse.Namespace) -> int:
    base = config_from_args(args, attention=None, seed=0, out=args.out)
    command = "attn2d " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] \
        else None
    report = compare(split_specs(args.attention), base.check(), seeds=args.seeds, out=args.out,
                     in_process=args.in_process, command=command)
    print(f"\n{(args.out.rstrip('/'))}/results.md:\n")
    with open(f"{args.out}/results.md") as f:
        print(f.read())
    return 1 if report["failed"] else 0
