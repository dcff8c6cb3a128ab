"""Writers of small dataset files in the real formats, shared by the tests (nothing in
them is ever downloaded)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attn2d.data import dataset_info

__all__ = [
    "CLASSES",
    "tiny_fashion_mnist",
    "write_cifar10",
    "write_cifar100",
    "write_fashion_mnist",
    "write_folder",
    "write_image",
    "write_svhn",
]

CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def write_cifar10(root: Path, per_batch: int = 20, seed: int = 0) -> np.ndarray:
    """CIFAR-10's python format: pickled dicts of uint8 rows (3072 = 3×32×32) and labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    first = None
    for name in [*CIFAR_BATCHES, "test_batch"]:
        rows = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": rows, "labels": labels}, f)
        first = rows if first is None else first
    with open(folder / "batches.meta", "wb") as f:
        names = list(dataset_info("cifar10").classes)
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch}, f)
    return first


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0
                   ) -> tuple[np.ndarray, list[int]]:
    """CIFAR-100's python format: one pickled dict per split with fine and coarse labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    first = None
    for name, n in (("train", n_train), ("test", n_test)):
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.permutation(np.arange(n) % 100)]
        entry = {"filenames": [f"{i}.png" for i in range(n)], "batch_label": name,
                 "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": rows}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        first = (rows, fine) if first is None else first
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": list(dataset_info("cifar100").classes),
                     "coarse_label_names": [f"super{i}" for i in range(20)]}, f)
    return first


def write_svhn(folder: Path, n_train: int = 30, n_test: int = 20, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """SVHN's MATLAB files: X (32, 32, 3, N) uint8 and y (N, 1) with digit 0 as label 10."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    first = None
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        first = (x, y) if first is None else first
    return first


def _idx(array: np.ndarray) -> bytes:
    # IDX: two zero bytes, a type code (0x08 = uint8), the rank, big-endian sizes, the data.
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_fashion_mnist(folder: Path, n_train: int = 120, n_test: int = 40, seed: int = 0,
                        compressed: bool = True) -> None:
    """The four IDX files of Fashion-MNIST (``.gz`` as Debian ships them, or raw).

    Images carry a faint class-dependent pattern so that a few steps of training learn
    something, which keeps the training tests meaningful.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 120, size=(n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 6, 4:24] = 250
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            if compressed:
                (folder / f"{name}.gz").write_bytes(gzip.compress(_idx(array)))
            else:
                (folder / name).write_bytes(_idx(array))


@pytest.fixture(scope="module", name="data_dir")
def tiny_fashion_mnist(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The ``data_dir`` fixture of a test module that imports this: a Fashion-MNIST folder
    of 64 training and 32 test images."""
    root = tmp_path_factory.mktemp("data")
    write_fashion_mnist(root / "FashionMNIST" / "raw", n_train=64, n_test=32, compressed=False)
    return str(root)


CLASSES = ("cat", "dog", "owl")


def write_image(path: Path, image: torch.Tensor) -> None:
    """A (C, H, W) uint8 tensor as a PNG file (grey for one channel, else RGB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = image.permute(1, 2, 0).numpy()
    Image.fromarray(pixels[..., 0] if image.shape[0] == 1 else pixels).save(path)


def write_folder(root: Path, *, per_class: tuple[int, int] = (4, 2), size: int = 8,
                 channels: int = 3, test: str = "test", seed: int = 0
                 ) -> dict[str, list[tuple[torch.Tensor, int]]]:
    """root/train/<class>/i.png and root/<test>/<class>/i.png; returns the images by split
    in ImageFolder's order (class by class, files sorted by name)."""
    generator = torch.Generator().manual_seed(seed)
    written: dict[str, list[tuple[torch.Tensor, int]]] = {}
    for split, count in (("train", per_class[0]), (test, per_class[1])):
        written[split] = []
        for label, name in enumerate(CLASSES):
            for i in range(count):
                image = torch.randint(0, 256, (channels, size, size), dtype=torch.uint8,
                                      generator=generator)
                write_image(root / split / name / f"{i:03d}.png", image)
                written[split].append((image, label))
    return written
