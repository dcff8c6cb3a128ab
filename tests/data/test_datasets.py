"""Datasets read from small files written here in the real formats; nothing downloads."""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest
import torch

from attn2d import Attn2dError
from attn2d.data import (
    DATASETS,
    canonical_dataset,
    dataset_info,
    denormalize,
    get_dataset,
    readers,
    stratified_subset,
)

from ..datasets import write_cifar10, write_cifar100, write_fashion_mnist, write_svhn


def test_cifar10_loads_pickle_batches_without_md5(tmp_path):
    first = write_cifar10(tmp_path)
    train = get_dataset("cifar10", "train", tmp_path, augment=False)
    test = get_dataset("cifar-10", "test", tmp_path)
    assert len(train) == 100 and len(test) == 20
    x, y = train[3]
    assert x.shape == (3, 32, 32) and y == 3
    info = dataset_info("cifar10")
    raw = torch.from_numpy(first[3].reshape(3, 32, 32)).float() / 255
    expected = (raw - torch.tensor(info.mean)[:, None, None]) / torch.tensor(info.std)[:, None,
                                                                                        None]
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(denormalize(x, "cifar10"), raw)


def test_cifar10_augmentation_is_a_padded_crop_or_its_mirror(tmp_path):
    write_cifar10(tmp_path)
    plain = get_dataset("cifar10", "train", tmp_path, augment=False)
    augmented = get_dataset("cifar10", "train", tmp_path, augment=True, seed=3)
    flips = 0
    for i in range(40):
        x = denormalize(plain[i][0], "cifar10")
        padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
        y = denormalize(augmented[i][0], "cifar10")
        windows = [padded[:, t : t + 32, s : s + 32] for t in range(9) for s in range(9)]
        plain_match = any(torch.allclose(y, w, atol=1e-5) for w in windows)
        flip_match = any(torch.allclose(y, w.flip(-1), atol=1e-5) for w in windows)
        assert plain_match or flip_match
        flips += flip_match and not plain_match
    assert 5 < flips < 35  # about half the images are mirrored


def test_augmentation_depends_only_on_seed_epoch_and_index(tmp_path):
    write_cifar10(tmp_path)
    a = get_dataset("cifar10", "train", tmp_path, seed=1)
    b = get_dataset("cifar10", "train", tmp_path, seed=1)
    a.set_epoch(2)
    b.set_epoch(2)
    torch.testing.assert_close(a[7][0], b[7][0])  # order of access does not matter
    b.set_epoch(3)
    assert not all(torch.equal(a[i][0], b[i][0]) for i in range(10))


def test_fashion_mnist_is_decompressed_from_the_system_folder(tmp_path, monkeypatch):
    system = tmp_path / "system"
    write_fashion_mnist(system)
    monkeypatch.setenv("ATTN2D_FASHION_MNIST", str(system))
    train = get_dataset("fashion-mnist", "train", tmp_path / "data")
    test = get_dataset("fmnist", "test", tmp_path / "data")
    assert len(train) == 120 and len(test) == 40
    assert train[0][0].shape == (1, 28, 28)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(readers._FASHION_FILES)  # no temp files
    labels = np.frombuffer(gzip.decompress((system / "train-labels-idx1-ubyte.gz").read_bytes()),
                           dtype=np.uint8, offset=8)
    assert train.targets.tolist() == labels.tolist()


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTN2D_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(Attn2dError, match="apt-get install dataset-fashion-mnist"):
        get_dataset("fashion-mnist", "train", tmp_path / "data")


def test_missing_cifar10_says_how_to_get_it(tmp_path):
    with pytest.raises(Attn2dError, match="--download"):
        get_dataset("cifar10", "train", tmp_path)


def test_stratified_subset_keeps_class_proportions_and_is_seeded():
    targets = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)
    keep = stratified_subset(targets, 100, seed=5)
    assert len(keep) == 100 and len(set(keep.tolist())) == 100
    assert torch.bincount(targets[keep]).tolist() == [50, 30, 20]
    assert torch.equal(keep, stratified_subset(targets, 100, seed=5))
    assert not torch.equal(keep, stratified_subset(targets, 100, seed=6))
    # Leftover places go to the largest remainders: 7 * (0.5, 0.3, 0.2) = 3.5, 2.1, 1.4.
    assert torch.bincount(targets[stratified_subset(targets, 7)]).tolist() == [4, 2, 1]
    with pytest.raises(ValueError, match="subset"):
        stratified_subset(targets, 1001)


def test_dataset_subset_is_independent_of_the_training_seed(tmp_path):
    write_cifar10(tmp_path)
    a = get_dataset("cifar10", "train", tmp_path, subset=30, seed=0)
    b = get_dataset("cifar10", "train", tmp_path, subset=30, seed=9)
    assert torch.equal(a.images, b.images)
    assert torch.bincount(a.targets).tolist() == [3] * 10


