"""One table renderer for every table attn2d prints or writes: text, Markdown, CSV, JSON."""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import Attn2dError
from .io import write_atomic

__all__ = ["FORMATS", "MISSING", "Table", "format_for"]

FORMATS = ("text", "markdown", "csv", "json")
MISSING = "—"  # what text, Markdown and HTML show for a value that is None or NaN
_SUFFIXES = {"md": "markdown", "csv": "csv", "json": "json"}


def format_for(path: str | os.PathLike[str] | None, fmt: str | None = None) -> str:
    """``fmt`` if given, else the one the file suffix implies (.md, .csv, .json; else text)."""
    if fmt is None:
        suffix = os.fspath(path).rsplit(".", 1)[-1].lower() if path is not None else ""
        fmt = _SUFFIXES.get(suffix, "text")
    if fmt not in FORMATS:
        raise Attn2dError(f"expected a table format in {FORMATS}, got {fmt!r}")
    return fmt


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass
class Table:
    """Rows of raw values with display formatters.

    Args:
        columns: (key, header) pairs in display order.
        rows: one dict of raw values per row (extra keys go to CSV/JSON only if listed).
        display: formatter per key for text, Markdown and HTML (CSV and JSON keep raw
            values); a missing value (None or NaN) shows as :data:`MISSING` without it.
        align_left: keys aligned left in text and Markdown (the rest align right).
        notes: lines printed under the text and Markdown tables.
        meta: extra top-level fields of the JSON output.
        rule: draw a line of dashes under the text header.
    """

    columns: Sequence[tuple[str, str]]
    rows: list[dict[str, Any]]
    display: dict[str, Callable[[Any], str]] = field(default_factory=dict)
    align_left: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    rule: bool = True

    def cells(self) -> list[list[str]]:
        """Every row as display strings, in column order."""
        return [[MISSING if _clean(r.get(k)) is None else self.display.get(k, str)(r[k])
                 for k, _ in self.columns] for r in self.rows]

    def render(self, fmt: str = "text") -> str:
        renderers = {"text": self.to_text, "markdown": self.to_markdown, "csv": self.to_csv,
                     "json": self.to_json}
        return renderers[format_for(None, fmt)]()

    def save(self, path: str | os.PathLike[str], fmt: str | None = None) -> None:
        """Write atomically; the format defaults to the suffix (.md, .csv, .json, else text)."""
        text = self.render(format_for(path, fmt))  # before touching the disk
        write_atomic(path, text)

    def to_text(self) -> str:
        header = [h for _, h in self.columns]
        cells = self.cells()
        widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
        left = [k in self.align_left for k, _ in self.columns]

        def line(cs: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) if lf else c.rjust(w)
                             for c, w, lf in zip(cs, widths, left, strict=True)).rstrip()

        out = [line(header)]
        if self.rule:
            out.append("  ".join("-" * w for w in widths))
        out += [line(c) for c in cells]
        return "\n".join(out + list(self.notes)) + "\n"

    def to_markdown(self) -> str:
        def esc(c: str) -> str:
            return c.strip().replace("|", "\\|") or " "

        header = [esc(h) for _, h in self.columns]
        align = [":---" if k in self.align_left else "---:" for k, _ in self.columns]
        out = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
        out += ["| " + " | ".join(esc(c) for c in cs) + " |" for cs in self.cells()]
        notes = [f"\n{n.strip()}" for n in self.notes if n.strip()]
        return "\n".join(out) + "\n" + "\n".join(notes) + ("\n" if notes else "")

    def to_html(self, cell_class: Callable[[str, dict[str, Any]], str] | None = None) -> str:
        """An HTML ``<table>``: ``l`` marks left-aligned cells, Markdown code spans become
        ``<code>``, and ``cell_class(key, row)`` may add a class to a cell."""
        left = set(self.align_left)

        def cell(tag: str, key: str, text: str, extra: str = "") -> str:
            classes = " ".join(c for c in ("l" if key in left else "", extra) if c)
            body = re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text.strip()))
            return f'<{tag} class="{classes}">{body}</{tag}>' if classes else \
                f"<{tag}>{body}</{tag}>"

        head = "".join(cell("th", k, h) for k, h in self.columns)
        body = "".join(
            "<tr>" + "".join(cell("td", k, c, cell_class(k, row) if cell_class else "")
                             for (k, _), c in zip(self.columns, cells, strict=True)) + "</tr>"
            for row, cells in zip(self.rows, self.cells(), strict=True))
        return f"<table><tr>{head}</tr>{body}</table>"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[k for k, _ in self.columns],
                                extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if _clean(v) is None else v for k, v in r.items()}
                         for r in self.rows)
        return buffer.getvalue()

    def to_json(self) -> str:
        rows = [{k: _clean(v) for k, v in r.items()} for r in self.rows]
        return json.dumps({**self.meta, "rows": rows}, indent=2) + "\n"
