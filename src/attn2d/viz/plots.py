"""Pictures of attention: each function returns a matplotlib Figure and saves it as PNG
when given a path.

Figures are built with :class:`matplotlib.figure.Figure` directly (the Agg canvas, no
``pyplot`` state), so they work headless, in threads and in tests, and need no closing.
Images are (C, H, W) or (H, W) tensors already in display range [0, 1]; maps at feature
resolution are upsampled to the image.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from .._base import io as _io
from .._base.errors import Attn2dError

if TYPE_CHECKING:  # for annotations only: debug sits below viz and needs no import here
    from ..tools.map_stats import MapStats

__all__ = [
    "epoch_axis",
    "plot_affinity_matrix",
    "plot_attention_histograms",
    "plot_channel_weights",
    "plot_feature_grid",
    "plot_query_attention",
    "plot_spatial_map",
    "plot_top_channels",
    "plot_training_curves",
    "read_metrics",
    "save_figure",
]

OVERLAY_CMAP = "jet"  # the usual CAM palette: strong contrast over a grey image
MATRIX_CMAP = "viridis"
PathLike = str | os.PathLike[str]


def save_figure(fig: Figure, path: PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG atomically (temp file in the same folder, then rename)."""
    return _io.save_figure(fig, path, dpi)


def _finish(fig: Figure, path: PathLike | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def _array(t: Tensor | np.ndarray, dims: int | tuple[int, ...], owner: str) -> np.ndarray:
    arr = t.detach().float().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t, float)
    allowed = (dims,) if isinstance(dims, int) else dims
    if arr.ndim not in allowed:
        raise Attn2dError(f"{owner}: expected a {' or '.join(f'{d}-D' for d in allowed)} "
                          f"array, got shape {arr.shape}")
    return arr


def _display_image(image: Tensor | np.ndarray, owner: str) -> tuple[np.ndarray, str | None]:
    """(H, W) grey or (H, W, 3) colour array in [0, 1], with the colormap imshow needs."""
    arr = _array(image, (2, 3), owner)
    if arr.ndim == 3:
        if arr.shape[0] == 1:
            arr = arr[0]
        elif arr.shape[0] == 3:
            arr = arr.transpose(1, 2, 0)
        else:
            raise Attn2dError(f"{owner}: expected an image of shape (1 or 3, H, W) or (H, W), "
                              f"got shape {arr.shape}")
    arr = np.clip(arr, 0.0, 1.0)
    return arr, ("gray" if arr.ndim == 2 else None)