def test_dataset_info_and_errors():
    info = dataset_info("Fashion-MNIST")
    assert (info.in_channels, info.image_size, info.num_classes) == (1, 28, 10)
    assert info.classes[9] == "Ankle boot" and len(info.mean) == len(info.std) == 1
    with pytest.raises(ValueError, match="expected a dataset in"):
        dataset_info("imagenet")
    with pytest.raises(ValueError, match="split"):
        get_dataset("cifar10", "valid")


def test_cifar100_reads_fine_labels_from_its_pickle_files(tmp_path):
    rows, fine = write_cifar100(tmp_path)
    train = get_dataset("CIFAR-100", "train", tmp_path, augment=False)
    test = get_dataset("cifar_100", "test", tmp_path)
    assert len(train) == 200 and len(test) == 100
    assert train.targets.tolist() == fine
    info = dataset_info("cifar100")
    assert info.num_classes == 100 and info.classes[:3] == ("apple", "aquarium_fish", "baby")
    assert (info.crop_padding, info.flip) == (4, True)
    # Row i holds the red plane, then green, then blue, each row-major 32 x 32.
    torch.testing.assert_close(denormalize(train[5][0], info),
                               torch.from_numpy(rows[5].reshape(3, 32, 32)).float() / 255)


def test_svhn_reads_mat_files_with_digit_zero_as_label_zero(tmp_path):
    x, y = write_svhn(tmp_path / "svhn")
    train = get_dataset("SVHN", "train", tmp_path, augment=False)
    assert len(train) == 30 and len(get_dataset("svhn", "test", tmp_path)) == 20
    expected = [int(v) % 10 for v in y[:, 0]]  # 10 -> 0, 1..9 unchanged
    assert train.targets.tolist() == expected and 0 in expected
    info = dataset_info("svhn")
    assert (info.crop_padding, info.flip, info.classes[0]) == (4, False, "0")
    # X[h, w, c, n] is pixel (h, w) of channel c of image n.
    torch.testing.assert_close(train.images[7, 2, 3, 5], torch.tensor(x[3, 5, 2, 7]))
    torch.testing.assert_close(denormalize(train[7][0], info),
                               torch.from_numpy(x[..., 7]).permute(2, 0, 1).float() / 255)


def test_svhn_is_also_read_where_torchvision_downloads_it(tmp_path):
    write_svhn(tmp_path)  # train_32x32.mat directly in data_dir
    assert len(get_dataset("svhn", "train", tmp_path)) == 30


def test_missing_cifar100_and_svhn_say_how_to_get_them(tmp_path):
    with pytest.raises(Attn2dError, match=r"cifar-100-python.*--download"):
        get_dataset("cifar100", "train", tmp_path)
    with pytest.raises(Attn2dError, match=r"train_32x32\.mat.*--download"):
        get_dataset("svhn", "train", tmp_path)


@pytest.mark.parametrize(("alias", "canonical"), [
    ("fmnist", "fashion-mnist"), ("FashionMNIST", "fashion-mnist"),
    ("fashion_mnist", "fashion-mnist"), ("Fashion-MNIST", "fashion-mnist"),
    ("CIFAR10", "cifar10"), ("cifar-10", "cifar10"), ("cifar_100", "cifar100"),
    ("CIFAR-100", "cifar100"), ("svhn", "svhn"), ("SVHN", "svhn"),
    ("folder:My Images/", "folder:My Images/"), ("Folder:/data/x", "folder:/data/x"),
])
def test_every_alias_has_one_canonical_name(alias, canonical):
    assert canonical_dataset(alias) == canonical
    if not canonical.startswith("folder:"):
        assert dataset_info(alias).name == canonical


def test_unknown_dataset_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"^attn2d.data: expected a dataset in .*'svhn'.*"
                                         r"'folder:PATH'.*got 'imagenet'$"):
        canonical_dataset("imagenet")
    with pytest.raises(ValueError, match="folder:PATH with a path"):
        canonical_dataset("folder:  ")
    with pytest.raises(Attn2dError, match="dataset name"):
        canonical_dataset(10)
    assert set(DATASETS) == {"cifar10", "cifar100", "fashion-mnist", "svhn", "folder:PATH"}


def test_tests_never_read_the_machines_own_fashion_mnist(tmp_path):
    """conftest points the system folder at nothing, for this process and its children: a
    test that needs Fashion-MNIST makes its own, so `make test` passes on a fresh machine
    whether or not Debian's dataset-fashion-mnist is installed."""
    assert not readers.system_fashion_mnist().exists()
    with pytest.raises(Attn2dError, match="install Debian's dataset-fashion-mnist"):
        get_dataset("fashion-mnist", "train", tmp_path)
    child = subprocess.run([sys.executable, "-c", "from attn2d.data.readers import "
                            "system_fashion_mnist as s; print(s().exists())"],
                           capture_output=True, text=True, timeout=120, check=True)
    assert child.stdout.strip() == "False"
