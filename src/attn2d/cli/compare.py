"""``attn2d compare``: baseline plus mechanisms, several seeds, one table, plots and HTML."""

from __future__ import annotations

import argparse
import shlex
import sys

from .train import add_training_arguments, config_from_args

HELP = "train a baseline and each mechanism over several seeds; table with CIs, tests, plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..comparison.plan import (
        DEFAULT_MARGIN_PP,
        DEFAULT_MAX_SEEDS,
        DEFAULT_MECHANISMS,
        DEFAULT_SEEDS,
        CompareConfig,
    )

    parser.add_argument("--attention", default=DEFAULT_MECHANISMS,
                        help="comma-separated spec strings; commas inside parentheses belong "
                             "to the spec, e.g. 'none,se,cbam(reduction=8)' "
                             "(default: %(default)s)")
    parser.add_argument("--seeds", default=str(DEFAULT_SEEDS), metavar="N|A-B|auto",
                        help="N: seeds 0..N-1; A-B: seeds A..B, to add seeds to an earlier "
                             "comparison and merge them with attn2d report; auto: add seeds "
                             "in batches only to mechanisms whose verdict is open, until "
                             "better, worse or within ±--margin (default: %(default)s)")
    parser.add_argument("--max-seeds", type=int, default=DEFAULT_MAX_SEEDS, metavar="N",
                        help="--seeds auto: at most N seeds per mechanism (default: "
                             "%(default)s)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN_PP, metavar="PP",
                        help="equivalence margin in percentage points: a mechanism whose "
                             "interval lies within ±PP of the baseline is 'within ±PP pp' "
                             "(default: %(default)s)")
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
                     costs=args.costs, html=args.html, max_seeds=args.max_seeds,
                     margin=args.margin)
    print(f"\n{args.out.rstrip('/')}/results.md:\n\n{markdown(report)}")
    return 1 if report.failed else 0
