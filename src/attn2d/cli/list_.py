"""``attn2d list``: the registry as a table, or one mechanism's keywords and defaults."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._base.tables import Table
from ..modules.registry import available, create, lookup

HELP = "list the mechanisms (name, family, parameters, placement, paper), or one's keywords"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=None,
                        help="show this mechanism's keywords and their defaults (default: list "
                             "every mechanism)")
    parser.add_argument("--channels", type=int, default=64,
                        help="channel count for the parameter column (default: %(default)s)")
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                        help="output format (default: %(default)s)")


def mechanism_table(channels: int = 64) -> list[dict[str, object]]:
    rows = []
    for m in available():
        params = sum(p.numel() for p in create(m.name, channels).parameters())
        rows.append({"name": m.name, "family": m.family, "params": params,
                     "placement": m.placement, "paper": m.paper, "summary": m.summary})
    return rows


def mechanism_keywords(name: str) -> list[dict[str, Any]]:
    """Every keyword of a mechanism (after ``channels``) with its default and annotation."""
    return [{"keyword": p.name, "default": p.default,
             "type": p.annotation if isinstance(p.annotation, str) else
             getattr(p.annotation, "__name__", str(p.annotation))}
            for p in lookup(name).keywords()]


def _one(name: str, fmt: str) -> str:
    row = lookup(name)
    keywords = mechanism_keywords(name)
    if fmt == "json":
        return json.dumps({"name": row.name, "class": row.cls.__name__, "family": row.family,
                           "placement": row.placement, "paper": row.paper,
                           "summary": row.summary, "keywords": keywords},
                          indent=2, default=repr) + "\n"
    head = [f"{row.name}: {row.summary}", f"class {row.cls.__name__}, {row.family}, default "
            f"placement {row.placement}; {row.paper}", ""]
    table = Table([("keyword", "keyword"), ("default", "default"), ("type", "type")],
                  keywords, {"default": repr}, align_left=("keyword", "default", "type"),
                  notes=["", f"e.g. attn2d.create(\"{row.name}({keywords[0]['keyword']}="
                         f"{keywords[0]['default']!r})\", 64)"] if keywords else [])
    if fmt == "markdown":
        return "\n".join(f"{line}  " for line in head[:2]) + "\n\n" + table.to_markdown()
    return "\n".join(head) + table.to_text()


def run(args: argparse.Namespace) -> int:
    if args.name is not None:
        print(_one(args.name, args.format), end="")
        return 0
    columns = [("name", "name"), ("family", "family"), ("params", f"params@C={args.channels}"),
               ("placement", "placement"), ("paper", "paper")]
    table = Table(columns, mechanism_table(args.channels), {"params": "{:,}".format},
                  align_left=("name", "family", "placement", "paper"))
    if args.format == "json":
        print(json.dumps(table.rows, indent=2))
    else:
        print(table.render(args.format), end="")
    return 0
