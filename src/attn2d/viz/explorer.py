"""``attn2d explore``: one self-contained HTML page of attention maps, models side by side.

For each of a few images of a dataset split, one panel per model (checkpoints, the runs of a
comparison, or untrained models) with the true class, the model's prediction and confidence,
and the maps its mechanisms apply, as recorded by :class:`~attn2d.capture.AttentionRecorder`:

- position attention (non-local, DANet's PAM, criss-cross, RCCA): hover or click a pixel and
  every panel shows that query's weights at the corresponding feature position over the
  image (criss-cross: its row and column; RCCA also the composition of its two passes,
  see :func:`~attn2d.viz.maps.compose_criss_cross`);
- channel gates (SE, ECA, CBAM's channel gate): sorted bars; a bar names its channel, and a
  click shows that channel's feature map (the mechanism's input);
- spatial, element-wise, height and width gates (CBAM, BAM, GC's attention pooling, coordinate,
  triplet, SimAM): overlays over the image, averaged over channels, with an opacity slider;
- DANet's channel affinity as a C×C matrix; CBAM-dynamic's branch weights as bars;
- Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391) for the predicted and the true
  class, through the ``grad-cam`` package (``pip install 'attn2d[explore]'``; without it
  the page says so and shows the rest).

The page needs no network: its script, style and data are inline, and a Content-Security-
Policy forbids any load. Maps are quantised to uint8 (per map, or per query row for position
maps, between the stored low and high values) and embedded as base64 in one JSON block whose
``<`` ``>`` ``&`` are escaped, so no string from the data can end the block; the script puts
every string into the page as text, never as HTML.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._base.errors import Attn2dError
from .._base.io import write_atomic
from ..data import DataSpec, dataset_info, denormalize, get_dataset
from ..modules import AttentionMap
from ..modules.capture import AttentionRecorder, FeatureRecorder, MapRecord, attention_maps
from . import maps as M
from .pictures import Subject, load_subject, mechanism_paths

__all__ = [
    "GRADCAM_HINT",
    "MAP_BUDGET",
    "ExploreImages",
    "PageModel",
    "explore",
    "explore_models",
    "gradcam_layer",
    "load_images",
    "page_data",
    "resolve_sources",
    "write_page",
]

PathLike = str | os.PathLike[str]
GRADCAM_HINT = "pip install 'attn2d[explore]'"
_CHUNK = 16  # images per forward pass: bounds the N×N position maps held at once
# Bytes per image and map at most: a larger position map keeps every s-th query (all its
# keys), a larger feature stack the highest-weighted channels. The small CNN's all fit.
MAP_BUDGET = 1 << 18


@dataclass
class ExploreImages:
    """The images a page shows and what to call them.

    Attributes:
        x: (N, C, H, W) normalised model inputs.
        display: the same images in [0, 1].
        labels: true class of each image.
        indices: each image's index in its split.
        classes: class names.
        split: the split's name, for captions.
        dataset: the dataset's name, for captions.
    """

    x: Tensor
    display: Tensor
    labels: list[int]
    indices: list[int]
    classes: Sequence[str]
    split: str = "test"
    dataset: str = ""


@dataclass
class PageModel:
    """One model on the page: its name (panel title), the module, and where it came from."""

    name: str
    model: nn.Module
    source: str = ""


# -- where the models and images come from ----------------------------------------------------
def _run_checkpoint(run_dir: Path) -> Path | None:
    return next((run_dir / n for n in ("best.pt", "last.pt") if (run_dir / n).is_file()), None)


def resolve_sources(sources: Sequence[PathLike], seed: int = 0) -> list[Path]:
    """The checkpoint of each source, in order.

    A source is a checkpoint file, a run folder (``attn2d train --out``: its ``best.pt``,
    else ``last.pt``) or a comparison folder (``attn2d compare --out``: one run per
    mechanism of ``comparison.json``, the one with seed ``seed``).
    """
    found: list[Path] = []
    for source in map(Path, sources):
        if source.is_file():
            found.append(source)
        elif (source / "comparison.json").is_file():
            found += _comparison_checkpoints(source, seed)
        elif source.is_dir() and _run_checkpoint(source) is not None:
            found.append(_run_checkpoint(source))  # type: ignore[arg-type]
        else:
            why = "no checkpoint or comparison.json in it" if source.is_dir() else "no such file"
            raise Attn2dError(f"expected a checkpoint, a run folder or a "
                              f"comparison folder, got {source} ({why})")
    return found


def _comparison_checkpoints(folder: Path, seed: int) -> list[Path]:
    comparison = json.loads((folder / "comparison.json").read_text())
    seeds = [int(s) for s in comparison.get("seeds", [])]
    if seeds and seed not in seeds:
        raise Attn2dError(f"expected --seed among {', '.join(map(str, seeds))} "
                          f"(the seeds of {folder}), got {seed}")
    runs: dict[tuple[str, int], Path] = {}
    for config_path in sorted((folder / "runs").glob("*/config.json")):
        config = json.loads(config_path.read_text())
        runs[(config.get("attention") or "none", int(config.get("seed", 0)))] = config_path.parent
    found = []
    for spec in comparison["specs"]:
        run_dir = runs.get((spec, seed))
        checkpoint = _run_checkpoint(run_dir) if run_dir is not None else None
        if checkpoint is None:
            raise Attn2dError(f"expected a trained run of {spec} with seed {seed} "
                              f"in {folder}, got {'no run' if run_dir is None else run_dir}"
                              f"{'' if run_dir is None else ' without best.pt or last.pt'}")
        found.append(checkpoint)
    return found


def load_images(data: DataSpec | str, split: str = "test", images: int = 16,
                indices: Sequence[int] | None = None) -> ExploreImages:
    """Images ``indices`` of ``split`` (default its first ``images``, at most all), without
    augmentation."""
    spec = data if isinstance(data, DataSpec) else DataSpec(data)
    info = dataset_info(spec)
    ds = get_dataset(spec, split, augment=False)
    if indices is None:
        if images < 1:
            raise Attn2dError(f"expected --images >= 1, got {images}")
        indices = range(min(images, len(ds)))
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < len(ds)]
    if bad or not indices:
        raise Attn2dError(f"expected --index values in 0..{len(ds) - 1} (the "
                          f"{split} split), got {bad or 'none'}")
    pairs = [ds[i] for i in indices]
    x = torch.stack([p[0] for p in pairs])
    return ExploreImages(x, denormalize(x, info), [int(p[1]) for p in pairs], indices,
                         tuple(info.classes), split, info.name)


def explore(
    sources: Sequence[PathLike | Subject],
    out: PathLike,
    *,
    seed: int = 0,
    split: str = "test",
    images: int = 16,
    indices: Sequence[int] | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    gradcam: bool = True,
    gradcam_layer: str | None = None,
    title: str | None = None,
) -> Path:
    """Write the page for ``sources`` to ``out``; returns its path.

    Args:
        sources: checkpoints, run folders, comparison folders (see :func:`resolve_sources`)
            or :class:`~attn2d.viz.report.Subject` objects (e.g. an untrained model from
            :func:`~attn2d.viz.report.load_subject`). All must share one dataset.
        out: the HTML file to write.
        seed: the runs of a comparison folder to show.
        split, images, indices: which images (see :func:`load_images`).
        dataset, data_dir: override the checkpoints' dataset or its folder.
        gradcam: add Grad-CAM maps when the ``grad-cam`` package is installed.
        gradcam_layer: module path of Grad-CAM's layer (default: see :func:`gradcam_layer`).
        title: the page's heading (default ``"attn2d explore"``).
    """
    subjects: list[tuple[Subject, str]] = []
    for source in sources:
        if isinstance(source, Subject):
            subjects.append((source, ""))  # its title says what it is
            continue
        for checkpoint in resolve_sources([source], seed):
            subjects.append((load_subject(checkpoint, dataset=dataset, data_dir=data_dir),
                             str(checkpoint)))
    if not subjects:
        raise Attn2dError("expected at least one checkpoint, run or comparison "
                          "folder, got none")
    first = subjects[0][0]
    for subject, where in subjects[1:]:
        if subject.data.dataset != first.data.dataset:
            raise Attn2dError(f"expected models of one dataset, got "
                              f"{first.data.dataset} ({subjects[0][1] or first.title}) and "
                              f"{subject.data.dataset} ({where or subject.title}); pass --dataset")
    shown = load_images(first.data, split, images, indices)
    models = [PageModel(s.title, s.model, where) for s, where in subjects]
    return explore_models(models, shown, out, gradcam=gradcam, gradcam_layer=gradcam_layer,
                          title=title)


def explore_models(models: Sequence[PageModel], images: ExploreImages, out: PathLike, *,
                   gradcam: bool = True, gradcam_layer: str | None = None,
                   title: str | None = None, map_budget: int = MAP_BUDGET) -> Path:
    """The page of ``models`` on ``images`` (see :func:`page_data`), written to ``out``."""
    return write_page(page_data(models, images, gradcam=gradcam, gradcam_layer=gradcam_layer,
                                title=title, map_budget=map_budget), out)


# -- maps to quantised arrays -------------------------------------------------------------------
def _encode(array: np.ndarray | Tensor) -> str:
    """``"<type>:<base64>"`` of a uint8, uint16 or float32 array (little-endian, C order)."""
    a = array.numpy() if isinstance(array, Tensor) else np.asarray(array)
    kind = {np.uint8: "u8", np.uint16: "u16", np.float32: "f32"}[a.dtype.type]
    data = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False)).tobytes()
    return f"{kind}:{base64.b64encode(data).decode('ascii')}"


def _quantise(t: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """uint8 codes of ``t`` between ``lo`` (0) and ``hi`` (255), broadcast; a flat span
    gives 0. Decoding ``lo + code / 255 · (hi − lo)`` is within half a step of ``t``."""
    span = hi - lo
    scaled = torch.where(span > 0, (t - lo) / torch.where(span > 0, span, 1), 0)
    return (scaled * 255).round().clamp(0, 255).to(torch.uint8)


def _per_map(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Codes of each image's map (dim 0 = image) between its own min and max."""
    flat = t.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return _quantise(flat, lo, hi), lo[:, 0], hi[:, 0]


