"""Datasets for the harness: CIFAR-10 and Fashion-MNIST, read through torchvision.

Images are held in memory as uint8 and normalised on access. Augmentation (random crop
with zero padding, plus a horizontal flip for CIFAR-10) draws its randomness from a hash of
``(seed, epoch, index)`` rather than from a global generator, so an image is augmented the
same way whatever the number of processes, loader workers or interruptions: that is what
makes ``attn2d train --resume`` and ``torchrun`` runs reproducible.

Where the files live: ``data_dir`` if given, else ``$ATTN2D_DATA_DIR``, else ``./data``
(ignored by git). Fashion-MNIST needs no network: when ``<data_dir>/FashionMNIST/raw`` has
no copy, the original IDX files of Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``) are decompressed there. Debian recompresses them, so
torchvision's checksum of the ``.gz`` files would fail; the decompressed files are what
torchvision reads with ``download=False`` (it checks that they exist, not their checksum).
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torchvision
from torch import Tensor
from torch.utils.data import Dataset

from ._io import atomic_path

__all__ = [
    "DatasetInfo",
    "ImageDataset",
    "dataset_info",
    "default_data_dir",
    "denormalize",
    "get_dataset",
    "stratified_subset",
]

# Debian's dataset-fashion-mnist installs the original IDX files here.
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a plot need to know about a dataset.

    Args:
        name: canonical name (``"cifar10"`` or ``"fashion-mnist"``).
        in_channels: image channels (3 or 1).
        image_size: height = width in pixels.
        num_classes: number of labels.
        classes: label names, index = label.
        mean: per-channel mean of the training images in [0, 1].
        std: per-channel standard deviation of the training images in [0, 1].
        crop_padding: zero padding of the training random crop.
        flip: whether training images are flipped horizontally at random.
    """

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool


_INFO = {
    "cifar10": DatasetInfo(
        "cifar10", 3, 32, 10,
        ("airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck"),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), crop_padding=4, flip=True,
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 1, 28, 10,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        # Flipping is not part of the usual Fashion-MNIST recipe: shoes all face one way.
        (0.2860,), (0.3530,), crop_padding=2, flip=False,
    ),
}  # fmt: skip
_ALIASES = {"cifar-10": "cifar10", "fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist",
            "fashionmnist": "fashion-mnist"}


def dataset_info(name: str) -> DatasetInfo:
    """Channels, size, classes and normalisation of ``"cifar10"`` or ``"fashion-mnist"``."""
    if not isinstance(name, str):
        raise TypeError(f"attn2d.data: expected a dataset name, got {type(name).__name__}")
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in _INFO:
        raise ValueError(f"attn2d.data: expected a dataset in {tuple(_INFO)}, got {name!r}")
    return _INFO[key]


def default_data_dir() -> Path:
    """``$ATTN2D_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get("ATTN2D_DATA_DIR", "data"))


def _mix(*values: int) -> int:
    """A 64-bit hash of integers (splitmix64 steps): cheap, stateless randomness."""
    mask = (1 << 64) - 1
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = ((h ^ (v & mask)) * 0xBF58476D1CE4E5B9) & mask
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & mask
        h ^= h >> 31
    return h


class ImageDataset(Dataset):
    """In-memory images with labels, normalised on access and optionally augmented.

    Args:
        images: uint8 tensor (N, C, H, W).
        targets: int64 tensor (N,).
        info: the dataset's :class:`DatasetInfo` (normalisation and augmentation).
        augment: apply the training augmentation.
        seed: seed of the augmentation; with :meth:`set_epoch`, fixes every crop and flip.
    """

    def __init__(self, images: Tensor, targets: Tensor, info: DatasetInfo, augment: bool,
                 seed: int = 0) -> None:
        self.images = images
        self.targets = targets
        self.info = info
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        # (x / 255 - mean) / std folded into one multiply-add.
        std = torch.tensor(info.std).view(-1, 1, 1)
        self._scale = 1 / (255 * std)
        self._shift = -torch.tensor(info.mean).view(-1, 1, 1) / std

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose crops and flips ``__getitem__`` returns."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.augment:
            image = self._augment(image, _mix(self.seed, self.epoch, int(index)))
        return torch.addcmul(self._shift, image.float(), self._scale), int(self.targets[index])

    def _augment(self, image: Tensor, h: int) -> Tensor:
        pad, size = self.info.crop_padding, self.info.image_size
        top, left = h % (2 * pad + 1), (h >> 16) % (2 * pad + 1)
        padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))  # zero fill, as RandomCrop
        image = padded[:, top : top + size, left : left + size]
        if self.info.flip and (h >> 32) & 1:
            image = image.flip(-1)
        return image


def denormalize(x: Tensor, name: str | DatasetInfo) -> Tensor:
    """Undo the normalisation of a (C, H, W) or (B, C, H, W) tensor; values clamped to [0, 1]."""
    info = name if isinstance(name, DatasetInfo) else dataset_info(name)
    shape = (-1, 1, 1)
    mean = torch.tensor(info.mean, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(info.std, dtype=x.dtype, device=x.device).view(shape)
    return (x * std + mean).clamp(0, 1)


def stratified_subset(targets: Tensor, size: int, seed: int = 0) -> Tensor:
    """Indices of ``size`` samples with the class proportions of ``targets`` (sorted).

    Each class gets its proportional share (largest remainders get the leftover places);
    within a class the samples are a seeded random choice.
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"attn2d.data: expected subset to be an int, got {type(size).__name__}")
    if not 1 <= size <= len(targets):
        raise ValueError(f"attn2d.data: expected 1 <= subset <= {len(targets)}, got {size}")
    classes, counts = torch.unique(targets, return_counts=True)
    exact = counts.double() * size / len(targets)
    quota = exact.floor().long()
    leftover = size - int(quota.sum())
    # Stable sort: ties go to the lower class index, so the split is reproducible.
    order = torch.sort(exact - quota, descending=True, stable=True).indices
    quota[order[:leftover]] += 1
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label, k in zip(classes.tolist(), quota.tolist(), strict=True):
        members = torch.nonzero(targets == label).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(chosen).sort().values


