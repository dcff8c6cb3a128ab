"""``attn2d profile``: the per-module cost table of a model or a mechanism."""

from __future__ import annotations

import argparse

from .._base.shape import parse_shape
from ..tools.profiler import profile

HELP = "per-module table: shapes, parameters, MACs, elementwise ops, memory, time share"

FORMATS = ("text", "markdown", "csv", "json")
# A model takes an image; a mechanism a feature map, at the C = 64 of the README's tables
# (and of `attn2d list`'s parameter counts).
MODEL_INPUT, MECHANISM_INPUT = "3x32x32", "64x32x32"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a model name (resnet18, resnet34, resnet50, small_cnn) "
                        "or a mechanism spec such as 'cbam(reduction=8)'")
    parser.add_argument("--input", default=None,
                        help=f"input shape CxHxW (batch of one) or BxCxHxW (default: "
                             f"{MODEL_INPUT} for a model, {MECHANISM_INPUT} for a mechanism)")
    parser.add_argument("--attention", default=None,
                        help="with a model name: the mechanism spec to place in it")
    parser.add_argument("--placement", choices=("block", "stage"), default=None,
                        help="with --attention: where it goes (default: its registry default)")
    parser.add_argument("--stages", default=None,
                        help="with --attention: comma-separated stage numbers, e.g. 1,2,3")
    parser.add_argument("--num-classes", type=int, default=10, help="classifier outputs")
    parser.add_argument("--depth", type=int, default=None,
                        help="fold modules deeper than N into their ancestor (default: all)")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed forward passes for the time column; 0 skips timing")
    parser.add_argument("--train", action="store_true",
                        help="profile in training mode (BatchNorm computes statistics)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="output format (default: text, or from the --output "
                        "suffix: .md, .csv, .json)")
    parser.add_argument("--output", default=None, help="write to this file (atomically)")


def model_options(args: argparse.Namespace) -> dict[str, object]:
    """The model keywords the flags ask for; none for a mechanism spec."""
    options: dict[str, object] = {}
    if args.attention is not None:
        options["attention"] = args.attention
    if args.placement is not None:
        options["placement"] = args.placement
    if args.stages is not None:
        options["stages"] = tuple(int(s) for s in args.stages.split(",") if s.strip())
    return options


def run(args: argparse.Namespace) -> int:
    from ..models import is_model_name

    options = model_options(args)
    is_model = is_model_name(args.target)
    if is_model:
        options["num_classes"] = args.num_classes
    default = MODEL_INPUT if is_model else MECHANISM_INPUT
    shape = parse_shape(args.input or default, name="--input")
    report = profile(args.target, shape, depth=args.depth, timing_runs=args.runs,
                     train=args.train, **options)
    if args.output:
        report.save(args.output, args.format)
    else:
        print(report.render(args.format or "text"), end="")
    return 0
