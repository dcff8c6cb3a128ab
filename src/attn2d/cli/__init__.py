"""The ``attn2d`` command: one sub-command per file in this package.

Each ``attn2d/cli/<verb>.py`` defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``, a thin wrapper over a library function that tests call directly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys
from collections.abc import Sequence
from pathlib import Path


def _commands() -> dict[str, object]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found[info.name] = importlib.import_module(f"{__name__}.{info.name}")
    return found


def default_text(value: object) -> str:
    """A default as help shows it: on/off, none, space-separated items."""
    # (the names list, tuple are shadowed here by the sub-command modules cli.list, ...)
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return " ".join(map(str, value))
    return str(value).replace("%", "%%")


class _DefaultsShown(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not (
                action.option_strings or action.nargs in ("?", "*")):
            return text
        return f"{text} (default: {default_text(action.default)})"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that sub-command's options are built (the others
    list their one-line help), so a command imports only what it needs."""
    parser = argparse.ArgumentParser(
        prog="attn2d",
        description="2D attention mechanisms for CNNs: list, profile, train, compare, "
        "benchmark and visualise them.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"attn2d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _commands().items():
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP,
                             formatter_class=_DefaultsShown)
        if command is None or command == name:
            module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


_PACKAGE = Path(__file__).resolve().parents[1]
# attn2d's validation errors read "<owner>: expected …, got …" (see modules/_common.py).
_VALIDATION = re.compile(r"^[\w .:()/-]{1,80}: (expected|unknown|malformed) ")


def is_validation_error(err: BaseException) -> bool:
    """True for errors attn2d raises on bad input, worded "<owner>: expected …", raised by
    attn2d's own code. Anything else is a bug somewhere and keeps its traceback."""
    if not isinstance(err, (ValueError, TypeError, OSError, ImportError)):
        return False
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    raised_here = tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(
        _PACKAGE)
    return raised_here and bool(_VALIDATION.match(str(err)))


def error_line(command: str, err: BaseException) -> str:
    """``attn2d <command>: error: <message>``, the owner kept unless it repeats the prefix."""
    message = str(err)
    for prefix in (f"attn2d {command}: ", "attn2d: "):
        if message.startswith(prefix):
            message = message[len(prefix):]
            break
    return f"attn2d {command}: error: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = [*(sys.argv[1:] if argv is None else argv)]  # (`list` is the cli.list module here)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe shows up here, not at exit
        return code
    except KeyboardInterrupt:
        print(f"attn2d {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `attn2d trace ... | head`: the reader left; not an error
        # Python flushes stdout again at exit; point it at /dev/null so that flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        if not is_validation_error(err):
            raise
        print(error_line(args.command, err), file=sys.stderr)
        return 2
