"""``attn2d params``: parameters and MACs of a backbone with each mechanism."""

from __future__ import annotations

import argparse

from .._base.shape import parse_shape
from ..tools.profiler import cost_table

HELP = "parameters and MACs of a backbone without attention and with each mechanism"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mechanisms", nargs="*",
                        help="spec strings (default: every registry mechanism)")
    parser.add_argument("--model", default="resnet18", help="backbone name (default: resnet18)")
    parser.add_argument("--input", default="3x32x32", help="image shape CxHxW (default: 3x32x32)")
    parser.add_argument("--num-classes", type=int, default=10, help="classifier outputs")
    parser.add_argument("--placement", choices=("block", "stage"), default=None,
                        help="one placement for all (default: each mechanism's own)")
    parser.add_argument("--format", choices=("text", "markdown", "csv", "json"), default=None,
                        help="output format (default: text, or from the --output "
                        "suffix: .md, .csv, .json)")
    parser.add_argument("--output", default=None, help="write to this file (atomically)")


def run(args: argparse.Namespace) -> int:
    shape = parse_shape(args.input, name="--input")
    table = cost_table(args.model, shape, args.mechanisms or None,
                       num_classes=args.num_classes, placement=args.placement)
    if args.output:
        table.save(args.output, args.format)
    else:
        print(table.render(args.format or "text"), end="")
    return 0
