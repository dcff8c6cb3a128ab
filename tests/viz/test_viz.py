"""attn2d.viz: the recorders see the weights actually applied and leave nothing behind;
query maps, RCCA's composition and every plot; ``attn2d visualize`` end to end."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import attn2d
from attn2d.cli import main
from attn2d.models import create_model
from attn2d.modules import AttentionMap
from attn2d.tools.map_stats import attention_stats
from attn2d.viz import (
    AttentionRecorder,
    Example,
    FeatureRecorder,
    compose_criss_cross,
    criss_cross_query,
    plot_affinity_matrix,
    plot_attention_histograms,
    plot_channel_weights,
    plot_feature_grid,
    plot_query_attention,
    plot_spatial_map,
    plot_top_channels,
    plot_training_curves,
    position_query,
    visualize_example,
)

from ..helpers import activate


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# -- recording -------------------------------------------------------------------------------
def test_recorder_captures_every_map_of_a_model_with_its_shape():
    model = create_model("small_cnn", attention="cbam", in_channels=1).eval()
    x = torch.randn(2, 1, 16, 16)
    with AttentionRecorder(model) as rec, torch.no_grad():
        model(x)
    shapes = {(r.path, r.kind): tuple(r.tensor.shape) for r in rec.records}
    assert shapes == {
        ("block1.attn.channel_gate", "channel"): (2, 32),
        ("block1.attn.spatial_gate", "spatial"): (2, 1, 16, 16),
        ("block2.attn.channel_gate", "channel"): (2, 64),
        ("block2.attn.spatial_gate", "spatial"): (2, 1, 8, 8),
        ("block3.attn.channel_gate", "channel"): (2, 128),
        ("block3.attn.spatial_gate", "spatial"): (2, 1, 4, 4),
    }
    assert [r.feature_size for r in rec.records][::2] == [(16, 16), (8, 8), (4, 4)]


def test_se_output_is_input_times_the_captured_gate():
    se = activate(attn2d.create("se", 16)).eval()
    x = torch.randn(3, 16, 5, 6)
    with AttentionRecorder(se) as rec:
        y = se(x)
    (gate,) = rec.maps[("", "channel")]
    assert gate.shape == (3, 16) and not torch.allclose(gate, gate.mean())
    torch.testing.assert_close(y.detach(), x * gate[:, :, None, None])


def test_cbam_output_is_input_times_channel_then_spatial_capture():
    cbam = activate(attn2d.create("cbam", 16, reduction=4)).eval()
    x = torch.randn(2, 16, 6, 5)
    with AttentionRecorder(cbam) as rec:
        y = cbam(x)
    (c,) = rec.maps[("channel_gate", "channel")]
    (s,) = rec.maps[("spatial_gate", "spatial")]
    torch.testing.assert_close(y.detach(), x * c[:, :, None, None] * s)


def test_hooks_removed_and_capture_switched_off_on_exit():
    model = create_model("small_cnn", attention="danet", in_channels=1).eval()
    points = [m for m in model.modules() if isinstance(m, AttentionMap)]
    assert points and not any(p.capture for p in points)
    with AttentionRecorder(model):
        assert all(p.capture for p in points)
    assert not any(p.capture for p in points) and no_hooks_left(model)
    with pytest.raises(RuntimeError), AttentionRecorder(model):  # hooks go even on errors
        raise RuntimeError("boom")
    assert no_hooks_left(model) and not any(p.capture for p in points)


def test_position_map_is_built_only_while_recording_and_changes_nothing():
    pam = activate(attn2d.create("pam", 16)).eval()
    x = torch.randn(2, 16, 4, 5)
    fast = pam(x)
    with AttentionRecorder(pam) as rec:
        slow = pam(x)
    (amap,) = rec.maps[("", "position")]
    assert amap.shape == (2, 20, 20)
    torch.testing.assert_close(amap.sum(-1), torch.ones(2, 20))
    torch.testing.assert_close(slow, fast, atol=1e-5, rtol=1e-4)


def test_danet_maps_know_their_feature_size():
    danet = attn2d.create("danet", 16).eval()
    with AttentionRecorder(danet) as rec:
        danet(torch.randn(1, 16, 3, 5))
    by_kind = {r.kind: r for r in rec.records}
    assert by_kind["position"].path == "position" and by_kind["position"].feature_size == (3, 5)
    assert by_kind["channel-affinity"].tensor.shape == (1, 16, 16)


def test_rcca_map_is_kept_once_per_pass_in_order():
    rcca = activate(attn2d.create("rcca", 16)).eval()
    x = torch.randn(2, 16, 4, 6)
    with AttentionRecorder(rcca) as rec:
        rcca(x)
        rcca(x)
    assert len(rec.forwards) == 2  # each model call starts a new list
    assert [(r.kind, r.call) for r in rec.records] == [("criss-cross", 0), ("criss-cross", 1)]
    first, second = rec.maps[("attention", "criss-cross")]
    assert first.shape == second.shape == (2, 4, 6, 10)
    assert not torch.allclose(first, second)  # γ ≠ 0: the second pass sees new features
    assert [r.label for r in rec.records] == ["attention:criss-cross", "attention:criss-cross#2"]
    assert [r.feature_size for r in rec.records] == [(4, 6), (4, 6)]
    merged = rec.merged()
    assert [tuple(r.tensor.shape) for r in merged] == [(4, 4, 6, 10), (4, 4, 6, 10)]


def test_recorder_kinds_filter_leaves_other_maps_silent():
    model = create_model("small_cnn", attention="danet", in_channels=1).eval()
    with AttentionRecorder(model, kinds={"channel-affinity"}) as rec:
        model(torch.randn(1, 1, 16, 16))
        silent = [m for m in model.modules()
                  if isinstance(m, AttentionMap) and m.kind == "position"]
        assert silent and not any(m.capture for m in silent)
    assert {r.kind for r in rec.records} == {"channel-affinity"}


def test_feature_recorder_reads_outputs_or_inputs_and_removes_hooks():
    model = create_model("small_cnn", in_channels=1).eval()
    x = torch.randn(2, 1, 16, 16)
    with FeatureRecorder(model, ["block1", model.block2]) as out, \
            FeatureRecorder(model, ["block2"], inputs=True) as inp:
        model(x)
    torch.testing.assert_close(out["block1"], model.block1(x).detach())
    torch.testing.assert_close(inp["block2"], out["block1"])
    assert out["block2"].shape == (2, 64, 4, 4) and no_hooks_left(model)
    with pytest.raises(ValueError, match=r"valid: .*block1"):
        FeatureRecorder(model, ["block9"])


# -- query maps --------------------------------------------------------------------------------
def compose_by_loops(a1: torch.Tensor, a2: torch.Tensor, q: tuple[int, int]) -> torch.Tensor:
    """Σ_p A2[q, p]·A1[p, k] read straight from the (H, W, W + H) layout, pixel by pixel."""
    h, w = a1.shape[:2]

    def weight(amap, p, k):  # weight of key k for query p
        (pi, pj), (ki, kj) = p, k
        if pi == ki:
            return float(amap[pi, pj, kj])
        if pj == kj:
            return float(amap[pi, pj, w + ki])
        return 0.0

    out = torch.zeros(h, w, dtype=torch.float64)
    cells = [(i, j) for i in range(h) for j in range(w)]
    for k in cells:
        out[k] = sum(weight(a2, q, p) * weight(a1, p, k) for p in cells)
    return out


def test_criss_cross_query_is_zero_off_row_and_column_and_composition_is_not():
    rcca = activate(attn2d.create("rcca", 8)).double().eval()
    with AttentionRecorder(rcca) as rec:
        rcca(torch.randn(1, 8, 5, 4, dtype=torch.float64))
    a1, a2 = (t[0] for t in rec.maps[("attention", "criss-cross")])
    q = (2, 1)
    one = criss_cross_query(a1, q)
    off = torch.ones(5, 4, dtype=torch.bool)
    off[q[0], :] = False
    off[:, q[1]] = False
    assert (one[off] == 0).all() and (one[~off] > 0).all()
    torch.testing.assert_close(one[q[0]], a1[q[0], q[1], :4])
    torch.testing.assert_close(one.sum(), torch.tensor(1.0, dtype=torch.float64))
    composed = compose_criss_cross([a1, a2], q)
    assert (composed > 0).all()  # two passes reach every pixel
    torch.testing.assert_close(composed, compose_by_loops(a1, a2, q))
    torch.testing.assert_close(composed.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_position_query_unflattens_subsampled_keys():
    nl = activate(attn2d.create("nonlocal(sub_sample=True)", 8)).eval()
    with AttentionRecorder(nl) as rec:
        nl(torch.randn(1, 8, 6, 4))
    (r,) = rec.records
    amap = position_query(r.tensor[0], (5, 3), r.feature_size)
    assert amap.shape == (3, 2)
    torch.testing.assert_close(amap.flatten(), r.tensor[0, 5 * 4 + 3])


# -- plots ---------------------------------------------------------------------------------------
def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_each_plot_writes_a_png_with_the_expected_axes(tmp_path):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 16, 16, generator=gen)
    feats = torch.randn(6, 8, 8, generator=gen)
    cases = {
        "bars": (plot_channel_weights, (torch.rand(12, generator=gen),), {}, 1),
        "spatial": (plot_spatial_map, (image, torch.rand(8, 8, generator=gen)), {}, 3),
        "grid": (plot_feature_grid, (feats,), {"k": 5}, 5),
        "top": (plot_top_channels, (image, feats, torch.rand(6, generator=gen)), {"k": 3}, 5),
        "top-mean": (plot_top_channels, (image, feats), {"k": 2}, 4),
        "query": (plot_query_attention,
                  (image, [("a", torch.rand(4, 4, generator=gen)),
                           ("b", torch.rand(2, 2, generator=gen))], (3, 9)), {}, 5),
        "affinity": (plot_affinity_matrix, (torch.rand(6, 6, generator=gen),), {}, 2),
    }
    for name, (fn, args, kwargs, axes) in cases.items():
        fig = fn(*args, **kwargs, path=tmp_path / f"{name}.png")
        assert len(fig.axes) == axes, name
        assert_png(tmp_path / f"{name}.png")


def test_histogram_and_curve_plots(tmp_path):
    stats = attention_stats({"gate": ("spatial", torch.rand(4, 1, 5, 5)),
                             "rows": ("position", torch.rand(2, 9, 9).softmax(-1))})
    fig = plot_attention_histograms(stats, path=tmp_path / "h.png")
    assert len(fig.axes) == 2
    assert_png(tmp_path / "h.png")
    runs = []
    for name, shift in (("a", 0.0), ("b", 0.1)):
        (tmp_path / name).mkdir()
        rows = [{"epoch": e, "train_loss": 1 / e + shift, "train_acc": 0.5 + e / 10,
                 "test_loss": 1.2 / e, "test_acc": 0.4 + e / 10, "lr": 0.01} for e in (1, 2, 3)]
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        runs.append(tmp_path / name / "metrics.jsonl")
    fig = plot_training_curves(runs, path=tmp_path / "c.png")
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy"]
    assert len(fig.axes[0].get_lines()) == 4  # 2 runs × (train, test)
    assert_png(tmp_path / "c.png")


def test_plots_reject_wrong_shapes():
    with pytest.raises(ValueError, match="plot_spatial_map: expected a 2-D array"):
        plot_spatial_map(torch.rand(1, 8, 8), torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match="expected 6 scores"):
        plot_top_channels(torch.rand(8, 8), torch.rand(6, 4, 4), torch.rand(5))


# -- the command ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(fake_fashion_mnist):
    return fake_fashion_mnist(64, 32)


def test_visualize_untrained_rcca_writes_every_picture(data_dir, tmp_path, capsys):
    code = main(["visualize", "--model", "small_cnn", "--attention", "rcca", "--data-dir",
                 data_dir, "--index", "3", "--sample", "8", "--layers", "attn.block2",
                 "--prefix", "rcca", "--out", str(tmp_path)])
    assert code == 0
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    printed = capsys.readouterr().out.split()
    assert sorted(line.rsplit("/", 1)[-1] for line in printed) == names
    assert names == ["rcca-01-attn.block2-criss-cross.png", "rcca-02-attn.block2-features.png",
                     "rcca-03-attn.block2-top-channels.png", "rcca-04-histograms.png"]
    for p in tmp_path.glob("*.png"):
        assert_png(p)


def test_visualize_checkpoint_adds_training_curves(data_dir, tmp_path):
    from attn2d.training import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(model="small_cnn", attention="se", dataset="fashion-mnist",
                      data_dir=data_dir, epochs=1, batch_size=32, out=str(run), progress=False))
    out = tmp_path / "pictures"
    assert main(["visualize", "--checkpoint", str(run / "last.pt"), "--data-dir", data_dir,
                 "--sample", "0", "--layers", "block3.attn", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["01-block3.attn-channel.png", "02-block3.attn-features.png",
                     "03-block3.attn-top-channels.png", "04-curves.png"]


def test_visualize_example_draws_position_and_affinity_maps_of_danet(tmp_path):
    model = create_model("small_cnn", attention="danet", in_channels=1)
    x = torch.randn(1, 16, 16)
    example = Example(x, x.sigmoid(), "noise", [str(i) for i in range(10)])
    files = visualize_example(model, example, tmp_path, layers=["attn.block2"],
                              pictures=["query", "affinity"], query=(15, 0))
    assert [f.name for f in files] == ["01-attn.block2-position.png",
                                       "02-attn.block2-channel-channel-affinity.png"]
    with pytest.raises(ValueError, match=r"expected layers among attn\.block1"):
        visualize_example(model, example, tmp_path, layers=["block2.attn"])
    with pytest.raises(ValueError, match="expected pictures among"):
        visualize_example(model, example, tmp_path, pictures=["heatmap"])


def test_visualize_needs_a_model_or_a_checkpoint(data_dir, tmp_path, capsys):
    assert main(["visualize", "--data-dir", data_dir, "--out", str(tmp_path)]) == 2
    assert "expected --checkpoint or --model" in capsys.readouterr().err


def test_query_marker_cells_match_the_map_grid():
    # the query pixel (row 13, col 2) of a 16×16 image lands in cell (3, 0) of a 4×4 grid
    from attn2d.viz.pictures import _feature_cell

    assert _feature_cell((13, 2), (16, 16), (4, 4)) == (3, 0)
    assert _feature_cell((27, 27), (28, 28), (3, 3)) == (2, 2)


def test_saved_maps_are_the_recorded_ones_keyed_by_path_and_kind(tmp_path):
    import numpy as np

    model = create_model("small_cnn", attention="rcca", placement="stage", in_channels=1)
    activate(model).eval()
    x = torch.randn(3, 1, 16, 16)
    with attn2d.modules.capture.AttentionRecorder(model) as rec, torch.no_grad():
        model(x[:2])
        model(x[2:])
    path = rec.save(tmp_path / "maps.npz", indices=[10, 11, 12])
    saved = np.load(path)
    assert list(saved["index"]) == [10, 11, 12]
    merged = {r.label: r for r in rec.merged()}
    assert set(saved.files) == {"index", "feature_size", *merged}
    assert "attn.block1.attention:criss-cross#2" in merged  # RCCA's second pass
    for label, record in merged.items():
        np.testing.assert_array_equal(saved[label], record.tensor.numpy())
    sizes = json.loads(str(saved["feature_size"]))
    assert sizes["attn.block1.attention:criss-cross"] == [8, 8]
    with pytest.raises(ValueError, match="expected 3 indices"):
        rec.save(tmp_path / "bad.npz", indices=[1])


def test_visualize_save_maps_and_pictures_the_model_cannot_give(data_dir, tmp_path, capsys):
    import numpy as np

    maps = tmp_path / "maps.npz"
    assert main(["visualize", "--model", "small_cnn", "--attention", "cbam", "--data-dir",
                 data_dir, "--index", "5", "--sample", "0", "--pictures", "spatial",
                 "--save-maps", str(maps), "--out", str(tmp_path / "p")]) == 0
    saved = np.load(maps)
    assert list(saved["index"]) == [5]
    assert saved["block2.attn.spatial_gate:spatial"].shape == (1, 1, 14, 14)
    assert main(["visualize", "--model", "small_cnn", "--attention", "se", "--data-dir",
                 data_dir, "--pictures", "query", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "allows (channel, features, top-channels, histograms), got query" in err


def visible_ticks(ax) -> list[float]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(ax.figure).draw()
    low, high = ax.get_xlim()
    return [float(t) for t in ax.get_xticks() if low <= t <= high]


def test_curves_of_one_epoch_have_whole_epoch_ticks(tmp_path):
    row = {"epoch": 1, "train_loss": 2.3, "train_acc": 0.1, "test_loss": 2.2, "test_acc": 0.12}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    fig = plot_training_curves(tmp_path / "metrics.jsonl")
    assert [visible_ticks(ax) for ax in fig.axes] == [[1.0], [1.0]]
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch", "epoch"]


def test_many_channels_show_the_largest_and_smallest_by_name():
    weights = torch.rand(64, generator=torch.Generator().manual_seed(3))
    fig = plot_channel_weights(weights, show=8)
    ax = fig.axes[0]
    # The reference, the obvious way: every channel ranked by its weight.
    ranked = sorted(range(64), key=lambda c: -float(weights[c]))
    expected = ranked[:8] + ranked[-8:]
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == pytest.approx([float(weights[c]) for c in expected])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [str(c) for c in expected]
    assert min(t.get_fontsize() for t in ax.get_xticklabels()) >= 8
    assert any(t.get_text() == "48\nmore" for t in ax.texts)
    assert "8 largest and 8 smallest weights of 64" in ax.get_xlabel()
    assert f"mean {float(weights.mean()):.3f}" in ax.get_legend().get_texts()[0].get_text()
    # Readable in the report's 380 px tile: at most 5.5 in wide at 100 dpi (the 64 bars
    # drawn one by one took 10.7 in, a third of their size on screen).
    assert fig.get_figwidth() <= 5.5
    few = plot_channel_weights(weights[:16], show=8).axes[0]
    assert len(few.patches) == 16 and not few.texts
