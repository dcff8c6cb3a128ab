"""What attn2d knows about each dataset: canonical names, aliases, sizes, classes, statistics."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .._base.errors import Attn2dError

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "builtin_info",
    "canonical_dataset",
    "default_data_dir",
    "folder_path",
]

FOLDER_PREFIX = "folder:"


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a plot need to know about a dataset.

    Args:
        name: canonical name (see :func:`canonical_dataset`).
        in_channels: image channels (3 or 1).
        image_size: height = width in pixels.
        num_classes: number of labels.
        classes: label names, index = label.
        mean: per-channel mean of the training images in [0, 1].
        std: per-channel standard deviation of the training images in [0, 1].
        crop_padding: zero padding of the training random crop (0: no crop).
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


# The 100 fine labels of CIFAR-100, in label order (the ``fine_label_names`` of its meta file).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip

# Per-channel mean and (population) standard deviation of each training set in [0, 1]: the
# values the CIFAR and SVHN literature normalises with (CIFAR-100: as in
# weiaicunzai/pytorch-cifar100; SVHN: as in PatrickZH/DeepCore; Fashion-MNIST: 60,000 images).
_BUILTIN = {
    "cifar10": DatasetInfo(
        "cifar10", 3, 32, 10,
        ("airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck"),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), crop_padding=4, flip=True,
    ),
    "cifar100": DatasetInfo(
        "cifar100", 3, 32, 100, CIFAR100_CLASSES,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), crop_padding=4, flip=True,
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 1, 28, 10,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        # Flipping is not part of the usual Fashion-MNIST recipe: shoes all face one way.
        (0.2860,), (0.3530,), crop_padding=2, flip=False,
    ),
    "svhn": DatasetInfo(
        "svhn", 3, 32, 10, tuple(str(d) for d in range(10)),
        # No flip: a mirrored digit is another glyph (2, 5, 7 ...).
        (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), crop_padding=4, flip=False,
    ),
}  # fmt: skip

DATASETS = (*sorted(_BUILTIN), f"{FOLDER_PREFIX}PATH")

# Aliases are matched after lower-casing and dropping "-", "_", " " and ".".
_ALIASES = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "svhn": "svhn",
}


def canonical_dataset(name: str) -> str:
    """The canonical name of a dataset alias.

    ``fmnist``, ``FashionMNIST``, ``fashion_mnist`` → ``fashion-mnist``; ``CIFAR10``,
    ``cifar-10`` → ``cifar10``; ``cifar_100`` → ``cifar100``; ``SVHN`` → ``svhn``;
    ``folder:PATH`` (prefix in any case) → ``folder:PATH`` with the path as given.
    """
    if not isinstance(name, str):
        raise Attn2dError(f"attn2d.data: expected a dataset name, got {type(name).__name__}")
    text = name.strip()
    if text[: len(FOLDER_PREFIX)].lower() == FOLDER_PREFIX:
        path = text[len(FOLDER_PREFIX):]
        if not path.strip():
            raise Attn2dError(f"attn2d.data: expected folder:PATH with a path, got {name!r}")
        return FOLDER_PREFIX + path
    key = re.sub(r"[-_ .]", "", text.lower())
    if key not in _ALIASES:
        raise Attn2dError(f"attn2d.data: expected a dataset in {DATASETS}, got {name!r}")
    return _ALIASES[key]


def folder_path(name: str) -> Path | None:
    """The path of a ``folder:PATH`` dataset name (any alias form); None for other names."""
    canonical = canonical_dataset(name)
    return Path(canonical[len(FOLDER_PREFIX):]) if canonical.startswith(FOLDER_PREFIX) else None


def builtin_info(name: str) -> DatasetInfo:
    """Channels, size, classes and normalisation of a built-in dataset (not a folder)."""
    canonical = canonical_dataset(name)
    if canonical not in _BUILTIN:
        raise Attn2dError(f"attn2d.data: expected a built-in dataset in {tuple(_BUILTIN)}, got "
                          f"{name!r}")
    return _BUILTIN[canonical]


def default_data_dir() -> Path:
    """``$ATTN2D_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get("ATTN2D_DATA_DIR", "data"))