class _LocalCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 reader for files already on disk.

    torchvision checks the md5 of every batch file, which only fits the official
    archive; a local copy (or a test's small files in the same pickle format) is read as
    given, presence checked. Downloads still go through torchvision's checked path.
    """

    train_list: ClassVar = [[name, None] for name, _ in torchvision.datasets.CIFAR10.train_list]
    test_list: ClassVar = [[name, None] for name, _ in torchvision.datasets.CIFAR10.test_list]
    meta: ClassVar = {**torchvision.datasets.CIFAR10.meta, "md5": None}


def _missing(what: str, root: Path, how: str) -> FileNotFoundError:
    return FileNotFoundError(f"attn2d.data: expected {what} under {root}, got nothing there; {how}")


def _load_cifar10(root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    if download:
        torchvision.datasets.CIFAR10(str(root), train=train, download=True)
    try:
        ds = _LocalCIFAR10(str(root), train=train, download=False)
    except RuntimeError:
        raise _missing("cifar-10-batches-py/", root, "run with --download (needs a network) or "
                       "unpack cifar-10-python.tar.gz there") from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    return images, torch.tensor(ds.targets, dtype=torch.int64)


def _install_fashion_mnist(raw: Path, source: Path) -> bool:
    """Decompress the IDX ``.gz`` files of ``source`` into ``raw``; False if absent."""
    if not all((source / f"{name}.gz").is_file() for name in _FASHION_FILES):
        return False
    for name in _FASHION_FILES:
        if (raw / name).is_file():
            continue
        with (gzip.open(source / f"{name}.gz", "rb") as src, atomic_path(raw / name) as tmp,
              open(tmp, "wb") as dst):
            shutil.copyfileobj(src, dst)
    return True


def _load_fashion_mnist(root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    raw = root / "FashionMNIST" / "raw"
    present = all((raw / name).is_file() for name in _FASHION_FILES)
    if not present and not _install_fashion_mnist(raw, SYSTEM_FASHION_MNIST) and not download:
        raise _missing("FashionMNIST/raw/ (IDX files)", root,
                       f"install Debian's dataset-fashion-mnist (apt-get install "
                       f"dataset-fashion-mnist, files in {SYSTEM_FASHION_MNIST}) or run "
                       f"with --download (needs a network)")
    ds = torchvision.datasets.FashionMNIST(str(root), train=train, download=download)
    return ds.data.unsqueeze(1).contiguous(), ds.targets.to(torch.int64)


_LOADERS = {"cifar10": _load_cifar10, "fashion-mnist": _load_fashion_mnist}
_CACHE: dict[tuple[str, str, bool], tuple[Tensor, Tensor]] = {}


def get_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    augment: bool | None = None,
    subset: int | None = None,
    seed: int = 0,
    subset_seed: int = 0,
    download: bool = False,
) -> ImageDataset:
    """A normalised dataset of ``(image, label)`` pairs.

    Args:
        name: ``"cifar10"`` or ``"fashion-mnist"`` (see :func:`dataset_info`).
        split: ``"train"`` or ``"test"``.
        data_dir: where the files are (default: :func:`default_data_dir`).
        augment: training augmentation; default: on for ``"train"``, off for ``"test"``.
        subset: keep a stratified, seeded subset of this many images.
        seed: seed of the augmentation (with :meth:`ImageDataset.set_epoch`).
        subset_seed: seed of the subset choice, separate so that runs with different
            training seeds see the same images.
        download: let torchvision download the files if they are missing (needs a network).
    """
    info = dataset_info(name)
    if split not in ("train", "test"):
        raise ValueError(f"attn2d.data: expected split 'train' or 'test', got {split!r}")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    key = (info.name, str(root.resolve()), split == "train")
    if key not in _CACHE:
        _CACHE[key] = _LOADERS[info.name](root, split == "train", download)
    images, targets = _CACHE[key]
    if subset is not None:
        keep = stratified_subset(targets, subset, subset_seed)
        images, targets = images[keep], targets[keep]
    return ImageDataset(images, targets, info, split == "train" if augment is None else augment,
                        seed)
