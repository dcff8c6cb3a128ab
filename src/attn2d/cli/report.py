"""``attn2d report``: rebuild (or merge) a comparison's table, plots and HTML from its runs."""

from __future__ import annotations

import argparse

HELP = "rebuild or merge comparison tables, plots and HTML from finished runs (no training)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="comparison folders (attn2d compare --out) or run folders")
    parser.add_argument("--out", default=None,
                        help="where to write (default: the folder, when only one is given)")
    parser.add_argument("--no-html", dest="html", action="store_false",
                        help="skip results.html (default: write it)")


def run(args: argparse.Namespace) -> int:
    from ..comparison import markdown, report

    print(markdown(report(args.dirs, args.out, html=args.html)))
    return 0