def _resize(amap: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Upsample an (h, w) map to ``size``: bilinear for smooth gates, nearest to keep the
    exact cells of position / criss-cross maps visible."""
    t = torch.as_tensor(amap, dtype=torch.float32)[None, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=size, mode=mode, **kwargs)[0, 0].numpy()


def epoch_axis(ax: Axes) -> None:
    """Label the x axis "epoch" with whole-number ticks only, one run of one epoch
    included (matplotlib's integer locator falls back to fractions below two ticks)."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _suptitle(fig: Figure, text: str, fontsize: float = 10) -> None:
    """Figure title wrapped to the figure's width, so long module paths are never cut."""
    width = fig.get_figwidth() * 72 / (0.6 * fontsize)  # characters that fit on one line
    lines = [textwrap.fill(line, max(20, int(width))) for line in text.splitlines()]
    fig.suptitle("\n".join(lines), fontsize=fontsize)


def _bare(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _show_image(ax: Axes, image: np.ndarray, cmap: str | None, title: str) -> None:
    ax.imshow(image, cmap=cmap, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    _bare(ax)


def _overlay(ax: Axes, image: np.ndarray, cmap: str | None, amap: np.ndarray, title: str,
             mode: str = "bilinear", alpha: float = 0.5, vrange: tuple[float, float] | None = None,
             hide_zeros: bool = False):
    """Image in grey, map on top; returns the mappable for a colour bar."""
    grey = image if image.ndim == 2 else image.mean(-1)
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
    up = _resize(amap, grey.shape, mode)
    if hide_zeros:  # cells the mechanism cannot attend to stay see-through
        up = np.ma.masked_where(_resize((amap == 0).astype(float), grey.shape, "nearest") > 0, up)
    lo, hi = vrange if vrange is not None else (float(np.min(amap)), float(np.max(amap)))
    if hi <= lo:
        hi = lo + 1e-6
    im = ax.imshow(up, cmap=OVERLAY_CMAP, alpha=alpha, vmin=lo, vmax=hi)
    ax.set_title(title, fontsize=9)
    _bare(ax)
    return im


# -- channel weights ------------------------------------------------------------------------
def plot_channel_weights(
    weights: Tensor | np.ndarray,
    *,
    title: str = "channel weights",
    labels: Sequence[str] | None = None,
    sort: bool = True,
    show: int = 8,
    path: PathLike | None = None,
) -> Figure:
    """Bars of one weight per channel (or per branch), sorted from largest, with the mean.

    Up to ``2 × show`` bars are all drawn; beyond that (sorted), only the ``show`` largest
    and the ``show`` smallest, each named, with the count of those between: 64 unnamed
    bars do not read at a report's tile size, the extremes do. The mean line and the
    colours are over every channel.

    Args:
        weights: (C,) weights for one image.
        title: figure title.
        labels: a name per bar; default the channel index.
        sort: sort bars from the largest weight; ``False`` keeps the given order (and every
            bar).
        show: bars at each end when there are more than ``2 × show``.
        path: PNG to write.
    """
    w = _array(weights, 1, "plot_channel_weights")
    names = list(labels) if labels is not None else [str(i) for i in range(len(w))]
    if len(names) != len(w):
        raise Attn2dError(f"plot_channel_weights: expected {len(w)} labels, got {len(names)}")
    if isinstance(show, bool) or not isinstance(show, int) or show < 1:
        raise Attn2dError(f"plot_channel_weights: expected show >= 1, got {show!r}")
    order = np.argsort(-w, kind="stable") if sort else np.arange(len(w))
    hidden = len(w) - 2 * show if sort and len(w) > 2 * show else 0
    drawn = np.concatenate([order[:show], order[-show:]]) if hidden else order
    # The two ends side by side, one empty slot between them for the count left out.
    x = np.concatenate([np.arange(show), np.arange(show) + show + 1]) if hidden \
        else np.arange(len(drawn))
    slots = len(drawn) + (1 if hidden else 0)
    fig = Figure(figsize=(max(5.0, min(12.0, 0.12 * slots + 3)), 3.2), layout="constrained")
    ax = fig.add_subplot()
    span = max(float(w.max() - w.min()), 1e-12)
    ax.bar(x, w[drawn], width=0.85, color=_colours(MATRIX_CMAP, (w[drawn] - w.min()) / span))
    ax.axhline(float(w.mean()), color="crimson", ls="--", lw=1.2,
               label=f"mean {w.mean():.3f}  (std {w.std():.3f})")
    if len(drawn) <= 32:
        crowded = len(drawn) * max(len(names[i]) for i in drawn) > 60
        ax.set_xticks(x, [names[i] for i in drawn], fontsize=8, rotation=90 if crowded else 0)
    else:  # unsorted and too many to label: name the top five in the legend instead
        ax.set_xticks([])
        top = ", ".join(names[i] for i in np.argsort(-w, kind="stable")[:5])
        ax.plot([], [], " ", label=f"top: {top}")
    low = min(0.0, float(w.min()))
    if hidden:
        ax.text(show, 0.3, f"{hidden}\nmore", ha="center", va="center", fontsize=8,
                color="dimgray", transform=ax.get_xaxis_transform())
        ax.set_xlabel(f"channels: the {show} largest and {show} smallest weights of {len(w)}")
    else:
        ax.set_xlabel("channels, largest weight first" if sort else "")
    ax.set_ylabel("weight")
    ax.set_xlim(-0.7, slots - 0.3)
    ax.set_ylim(low, float(w.max()) + 0.15 * (span if span > 1e-12 else 1.0))
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    _suptitle(fig, title)
    return _finish(fig, path)


def _colours(cmap: str, values: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return colormaps[cmap](0.15 + 0.7 * np.clip(values, 0, 1))


# -- spatial maps -----------------------------------------------------------------------------
def plot_spatial_map(
    image: Tensor | np.ndarray,
    amap: Tensor | np.ndarray,
    *,
    title: str = "spatial attention",
    image_title: str = "input",
    vrange: tuple[float, float] | None = None,
    path: PathLike | None = None,
) -> Figure:
    """The image, and the same image under the (upsampled) attention map, with a colour bar.

    Args:
        image: (C, H, W) or (H, W) in [0, 1].
        amap: (h, w) map at feature resolution.
        title: title of the overlay panel (and of the figure).
        image_title: title of the image panel (e.g. the class name).
        vrange: colour range of the map; default its own min and max.
        path: PNG to write.
    """
    img, cmap = _display_image(image, "plot_spatial_map")
    m = _array(amap, 2, "plot_spatial_map")
    fig = Figure(figsize=(6.4, 3.2), layout="constrained")
    ax_img, ax_map = fig.subplots(1, 2)
    _show_image(ax_img, img, cmap, image_title)
    im = _overlay(ax_map, img, cmap, m, f"map {m.shape[0]}×{m.shape[1]} over input",
                  vrange=vrange)
    fig.colorbar(im, ax=ax_map, fraction=0.046, pad=0.04, label="weight")
    _suptitle(fig, title)
    return _finish(fig, path)


def plot_feature_grid(
    features: Tensor | np.ndarray,
    *,
    k: int = 16,
    columns: int = 8,
    title: str = "feature maps",
    path: PathLike | None = None,
) -> Figure:
    """The first ``k`` channels of a (C, h, w) feature map, each on its own colour scale.

    Args:
        features: (C, h, w) features for one image.
        k: channels shown (at most C).
        columns: panels per row.
        title: figure title.
        path: PNG to write.
    """
    f = _array(features, 3, "plot_feature_grid")
    n = min(int(k), f.shape[0])
    if n < 1:
        raise Attn2dError(f"plot_feature_grid: expected k >= 1, got {k}")
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.3 * cols + 0.3, 1.35 * rows + 0.5), layout="constrained")
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(f[i], cmap=MATRIX_CMAP)
        ax.set_title(f"ch {i}", fontsize=7, pad=2)
        _bare(ax)
    _suptitle(fig, f"{title}: channels 0–{n - 1} of {f.shape[0]}, {f.shape[1]}×{f.shape[2]}, "
              "each scaled to its own range", fontsize=9)
    return _finish(fig, path)


def plot_top_channels(
    image: Tensor | np.ndarray,
    features: Tensor | np.ndarray,
    scores: Tensor | np.ndarray | None = None,
    *,
    k: int = 4,
    score_name: str = "weight",
    title: str = "top channels",
    image_title: str = "input",
    path: PathLike | None = None,
) -> Figure:
    """The ``k`` channels with the highest score, each upsampled and laid over the image.

    Args:
        image: (C, H, W) or (H, W) in [0, 1].
        features: (C', h, w) features for that image.
        scores: (C',) ranking score, typically the channel attention weights; default the
            mean activation of each channel.
        k: channels shown.
        score_name: what the score is, for the panel titles.
        title: figure title.
        image_title: title of the image panel.
        path: PNG to write.
    """
    img, cmap = _display_image(image, "plot_top_channels")
    f = _array(features, 3, "plot_top_channels")
    if scores is None:
        s, score_name = f.mean((1, 2)), "mean act."
    else:
        s = _array(scores, 1, "plot_top_channels")
        if len(s) != f.shape[0]:
            raise Attn2dError(f"plot_top_channels: expected {f.shape[0]} scores (one per "
                              f"channel), got {len(s)}")
    n = min(int(k), f.shape[0])
    top = np.argsort(-s, kind="stable")[:n]
    fig = Figure(figsize=(2.1 * (n + 1) + 0.6, 2.6), layout="constrained")
    axes = fig.subplots(1, n + 1)
    _show_image(axes[0], img, cmap, image_title)
    im = None
    for ax, c in zip(axes[1:], top, strict=True):
        span = max(float(f[c].max() - f[c].min()), 1e-12)
        im = _overlay(ax, img, cmap, (f[c] - f[c].min()) / span,
                      f"ch {c}, {score_name} {s[c]:.3f}", vrange=(0.0, 1.0))
    fig.colorbar(im, ax=list(axes[1:]), fraction=0.03, pad=0.02, label="activation (min–max)")
    _suptitle(fig, title)
    return _finish(fig, path)


def plot_query_attention(
    image: Tensor | np.ndarray,
    panels: Sequence[tuple[str, Tensor | np.ndarray]],
    query: tuple[int, int],
    *,
    feature_query: tuple[int, int] | None = None,
    title: str = "attention of one query pixel",
    image_title: str = "input",
    path: PathLike | None = None,
) -> Figure:
    """Where one query pixel looks: the image with the query marked, then one panel per map.

    Cells the mechanism cannot attend to (exact zeros, e.g. off a criss-cross) are left
    see-through, so the row-and-column restriction is visible. Each panel has its own
    colour bar because one pass of criss-cross and a composed map differ in scale.

    Args:
        image: (C, H, W) or (H, W) in [0, 1].
        panels: ``(title, (h, w) weights over key positions)`` for that query.
        query: (row, column) of the query in image pixels, for the marker.
        feature_query: (row, column) of the query on the feature grid, shown in the title.
        title: figure title.
        image_title: title of the image panel.
        path: PNG to write.
    """
    img, cmap = _display_image(image, "plot_query_attention")
    if not panels:
        raise Attn2dError("plot_query_attention: expected at least one (title, map) panel, got 0")
    fig = Figure(figsize=(2.9 * (len(panels) + 1) + 0.3, 2.9), layout="constrained")
    axes = fig.subplots(1, len(panels) + 1)
    _show_image(axes[0], img, cmap, image_title)
    for ax in axes:
        ax.plot(query[1], query[0], marker="+", color="white", ms=12, mew=2.5)
        ax.plot(query[1], query[0], marker="+", color="black", ms=10, mew=1.2)
    for ax, (name, amap) in zip(axes[1:], panels, strict=True):
        m = _array(amap, 2, "plot_query_attention")
        reachable = m[m != 0]
        low = float(reachable.min()) if reachable.size else 0.0
        im = _overlay(ax, img, cmap, m, name, mode="nearest", alpha=0.6, hide_zeros=True,
                      vrange=(low, float(m.max())))
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    where = f" (feature cell {feature_query[0]}, {feature_query[1]})" if feature_query else ""
    _suptitle(fig, f"{title}: query at pixel {query[0]}, {query[1]}{where}")
    return _finish(fig, path)


def plot_affinity_matrix(
    matrix: Tensor | np.ndarray,
    *,
    title: str = "channel affinity",
    path: PathLike | None = None,
) -> Figure:
    """A (C, C) attention matrix (DANet channel attention): row c = how channel c mixes
    the others.

    Args:
        matrix: (C, C) weights for one image.
        title: figure title.
        path: PNG to write.
    """
    m = _array(matrix, 2, "plot_affinity_matrix")
    fig = Figure(figsize=(5.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap=MATRIX_CMAP, interpolation="nearest")
    ax.set_xlabel("source channel (mixed in)")
    ax.set_ylabel("output channel")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="weight (each row sums to 1)")
    _suptitle(fig, title)
    return _finish(fig, path)


# -- distributions over a sample ---------------------------------------------------------------
def plot_attention_histograms(
    stats: Sequence[MapStats],
    *,
    bins: int = 40,
    columns: int = 3,
    title: str = "attention weights",
    path: PathLike | None = None,
) -> Figure:
    """One histogram per map (from :func:`attn2d.debug.attention_stats`), with its numbers
    and, in red, the reason when the map is flagged near-uniform or saturated.

    Args:
        stats: per-map statistics carrying a value sample (``MapStats.sample``).
        bins: histogram bins.
        columns: panels per row.
        title: figure title.
        path: PNG to write.
    """
    if not stats:
        raise Attn2dError("plot_attention_histograms: expected statistics of at least one map, "
                          "got none")
    cols = min(columns, len(stats))
    rows = math.ceil(len(stats) / cols)
    fig = Figure(figsize=(3.7 * cols, 2.8 * rows + 0.5), layout="constrained")
    for i, s in enumerate(stats):
        ax = fig.add_subplot(rows, cols, i + 1)
        # Gates on the full [0, 1] axis, so a spike at 0.5 (uniform) or mass at the ends
        # (saturated) reads the same in every panel; softmax rows on their own range.
        gate = s.entropy_name == "gate entropy"
        ax.hist(s.sample, bins=np.linspace(0, 1, bins + 1) if gate else bins,
                weights=s.sample_weights / s.count,
                color="crimson" if s.flags else "steelblue", alpha=0.85)
        if gate:
            ax.set_xlim(0, 1)
        status = f"  [{s.status.upper()}]" if s.flags else ""
        ax.set_title(s.label + status, fontsize=8, color="darkred" if s.flags else "black")
        numbers = f"mean {s.mean:.3f}, std {s.std:.3f}"
        if s.entropy is not None:
            numbers += f", {s.entropy_name} {s.entropy:.2f}"
        ax.set_xlabel(f"weight\n{numbers}\n< 0.05: {s.low:.0%},  > 0.95: {s.high:.0%}",
                      fontsize=7)
        ax.set_ylabel("share of weights", fontsize=8)
        ax.tick_params(labelsize=7)
    _suptitle(fig, title)
    return _finish(fig, path)


# -- training curves ------------------------------------------------------------------------
def read_metrics(path: PathLike) -> list[dict[str, object]]:
    """The records of a ``metrics.jsonl`` (one JSON object per line; blank lines skipped)."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise Attn2dError(f"read_metrics: expected one JSON object per line in "
                                      f"{path}, got invalid JSON on line {number}: {err.msg}"
                                      ) from None
    return rows


def _curve_groups(rows: list[dict[str, object]], keys: Sequence[str] | None) -> dict[str, list]:
    numeric = [k for k in dict.fromkeys(k for r in rows for k in r)
               if k != "epoch" and any(isinstance(r.get(k), (int, float))
                                       and not isinstance(r.get(k), bool) for r in rows)]
    chosen = list(keys) if keys is not None else [
        k for k in numeric if "loss" in k or "acc" in k]
    groups: dict[str, list] = {"loss": [], "accuracy": [], "other": []}
    for k in chosen:
        groups["loss" if "loss" in k else "accuracy" if "acc" in k else "other"].append(k)
    return {g: ks for g, ks in groups.items() if ks}


def plot_training_curves(
    metrics: PathLike | Sequence[PathLike],
    *,
    keys: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    title: str = "training curves",
    path: PathLike | None = None,
) -> Figure:
    """Per-epoch curves from one or several ``metrics.jsonl`` files (as written by
    ``attn2d train``): one panel for losses, one for accuracies, one for anything else
    asked for in ``keys``.

    Args:
        metrics: one path or several (one run each).
        keys: the numeric keys to plot; default every key containing "loss" or "acc".
        labels: a name per run; default the name of the folder holding each file.
        title: figure title.
        path: PNG to write.
    """
    files = [metrics] if isinstance(metrics, (str, os.PathLike)) else list(metrics)
    if not files:
        raise Attn2dError("plot_training_curves: expected at least one metrics file, got none")
    names = list(labels) if labels is not None else [Path(f).resolve().parent.name for f in files]
    runs = [read_metrics(f) for f in files]
    groups = _curve_groups([r for rows in runs for r in rows], keys)
    if not groups:
        raise Attn2dError(f"plot_training_curves: expected numeric loss/accuracy keys in "
                          f"{', '.join(map(str, files))}, found none")
    fig = Figure(figsize=(4.4 * len(groups), 3.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(groups)))
    styles = ["-", "--", ":", "-."]
    for ax, (group, ks) in zip(axes, groups.items(), strict=True):
        for r, (name, rows) in enumerate(zip(names, runs, strict=True)):
            for j, k in enumerate(ks):
                pts = [(row.get("epoch", i + 1), row[k]) for i, row in enumerate(rows)
                       if isinstance(row.get(k), (int, float))]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    ax.plot(xs, ys, styles[j % len(styles)], marker="o", ms=3,
                            color=f"C{r}", label=k if len(runs) == 1 else f"{name}: {k}")
        epoch_axis(ax)
        ax.set_ylabel(group)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    _suptitle(fig, title if len(runs) > 1 else f"{title} ({names[0]})")
    return _finish(fig, path)
