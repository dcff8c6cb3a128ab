"""``attn2d list``: the registry as a table."""

from __future__ import annotations

import argparse

from ..registry import available, create
from ..tables import Table

HELP = "list the mechanisms: name, family, parameters at C=64, default placement, paper"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channels", type=int, default=64,
                        help="channel count for the parameter column (default: 64)")


def mechanism_table(channels: int = 64) -> list[dict[str, object]]:
    rows = []
    for m in available():
        params = sum(p.numel() for p in create(m.name, channels).parameters())
        rows.append({"name": m.name, "family": m.family, "params": params,
                     "placement": m.placement, "paper": m.paper, "summary": m.summary})
    return rows


def run(args: argparse.Namespace) -> int:
    columns = [("name", "name"), ("family", "family"), ("params", f"params@C={args.channels}"),
               ("placement", "placement"), ("paper", "paper")]
    table = Table(columns, mechanism_table(args.channels), {"params": "{:,}".format},
                  align_left=("name", "family", "placement", "paper"))
    print(table.render("text"), end="")
    return 0
