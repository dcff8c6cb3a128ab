"""attn2d.viz.comparison: intervals and verdict marks where the data put them, bands over
seeds, integer epoch ticks, and trade-off labels that never overlap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.patches import ConnectionPatch
from scipy import stats as sps

from attn2d.stats import BETTER, NO_DIFFERENCE, WORSE
from attn2d.viz import plot_accuracy, plot_curves, plot_tradeoff

NAMES = ["none", "se", "eca", "cbam", "bam", "nonlocal", "gc", "danet", "rcca", "coord",
         "triplet", "simam", "se(reduction=4)", "cbam(kernel_size=3)", "eca(k_size=5)",
         "gc(reduction=8)", "danet(reduction=4)"]


def make_rows(n: int, spread: float = 0.0, seed: int = 0) -> list[dict]:
    """``n`` rows; ``spread`` 0 puts every mechanism at nearly the same point."""
    rng = np.random.default_rng(seed)
    verdicts = [BETTER, WORSE, NO_DIFFERENCE]
    rows = []
    for i, name in enumerate(NAMES[:n]):
        acc = 0.9 + spread * rng.standard_normal() + 1e-5 * i
        rows.append({"mechanism": name, "acc": acc, "acc_low": acc - 0.004,
                     "acc_high": acc + 0.004, "verdict": None if i == 0 else verdicts[i % 3],
                     "params": 1_000_000 + int(spread * 1e8 * rng.random()) + i,
                     "latency_ms": 3.0 + spread * 100 * rng.random() + 1e-4 * i})
    return rows


def rendered(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


@pytest.mark.parametrize(("n", "spread"), [(17, 0.0), (17, 0.02), (4, 0.0), (1, 0.0)])
def test_tradeoff_labels_never_overlap(n, spread):
    fig = plot_tradeoff(make_rows(n, spread))
    renderer = rendered(fig)
    labels = [t for ax in fig.axes for t in ax.texts if t.get_gid() == "tradeoff-label"]
    assert len(labels) == 2 * n  # every mechanism named in both panels
    boxes = [t.get_window_extent(renderer) for t in labels]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    page = fig.bbox
    for box in boxes:  # and none is cut off
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1


def test_tradeoff_labels_are_stacked_in_the_order_of_their_points():
    rows = make_rows(8, spread=0.01, seed=3)
    fig = plot_tradeoff(rows)
    renderer = rendered(fig)
    ax = fig.axes[1]  # the parameters panel (after the legend row)
    labels = [t for t in ax.texts if t.get_gid() == "tradeoff-label"]
    heights = {t.get_text(): t.get_window_extent(renderer).y0 for t in labels}
    by_accuracy = [r["mechanism"] for r in sorted(rows, key=lambda r: r["acc"])]
    assert sorted(heights, key=heights.get) == by_accuracy
    leaders = {p.xy2[1]: p.xy1 for p in ax.patches + ax.artists if isinstance(p, ConnectionPatch)}
    for t in labels:  # each leader line runs from its label to its own point
        row = next(r for r in rows if r["mechanism"] == t.get_text())
        point = (row["params"] / 1e6, 100 * row["acc"])
        assert leaders[t.get_position()[1]] == pytest.approx(point)


def test_tradeoff_leaves_unmeasured_latency_out():
    rows = make_rows(5, spread=0.01)
    rows[2]["latency_ms"] = None
    fig = plot_tradeoff(rows)
    params, latency = fig.axes[1], fig.axes[2]
    named = [{t.get_text() for t in ax.texts if t.get_gid() == "tradeoff-label"}
             for ax in (params, latency)]
    assert named[0] == {r["mechanism"] for r in rows}
    assert named[1] == named[0] - {rows[2]["mechanism"]}


def test_accuracy_plot_draws_intervals_and_marks_from_the_verdicts(tmp_path):
    rows = make_rows(7, spread=0.01)
    fig = plot_accuracy(rows, method="t-interval over 3 seeds; Holm", path=tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    bars = sorted((seg for c in ax.collections if isinstance(c, LineCollection)
                   for seg in c.get_segments()), key=lambda seg: seg[0][1])
    for y, row in enumerate(rows):  # row y's bar spans its interval, in percent
        assert bars[y][:, 0] == pytest.approx([100 * row["acc_low"], 100 * row["acc_high"]])
        assert bars[y][:, 1] == pytest.approx([y, y])
    marks = {m: [line.get_ydata()[0] for line in ax.lines if line.get_marker() == m]
             for m in ("^", "v")}
    assert marks["^"] == [y for y, r in enumerate(rows) if r["verdict"] == BETTER]
    assert marks["v"] == [y for y, r in enumerate(rows) if r["verdict"] == WORSE]
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "Holm-adjusted p < 0.05" in legend and "no detectable difference" in legend
    assert [t.get_text() for t in ax.get_yticklabels()] == [r["mechanism"] for r in rows]


def test_curves_have_a_band_over_seeds_and_integer_epochs():
    rng = np.random.default_rng(1)
    curves = {"none": 0.8 + 0.02 * rng.random((3, 5)), "se": 0.8 + 0.02 * rng.random((3, 5)),
              "eca": 0.85 + np.zeros(5)}  # one seed: a line, no band
    fig = plot_curves(curves)
    rendered(fig)
    ax = fig.axes[0]
    ticks = ax.get_xticks()
    assert np.all(ticks == np.round(ticks))
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    top = bands[1].get_paths()[0].vertices[:, 1]
    assert top.max() == pytest.approx(100 * curves["se"].max(axis=0).max())
    assert top.min() == pytest.approx(100 * curves["se"].min(axis=0).min())
    assert np.allclose(ax.lines[1].get_ydata(), 100 * curves["se"].mean(axis=0))
    assert "min–max over seeds" in fig.get_suptitle()

    fig = plot_curves(curves, band="ci")
    band = next(c for c in fig.axes[0].collections if isinstance(c, PolyCollection))
    low, high = sps.t.interval(0.95, 2, loc=curves["none"].mean(axis=0),
                               scale=sps.sem(curves["none"], axis=0))
    vertices = band.get_paths()[0].vertices[:, 1]
    assert vertices.max() == pytest.approx(100 * high.max())
    assert vertices.min() == pytest.approx(100 * low.min())


@pytest.mark.parametrize(("call", "message"), [
    (lambda: plot_accuracy([]), "at least one row"),
    (lambda: plot_tradeoff([{"mechanism": "se", "acc": 0.9}]), "expected keys"),
    (lambda: plot_curves({"se": np.ones((2, 3))}, band="std"), "band 'range' or 'ci'"),
    (lambda: plot_curves({"se": np.ones((2, 3, 4))}), r"\(seeds, epochs\)"),
])
def test_bad_input_is_refused_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_one_epoch_curves_have_one_integer_tick():
    fig = plot_curves({"none": np.array([[0.81], [0.83]]), "se": np.array([0.84])})
    rendered(fig)
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    assert [t for t in ax.get_xticks() if low <= t <= high] == [1.0]
    assert [line.get_label() for line in ax.lines] == ["none (2 seeds)", "se (1 seed)"]
