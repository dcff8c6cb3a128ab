"""Every picture for one image: what ``attn2d visualize`` writes.

For each attention mechanism in the model (the outermost registered mechanism around each
:class:`~attn2d.AttentionMap`), the pictures its maps allow:

- ``channel``: sorted weight bars, and the top channels of its input ranked by weight;
- ``spatial`` / ``elementwise`` / ``height`` / ``width``: the map (mean over channels)
  over the image;
- ``position``: where the query pixel looks; ``criss-cross``: the same per pass and, for
  RCCA, the composition of the passes (see :func:`~attn2d.viz.maps.compose_criss_cross`);
- ``channel-affinity``: the C×C matrix; ``mixture``: the branch weights;
- always: a grid of the mechanism's input features, and top channels by mean activation
  when the mechanism has no channel weights.

Then histograms of every map over a sample of images, with their statistics, and the
training curves when a ``metrics.jsonl`` is given.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .._base.errors import Attn2dError
from .._base.log import plural
from .._base.validate import check_int
from ..data import DataSpec, dataset_info, denormalize, get_dataset
from ..modules.capture import AttentionRecorder, FeatureRecorder, MapRecord, attention_maps
from ..modules.registry import outermost_mechanisms
from ..tools.map_stats import collect_attention_stats
from . import maps as M
from . import plots

__all__ = [
    "PICTURES",
    "Example",
    "Subject",
    "gallery_pictures",
    "load_subject",
    "mechanism_paths",
    "sample_batches",
    "visualize",
    "visualize_example",
]

PathLike = str | os.PathLike[str]
log = logging.getLogger(__name__)


@dataclass
class Example:
    """One input image and what to call it.

    Attributes:
        x: the normalised (C, H, W) model input.
        display: the same image in [0, 1] for plotting.
        caption: e.g. ``"#7 Trouser"``.
        classes: class names, to name the model's prediction.
    """

    x: Tensor
    display: Tensor
    caption: str
    classes: Sequence[str] | None = None


def mechanism_paths(model: nn.Module) -> dict[str, list[str]]:
    """``mechanism path -> [parent paths of its maps]``: each map is grouped under its
    outermost registered mechanism (DANet's two branches under the DANet block), or under
    its own parent when no registered mechanism contains it."""
    outermost = [path for path, _ in outermost_mechanisms(model)]
    groups: dict[str, list[str]] = {}
    for parent, _, _ in attention_maps(model):
        owner = next((p for p in outermost if p in ("", parent) or parent.startswith(f"{p}.")),
                     parent)
        groups.setdefault(owner, [])
        if parent not in groups[owner]:
            groups[owner].append(parent)
    return groups


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path) or "model"


def _feature_cell(query: tuple[int, int], image: tuple[int, int], grid: tuple[int, int]
                  ) -> tuple[int, int]:
    return (min(grid[0] - 1, query[0] * grid[0] // image[0]),
            min(grid[1] - 1, query[1] * grid[1] // image[1]))


PICTURES = ("channel", "spatial", "query", "affinity", "mixture", "features", "top-channels",
            "histograms", "curves")
_PICTURE_OF_KIND = {"channel": "channel", "spatial": "spatial", "elementwise": "spatial",
                    "height": "spatial", "width": "spatial", "position": "query",
                    "criss-cross": "query", "channel-affinity": "affinity",
                    "mixture": "mixture"}


class _Writer:
    """Numbers and writes the files of one run, skipping pictures not asked for."""

    def __init__(self, out_dir: PathLike, pictures: Sequence[str] | None, prefix: str) -> None:
        self.out = Path(out_dir)
        self.pictures = None if pictures is None else frozenset(pictures)
        self.prefix = f"{prefix}-" if prefix else ""
        self.written: list[Path] = []

    def wants(self, picture: str) -> bool:
        return self.pictures is None or picture in self.pictures

    def __call__(self, picture: str, name: str, fig_maker, *args, **kwargs) -> None:
        if not self.wants(picture):
            return
        path = self.out / f"{self.prefix}{len(self.written) + 1:02d}-{name}.png"
        fig_maker(*args, path=path, **kwargs)
        self.written.append(path)


def visualize_example(
    model: nn.Module,
    example: Example,
    out_dir: PathLike,
    *,
    query: tuple[int, int] | None = None,
    sample: Sequence[Tensor] | None = None,
    metrics: Sequence[PathLike] = (),
    top_k: int = 4,
    grid_k: int = 16,
    title: str = "",
    layers: Sequence[str] | None = None,
    pictures: Sequence[str] | None = None,
    prefix: str = "",
    save_maps: PathLike | None = None,
    index: int = 0,
    strict: bool = True,
) -> list[Path]:
    """Write every applicable picture for one image; returns the PNG paths in order.

    Args:
        model: the model (put in eval mode for the pass, its mode restored after).
        example: the image.
        out_dir: folder for the PNG files (created).
        query: (row, column) of the query pixel in image pixels for position and
            criss-cross maps; default the centre.
        sample: batches of normalised images for the weight histograms; none: no histograms.
        metrics: ``metrics.jsonl`` files for training curves.
        top_k: channels in the top-channel pictures.
        grid_k: channels in the feature grids.
        title: prefix of every figure title (e.g. the model and mechanism).
        layers: draw only these mechanisms (paths as in :func:`mechanism_paths`, e.g.
            ``"layer3.1.attn"``); default all. Histograms still cover every map.
        pictures: draw only these kinds of picture (see :data:`PICTURES`); default all.
        prefix: file-name prefix, so several runs can share one folder.
        save_maps: also write every captured map of the image to this ``.npz`` (see
            :meth:`attn2d.capture.AttentionRecorder.save`), with ``index`` as its input index.
        index: the image's index in its dataset, recorded with the saved maps.
        strict: refuse ``pictures`` this model cannot give (naming those it can); with
            ``False`` they are skipped.
    """
    if example.x.dim() != 3:
        raise Attn2dError(f"visualize_example: expected a (C, H, W) image, got shape "
                          f"{tuple(example.x.shape)}")
    if pictures is not None and set(pictures) - set(PICTURES):
        raise Attn2dError(f"visualize: expected pictures among {', '.join(PICTURES)}, got "
                          f"{sorted(set(pictures) - set(PICTURES))}")
    size = (int(example.x.shape[1]), int(example.x.shape[2]))
    query = query if query is not None else (size[0] // 2, size[1] // 2)
    if not (0 <= query[0] < size[0] and 0 <= query[1] < size[1]):
        raise Attn2dError(f"visualize_example: expected a query pixel inside the {size[0]}×"
                          f"{size[1]} image, got {tuple(query)}")
    groups = mechanism_paths(model)
    stages = list(getattr(model, "stage_names", ())) if not groups else []
    if layers is not None:
        unknown = [p for p in layers if p not in groups and p not in stages]
        if unknown:
            valid = ", ".join([*groups, *stages]) or "(none)"
            raise Attn2dError(f"visualize: expected layers among {valid}, got {unknown}")
        stages = [p for p in stages if p in layers]
    drawn = [p for p in groups if layers is None or p in layers]
    was_training = model.training
    model.eval()
    try:
        with AttentionRecorder(model) as rec, \
                FeatureRecorder(model, list(groups), inputs=True) as feats, \
                FeatureRecorder(model, stages) as stage_feats, torch.no_grad():
            logits = model(example.x[None])
    finally:
        model.train(was_training)
    if save_maps is not None:
        rec.save(save_maps, indices=[index])
    if strict:
        _check_pictures(pictures, _allowed_pictures(rec.records, groups, stages, metrics))
    caption = example.caption
    if isinstance(logits, Tensor) and logits.dim() == 2:
        p = logits.softmax(-1)[0]
        pred = int(p.argmax())
        name = example.classes[pred] if example.classes else str(pred)
        caption += f"\npredicted {name} ({p[pred]:.0%})"
    head = f"{title}: " if title else ""
    write = _Writer(out_dir, pictures, prefix)
    img = example.display

    for mech in drawn:
        parents = groups[mech]
        records = [r for r in rec.records if r.path in parents]
        features = feats[mech][0] if feats.features.get(mech) else None
        _mechanism_pictures(write, mech, records, features, img, caption, query, head,
                            top_k, grid_k)
    for stage in stages:  # no attention: show what each stage computes
        f = stage_feats[stage][0]
        write("features", f"{_slug(stage)}-features", plots.plot_feature_grid, f, k=grid_k,
              title=f"{head}{stage} output")
        write("top-channels", f"{_slug(stage)}-top-channels", plots.plot_top_channels, img, f,
              None, k=top_k, title=f"{head}{stage}: top channels by mean activation",
              image_title=caption)

    if sample is not None and groups and write.wants("histograms"):
        stats = collect_attention_stats(model, sample)
        n = stats[0].images if stats else 0
        write("histograms", "histograms", plots.plot_attention_histograms, stats,
              title=f"{head}attention weights over {plural(n, 'image')}")
    if metrics:
        write("curves", "curves", plots.plot_training_curves, list(metrics),
              title=f"{head}training curves")
    return write.written


def _allowed_pictures(records: Sequence[MapRecord], groups: dict, stages: Sequence[str],
                      metrics: Sequence[PathLike]) -> list[str]:
    """The kinds of picture this model and these inputs can give, in :data:`PICTURES` order."""
    kinds = {_PICTURE_OF_KIND[r.kind] for r in records if r.kind in _PICTURE_OF_KIND}
    if groups or stages:
        kinds |= {"features", "top-channels"}
    if groups:  # given sample images (visualize's --sample)
        kinds.add("histograms")
    if metrics:
        kinds.add("curves")
    return [p for p in PICTURES if p in kinds]


def _check_pictures(pictures: Sequence[str] | None, allowed: Sequence[str]) -> None:
    missing = [p for p in pictures or () if p not in allowed]
    if missing:
        raise Attn2dError(f"expected --pictures among those this model "
                          f"allows ({', '.join(allowed) or 'none'}), got {', '.join(missing)}")


def _mechanism_pictures(write: _Writer, mech: str, records: list[MapRecord],
                        features: Tensor | None, img: Tensor, caption: str,
                        query: tuple[int, int], head: str, top_k: int, grid_k: int) -> None:
    """The pictures of one mechanism's maps (first image of the batch)."""
    slug = _slug(mech)
    size = (int(img.shape[-2]), int(img.shape[-1]))
    channel_weights = None
    passes: list[Tensor] = []
    for r in records:
        label = r.label
        t = r.tensor[0] if r.kind != "mixture" else r.tensor
        name, picture = _map_name(mech, r), _PICTURE_OF_KIND.get(r.kind, "")
        if r.kind == "channel":
            channel_weights = t if channel_weights is None else channel_weights
            write(picture, name, plots.plot_channel_weights, t, title=f"{head}{label}")
        elif r.kind in ("spatial", "elementwise", "height", "width"):
            what = "" if r.kind == "spatial" else ", mean over channels"
            write(picture, name, plots.plot_spatial_map, img, M.gate_picture(t),
                  title=f"{head}{label}{what}", image_title=caption)
        elif r.kind == "position":
            grid = r.feature_size or _square(t.shape[0])
            cell = _feature_cell(query, size, grid)
            keys = M.key_grid(t.shape[1], grid)
            panel = (f"{label}\nweights over {keys[0]}×{keys[1]} keys",
                     M.position_query(t, cell, grid))
            write(picture, name, plots.plot_query_attention, img, [panel], query,
                  feature_query=cell, title=f"{head}{mech}", image_title=caption)
        elif r.kind == "criss-cross":
            passes.append(t)
        elif r.kind == "channel-affinity":
            write(picture, name, plots.plot_affinity_matrix, t, title=f"{head}{label}")
        elif r.kind == "mixture":
            write(picture, name, plots.plot_channel_weights, t, sort=False,
                  labels=[f"branch {i}" for i in range(len(t))], title=f"{head}{label}")
    if passes:
        grid = (int(passes[0].shape[0]), int(passes[0].shape[1]))
        cell = _feature_cell(query, size, grid)
        panels = [(f"pass {i + 1}: row + column only" if len(passes) > 1
                   else "row + column only", M.criss_cross_query(p, cell))
                  for i, p in enumerate(passes)]
        if len(passes) > 1:
            panels.append((f"after {len(passes)} passes (composed)",
                           M.compose_criss_cross(passes, cell)))
        write("query", f"{slug}-criss-cross", plots.plot_query_attention, img, panels, query,
              feature_query=cell, title=f"{head}{mech} criss-cross", image_title=caption)
    if features is not None:
        write("features", f"{slug}-features", plots.plot_feature_grid, features, k=grid_k,
              title=f"{head}{mech} input")
        by = "weight" if channel_weights is not None else "mean activation"
        write("top-channels", f"{slug}-top-channels", plots.plot_top_channels, img, features,
              channel_weights, k=top_k, image_title=caption,
              title=f"{head}{mech}: input channels with the highest {by}")


def _map_name(mech: str, r: MapRecord) -> str:
    """File stem of one map: mechanism path, the map's path inside it, kind, pass."""
    inner = r.label.rsplit(":", 1)[0].removeprefix(mech).strip(".")
    kind = r.kind + (str(r.call + 1) if r.call else "")
    parts = [_slug(mech), _slug(inner) if inner and inner != r.kind else "", kind]
    return "-".join(p for p in parts if p)


def _square(n: int) -> tuple[int, int]:
    side = round(n**0.5)
    return side, side


# -- from a checkpoint or a spec to pictures (what the CLI calls) ------------------------------
@dataclass
class Subject:
    """A model to inspect, with its data and a name for titles."""

    model: nn.Module
    data: DataSpec  # the dataset and its options (a folder's size, channels, statistics)
    title: str
    metrics: Path | None

    @property
    def dataset(self) -> str:
        return self.data.dataset


def load_subject(
    checkpoint: PathLike | None = None,
    *,
    model: str | None = None,
    attention: str | None = None,
    placement: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
) -> Subject:
    """A trained model from ``checkpoint`` (``attn2d train``'s ``last.pt`` or ``best.pt``),
    or an untrained ``model`` + ``attention`` for debugging.

    Args:
        checkpoint: checkpoint path; its run's ``metrics.jsonl`` is picked up when present.
        model: backbone name when there is no checkpoint (e.g. ``"small_cnn"``).
        attention: spec string for the untrained model (``None``: no attention).
        placement: ``"block"`` / ``"stage"`` for the untrained model.
        dataset: dataset name; default the checkpoint's (with its run's options), else
            ``"fashion-mnist"``.
        data_dir: dataset folder (default: the checkpoint run's, else see
            :func:`attn2d.data.get_dataset`).
        seed: seed of the untrained model's initialisation.
    """
    if checkpoint is not None:
        if model is not None or attention is not None:
            raise Attn2dError("expected either a checkpoint or --model/--attention, "
                              "got both")
        from ..training import load_model

        net, config = load_model(checkpoint)
        spec = DataSpec.from_mapping(config)
        if dataset is not None:
            spec = DataSpec(dataset_info(dataset).name)
        if data_dir is not None:
            spec = dataclasses.replace(spec, data_dir=data_dir)
        if spec.dataset == "custom":
            raise Attn2dError(f"expected a run on a named dataset or folder, got "
                              f"{checkpoint}, trained on Dataset objects; pass --dataset")
        att = config.get("attention") or "none"
        title = f"{config.get('model', 'model')} + {att}"
        metrics = Path(checkpoint).parent / "metrics.jsonl"
        return Subject(net, spec, title, metrics if metrics.is_file() else None)
    if model is None:
        raise Attn2dError("expected --checkpoint or --model (with --attention), got "
                          "neither")
    from ..models import create_model

    spec = DataSpec(dataset or "fashion-mnist", data_dir=data_dir)
    info = dataset_info(spec)
    torch.manual_seed(seed)
    net = create_model(model, attention=attention, placement=placement,
                       num_classes=info.num_classes, in_channels=info.in_channels).eval()
    return Subject(net, spec, f"{model} + {attention or 'none'} (untrained)", None)


def sample_batches(data: DataSpec | str, images: int, batch_size: int = 64,
                   split: str = "test", *, option: str = "--images") -> list[Tensor]:
    """The first ``images`` normalised images of a split, without augmentation, in batches.

    A split with fewer images gives all of them, with a note naming ``option`` (the
    command-line option that asked for ``images``): the defaults (256) must work on a small
    folder."""
    check_int(images, option)
    check_int(batch_size, "--batch-size")
    spec = data if isinstance(data, DataSpec) else DataSpec(data)
    ds = get_dataset(spec, split, augment=False)
    if images > len(ds):
        log.info("%s %d is more than the %s in the %s split of %s: using all %d", option,
                 images, plural(len(ds), "image"), split, spec.dataset, len(ds))
        images = len(ds)
    return [torch.stack([ds[i][0] for i in range(start, min(images, start + batch_size))])
            for start in range(0, images, batch_size)]


def visualize(
    subject: Subject,
    out_dir: PathLike,
    *,
    index: int = 0,
    split: str = "test",
    query: tuple[int, int] | None = None,
    sample: int = 256,
    layers: Sequence[str] | None = None,
    pictures: Sequence[str] | None = None,
    prefix: str = "",
    save_maps: PathLike | None = None,
    strict: bool = True,
) -> list[Path]:
    """Every picture for image ``index`` of ``split`` (see :func:`visualize_example`), with
    histograms over the split's first ``sample`` images (0: none; all, when it has fewer)
    and the training curves of a checkpoint's run; ``layers``, ``pictures``, ``prefix``,
    ``save_maps`` and ``strict`` as in :func:`visualize_example`."""
    info = dataset_info(subject.data)
    ds = get_dataset(subject.data, split, augment=False)
    if not 0 <= index < len(ds):
        raise Attn2dError(f"expected --index in [0, {len(ds)}), the {split} images of "
                          f"{subject.dataset}, got {index}")
    x, label = ds[index]
    example = Example(x, denormalize(x, info), f"{split} #{index}: {info.classes[label]}",
                      info.classes)
    want_histograms = sample and (pictures is None or "histograms" in pictures)
    batches = sample_batches(subject.data, sample, split=split, option="--sample") \
        if want_histograms else None
    metrics = [subject.metrics] if subject.metrics is not None else []
    return visualize_example(subject.model, example, out_dir, query=query, sample=batches,
                             metrics=metrics, title=subject.title, layers=layers,
                             pictures=pictures, prefix=prefix, save_maps=save_maps,
                             index=index, strict=strict)


GALLERY_PICTURES = ("query", "spatial", "channel", "affinity")


def gallery_pictures(checkpoint: PathLike, out_dir: PathLike, *, index: int = 0,
                     limit: int = 2) -> list[Path]:
    """A few telling pictures of a trained run for one test image (for reports): where a
    query pixel looks, spatial maps, channel weights, affinities, in that order of
    preference, at most ``limit``. The run's own data folder is used."""
    subject = load_subject(checkpoint)
    files: list[Path] = []
    for picture in GALLERY_PICTURES:
        if len(files) >= limit:
            break
        files += visualize(subject, out_dir, index=index, sample=0, pictures=[picture],
                           prefix=picture, strict=False)[: limit - len(files)]
    return files
