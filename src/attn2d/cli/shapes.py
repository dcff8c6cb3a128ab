"""``attn2d shapes``: one forward pass of every mechanism on a random batch."""

from __future__ import annotations

import argparse

import torch

from .._base.shape import parse_shape
from ..modules.registry import available, create

HELP = "run every mechanism (or the given ones) on a random batch; print shapes and parameters"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="spec strings (default: every mechanism)")
    parser.add_argument("--input", default="2x64x16x16", help="batch shape BxCxHxW")


def run(args: argparse.Namespace) -> int:
    b, c, h, w = parse_shape(args.input, (4,), name="--input")
    torch.manual_seed(0)
    x = torch.randn(b, c, h, w)
    for spec in args.names or [m.name for m in available()]:
        module = create(spec, c).eval()
        with torch.no_grad():
            y = module(x)
        params = sum(p.numel() for p in module.parameters())
        print(f"{spec:<16} {tuple(x.shape)} -> {tuple(y.shape)}  params={params:,}")
    return 0