def _per_row(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Codes of each row of the last dim between min(0, row min) and max(0, row max):
    softmax rows keep 0 as their floor, so a cell shows its share of the row's largest."""
    lo, hi = t.amin(-1, keepdim=True).clamp(max=0), t.amax(-1, keepdim=True).clamp(min=0)
    return _quantise(t, lo, hi), lo[..., 0], hi[..., 0]


def _number(v: Tensor | float) -> float:
    return float(f"{float(v):.6g}")


def _scalars(lo: Tensor, hi: Tensor, i: int) -> dict[str, float]:
    return {"lo": _number(lo[i]), "hi": _number(hi[i])}


def _rows(codes: Tensor, lo: Tensor, hi: Tensor, i: int) -> dict[str, str]:
    return {"q": _encode(codes[i].flatten()), "lo": _encode(lo[i].flatten().float()),
            "hi": _encode(hi[i].flatten().float())}


def _layer(r: MapRecord, mechanism: str, features: Tensor | None, budget: int
           ) -> dict[str, Any] | None:
    """One selectable view of a recorded map (all images), or None for an unknown kind."""
    t = r.tensor.float()
    n = t.shape[0]
    base: dict[str, Any] = {"label": r.label, "mechanism": mechanism, "kind": r.kind}
    if r.kind == "channel":
        codes, lo, hi = _per_map(t)
        order = torch.argsort(t, dim=1, descending=True, stable=True).to(torch.int32)
        entries = [{"q": _encode(codes[i]), **_scalars(lo, hi, i),
                    "order": _encode(order[i].numpy().astype(np.uint16))} for i in range(n)]
        if features is not None:  # the input that the gate scales, one map per channel
            f = features.float().flatten(2)
            keep = min(f.shape[1], max(1, budget // f.shape[2]))  # the highest weights'
            kept = order[:, :keep].sort(dim=1).values
            f = f.gather(1, kept[..., None].long().expand(-1, -1, f.shape[2]))
            flo, fhi = f.amin(-1), f.amax(-1)
            fcodes = _quantise(f, flo[..., None], fhi[..., None])
            base["grid"] = [int(features.shape[2]), int(features.shape[3])]
            for i, entry in enumerate(entries):
                entry.update(f=_encode(fcodes[i].flatten()), flo=_encode(flo[i]),
                             fhi=_encode(fhi[i]))
                if keep < t.shape[1]:
                    entry["fch"] = _encode(kept[i].numpy().astype(np.uint16))
        return {**base, "view": "channel", "channels": int(t.shape[1]), "images": entries}
    if r.kind in ("spatial", "elementwise", "height", "width"):
        picture = t.mean(1)  # over channels, as attn2d.viz.maps.gate_picture
        codes, lo, hi = _per_map(picture)
        return {**base, "view": "overlay", "grid": list(picture.shape[1:]),
                "images": [{"q": _encode(codes[i]), **_scalars(lo, hi, i)} for i in range(n)]}
    if r.kind == "channel-affinity":
        codes, lo, hi = _per_map(t)
        return {**base, "view": "matrix", "grid": list(t.shape[1:]),
                "images": [{"q": _encode(codes[i]), **_scalars(lo, hi, i)} for i in range(n)]}
    if r.kind == "position":
        grid = r.feature_size or (math.isqrt(int(t.shape[1])),) * 2  # unknown: square
        return _query_layer(base, t, grid, M.key_grid(int(t.shape[2]), grid), budget)
    if r.kind == "criss-cross":
        codes, lo, hi = _per_row(t)
        return {**base, "view": "cross", "grid": list(t.shape[1:3]),
                "images": [_rows(codes, lo, hi, i) for i in range(n)]}
    if r.kind == "mixture":  # (passes, K): the same softmax over branches every pass
        w = t.reshape(-1, t.shape[-1])[:1]
        codes, lo, hi = _per_map(w)
        return {**base, "view": "bars", "channels": int(w.shape[1]),
                "shared": {"q": _encode(codes[0]), **_scalars(lo, hi, 0)}}
    return None


def _query_layer(base: dict[str, Any], t: Tensor, grid: Sequence[int], keys: Sequence[int],
                 budget: int) -> dict[str, Any]:
    """(N, Nq, Nk) rows; beyond ``budget`` bytes per image only the query at the centre of
    each s×s block of the grid is kept (row-major over the blocks)."""
    h, w = (int(g) for g in grid)
    stride = 1
    while math.ceil(h / stride) * math.ceil(w / stride) * t.shape[2] > budget and \
            stride < max(h, w):
        stride += 1
    if stride > 1:
        rows = [min(h - 1, a * stride + stride // 2) for a in range(math.ceil(h / stride))]
        cols = [min(w - 1, b * stride + stride // 2) for b in range(math.ceil(w / stride))]
        t = t[:, [r * w + c for r in rows for c in cols]]
    codes, lo, hi = _per_row(t)
    return {**base, "view": "query", "grid": [h, w], "keys": list(keys), "stride": stride,
            "images": [_rows(codes, lo, hi, i) for i in range(t.shape[0])]}


def _composed(passes: Sequence[MapRecord], mechanism: str, budget: int) -> dict[str, Any]:
    """RCCA: every query's map after all passes, ``A_R ⋯ A_1`` of the dense pass matrices
    (the rows :func:`~attn2d.viz.maps.compose_criss_cross` gives one at a time)."""
    first = passes[0]
    h, w = (int(s) for s in first.tensor.shape[1:3])
    rows = []
    for i in range(first.tensor.shape[0]):
        dense = M.criss_cross_dense(passes[-1].tensor[i].double())
        for p in reversed(passes[:-1]):
            dense = dense @ M.criss_cross_dense(p.tensor[i].double())
        rows.append(dense.float())
    label = first.label.split("#")[0] + f" composed ({len(passes)} passes)"
    base = {"label": label, "mechanism": mechanism, "kind": "criss-cross"}
    return _query_layer(base, torch.stack(rows), (h, w), (h, w), budget)


# -- running the models --------------------------------------------------------------------------
def _record(model: nn.Module, x: Tensor, channel_paths: Sequence[str]
            ) -> tuple[Tensor, list[MapRecord], dict[str, Tensor]]:
    """Logits, every map (all images joined) and the inputs of the channel-gate modules."""
    device = next(model.parameters(), x).device
    chunks = [x[s:s + _CHUNK].to(device) for s in range(0, len(x), _CHUNK)]
    with AttentionRecorder(model) as rec, \
            FeatureRecorder(model, channel_paths, inputs=True) as feats, torch.no_grad():
        logits = torch.cat([model(chunk).cpu() for chunk in chunks])
    features = {p: torch.cat(v) for p, v in feats.features.items() if len(v) == len(chunks)}
    return logits, rec.merged(), features


def _layers(model: nn.Module, records: list[MapRecord], features: dict[str, Tensor],
            budget: int) -> list[dict[str, Any]]:
    owner = {parent: mech for mech, parents in mechanism_paths(model).items()
             for parent in parents}
    layers, passes = [], {}
    for r in records:
        mech = owner.get(r.path, r.path)
        layer = _layer(r, mech, features.get(r.path) if r.kind == "channel" else None, budget)
        if layer is not None:
            layers.append(layer)
        if r.kind == "criss-cross":
            passes.setdefault((r.path, r.name), []).append(r)
    for group in passes.values():
        if len(group) > 1:  # RCCA: also the composition, after its last pass
            last = max(i for i, layer in enumerate(layers) if layer["label"] == group[-1].label)
            mech = owner.get(group[0].path, group[0].path)
            layers.insert(last + 1, _composed(group, mech, budget))
    return layers


def gradcam_layer(model: nn.Module, example: Tensor, path: str | None = None
                  ) -> tuple[str, nn.Module]:
    """Grad-CAM's layer: ``path`` if given, else the last module to finish with a 4-D output
    of more than one position on ``example`` (a batch), i.e. the last feature map before
    the classifier's pooling: the last stage of a backbone, with its attention when placed
    after it; ``layer4`` of a torchvision ResNet."""
    modules = dict(model.named_modules())
    if path is not None:
        if path not in modules:
            raise Attn2dError(f"expected --gradcam-layer among the model's "
                              f"module paths (e.g. {', '.join(list(modules)[1:4])}), got {path!r}")
        return path, modules[path]
    finished: list[str] = []

    def hook(name: str):
        def note(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, Tensor) and output.dim() == 4 and output[0, 0].numel() > 1:
                finished.append(name)  # a feature map, not a global pool's 1×1
        return note

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()
               if n and not isinstance(m, AttentionMap)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example.to(next(model.parameters(), example).device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if not finished:
        raise Attn2dError("expected a model with 4-D feature maps for Grad-CAM, "
                          "got none; pass --gradcam-layer")
    return finished[-1], modules[finished[-1]]


def _gradcam(model: nn.Module, images: ExploreImages, predicted: list[int],
             layer_path: str | None) -> dict[str, Any]:
    """Grad-CAM of the predicted and the true class of every image, uint8 at image size."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    path, layer = gradcam_layer(model, images.x[:1], layer_path)
    result: dict[str, Any] = {"layer": path}
    with GradCAM(model=model, target_layers=[layer]) as cam:
        for key, classes in (("predicted", predicted), ("true", images.labels)):
            maps = np.concatenate([
                cam(input_tensor=images.x[s:s + _CHUNK],
                    targets=[ClassifierOutputTarget(c) for c in classes[s:s + _CHUNK]])
                for s in range(0, len(classes), _CHUNK)])
            codes = np.clip(np.round(maps * 255), 0, 255).astype(np.uint8)
            result[key] = [None if key == "true" and classes[i] == predicted[i]
                           else _encode(codes[i]) for i in range(len(classes))]
    model.zero_grad(set_to_none=True)
    return result


def _model_data(page_model: PageModel, images: ExploreImages, cam: bool,
                cam_layer: str | None, budget: int) -> dict[str, Any]:
    model = page_model.model
    was_training = model.training
    model.eval()
    try:
        channel_paths = list(dict.fromkeys(p for p, _, tap in attention_maps(model)
                                           if tap.kind == "channel"))
        logits, records, features = _record(model, images.x, channel_paths)
        probs = logits.float().softmax(-1)
        predicted = [int(p) for p in probs.argmax(-1)]
        entry: dict[str, Any] = {
            "name": page_model.name, "source": page_model.source,
            "predictions": [[p, _number(probs[i, p]), _number(probs[i, y])]
                            for i, (p, y) in enumerate(zip(predicted, images.labels))],
            "layers": _layers(model, records, features, budget), "gradcam": None,
            "gradcamNote": None}
        if cam:
            try:
                entry["gradcam"] = _gradcam(model, images, predicted, cam_layer)
            except ValueError as err:
                if cam_layer is not None:
                    raise
                entry["gradcamNote"] = str(err)
        return entry
    finally:
        model.train(was_training)


# -- the page -------------------------------------------------------------------------------------
def _colormap() -> np.ndarray:
    """viridis as 256 distinct 8-bit colours (two entries coincide after rounding; their
    blue moves by one), so a canvas pixel tells its code."""
    from matplotlib import colormaps

    lut = np.round(colormaps["viridis"](np.arange(256))[:, :3] * 255).astype(np.int64)
    seen: set[tuple[int, ...]] = set()
    for colour in lut:
        while tuple(colour) in seen:
            colour[2] += 1 if colour[2] < 255 else -1
        seen.add(tuple(colour))
    return lut.astype(np.uint8)


def page_data(models: Sequence[PageModel], images: ExploreImages, *, gradcam: bool = True,
              gradcam_layer: str | None = None, title: str | None = None,
              map_budget: int = MAP_BUDGET) -> dict[str, Any]:
    """Everything the page shows, JSON-ready: images, predictions, quantised maps (each at
    most ``map_budget`` bytes per image, see :data:`MAP_BUDGET`)."""
    if not models:
        raise Attn2dError("expected at least one model, got none")
    note = None if gradcam else "Grad-CAM is switched off."
    if gradcam:
        try:
            import pytorch_grad_cam  # noqa: F401
        except ImportError:
            note = f"Grad-CAM is not shown: the grad-cam package is not installed ({GRADCAM_HINT})."
    pixels = (images.display * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    n, h, w, c = pixels.shape
    return {
        "title": title or "attn2d explore",
        "dataset": images.dataset, "split": images.split, "classes": list(images.classes),
        "colormap": _encode(_colormap()),
        "image": {"channels": int(c), "height": int(h), "width": int(w)},
        "images": [{"index": images.indices[i], "label": images.labels[i],
                    "pixels": _encode(pixels[i].contiguous())} for i in range(n)],
        "gradcamNote": note,
        "models": [_model_data(m, images, note is None, gradcam_layer, map_budget)
                   for m in models],
    }


def _asset(name: str) -> str:
    return (resources.files("attn2d.viz") / name).read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&`` as
    ``\\u`` escapes, so neither ``</script>`` nor ``<!--`` can occur."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src data:")


def write_page(data: dict[str, Any], out: PathLike) -> Path:
    """The self-contained page for ``data`` (from :func:`page_data`), written atomically."""
    script, style = _asset("explore.js"), _asset("explore.css")
    if "</" in script or "</" in style:  # would end the inline block early
        raise RuntimeError("explore.js / explore.css must not contain '</'")
    page = "\n".join([
        "<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(str(data['title']))}</title>",
        f"<style>{style}</style></head><body>",
        "<noscript>This page draws its maps with JavaScript; please enable it.</noscript>",
        "<div id='app'></div>",
        f"<script type='application/json' id='attn2d-data'>{_script_json(data)}</script>",
        f"<script>{script}</script>", "</body></html>"])
    return write_atomic(Path(out), page)
