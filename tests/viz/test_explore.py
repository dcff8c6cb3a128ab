"""``attn2d explore``: the page's data against the recorder, Grad-CAM against a reference
written out, escaping, the CLI and comparison folders; then the page itself in a real
headless Chromium (tests/browser.py), clicked like a user would."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from attn2d.cli import main
from attn2d.data import DataSpec
from attn2d.models import create_model
from attn2d.modules.capture import AttentionRecorder, FeatureRecorder
from attn2d.viz import explorer as ex
from attn2d.viz.pictures import Subject

from ..browser import chromium
from ..datasets import write_fashion_mnist, write_image
from ..helpers import activate

SIZE = 16  # 16×16 grey images: small CNN maps of 16, 8, 4 (block) and 8, 4, 2 (stage)
HOSTILE_FOLDER = '<img src=x onerror="window.pwned=1">'  # a legal folder name
CLASS_NAMES = (HOSTILE_FOLDER, "cat & dog", "owl")  # ImageFolder's (sorted) order
# '/' cannot be in a folder name: these reach the page as given class and model names
HOSTILE = ("<script>alert(1)</script>", "</script><script>window.pwned=2</script>")
SPECS = ("se", "cbam", "nonlocal", "criss-cross", "rcca")
SE, CBAM, NONLOCAL, CROSS, RCCA = range(len(SPECS))
IMAGES = 6


# -- fixtures and independent helpers ---------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    gen = torch.Generator().manual_seed(0)
    for split, count in (("train", 2), ("test", 3)):
        for name in CLASS_NAMES:
            for i in range(count):
                pixels = torch.randint(0, 256, (1, SIZE, SIZE), dtype=torch.uint8, generator=gen)
                write_image(root / split / name / f"{i}.png", pixels)
    return root


def folder_pixels(folder: Path) -> list[np.ndarray]:
    """The test split's images in ImageFolder's order, read with PIL."""
    return [np.asarray(Image.open(p)) for name in sorted(CLASS_NAMES)
            for p in sorted((folder / "test" / name).glob("*.png"))]


@pytest.fixture(scope="module")
def subjects(folder) -> list[Subject]:
    found = []
    for seed, spec in enumerate(SPECS):
        model = create_model("small_cnn", attention=spec, num_classes=3, in_channels=1)
        activate(model, scale=0.5, seed=seed)  # peaked maps, non-zero gammas
        found.append(Subject(model.eval(), DataSpec(f"folder:{folder}"), f"small_cnn + {spec}",
                             None))
    return found


@pytest.fixture(scope="module")
def page(subjects, tmp_path_factory) -> Path:
    return ex.explore(subjects, tmp_path_factory.mktemp("page") / "explore.html", images=IMAGES)


@pytest.fixture(scope="module")
def images(folder) -> ex.ExploreImages:
    return ex.load_images(DataSpec(f"folder:{folder}"), "test", IMAGES)


def page_json(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    start = text.index("id='attn2d-data'>") + len("id='attn2d-data'>")
    return json.loads(text[start:text.index("</script>", start)])


def decode(text: str) -> np.ndarray:
    kind, data = text.split(":", 1)
    return np.frombuffer(base64.b64decode(data), {"u8": "<u1", "u16": "<u2", "f32": "<f4"}[kind])


def record(model: torch.nn.Module, x: torch.Tensor, features: list[str] = ()):
    with AttentionRecorder(model) as rec, FeatureRecorder(model, features, inputs=True) as f, \
            torch.no_grad():
        model(x)
    return {r.label: r.tensor for r in rec.records}, {p: f[p] for p in features}


def dense_by_loops(t: torch.Tensor) -> torch.Tensor:
    """One image's (H, W, W + H) criss-cross map as the (HW, HW) matrix, entry by entry."""
    h, w = t.shape[:2]
    dense = torch.zeros(h * w, h * w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            for c in range(w):
                dense[i * w + j, i * w + c] += float(t[i, j, c])
            for r in range(h):
                dense[i * w + j, r * w + j] += float(t[i, j, w + r])
    return dense


def assert_codes(codes, values, lo, hi) -> None:
    """uint8 codes decode to ``values`` within half a quantisation step."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    got = lo + np.asarray(codes, np.float64) / 255 * (hi - lo)
    step = np.broadcast_to((hi - lo) / 255, got.shape)
    np.testing.assert_array_less(np.abs(got - np.asarray(values, np.float64)), step / 2 + 1e-6)


# -- the page's data, without a browser ----------------------------------------------------------
def test_every_map_on_the_page_is_the_recorded_map_within_half_a_step(page, subjects, images):
    data = page_json(page)
    assert [m["name"] for m in data["models"]] == [s.title for s in subjects]
    assert [im["label"] for im in data["images"]] == images.labels
    for subject, entry in zip(subjects, data["models"], strict=True):
        channel_paths = [lay["label"].split(":")[0] for lay in entry["layers"]
                         if lay["view"] == "channel"]
        maps, feats = record(subject.model, images.x, channel_paths)
        probs = subject.model(images.x).softmax(-1)
        assert [p[0] for p in entry["predictions"]] == probs.argmax(-1).tolist()
        for layer in entry["layers"]:
            if "composed" in layer["label"]:  # RCCA: pass 2 × pass 1, written out
                key = layer["label"].split(" composed")[0]
                expected = [dense_by_loops(maps[key + "#2"][k]) @ dense_by_loops(maps[key][k])
                            for k in range(IMAGES)]
            else:
                expected = maps[layer["label"]]
            for k in range(IMAGES):
                d, t = layer["images"][k], expected[k].double()
                if layer["view"] == "channel":
                    assert_codes(decode(d["q"]), t, d["lo"], d["hi"])
                    assert decode(d["order"]).tolist() == sorted(range(len(t)),
                                                                 key=lambda c: -float(t[c]))
                    f = feats[layer["label"].split(":")[0]][k].double().flatten(1)
                    assert_codes(decode(d["f"]).reshape(f.shape), f,
                                 decode(d["flo"])[:, None], decode(d["fhi"])[:, None])
                elif layer["view"] == "overlay":
                    assert_codes(decode(d["q"]), t.mean(0).flatten(), d["lo"], d["hi"])
                else:  # query and cross: one scale per query row
                    rows = t.reshape(-1, t.shape[-1])
                    assert_codes(decode(d["q"]).reshape(rows.shape), rows,
                                 decode(d["lo"])[:, None], decode(d["hi"])[:, None])
    views = {lay["label"]: lay["view"] for m in data["models"] for lay in m["layers"]}
    assert views["attn.block1:position"] == "query" and views["block1.attn:channel"] == "channel"
    assert views["attn.block1.attention:criss-cross#2"] == "cross"
    assert views["attn.block1.attention:criss-cross composed (2 passes)"] == "query"


@pytest.fixture(scope="module")
def budget_page(subjects, images, tmp_path_factory) -> Path:
    """SE and non-local with 1 KiB per image and map: the non-local rows of block 1 (64×64
    bytes) keep every second query in each direction, SE's block-1 features (32 channels of
    16×16) the 4 highest-weighted channels."""
    models = [ex.PageModel(subjects[m].title, subjects[m].model) for m in (SE, NONLOCAL)]
    return ex.explore_models(models, images, tmp_path_factory.mktemp("budget") / "page.html",
                             gradcam=False, map_budget=1024)


def test_maps_over_the_budget_keep_every_sth_query_and_the_top_channels(budget_page, subjects,
                                                                        images):
    se, nonlocal_ = page_json(budget_page)["models"]
    maps, feats = record(subjects[NONLOCAL].model, images.x)
    layer = next(lay for lay in nonlocal_["layers"] if lay["label"] == "attn.block1:position")
    assert layer["stride"] == 2
    centres = [r * 8 + c for r in (1, 3, 5, 7) for c in (1, 3, 5, 7)]  # each 2×2 block's
    for k in range(IMAGES):
        d, rows = layer["images"][k], maps["attn.block1:position"][k][centres].double()
        assert_codes(decode(d["q"]).reshape(rows.shape), rows, decode(d["lo"])[:, None],
                     decode(d["hi"])[:, None])
    maps, feats = record(subjects[SE].model, images.x, ["block1.attn"])
    layer = se["layers"][0]
    for k in range(IMAGES):
        d, w = layer["images"][k], maps["block1.attn:channel"][k]
        top = sorted(sorted(range(32), key=lambda c: -float(w[c]))[:4])
        assert decode(d["fch"]).tolist() == top
        f = feats["block1.attn"][k][top].double().flatten(1)
        assert_codes(decode(d["f"]).reshape(f.shape), f, decode(d["flo"])[:, None],
                     decode(d["fhi"])[:, None])


def grad_cam_by_hand(model, x, classes, layer: torch.nn.Module) -> np.ndarray:
    """Grad-CAM written out: weights = spatial mean of d(logit)/d(activation), ReLU of the
    weighted sum, bilinear to the image size, scaled to [0, 1] per image."""
    saved = {}
    handle = layer.register_forward_hook(lambda m, a, out: saved.update(a=out))
    logits = model(x)
    handle.remove()
    grads = torch.autograd.grad(logits[torch.arange(len(x)), torch.tensor(classes)].sum(),
                                saved["a"])[0]
    cam = F.relu((grads.mean((2, 3), keepdim=True) * saved["a"]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam - cam.amin((1, 2), keepdim=True)
    return (cam / (cam.amax((1, 2), keepdim=True) + 1e-7)).detach().numpy()


def test_grad_cam_of_the_predicted_and_true_class_matches_it_written_out(page, subjects, images):
    data = page_json(page)
    for m in (SE, NONLOCAL):
        model, cam = subjects[m].model, data["models"][m]["gradcam"]
        assert cam["layer"] == ("block3" if m == SE else "attn.block3")  # the last 4-D output
        predicted = [p[0] for p in data["models"][m]["predictions"]]
        modules = dict(model.named_modules())
        for key, classes in (("predicted", predicted), ("true", images.labels)):
            reference = grad_cam_by_hand(model, images.x, classes, modules[cam["layer"]])
            for k in range(IMAGES):
                if cam[key][k] is None:  # true class = predicted: stored once
                    assert key == "true" and classes[k] == predicted[k]
                    continue
                codes = decode(cam[key][k]).reshape(SIZE, SIZE).astype(float)
                np.testing.assert_allclose(codes / 255, reference[k], atol=1 / 255)


def test_grad_cam_layer_defaults_to_the_last_feature_map():
    import torchvision

    x = torch.randn(1, 3, 64, 64)  # layer4 2×2, then the global pool's 1×1
    assert ex.gradcam_layer(torchvision.models.resnet18(num_classes=3), x)[0] == "layer4"
    net = create_model("small_cnn", attention="se", num_classes=3)
    assert ex.gradcam_layer(net, x, "block2")[0] == "block2"
    with pytest.raises(ValueError, match="expected --gradcam-layer among"):
        ex.gradcam_layer(net, x, "block9")


def hostile_page(path: Path, images: ex.ExploreImages, model: torch.nn.Module) -> Path:
    shown = ex.ExploreImages(images.x[:3], images.display[:3], [0, 1, 2], [0, 1, 2],
                             (*HOSTILE, "owl & <b>"), "test", "<i>set</i>")
    return ex.explore_models([ex.PageModel('<img src=x onerror="window.pwned=3">', model,
                                           "runs/<b>bold</b>/best.pt")], shown, path,
                             title="<script>window.pwned=4</script>")


def test_the_page_is_self_contained_and_escapes_every_user_string(page, subjects, images,
                                                                   tmp_path):
    path = hostile_page(tmp_path / "hostile.html", images, subjects[SE].model)
    text = path.read_text(encoding="utf-8")
    assert text.count("</script>") == 2  # the data block's end and the script's end
    for raw in (*HOSTILE, "<b>", "<i>", "<img"):
        assert raw not in text
    assert "<title>&lt;script&gt;window.pwned=4&lt;/script&gt;</title>" in text
    data = page_json(path)  # the strings come back exactly
    assert data["classes"][:2] == list(HOSTILE) and data["dataset"] == "<i>set</i>"
    assert data["models"][0]["source"] == "runs/<b>bold</b>/best.pt"
    main_page = page.read_text(encoding="utf-8")
    start = main_page.index("id='attn2d-data'>")
    markup = main_page[:start] + main_page[main_page.index("</script>", start):]  # no data
    for forbidden in ("<link", "src=", "href=", "url(", "@import", "fetch(", "XMLHttpRequest"):
        assert forbidden not in markup
    assert "default-src 'none'" in markup  # and the browser may load nothing


def test_without_grad_cam_the_page_says_how_to_install_it(monkeypatch, subjects, images,
                                                          tmp_path):
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # importing it now fails
    shown = ex.ExploreImages(images.x[:2], images.display[:2], images.labels[:2], [0, 1],
                             images.classes)
    data = page_json(ex.explore_models([ex.PageModel("se", subjects[SE].model)], shown,
                                       tmp_path / "page.html"))
    assert ex.GRADCAM_HINT in data["gradcamNote"]
    assert data["models"][0]["gradcam"] is None and data["models"][0]["layers"]


# -- from checkpoints and comparisons, and the command line ---------------------------------------
@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> Path:
    from attn2d.comparison import compare
    from attn2d.training import TrainConfig

    data = tmp_path_factory.mktemp("fmnist")
    write_fashion_mnist(data / "FashionMNIST" / "raw", n_train=64, n_test=32, compressed=False)
    out = tmp_path_factory.mktemp("cmp")
    compare(["nonlocal"], TrainConfig(data_dir=str(data), epochs=1, batch_size=32,
                                      progress=False), seeds=1, out=out, in_process=True,
            costs=False)
    return out


def test_a_comparison_links_its_explore_page_and_the_cli_reads_its_runs(comparison, tmp_path,
                                                                      capsys):
    results = (comparison / "results.html").read_text(encoding="utf-8")
    assert '<a href="explore.html">' in results
    names = [m["name"] for m in page_json(comparison / "explore.html")["models"]]
    assert names == ["small_cnn + none", "small_cnn + nonlocal"]
    out = tmp_path / "cli.html"
    assert main(["explore", str(comparison), "--out", str(out), "--index", "3", "5"]) == 0
    data = page_json(out)
    assert [im["index"] for im in data["images"]] == [3, 5]
    assert [m["source"] for m in data["models"]] == [
        str(comparison / "runs" / f"{run}-seed0" / "best.pt") for run in ("none", "nonlocal")]
    run = comparison / "runs" / "nonlocal-seed0"
    assert main(["explore", str(run), str(run / "last.pt"), "--images", "2", "--out",
                 str(out), "--no-gradcam"]) == 0
    data = page_json(out)
    assert len(data["images"]) == 2 and data["gradcamNote"] == "Grad-CAM is switched off."
    assert [m["source"] for m in data["models"]] == [str(run / "best.pt"), str(run / "last.pt")]
    capsys.readouterr()


@pytest.mark.parametrize(("argv", "named"), [
    (["{cmp}", "--seed", "4"], "expected --seed among 0"),
    (["{cmp}", "--index", "99"], "expected --index values in 0..31"),
    (["{cmp}/nothing-here"], "expected a checkpoint, a run folder or a comparison folder"),
    (["{cmp}", "--attention", "se"], "got both"),
    (["{cmp}", "--gradcam-layer", "block9"], "expected --gradcam-layer among"),
])
def test_bad_arguments_end_in_one_line_that_names_them(comparison, tmp_path, capsys, argv,
                                                       named):
    argv = [a.replace("{cmp}", str(comparison)) for a in argv]
    assert main(["explore", *argv, "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attn2d explore: error: ") and named in err and "\n" not in err
    assert not (tmp_path / "x.html").exists()


def test_untrained_models_from_the_command_line(folder, tmp_path, capsys):
    out = tmp_path / "untrained.html"
    assert main(["explore", "--attention", "se,cbam(reduction=8, spatial_kernel=3)",
                 "--dataset", f"folder:{folder}", "--images", "50", "--out", str(out)]) == 0
    data = page_json(out)
    assert [m["name"] for m in data["models"]] == [
        "small_cnn + se (untrained)", "small_cnn + cbam(reduction=8, spatial_kernel=3) (untrained)"]
    assert len(data["images"]) == 9  # --images 50 clamps to the split's 9
    assert "MB)" in capsys.readouterr().out


# -- the page in a real browser --------------------------------------------------------------------
READY = "window.attn2dExplore && window.attn2dExplore.ready"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium"), width=1400, height=1100) as b:
        yield b


def open_page(browser, path: Path) -> None:
    browser.open(path, ready=READY)


def panel(browser, m: int):
    from selenium.webdriver.common.by import By

    return browser.driver.find_element(By.CSS_SELECTOR, f"section.panel[data-model='{m}']")


def part(element, selector: str):
    from selenium.webdriver.common.by import By

    return element.find_element(By.CSS_SELECTOR, selector)


def canvas_pixels(browser, canvas) -> np.ndarray:
    """(h, w, 4) RGBA of a canvas, read back from the page."""
    w, h, rgba = browser.run("const c = arguments[0]; return [c.width, c.height, Array.from("
                             "c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];",
                             canvas)
    return np.asarray(rgba, dtype=np.int64).reshape(h, w, 4)


def colour_codes(browser, rgba: np.ndarray) -> np.ndarray:
    """Each pixel's code 0..255 through the page's colour map, -1 where transparent; that
    map must be viridis (matplotlib's, within one unit) and take 256 distinct colours."""
    from matplotlib import colormaps

    lut = np.asarray(browser.run("return attn2dExplore.colormap")).reshape(256, 3)
    viridis = colormaps["viridis"](np.arange(256))[:, :3] * 255
    assert np.abs(lut - viridis).max() <= 1.5 and len({tuple(c) for c in lut}) == 256
    index = {tuple(c): q for q, c in enumerate(lut)}
    codes = np.array([[index.get(tuple(p[:3]), -2) if p[3] == 255 else -1 for p in row]
                      for row in rgba])
    assert (codes != -2).all() and np.isin(rgba[..., 3], (0, 255)).all()
    return codes


def press(browser, key: str, times: int = 1) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for _ in range(times):
        ActionChains(browser.driver).send_keys(key).perform()


def pointer(browser, stage, y: int, x: int, click: bool) -> None:
    """Move the real mouse to image pixel (y, x) of a panel (offsets from its centre)."""
    from selenium.webdriver.common.action_chains import ActionChains

    scale = stage.rect["width"] / SIZE
    dx = round((x + 0.5) * scale - stage.rect["width"] / 2)
    dy = round((y + 0.5) * scale - stage.rect["height"] / 2)
    chain = ActionChains(browser.driver).move_to_element_with_offset(stage, dx, dy)
    (chain.click() if click else chain).perform()


def test_the_page_opens_offline_with_no_error_and_no_request(browser, page):
    open_page(browser, page)
    assert browser.console_errors() == []
    assert browser.resources() == []  # nothing loaded beyond the file itself
    assert browser.run("return document.querySelectorAll('section.panel').length") == len(SPECS)


def test_clicking_a_pixel_shows_that_querys_non_local_row(browser, page, subjects, images):
    from selenium.webdriver.common.keys import Keys

    open_page(browser, page)
    press(browser, Keys.ARROW_RIGHT, 2)  # image 2
    y, x, k = 5, 11, 2
    stage = part(panel(browser, NONLOCAL), ".stage")
    pointer(browser, stage, y, x, click=True)
    codes = colour_codes(browser, canvas_pixels(browser, part(stage, "canvas.map")))
    maps, _ = record(subjects[NONLOCAL].model, images.x[k:k + 1])
    grid = maps["attn.block1:position"][0]  # (64, 64): 8×8 queries and keys
    i, j = y * 8 // SIZE, x * 8 // SIZE
    expected = grid[i * 8 + j].view(8, 8).double().numpy()
    assert codes.shape == (8, 8)
    np.testing.assert_array_less(np.abs(codes - expected / expected.max() * 255), 1.0)
    neighbour = grid[i * 8 + j + 1].view(8, 8).double().numpy()
    assert np.abs(codes - neighbour / neighbour.max() * 255).max() > 5  # it tells rows apart
    assert f"feature ({i}, {j}) of 8×8" in part(panel(browser, NONLOCAL), ".legend").text
    press(browser, Keys.ESCAPE)  # Esc releases the pin; hovering moves the query again
    pointer(browser, stage, 1, 2, click=False)
    assert "query pixel (1, 2) → feature (0, 1)" in part(panel(browser, NONLOCAL), ".legend").text
    assert browser.console_errors() == []


def test_a_criss_cross_panel_shows_only_the_querys_row_and_column(browser, page, subjects,
                                                                  images):
    open_page(browser, page)
    y, x = 9, 3
    stage = part(panel(browser, CROSS), ".stage")
    pointer(browser, stage, y, x, click=True)
    codes = colour_codes(browser, canvas_pixels(browser, part(stage, "canvas.map")))
    t = record(subjects[CROSS].model, images.x[:1])[0]["attn.block1.attention:criss-cross"][0]
    i, j = y * 8 // SIZE, x * 8 // SIZE
    on_cross = np.zeros((8, 8), bool)
    on_cross[i, :] = on_cross[:, j] = True
    assert ((codes >= 0) == on_cross).all()  # painted exactly on the row and the column
    weights = np.zeros((8, 8))
    for c in range(8):
        weights[i, c] += float(t[i, j, c])
    for r in range(8):
        weights[r, j] += float(t[i, j, 8 + r])  # zero at the centre: counted in the row
    expected = weights / max(weights.max(), 1e-12) * 255
    np.testing.assert_array_less(np.abs(codes - expected)[on_cross], 1.0)


def test_the_layer_selector_arrows_and_opacity_change_what_is_shown(browser, page, folder):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    open_page(browser, page)
    se = panel(browser, SE)
    bars = "return arguments[0].querySelectorAll('svg.bars rect').length"
    assert browser.run(bars, se) == 32
    Select(part(se, "select.layer")).select_by_value("1")  # block2.attn: 64 channels at 8×8
    assert browser.run(bars, se) == 64
    assert canvas_pixels(browser, part(se, "canvas.map")).shape[:2] == (8, 8)

    caption = part(browser.driver, "h2.caption")
    assert caption.text == f"test #0: {CLASS_NAMES[0]}"
    pictures = folder_pixels(folder)
    shown = canvas_pixels(browser, part(se, "canvas.map"))
    for key, k in ((Keys.ARROW_RIGHT, 1), (Keys.ARROW_RIGHT, 2), (Keys.ARROW_LEFT, 1)):
        press(browser, key)
        assert caption.text == f"test #{k}: {CLASS_NAMES[0]}"
        image = canvas_pixels(browser, part(se, "canvas.image"))
        np.testing.assert_array_equal(image[..., 0], pictures[k])  # grey: R = G = B
        before, shown = shown, canvas_pixels(browser, part(se, "canvas.map"))
        assert (before != shown).any()  # the map follows the image

    cbam_map = part(panel(browser, CBAM), "canvas.map")
    opacity = "return getComputedStyle(arguments[0]).opacity"
    assert browser.run(opacity, cbam_map) == "0.6"
    part(browser.driver, "input.opacity").send_keys(Keys.HOME)  # fully transparent
    assert browser.run(opacity, cbam_map) == "0"


def test_se_bars_are_sorted_like_the_weights_and_a_click_shows_that_channel(browser, page,
                                                                            subjects, images):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    open_page(browser, page)
    se = panel(browser, SE)
    maps, feats = record(subjects[SE].model, images.x[:1], ["block1.attn"])
    w = maps["block1.attn:channel"][0]
    order = sorted(range(32), key=lambda c: -float(w[c]))
    rects = se.find_elements(By.CSS_SELECTOR, "svg.bars rect")
    assert [int(r.get_attribute("data-channel")) for r in rects] == order
    ActionChains(browser.driver).move_to_element(rects[3]).perform()  # hover names it
    assert part(se, ".info").text.startswith(f"channel {order[3]}: ")
    rects[3].click()
    codes = colour_codes(browser, canvas_pixels(browser, part(se, "canvas.map")))
    f = feats["block1.attn"][0][order[3]].double()  # (16, 16) input of the gate
    expected = (f - f.min()) / (f.max() - f.min()) * 255
    np.testing.assert_array_less(np.abs(codes - expected.numpy()), 1.0)


def test_over_the_budget_a_click_shows_the_nearest_stored_query(browser, budget_page,
                                                                 subjects, images):
    open_page(browser, budget_page)
    stage = part(panel(browser, 1), ".stage")
    pointer(browser, stage, 5, 11, click=True)  # feature (2, 5): its 2×2 block keeps (3, 5)
    codes = colour_codes(browser, canvas_pixels(browser, part(stage, "canvas.map")))
    row = record(subjects[NONLOCAL].model, images.x[:1])[0]["attn.block1:position"][0][3 * 8 + 5]
    expected = (row / row.max() * 255).view(8, 8).double().numpy()
    np.testing.assert_array_less(np.abs(codes - expected), 1.0)
    assert "feature (3, 5) of 8×8 (the nearest stored query" in part(panel(browser, 1),
                                                                    ".legend").text
    from selenium.webdriver.common.by import By

    rects = panel(browser, 0).find_elements(By.CSS_SELECTOR, "svg.bars rect")
    rects[10].click()  # not among the 4 stored feature maps
    assert "is not stored (the page keeps the 4 highest-weighted)" in part(
        panel(browser, 0), ".legend").text
    assert canvas_pixels(browser, part(panel(browser, 0), "canvas.map"))[..., 3].max() == 0
    assert browser.console_errors() == []


def test_hostile_names_render_as_text_and_run_nothing(browser, page, subjects, images,
                                                      tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.keys import Keys

    hostile = hostile_page(tmp_path / "hostile.html", images, subjects[SE].model)
    for path, expected in ((page, HOSTILE_FOLDER), (hostile, HOSTILE[0])):
        open_page(browser, path)
        assert part(browser.driver, "h2.caption").text == f"test #0: {expected}"
        assert browser.run("return window.pwned") is None
        assert browser.run("return document.querySelectorAll('#app img, #app b, #app i, "
                           "#app script').length") == 0
        with pytest.raises(NoAlertPresentException):
            browser.driver.switch_to.alert.text  # noqa: B018
        assert browser.console_errors() == [] and browser.resources() == []
    press(browser, Keys.ARROW_RIGHT)
    assert part(browser.driver, "h2.caption").text == f"test #1: {HOSTILE[1]}"
    assert part(panel(browser, 0), "h3").text == '<img src=x onerror="window.pwned=3">'
    assert browser.run("return document.title") == "<script>window.pwned=4</script>"


def test_a_screenshot_shows_the_panels(browser, page, tmp_path):
    open_page(browser, page)
    shot = Image.open(browser.screenshot(tmp_path / "explore.png")).convert("RGB")
    assert shot.size[0] >= 1000 and len(shot.getcolors(maxcolors=1 << 20)) > 100


def test_without_a_browser_the_tests_skip_with_one_line_unless_one_is_required(monkeypatch):
    from .. import browser

    monkeypatch.setattr(browser, "BINARIES", ("/nonexistent/chromium",))
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    problem = browser.browser_problem()
    assert problem and "\n" not in problem and "not installed" in problem
    monkeypatch.delenv("ATTN2D_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        browser.require_browser()
    monkeypatch.setenv("ATTN2D_REQUIRE_BROWSER", "1")  # make test on CI: a failure instead
    with pytest.raises(pytest.fail.Exception, match="ATTN2D_REQUIRE_BROWSER=1"):
        browser.require_browser()
