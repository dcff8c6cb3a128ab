"""The ``attn2d`` command: one sub-command per file in this package.

Each ``attn2d/cli/<verb>.py`` (``list_.py`` for ``list``: no builtin shadowed) defines
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``, a thin wrapper over
a library function that tests call directly.

Errors: the library raises :class:`~attn2d.Attn2dError` for bad input; it is printed as one
line, ``attn2d <command>: error: <message>``. Any other exception is a bug and keeps its
traceback. Messages go through :mod:`logging` (``--quiet`` / ``--verbose``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import signal
import sys
from collections.abc import Sequence

from .._base import log
from .._base.errors import Attn2dError
from .._base.version import __version__


def _commands() -> dict[str, object]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found[info.name.rstrip("_")] = importlib.import_module(f"{__name__}.{info.name}")
    return found


def default_text(value: object) -> str:
    """A default as help shows it: on/off, none, space-separated items."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return " ".join(map(str, value))
    return str(value).replace("%", "%%")


class _DefaultsShown(argparse.HelpFormatter):
    """Every optional option's help ends with its default, unless the text already states
    it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or action.required or not (
                action.option_strings or action.nargs in ("?", "*")):
            return text  # a required option has no default to show
        return f"{text} (default: {default_text(action.default)})"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that sub-command's options are built (the others
    list their one-line help), so a command imports only what it needs."""
    parser = argparse.ArgumentParser(
        prog="attn2d",
        description="2D attention mechanisms for CNNs: list, profile, train, compare, "
        "benchmark and visualise them.",
    )
    parser.add_argument("--version", action="version", version=f"attn2d {__version__}")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_const", dest="log_level",
                          const=logging.WARNING, default=logging.INFO,
                          help="only warnings and errors")
    loudness.add_argument("-v", "--verbose", action="store_const", dest="log_level",
                          const=logging.DEBUG, help="also debugging messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _commands().items():
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP,
                             formatter_class=_DefaultsShown)
        if command is None or command == name:
            module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def error_line(command: str, err: Attn2dError) -> str:
    """``attn2d <command>: error: <message>``: the library never names the command."""
    return f"attn2d {command}: error: {err}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = [*(sys.argv[1:] if argv is None else argv)]
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    log.configure(args.log_level, prefix=f"attn2d {args.command}")
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe shows up here, not at exit
        return code
    except KeyboardInterrupt as stopped:  # a comparison's says how to continue
        print(f"attn2d {args.command}: {stopped or 'interrupted'}", file=sys.stderr)
        return 128 + getattr(stopped, "signal", signal.SIGINT)
    except BrokenPipeError:  # e.g. `attn2d trace ... | head`: the reader left; not an error
        # Python flushes stdout again at exit; point it at /dev/null so that flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Attn2dError as err:
        print(error_line(args.command, err), file=sys.stderr)
        return 2
