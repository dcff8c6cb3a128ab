"""Logging: the library logs through ``logging.getLogger(__name__)`` (so ``attn2d.training``,
``attn2d.comparison``, … per layer) and adds no handler; applications configure it. The
command line calls :func:`configure`; a script can too, or use :func:`logging.basicConfig`.
Progress bars stay tqdm: messages go through :func:`tqdm.write` so they do not tear a bar.
"""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

__all__ = ["configure", "plural"]

ROOT = "attn2d"


class _TqdmStderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest and workers swap it), above
    any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # a logging failure must not end the run
            self.handleError(record)


class _Formatter(logging.Formatter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{self.prefix}: {record.levelname.lower()}: {message}"
        if record.levelno < logging.INFO:
            return f"{record.name}: {message}"
        return message


def configure(level: int | str = logging.INFO, prefix: str = ROOT) -> None:
    """Show attn2d's messages on stderr from ``level`` up; warnings as
    ``"<prefix>: warning: …"``. Calling it again replaces the previous set-up."""
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, _TqdmStderr)]:
        logger.removeHandler(handler)
    handler = _TqdmStderr()
    handler.setFormatter(_Formatter(prefix))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def plural(count: int, word: str, many: str | None = None) -> str:
    """``"1 epoch"``, ``"2 epochs"``, ``"1,000 images"``; ``many`` for an irregular plural."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"
