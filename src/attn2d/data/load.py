"""From a run's data settings (:class:`DataSpec`) to batches on the training device."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._base.errors import Attn2dError
from .._base.validate import check_choice, check_flag, check_int, fail, flag
from .augment import Normalize
from .batches import EvalBatches, TrainBatches
from .catalog import DatasetInfo, builtin_info, canonical_dataset, default_data_dir, folder_path
from .folder import BAD_IMAGES, ChannelStats, read_folder, scan_folder
from .memory import available_memory, format_bytes
from .readers import read_builtin
from .samples import ImageDataset
from .split import Loader, Split, stratified_subset

__all__ = [
    "IN_MEMORY_LIMIT_BYTES",
    "Data",
    "DataSpec",
    "data_from_datasets",
    "dataset_info",
    "denormalize",
    "get_dataset",
    "load_data",
]

# "auto" keeps a dataset on the device when its uint8 images (train + test) take at most
# this much, and on a GPU at most half of its free memory; larger ones stream.
IN_MEMORY_LIMIT_BYTES = 4 << 30
IN_MEMORY = ("auto", "always", "never")
# Fixed seeds of the image choices, apart from the run's seed, so that runs with different
# seeds train and test on the same images.
_SUBSET_SEED = 0
_VAL_SEED = 1


@dataclass(frozen=True)
class DataSpec:
    """What a run's config says about its data.

    Args:
        dataset: a dataset name or alias (see :func:`~attn2d.data.canonical_dataset`), or
            ``"folder:PATH"`` (default: Fashion-MNIST).
        data_dir: where built-in datasets live (default ``$ATTN2D_DATA_DIR`` or ``./data``).
        download: let torchvision download missing built-in files (needs a network).
        subset: train on a stratified subset of this many training images.
        test_subset: test on a stratified subset of this many test images.
        val_split: hold out this many (stratified) training images as a validation set;
            taken before ``subset``, which then chooses among the remaining images.
        image_size: folders: side of the square images (default: the images' own, when all
            share one square size).
        channels: folders: 1 (grey) or 3 (RGB) (default: 1 when every image is grey).
        mean: per-channel mean in [0, 1] (default: the dataset's standard values; folders:
            computed from the training images).
        std: per-channel standard deviation, as ``mean``.
        augment: the dataset's training augmentation (random crop, flip where it flips).
        bad_images: folders: ``"error"`` refuses an unreadable image, ``"skip"`` leaves it out.
        in_memory: ``"auto"`` (on the device when small enough, see
            :data:`IN_MEMORY_LIMIT_BYTES`), ``"always"`` or ``"never"`` (stream through a
            DataLoader).
        num_workers: DataLoader workers for streaming and for decoding folders.
        resample_train: draw the ``subset`` of training images from the run's seed, so that
            seeds differ in their data too (Bouthillier et al., MLSys 2021: data sampling
            is a major source of variance); by default every seed trains on the same
            images.
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    subset: int | None = None
    test_subset: int | None = None
    val_split: int | None = None
    image_size: int | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: bool = True
    bad_images: str = "error"
    in_memory: str = "auto"
    num_workers: int = 0
    resample_train: bool = False

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DataSpec:
        """The data part of a run's saved config (other keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        picked = {k: v for k, v in values.items() if k in names}
        for key in ("mean", "std"):  # JSON gives lists
            if picked.get(key) is not None:
                picked[key] = tuple(picked[key])
        return cls(**picked)

    def check(self) -> DataSpec:
        """Validate every data field (cheap: no file is read); one error naming the option."""
        canonical_dataset(self.dataset)
        for name, low in (("subset", 1), ("test_subset", 1), ("val_split", 1),
                          ("image_size", 1)):
            check_int(getattr(self, name), flag(name), minimum=low, optional=True)
        check_int(self.num_workers, "--num-workers", minimum=0)
        if self.channels is not None:
            check_choice(self.channels, (1, 3), "--channels")
        if folder_path(canonical_dataset(self.dataset)) is None:
            for name in ("image_size", "channels"):
                if getattr(self, name) is not None:
                    raise fail(None, f"expected {flag(name)} only with --dataset folder:PATH, "
                               f"got {flag(name)} {getattr(self, name)} for "
                               f"{self.dataset}")
        check_choice(self.bad_images, BAD_IMAGES, "--bad-images")
        check_choice(self.in_memory, IN_MEMORY, "--in-memory")
        check_flag(self.download, "--download")
        check_flag(self.augment, "--augment")
        check_flag(self.resample_train, "--resample-train")
        return self


@dataclass
class Data:
    """A dataset ready for training: what it is and its batches.

    ``info`` says what the batches do: the normalisation used (computed ones included) and,
    with augmentation off, ``crop_padding`` 0 and ``flip`` False.
    """

    info: DatasetInfo
    train: TrainBatches
    val: EvalBatches | None
    test: EvalBatches


def _statistic(spec: DataSpec, name: str, channels: int) -> tuple[float, ...] | None:
    value = getattr(spec, name)
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise Attn2dError(f"attn2d.data: expected {name} to be a sequence of numbers, got "
                          f"{value!r}")
    if len(value) != channels:
        raise Attn2dError(f"attn2d.data: expected {channels} {name} value(s), one per channel, "
                          f"got {len(value)}")
    low = 0.0 if name == "mean" else math.ulp(0.0)
    if not all(math.isfinite(v) and v >= low for v in value):
        raise Attn2dError(f"attn2d.data: expected finite {name} values "
                          f"{'>= 0' if name == 'mean' else '> 0'}, got {tuple(value)}")
    return tuple(float(v) for v in value)


def _fits_in_memory(nbytes: int, device: torch.device) -> bool:
    if nbytes > IN_MEMORY_LIMIT_BYTES:
        return False
    free = available_memory(device)  # the host's too: images are decoded there first
    host = available_memory("cpu") if device.type != "cpu" else free
    return all(room is None or nbytes <= room // 2 for room in (free, host))


def _check_batch_memory(side: int, channels: int, batch_size: int | None,
                        device: torch.device) -> None:
    """Refuse, before decoding, a training batch that cannot fit on ``device`` as float32
    (a large ``--image-size``; the model's activations need more still)."""
    if batch_size is None:
        return
    nbytes = batch_size * channels * side * side * 4
    free = available_memory(device)
    if free is not None and nbytes > free:
        raise Attn2dError(f"attn2d.data: out of memory at --image-size {side}: a training "
                          f"batch of {batch_size} images takes {format_bytes(nbytes)} as "
                          f"float32, {format_bytes(free)} available on {device}; expected a "
                          "smaller --image-size or --batch-size")


def _resolve(spec: DataSpec, device: torch.device, batch_size: int | None = None
             ) -> tuple[DatasetInfo, Split | None, Split | None, bool]:
    """The dataset's info (as the batches use it) and, for ``device``, its splits and whether
    they live in memory. Built-in datasets with no overrides return no splits (no file
    access); call :func:`_read` for them. A folder's ``batch_size`` (per process) is checked
    against the device's memory before any image is decoded."""
    name = canonical_dataset(spec.check().dataset)
    path = folder_path(name)
    if path is None:
        info, train, test, in_memory = builtin_info(name), None, None, spec.in_memory != "never"
    else:
        layout = scan_folder(path, image_size=spec.image_size, channels=spec.channels,
                             bad_images=spec.bad_images)
        side, channels = layout.image_size, layout.channels
        _check_batch_memory(side, channels, batch_size, device)
        nbytes = (len(layout.train) + len(layout.test)) * channels * side * side
        in_memory = spec.in_memory == "always" or (
            spec.in_memory == "auto" and _fits_in_memory(nbytes, device))
        decoded = read_folder(layout, in_memory=in_memory, bad_images=spec.bad_images,
                              num_workers=spec.num_workers)
        train, test = decoded.train, decoded.test
        # Folders are natural images: flips on, crops of an eighth of the side (4 at 32).
        info = DatasetInfo(name, channels, side, len(layout.classes), layout.classes,
                           decoded.mean, decoded.std, crop_padding=max(1, side // 8), flip=True)
    info = dataclasses.replace(
        info,
        mean=_statistic(spec, "mean", info.in_channels) or info.mean,
        std=_statistic(spec, "std", info.in_channels) or info.std,
        crop_padding=info.crop_padding if spec.augment else 0,
        flip=info.flip and spec.augment)
    return info, train, test, in_memory


def _read(spec: DataSpec, name: str, train: bool) -> Split:
    root = Path(spec.data_dir) if spec.data_dir is not None else default_data_dir()
    if root.exists() and not root.is_dir():
        given = "--data-dir" if spec.data_dir is not None else "$ATTN2D_DATA_DIR or ./data"
        raise Attn2dError(f"attn2d.data: expected {given} to be a folder for {name}, got "
                          f"{root}, a file")
    images, targets = read_builtin(name, root, train, spec.download)
    return Split(images=images, targets=targets)


def _splits(spec: DataSpec, device: torch.device, batch_size: int | None = None
            ) -> tuple[DatasetInfo, Split, Split, bool]:
    info, train, test, in_memory = _resolve(spec, device, batch_size)
    if train is None:
        train, test = _read(spec, info.name, True), _read(spec, info.name, False)
    return info, train, test, in_memory


def dataset_info(name: str | DataSpec) -> DatasetInfo:
    """Channels, size, classes, normalisation and augmentation of a dataset (any alias).

    A built-in name needs no files. A folder (``"folder:PATH"``, or a :class:`DataSpec` for
    its options) is scanned and its training images decoded once per process, for the mean
    and std. With a DataSpec, the result is what :func:`load_data` would report.
    """
    spec = name if isinstance(name, DataSpec) else DataSpec(name)
    return _resolve(spec, torch.device("cpu"))[0]


def denormalize(x: Tensor, name: str | DatasetInfo) -> Tensor:
    """Undo the normalisation of a (C, H, W) or (B, C, H, W) tensor; values clamped to [0, 1]."""
    info = name if isinstance(name, DatasetInfo) else dataset_info(name)
    shape = (-1, 1, 1)
    mean = torch.tensor(info.mean, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(info.std, dtype=x.dtype, device=x.device).view(shape)
    return (x * std + mean).clamp(0, 1)


def get_dataset(
    name: str | DataSpec,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    augment: bool | None = None,
    subset: int | None = None,
    seed: int = 0,
    subset_seed: int = 0,
    download: bool = False,
) -> ImageDataset:
    """A normalised, in-memory dataset of ``(image, label)`` pairs, one image at a time.

    Args:
        name: a dataset name or alias, ``"folder:PATH"`` (default folder options), or a
            :class:`DataSpec` with a run's folder options; the images are decoded into memory.
        split: ``"train"`` or ``"test"`` (a folder's ``test/``, else its ``val/``).
        data_dir: where the files are (default: the spec's, else :func:`default_data_dir`).
        augment: training augmentation; default: on for ``"train"``, off for ``"test"``.
        subset: keep a stratified, seeded subset of this many images.
        seed: seed of the augmentation (with :meth:`ImageDataset.set_epoch`).
        subset_seed: seed of the subset choice, separate so that runs with different
            training seeds see the same images.
        download: let torchvision download the files if they are missing (needs a network).
    """
    if split not in ("train", "test"):
        raise Attn2dError(f"attn2d.data: expected split 'train' or 'test', got {split!r}")
    base = name if isinstance(name, DataSpec) else DataSpec(name)
    spec = dataclasses.replace(
        base, data_dir=base.data_dir if data_dir is None else str(data_dir),
        download=download or base.download, in_memory="always", subset=None, test_subset=None,
        val_split=None)
    info, train, test, _ = _splits(spec, torch.device("cpu"))
    part = train if split == "train" else test
    if subset is not None:
        part = part.take(stratified_subset(part.labels(), subset, subset_seed))
    return ImageDataset(part.images, part.labels(), info,
                        split == "train" if augment is None else augment, seed)


def _check_count(value: int | None, name: str, images: int, what: str) -> None:
    """A count of images (``--subset`` …) that the split can give, said in CLI spelling."""
    if value is not None and value > images:
        raise Attn2dError(f"attn2d.data: expected {flag(name)} <= {images}, the {what}, got "
                          f"{value}")


def load_data(spec: DataSpec, device: torch.device | str, seed: int, *,
              batch_size: int | None = None) -> Data:
    """The batches of a run: training (seeded order and augmentation), validation (with
    ``val_split``) and test, built on ``device``; in memory there when they fit (see
    :attr:`DataSpec.in_memory`), else streamed through a DataLoader. ``batch_size`` (the
    per-process training batch) lets a folder of large images be refused for memory before
    any image is decoded."""
    device = torch.device(device)
    info, train, test, in_memory = _splits(spec, device, batch_size)
    _check_count(spec.test_subset, "test_subset", len(test), f"test images of {info.name}")
    val = None
    if spec.val_split is not None:
        if spec.val_split >= len(train):  # some must be left to train on
            raise Attn2dError(f"attn2d.data: expected --val-split < {len(train)}, the training "
                              f"images of {info.name}, got {spec.val_split}")
        held_out = stratified_subset(train.labels(), spec.val_split, _VAL_SEED)
        rest = torch.ones(len(train), dtype=torch.bool)
        rest[held_out] = False
        val, train = train.take(held_out), train.take(torch.nonzero(rest).flatten())
    if spec.subset is not None:
        _check_count(spec.subset, "subset", len(train),
                     f"training images of {info.name}"
                     + (f" left beside --val-split {spec.val_split}" if val is not None else ""))
        subset_seed = seed if spec.resample_train else _SUBSET_SEED
        train = train.take(stratified_subset(train.labels(), spec.subset, subset_seed))
    if spec.test_subset is not None:
        test = test.take(stratified_subset(test.labels(), spec.test_subset, _SUBSET_SEED))
    normalize = Normalize(info.mean, info.std)
    workers = spec.num_workers

    def evaluation(split: Split) -> EvalBatches:
        return EvalBatches(split, normalize, device, in_memory, workers)

    return Data(info,
                TrainBatches(train, normalize, device, seed, info.crop_padding, info.flip,
                             in_memory, workers),
                None if val is None else evaluation(val), evaluation(test))


def _first_item(dataset: Dataset, which: str) -> Tensor:
    if len(dataset) == 0:
        raise Attn2dError(f"attn2d.data: expected a non-empty {which} dataset, got 0 items")
    item = dataset[0]
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise Attn2dError(f"attn2d.data: expected {which} items (image, label), got "
                          f"{type(item).__name__}")
    image = item[0]
    if not isinstance(image, Tensor) or image.dim() != 3 or not (
            image.dtype == torch.uint8 or image.is_floating_point()):
        what = (f"{image.dtype} tensor of shape {tuple(image.shape)}"
                if isinstance(image, Tensor) else type(image).__name__)
        raise Attn2dError(f"attn2d.data: expected {which} images as (C, H, W) uint8 or float "
                          f"tensors, got {what}")
    if image.shape[1] != image.shape[2]:
        raise Attn2dError(f"attn2d.data: expected square {which} images, got "
                          f"{tuple(image.shape[1:])}")
    return image


def _materialise(dataset: Dataset, num_workers: int) -> Split:
    images, labels = [], []
    for x, y in Loader(dataset, batch_size=256, num_workers=num_workers):
        images.append(x if x.dtype == torch.uint8 else x.float())
        labels.append(torch.as_tensor(y, dtype=torch.int64))
    return Split(images=torch.cat(images), targets=torch.cat(labels))


def _known_targets(dataset: Dataset) -> Tensor | None:
    targets = getattr(dataset, "targets", None)
    if targets is None or len(targets) != len(dataset):
        return None
    return torch.as_tensor(targets, dtype=torch.int64)


def data_from_datasets(
    train: Dataset,
    test: Dataset,
    info: DatasetInfo | int,
    device: torch.device | str,
    seed: int = 0,
    *,
    num_workers: int = 0,
    in_memory: str = "auto",
) -> Data:
    """Batches from the user's own Dataset objects.

    Each item is ``(image, label)``: a (C, H, W) tensor, uint8 (normalised here) or float
    (used as given: already normalised), and an int label. attn2d adds no augmentation (put
    yours in the Dataset). Datasets that fit (see :data:`IN_MEMORY_LIMIT_BYTES`) are read
    once and kept on the device; larger ones stream through a DataLoader with
    ``num_workers``, in the same seeded order.

    Args:
        train: training Dataset.
        test: test Dataset.
        info: a :class:`DatasetInfo` (its mean/std normalise uint8 images and undo the
            normalisation in pictures), or the number of classes: then the name is
            ``"custom"``, the classes are ``train.classes`` when it has them, and the
            mean/std of uint8 images are computed from the training images (float images:
            mean 0, std 1).
        device: where the batches are built.
        seed: the run's seed (order of each epoch).
        num_workers: DataLoader workers.
        in_memory: ``"auto"``, ``"always"`` or ``"never"``.
    """
    device = torch.device(device)
    if in_memory not in IN_MEMORY:
        raise Attn2dError(f"attn2d.data: expected in_memory in {IN_MEMORY}, got {in_memory!r}")
    first = _first_item(train, "train")
    if _first_item(test, "test").shape != first.shape:
        raise Attn2dError(f"attn2d.data: expected test images of the training images' shape "
                          f"{tuple(first.shape)}, got {tuple(test[0][0].shape)}")
    channels, side = first.shape[0], first.shape[1]
    bytes_per_image = first.numel() * (1 if first.dtype == torch.uint8 else 4)
    keep = in_memory == "always" or (in_memory == "auto" and _fits_in_memory(
        (len(train) + len(test)) * bytes_per_image, device))
    splits = [_materialise(ds, num_workers) if keep else
              Split(dataset=ds, targets=_known_targets(ds)) for ds in (train, test)]
    if isinstance(info, DatasetInfo):
        if (info.in_channels, info.image_size) != (channels, side):
            raise Attn2dError(f"attn2d.data: expected images of {info.in_channels} channels and "
                              f"side {info.image_size} (from info), got {tuple(first.shape)}")
        mean, std, num_classes, classes, name = (info.mean, info.std, info.num_classes,
                                                 info.classes, info.name)
    elif isinstance(info, int) and not isinstance(info, bool) and info >= 1:
        num_classes, name = info, "custom"
        given = getattr(train, "classes", None)
        classes = tuple(str(c) for c in given) if given is not None and len(given) == info \
            else tuple(str(i) for i in range(info))
        if first.dtype == torch.uint8:
            stats = ChannelStats()
            if keep:
                stats.add_tensor(splits[0].images)
            else:
                for x, _ in Loader(train, batch_size=256, num_workers=num_workers):
                    stats.add(x)
            mean, std = stats.result()
        else:
            mean, std = (0.0,) * channels, (1.0,) * channels
    else:
        raise Attn2dError(f"attn2d.data: expected info to be a DatasetInfo or a number of classes "
                          f">= 1, got {info!r}")
    for split, which in zip(splits, ("train", "test"), strict=True):
        if split.targets is not None and len(split.targets) and not (
                int(split.targets.min()) >= 0 and int(split.targets.max()) < num_classes):
            raise Attn2dError(f"attn2d.data: expected {which} labels in [0, {num_classes}), got "
                             f"[{int(split.targets.min())}, {int(split.targets.max())}]")
    used = DatasetInfo(name, channels, side, num_classes, classes, tuple(mean), tuple(std),
                       crop_padding=0, flip=False)
    normalize = Normalize(used.mean, used.std)
    return Data(used, TrainBatches(splits[0], normalize, device, seed, 0, False, keep,
                                   num_workers),
                None, EvalBatches(splits[1], normalize, device, keep, num_workers))
