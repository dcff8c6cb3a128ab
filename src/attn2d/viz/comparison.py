"""Pictures of a comparison (``attn2d compare`` / ``report``): accuracy with confidence
intervals and verdicts, training curves with a band over seeds, accuracy against cost.

Each function takes plain data, returns a :class:`~matplotlib.figure.Figure` and writes a
PNG atomically when given a path. A row is a dict with ``mechanism`` (str), ``acc``,
``acc_low``, ``acc_high`` (fractions; the interval may be None), ``verdict`` (``"better"``,
``"worse"``, ``"no detectable difference"``, or None for the baseline), ``params`` (int) and
``latency_ms`` (float or None). Axes show percent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import ConnectionPatch, Patch
from matplotlib.text import Text

from .._base.errors import Attn2dError
from .._base.log import plural
from ..stats import BETTER, WORSE, t_interval
from .plots import PathLike, _finish, _suptitle, epoch_axis

__all__ = ["plot_accuracy", "plot_curves", "plot_tradeoff"]

BASELINE_COLOUR, NEUTRAL_COLOUR = "black", "tab:blue"
VERDICT_COLOURS = {BETTER: "tab:green", WORSE: "tab:red"}
VERDICT_MARKERS = {BETTER: "^", WORSE: "v"}
LABEL_FONTSIZE = 8.0
LABEL_PITCH = 1.5  # distance between label centres, in font sizes (a line is ~1.2)
ROW_KEYS = ("mechanism", "acc", "acc_low", "acc_high", "verdict")


def _rows(rows: Sequence[Mapping[str, Any]], owner: str,
          keys: Sequence[str] = ROW_KEYS) -> list[Mapping[str, Any]]:
    rows = list(rows)
    if not rows:
        raise Attn2dError(f"{owner}: expected at least one row, got none")
    for row in rows:
        missing = [k for k in keys if k not in row]
        if missing:
            raise Attn2dError(f"{owner}: expected keys {', '.join(keys)} in every row, got a row "
                              f"without {', '.join(missing)}")
    return rows


def _colour(row: Mapping[str, Any], baseline: str) -> str:
    if row["mechanism"] == baseline:
        return BASELINE_COLOUR
    return VERDICT_COLOURS.get(row["verdict"], NEUTRAL_COLOUR)


def _error(row: Mapping[str, Any]) -> list[list[float]] | None:
    """Matplotlib's asymmetric error bar (in percent) for the row's interval, if it has one."""
    if row["acc_low"] is None or row["acc_high"] is None:
        return None
    return [[100 * (row["acc"] - row["acc_low"])], [100 * (row["acc_high"] - row["acc"])]]


def _baseline_reference(axes: Sequence[Axes], rows: Sequence[Mapping[str, Any]], baseline: str,
                        vertical: bool) -> bool:
    """The baseline's accuracy as a line across each panel, its interval as a band."""
    base = next((r for r in rows if r["mechanism"] == baseline), None)
    if base is None:
        return False
    for ax in axes:
        line, span = (ax.axvline, ax.axvspan) if vertical else (ax.axhline, ax.axhspan)
        line(100 * base["acc"], color=BASELINE_COLOUR, lw=0.9, ls="--", zorder=1)
        if base["acc_low"] is not None and base["acc_high"] is not None:
            span(100 * base["acc_low"], 100 * base["acc_high"], color="0.5", alpha=0.15, lw=0,
                 zorder=0)
    return True


def _legend_handles(baseline: str, has_baseline: bool, alpha: float, marks: bool) -> list:
    handles = []
    for verdict, word in ((BETTER, "better"), (WORSE, "worse")):
        handles.append(Line2D([], [], ls="", color=VERDICT_COLOURS[verdict],
                              marker=VERDICT_MARKERS[verdict] if marks else "o",
                              label=f"{word} than {baseline} (Holm-adjusted p < {alpha:g})"))
    handles.append(Line2D([], [], ls="", marker="o", color=NEUTRAL_COLOUR,
                          label="no detectable difference" + (" (no mark)" if marks else "")))
    if has_baseline:
        handles.append(Line2D([], [], ls="--", color=BASELINE_COLOUR, lw=0.9,
                              label=f"baseline ({baseline})"))
        handles.append(Patch(color="0.5", alpha=0.15, label="baseline's confidence interval"))
    return handles


