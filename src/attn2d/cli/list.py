"""``attn2d list``: the registry as a table."""

from __future__ import annotations

import argparse

from ..registry import available, create

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
    rows = mechanism_table(args.channels)
    header = ("name", "family", f"params@C={args.channels}", "placement", "paper")
    cells = [(r["name"], r["family"], f"{r['params']:,}", r["placement"], r["paper"])
             for r in rows]
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header))]
    for line in [header, *cells]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
    return 0
