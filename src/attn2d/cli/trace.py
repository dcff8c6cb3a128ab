"""``attn2d trace``: every module's input and output shapes for one forward pass."""

from __future__ import annotations

import argparse

import torch

from .._base.errors import Attn2dError
from .._base.shape import parse_shape
from ..models import create_model, is_model_name, list_models
from ..modules.registry import create
from ..tools.gradcheck import check_gradients
from ..tools.trace import trace_shapes

HELP = "trace the input/output shapes of every module of a model or mechanism (hooks)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help=f"a model ({', '.join(list_models())}) or a mechanism "
                                     "spec such as 'cbam(reduction=8)'")
    parser.add_argument("--attention", default=None, help="mechanism spec for a model")
    parser.add_argument("--placement", default=None, choices=("block", "stage"))
    parser.add_argument("--input", default="3x32x32", help="CxHxW or BxCxHxW (default: 3x32x32)")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--no-maps", dest="maps", action="store_false",
                        help="leave the attention-map taps out of the trace (default: shown)")
    parser.add_argument("--capture", action="store_true",
                        help="switch map capture on, so fast paths build their explicit maps "
                             "(default: off, the path training runs)")
    parser.add_argument("--gradcheck", action="store_true",
                        help="also gradcheck a mechanism in float64 on this input")


def run(args: argparse.Namespace) -> int:
    shape = parse_shape(args.input, name="--input")
    shape = shape if len(shape) == 4 else (1, *shape)
    is_model = is_model_name(args.name)
    if is_model:
        module = create_model(args.name, attention=args.attention, placement=args.placement,
                              num_classes=args.num_classes, in_channels=shape[1])
    elif args.attention is not None:
        raise Attn2dError(f"expected --attention only with a model ({', '.join(list_models())}),"
                          f" got it with mechanism {args.name!r}")
    else:
        module = create(args.name, shape[1])
    module.eval()
    torch.manual_seed(0)
    trace = trace_shapes(module, torch.randn(shape), include_maps=args.maps,
                         capture=args.capture)
    print(trace.render())
    if args.gradcheck:
        if is_model:
            raise Attn2dError("expected --gradcheck with a mechanism (a model is too large to "
                              f"gradcheck), got model {args.name!r}")
        report = check_gradients(args.name, shape)
        print()
        print(report.render())
        return 0 if report.passed else 1
    return 0
