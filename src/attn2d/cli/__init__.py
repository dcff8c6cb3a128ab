"""The ``attn2d`` command: one sub-command per file in this package.

Each ``attn2d/cli/<verb>.py`` defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``, a thin wrapper over a library function that tests call directly.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence


def _commands() -> dict[str, object]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found[info.name] = importlib.import_module(f"{__name__}.{info.name}")
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attn2d",
        description="2D attention mechanisms for CNNs: list, profile, train, compare, "
        "benchmark and visualise them.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"attn2d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _commands().items():
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"attn2d {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"attn2d {args.command}: interrupted", file=sys.stderr)
        return 130
