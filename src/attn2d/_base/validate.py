"""One toolkit of input checks, each failing with :class:`~attn2d._base.errors.Attn2dError`
worded ``"<owner>: expected <name> …, got …"``.

``name`` is what the user typed: a keyword of a module (``reduction``) or an option in its
command-line spelling (``--lr``); ``owner`` is who refused it (``se``, ``attn2d.data``), or
``None`` when the name says enough.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .errors import Attn2dError

__all__ = ["check_choice", "check_flag", "check_int", "check_number", "fail", "flag"]

T = TypeVar("T")


def fail(owner: str | None, message: str) -> Attn2dError:
    """The error to raise: ``"<owner>: <message>"`` (just the message without an owner)."""
    return Attn2dError(f"{owner}: {message}" if owner else message)


def flag(field: str) -> str:
    """A config field as its command-line option: ``batch_size`` → ``--batch-size``."""
    return "--" + field.replace("_", "-")


def check_int(value: Any, name: str, owner: str | None = None, minimum: int = 1, *,
              optional: bool = False) -> int | None:
    """``value`` if it is an int >= ``minimum`` (or None when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(owner, f"expected {name} to be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise fail(owner, f"expected {name} >= {minimum}, got {value}")
    return value


def check_number(value: Any, name: str, ok: Callable[[float], bool], want: str,
                 owner: str | None = None, *, optional: bool = False) -> float | None:
    """``value`` if it is a finite number for which ``ok`` holds; ``want`` words the rule
    (``"> 0"``, ``"in [0, 1)"``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(owner, f"expected {name} to be a number {want}, got {value!r}")
    if not math.isfinite(value) or not ok(value):
        raise fail(owner, f"expected {name} to be finite and {want}, got {value!r}")
    return value


def check_choice(value: T, choices: Sequence[T], name: str, owner: str | None = None) -> T:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        shown = ", ".join(map(str, choices))
        raise fail(owner, f"expected {name} to be one of {shown}, got {value!r}")
    return value


def check_flag(value: Any, name: str, owner: str | None = None) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise fail(owner, f"expected {name} to be true or false, got {value!r}")
    return value