def _caption(fig: Figure, method: str | None) -> None:
    """The method footnote under the figure, wrapped to its width."""
    if method:
        import textwrap

        width = int(fig.get_figwidth() * 72 / (0.55 * 7))
        fig.supxlabel(textwrap.fill(method, width), fontsize=7, ha="center")


# -- accuracy ---------------------------------------------------------------------------------
def plot_accuracy(
    rows: Sequence[Mapping[str, Any]],
    *,
    baseline: str = "none",
    alpha: float = 0.05,
    method: str | None = None,
    title: str = "test accuracy with 95 % confidence intervals",
    path: PathLike | None = None,
) -> Figure:
    """One line per mechanism: accuracy with its confidence interval, the baseline as a
    reference line and band, ▲ / ▼ where the verdict is better / worse.

    Args:
        rows: one dict per mechanism (see the module docstring), in table order.
        baseline: the baseline's mechanism name.
        alpha: the verdicts' level, for the legend.
        method: the method footnote (:func:`attn2d.stats.method_footnote`), printed below.
        title: figure title.
        path: PNG to write.
    """
    rows = _rows(rows, "plot_accuracy")
    n = len(rows)
    fig = Figure(figsize=(8.5, 1.6 + 0.3 * n + (0.45 if method else 0)), layout="constrained")
    ax = fig.add_subplot()
    has_baseline = _baseline_reference([ax], rows, baseline, vertical=True)
    tops = [100 * (r["acc_high"] if r["acc_high"] is not None else r["acc"]) for r in rows]
    bottoms = [100 * (r["acc_low"] if r["acc_low"] is not None else r["acc"]) for r in rows]
    span = max(max(tops) - min(bottoms), 0.5)
    for y, (row, top) in enumerate(zip(rows, tops, strict=True)):
        colour = _colour(row, baseline)
        ax.errorbar(100 * row["acc"], y, xerr=_error(row), fmt="o", color=colour, capsize=3,
                    ms=5, lw=1.2)
        mark = VERDICT_MARKERS.get(row["verdict"]) if row["mechanism"] != baseline else None
        if mark:
            ax.plot(top + 0.04 * span, y, ls="", marker=mark, ms=8, color=colour)
    ax.set_xlim(min(bottoms) - 0.08 * span, max(tops) + 0.12 * span)
    ax.set_yticks(range(n), [r["mechanism"] for r in rows], fontsize=9 if n <= 12 else 8)
    ax.set_ylim(n - 0.5, -0.5)  # first row on top, as in the table
    ax.set_xlabel("test accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=_legend_handles(baseline, has_baseline, alpha, marks=True), fontsize=7,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    _caption(fig, method)
    _suptitle(fig, title)
    return _finish(fig, path)


# -- curves -----------------------------------------------------------------------------------
def _seed_band(values: np.ndarray, band: str) -> tuple[np.ndarray, np.ndarray] | None:
    if values.shape[0] < 2:
        return None
    if band == "range":
        return values.min(axis=0), values.max(axis=0)
    intervals = [t_interval(epoch) for epoch in values.T]
    return (np.clip([i.low for i in intervals], 0, 1), np.clip([i.high for i in intervals], 0, 1))


def _palette(n: int) -> list:
    from matplotlib import colormaps

    return [colormaps["tab10" if n <= 10 else "tab20"](i) for i in range(n)]


def plot_curves(
    curves: Mapping[str, np.ndarray | Sequence[Sequence[float]]],
    *,
    band: Literal["range", "ci"] = "range",
    baseline: str = "none",
    ylabel: str = "test accuracy (%)",
    title: str | None = None,
    path: PathLike | None = None,
) -> Figure:
    """Accuracy per epoch per mechanism: the mean over seeds, with a band over seeds.

    Args:
        curves: ``{mechanism: (seeds, epochs) fractions}`` (a 1-D array is one seed).
        band: ``"range"``, min to max over seeds (descriptive; a 3-seed t-interval is
            about 4 standard deviations wide), or ``"ci"``, the 95 % t-interval of the mean.
            No band with one seed.
        baseline: the baseline's mechanism name, drawn in black, dashed.
        ylabel: what the values are (test or validation accuracy).
        title: figure title; default says what the line and the band are.
        path: PNG to write.
    """
    if band not in ("range", "ci"):
        raise Attn2dError(f"plot_curves: expected band 'range' or 'ci', got {band!r}")
    if not curves:
        raise Attn2dError("plot_curves: expected the curves of at least one mechanism, got none")
    arrays = {}
    for name, values in curves.items():
        arr = np.asarray(values, dtype=float)
        arr = arr[None] if arr.ndim == 1 else arr
        if arr.ndim != 2 or 0 in arr.shape:
            raise Attn2dError(f"plot_curves: expected a (seeds, epochs) array for {name!r}, got "
                              f"shape {np.asarray(values).shape}")
        arrays[name] = arr
    fig = Figure(figsize=(8.5, 4.6 if len(arrays) <= 10 else 5.6), layout="constrained")
    ax = fig.add_subplot()
    styles = ["-", "--", "-.", ":"]
    for i, ((name, arr), colour) in enumerate(zip(arrays.items(), _palette(len(arrays)),
                                                  strict=True)):
        is_base = name == baseline
        colour = BASELINE_COLOUR if is_base else colour
        epochs = np.arange(1, arr.shape[1] + 1)
        ax.plot(epochs, 100 * arr.mean(axis=0), ls="--" if is_base else styles[i // 10 % 4],
                marker="o" if arr.shape[1] <= 30 else None, ms=3, color=colour,
                lw=1.6 if is_base else 1.2, label=f"{name} ({plural(arr.shape[0], 'seed')})",
                zorder=3 if is_base else 2)
        limits = _seed_band(arr, band)
        if limits is not None:
            ax.fill_between(epochs, 100 * limits[0], 100 * limits[1], color=colour, alpha=0.15,
                            lw=0)
    epoch_axis(ax)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              frameon=False)
    what = "min–max over seeds" if band == "range" else "95 % t-interval of the mean over seeds"
    _suptitle(fig, title or f"{ylabel.replace(' (%)', '')} per epoch: mean over seeds, "
              f"band: {what}")
    return _finish(fig, path)


# -- accuracy against cost --------------------------------------------------------------------
def _spread(targets: Sequence[float], gap: float) -> np.ndarray:
    """Positions in [gap/2, 1 − gap/2], as close to the sorted ``targets`` as a distance of
    at least ``gap`` between neighbours allows (requires len(targets) · gap <= 1)."""
    lo, hi = gap / 2, 1 - gap / 2
    y = np.clip(np.asarray(targets, dtype=float), lo, hi)
    for i in range(1, len(y)):  # push up what is too close to the one below
        y[i] = max(y[i], y[i - 1] + gap)
    if len(y) and y[-1] > hi:  # then push down from the top
        y[-1] = hi
        for i in range(len(y) - 2, -1, -1):
            y[i] = min(y[i], y[i + 1] - gap)
    return y


@dataclass
class _Label:
    """A mechanism's name beside the axes and the leader line to its point."""

    text: Text
    leader: ConnectionPatch
    point: tuple[float, float]  # data coordinates


LABEL_X = 1.03  # where the column starts, in axes widths


def _label_column(ax: Axes, points: Sequence[tuple[float, float, str, str]]) -> list[_Label]:
    """A label per point in a column right of the axes, with a leader line to its point;
    stacked evenly for now (so the layout makes room), moved by :func:`_place_labels`."""
    labels = []
    for i, (x, y, name, colour) in enumerate(sorted(points, key=lambda p: p[1])):
        height = (i + 0.5) / len(points)
        text = ax.text(LABEL_X, height, name, transform=ax.transAxes, ha="left", va="center",
                       fontsize=LABEL_FONTSIZE, color=colour, clip_on=False,
                       gid="tradeoff-label")
        leader = ConnectionPatch((x, y), (LABEL_X, height), coordsA=ax.transData,
                                 coordsB=ax.transAxes, color=colour, lw=0.5, alpha=0.6,
                                 shrinkA=3, shrinkB=1)
        leader.set_in_layout(False)
        ax.add_artist(leader)
        labels.append(_Label(text, leader, (x, y)))
    return labels


def _place_labels(fig: Figure, columns: Sequence[tuple[Axes, list[_Label]]]) -> None:
    """Fix the layout, then move each column's labels as near their points' heights as a
    fixed pitch allows: labels a pitch apart cannot overlap, whatever the data."""
    fig.draw_without_rendering()  # the constrained layout makes room for the columns
    fig.set_layout_engine("none")  # and is frozen, so axes heights stay what we measure
    for ax, labels in columns:
        if not labels:
            continue
        height_pt = ax.get_position().height * fig.get_figheight() * 72
        size = min(LABEL_FONTSIZE, height_pt / (LABEL_PITCH * len(labels)))
        to_axes = ax.transData + ax.transAxes.inverted()
        targets = [to_axes.transform(label.point)[1] for label in labels]
        for label, y in zip(labels, _spread(targets, LABEL_PITCH * size / height_pt),
                            strict=True):
            label.text.set_fontsize(size)
            label.text.set_y(y)
            label.leader.xy2 = (LABEL_X, y)


def plot_tradeoff(
    rows: Sequence[Mapping[str, Any]],
    *,
    baseline: str = "none",
    alpha: float = 0.05,
    latency_label: str = "latency (ms per batch)",
    method: str | None = None,
    title: str = "accuracy against cost",
    path: PathLike | None = None,
) -> Figure:
    """Accuracy (with its confidence interval) against parameters and against latency.

    Labels stand in a column right of each panel, ordered like their points and joined to
    them by leader lines, so they never overlap, however close the points. Rows without a
    latency are left out of the latency panel.

    Args:
        rows: one dict per mechanism (see the module docstring), with ``params`` and
            ``latency_ms``.
        baseline: the baseline's mechanism name.
        alpha: the verdicts' level, for the legend.
        latency_label: the latency axis' label (say the batch size).
        method: the method footnote, printed below.
        title: figure title.
        path: PNG to write.
    """
    rows = _rows(rows, "plot_tradeoff", (*ROW_KEYS, "params", "latency_ms"))
    height = max(4.6, 1.9 + len(rows) * LABEL_PITCH * LABEL_FONTSIZE / 72 * 1.15)
    fig = Figure(figsize=(12.5, height + (0.45 if method else 0)), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 30])
    legend_row = fig.add_subplot(grid[0, :])  # a row of its own for the legend, under the title
    legend_row.axis("off")
    axes = [fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])]
    has_baseline = _baseline_reference(axes, rows, baseline, vertical=False)
    columns = []
    for ax, key, label in zip(axes, ("params", "latency_ms"), ("parameters (M)", latency_label),
                              strict=True):
        shown = [r for r in rows if r[key] is not None]
        scale = 1e-6 if key == "params" else 1.0
        points = []
        for row in shown:
            colour = _colour(row, baseline)
            ax.errorbar(scale * row[key], 100 * row["acc"], yerr=_error(row), fmt="o",
                        color=colour, capsize=3, ms=5, lw=1.1)
            points.append((scale * row[key], 100 * row["acc"], row["mechanism"], colour))
        if not shown:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center",
                    color="0.4")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        columns.append((ax, _label_column(ax, points)))
    legend_row.legend(handles=_legend_handles(baseline, has_baseline, alpha, marks=False),
                      fontsize=7, loc="center", ncols=5, frameon=False, borderaxespad=0)
    _caption(fig, method)
    _suptitle(fig, title)
    _place_labels(fig, columns)
    return _finish(fig, path)
