"""One parser for the shapes users type: ``"3x32x32"``, ``"8x64x32x32"``, ``"3×32×32"``."""

from __future__ import annotations

from collections.abc import Sequence

from .validate import fail

__all__ = ["parse_shape"]

_EXAMPLES = {2: "32x32", 3: "3x32x32", 4: "8x64x32x32"}


def parse_shape(
    text: str | Sequence[int], lengths: Sequence[int] = (3, 4), owner: str | None = None,
    name: str = "shape",
) -> tuple[int, ...]:
    """A tuple of positive ints with one of the allowed ``lengths``.

    ``"3x32x32"`` (or ``×``, or a sequence of ints) for (C, H, W); ``"8x64x32x32"`` for
    (B, C, H, W). Errors name ``name`` (and ``owner``, if given) and show an example.
    """
    example = _EXAMPLES.get(min(lengths), "x".join("1" * min(lengths)))
    want = f"{name} as {' or '.join(_letters(n) for n in sorted(lengths))} (e.g. {example})"
    if isinstance(text, str):
        try:
            shape = tuple(int(v) for v in text.lower().replace("×", "x").split("x"))
        except ValueError:
            raise fail(owner, f"expected {want}, got {text!r}") from None
    else:
        shape = tuple(text)
    if len(shape) not in lengths or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise fail(owner, f"expected {want} with positive integers, got {text!r}")
    return shape


def _letters(n: int) -> str:
    return "x".join("BCHW"[4 - n:]) if n <= 4 else f"{n} integers"
