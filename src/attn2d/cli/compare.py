"""``attn2d compare``: baseline plus mechanisms, several seeds, one table, plots and HTML."""

from __future__ import annotations

import argparse
import shlex
import sys

from .train import add_training_arguments, config_from_args

HELP = "train a baseline and each mechanism over several seeds; table with CIs, tests, plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..comparison.plan import DEFAULT_MECHANISMS, DEFAULT_SEEDS, CompareConfig

    parser.add_argument("--attention", default=DEFAULT_MECHANISMS,
                        help="comma-separated spec strings; commas inside parentheses belong "
                             "to the spec, e.g. 'none,se,cbam(reduction=8)' "
                             "(default: %(default)s)")
    parser.add_argument("--seeds", default=str(DEFAULT_SEEDS), metavar="N|A-B",
                        help="N: seeds 0..N-1; A-B: seeds A..B, to add seeds to an earlier "
                             "comparison and merge them with attn2d report (default: "
                             "%(default)s)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once, each its own process; on a CPU each gets "
                             "cores/jobs threads unless --threads is given (default: 1)")
    add_training_arguments(parser, CompareConfig(), attention=False)
    parser.add_argument("--out", default="runs/compare",
                        help="output folder; rerunning skips finished runs (default: %(default)s)")
    parser.add_argument("--in-process", action="store_true",
                        help="train in this process, one run after another (starts faster; a "
                             "crash stops the comparison) (default: off)")
    parser.add_argument("--no-costs", dest="costs", action="store_false",
                        help="skip the cost pass after the runs (default: measure)")
    parser.add_argument("--no-html", dest="html", action="store_false",
                        help="skip results.html (default: write it)")


def run(args: argparse.Namespace) -> int:
    from ..comparison import CompareConfig, compare, markdown, split_specs

    base = config_from_args(args, CompareConfig(), attention=None, seed=0, out=args.out)
    command = "attn2d " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] \
        else None
    report = compare(split_specs(args.attention), base, seeds=args.seeds, out=args.out,
                     jobs=args.jobs, in_process=args.in_process, command=command,
                     costs=args.costs, html=args.html)
    print(f"\n{args.out.rstrip('/')}/results.md:\n\n{markdown(report)}")
    return 1 if report.failed else 0
