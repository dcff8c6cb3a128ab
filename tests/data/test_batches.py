"""Batches built on the device: augmentation against a per-image reference, order, resume,
shards, evaluation padding, streaming, validation split and the user's own datasets."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from attn2d import Attn2dError
from attn2d.data import (
    DatasetInfo,
    DataSpec,
    EvalBatches,
    Normalize,
    TrainBatches,
    data_from_datasets,
    get_dataset,
    load_data,
)
from attn2d.data.augment import hash32
from attn2d.data.split import Split

from ..datasets import write_cifar10, write_fashion_mnist

M32 = 0xFFFFFFFF


# --- The reference: the documented hash and crop, written the slow, obvious way. ----------

def lowbias32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def key_hash(seed: int, *words: int) -> int:
    seed &= (1 << 64) - 1
    h = 0x9E3779B9
    for w in (seed & M32, seed >> 32, *words):
        h = lowbias32(h ^ w)
    return h


def reference_order(n: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(key_hash(seed, epoch, 0x4F524452))
    return torch.randperm(n, generator=generator).tolist()


def reference_image(image: torch.Tensor, seed: int, epoch: int, index: int, padding: int,
                    flip: bool, mean: tuple, std: tuple) -> torch.Tensor:
    """One image's crop (top, left drawn in [0, 2p]), optional mirror, then normalisation."""
    h = key_hash(seed, epoch, index)
    top, left = lowbias32(h ^ 0) % (2 * padding + 1), lowbias32(h ^ 1) % (2 * padding + 1)
    size = image.shape[-1]
    out = F.pad(image, (padding,) * 4)[:, top : top + size, left : left + size]
    if flip and lowbias32(h ^ 2) & 1:
        out = out.flip(-1)
    return (out.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None,
                                                                                        None]


def test_vectorised_hash_equals_the_reference_on_all_32_bit_words():
    words = torch.cat([torch.randint(0, 2**32, (200,)), torch.tensor([0, 1, 2**31, 2**32 - 1])])
    for seed in (0, 5, 2**40 + 3, -1, 2**63 - 1):
        got = hash32(seed, 9, words)
        assert got.tolist() == [key_hash(seed, 9, w) for w in words.tolist()]
        assert hash32(seed, 9, 77) == key_hash(seed, 9, 77)  # plain ints stay ints


# --- Small in-memory datasets whose label is the image's index: a row tells its index. ----

MEAN, STD = (0.3, 0.5, 0.4), (0.2, 0.25, 0.3)


def indexed_images(n: int = 40, size: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def train_batches(images: torch.Tensor, seed: int = 7, padding: int = 2, flip: bool = True,
                  in_memory: bool = True) -> TrainBatches:
    split = Split(images=images, targets=torch.arange(len(images)))
    return TrainBatches(split, Normalize(MEAN, STD), torch.device("cpu"), seed, padding, flip,
                        in_memory)


def test_augmented_batches_match_the_per_image_reference():
    images = indexed_images()
    batches = train_batches(images)
    flips = 0
    for epoch in (0, 3):
        for x, y in batches.batches(epoch, 8):
            for row, index in zip(x, y.tolist(), strict=True):
                expected = reference_image(images[index], 7, epoch, index, 2, True, MEAN, STD)
                torch.testing.assert_close(row, expected, rtol=0, atol=1e-5)
                plain = reference_image(images[index], 7, epoch, index, 2, False, MEAN, STD)
                flips += not torch.equal(expected, plain)
    assert 20 < flips < 60  # about half of the 80 rows are mirrored


def test_epoch_order_is_the_documented_seeded_permutation():
    batches = train_batches(indexed_images(), seed=11)
    for epoch in (0, 1, 5):
        order = reference_order(40, 11, epoch)
        seen = torch.cat([y for _, y in batches.batches(epoch, 8)]).tolist()
        assert seen == order
        assert torch.cat(list(batches.batch_indices(epoch, 8))).tolist() == order
    assert reference_order(40, 11, 0) != reference_order(40, 11, 1)
    assert reference_order(40, 11, 0) != reference_order(40, 12, 0)


def test_training_drops_the_last_partial_batch_with_a_fresh_order_each_epoch():
    batches = train_batches(indexed_images(n=30))
    assert len(batches) == 30 and batches.steps_per_epoch(8) == 3
    seen = set()
    for epoch in range(4):
        rows = torch.cat([y for x, y in batches.batches(epoch, 8)])
        assert len(rows) == 24 and len(set(rows.tolist())) == 24
        seen |= set(rows.tolist())
    assert seen == set(range(30))
    with pytest.raises(ValueError, match="batch_size <= 30 training images, got 31"):
        batches.steps_per_epoch(31)


def test_resumed_epoch_gives_exactly_the_remaining_batches():
    batches = train_batches(indexed_images())
    full = list(batches.batches(2, 8))
    for start in (0, 1, 4, 5):
        tail = list(batches.batches(2, 8, start_step=start))
        assert len(tail) == 5 - start
        for (x, y), (xf, yf) in zip(tail, full[start:], strict=True):
            assert torch.equal(x, xf) and torch.equal(y, yf)
    with pytest.raises(ValueError, match="start_step"):
        next(batches.batches(2, 8, start_step=6))


@pytest.mark.parametrize("world", [2, 4])
def test_rank_shards_are_disjoint_and_make_up_the_global_batch(world):
    batches = train_batches(indexed_images())
    whole = list(batches.batches(1, 8))
    shards = [list(batches.batches(1, 8, rank=r, world=world)) for r in range(world)]
    for step, (x, y) in enumerate(whole):
        parts = [shard[step] for shard in shards]
        assert all(len(py) == 8 // world for _, py in parts)
        ids = [i for _, py in parts for i in py.tolist()]
        assert len(set(ids)) == 8 and set(ids) == set(y.tolist())
        for rank, (px, py) in enumerate(parts):  # rank r holds rows r::world
            assert torch.equal(px, x[rank::world]) and torch.equal(py, y[rank::world])
    with pytest.raises(ValueError, match="divisible by world=3"):
        next(batches.batches(0, 8, world=3))
    with pytest.raises(ValueError, match="rank < world"):
        next(batches.batches(0, 8, rank=2, world=2))


def test_evaluation_keeps_a_fixed_order_and_pads_the_last_batch():
    images = indexed_images(n=21)
    split = Split(images=images, targets=torch.arange(21) % 4)
    evaluation = EvalBatches(split, Normalize(MEAN, STD), torch.device("cpu"))
    assert len(evaluation) == 21 and evaluation.steps(8) == 3
    assert evaluation.targets.tolist() == (torch.arange(21) % 4).tolist()
    xs, ys, idx = zip(*evaluation.batches(8), strict=True)
    assert all(len(i) == 8 for i in idx)
    index = torch.cat(idx)
    assert index.tolist() == [*range(21), -1, -1, -1]
    real = index >= 0
    expected = torch.stack([reference_image(im, 0, 0, 0, 0, False, MEAN, STD) for im in images])
    torch.testing.assert_close(torch.cat(xs)[real], expected, rtol=0, atol=1e-5)
    assert torch.cat(ys)[real].tolist() == evaluation.targets.tolist()
    # Ranks: disjoint rows of the same padded global batches, as many batches on each.
    shards = [list(evaluation.batches(8, rank=r, world=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3
    for step in range(3):
        ids = [i for shard in shards for i in shard[step][2].tolist()]
        assert sorted(ids) == sorted(idx[step].tolist())


def test_one_image_alone_equals_its_row_in_a_batch(tmp_path):
    write_cifar10(tmp_path)
    data = load_data(DataSpec("cifar10", data_dir=str(tmp_path), subset=50), "cpu", seed=4)
    single = get_dataset("cifar10", "train", tmp_path, subset=50, seed=4)
    for epoch in (0, 2):
        single.set_epoch(epoch)
        for index, (x, y) in zip(data.train.batch_indices(epoch, 16),
                                 data.train.batches(epoch, 16), strict=True):
            rows = [single[i] for i in index.tolist()]
            assert torch.equal(x, torch.stack([r[0] for r in rows]))
            assert y.tolist() == [r[1] for r in rows]


def test_streamed_batches_equal_in_memory_batches(tmp_path):
    write_cifar10(tmp_path)
    spec = DataSpec("cifar10", data_dir=str(tmp_path), subset=40, test_subset=10)
    memory = load_data(spec, "cpu", seed=1)
    streamed = load_data(dataclasses.replace(spec, in_memory="never"), "cpu", seed=1)
    assert memory.train.in_memory and not streamed.train.in_memory
    for a, b in zip(memory.train.batches(1, 16, start_step=1, rank=1, world=2),
                    streamed.train.batches(1, 16, start_step=1, rank=1, world=2), strict=True):
        assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    for a, b in zip(memory.test.batches(4), streamed.test.batches(4), strict=True):
        assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_fashion_mnist_batches_with_validation_split(tmp_path):
    root = tmp_path / "data"
    write_fashion_mnist(root / "FashionMNIST" / "raw", n_train=120, n_test=40, compressed=False)
    spec = DataSpec("fmnist", data_dir=str(root), val_split=20, subset=50)
    data = load_data(spec, "cpu", seed=0)
    assert data.info.name == "fashion-mnist" and (data.info.crop_padding, data.info.flip) == (2,
                                                                                              False)
    assert len(data.val) == 20 and len(data.train) == 50 and len(data.test) == 40
    assert torch.bincount(data.val.targets, minlength=10).tolist() == [2] * 10  # stratified
    # The held-out images are not trained on: compare the pixels themselves.
    plain = load_data(DataSpec("fmnist", data_dir=str(root), val_split=20, subset=50,
                               augment=False), "cpu", seed=0)
    assert (plain.info.crop_padding, plain.info.flip) == (0, False)
    train_rows = {tuple(r.flatten().tolist()) for x, _ in plain.train.batches(0, 10) for r in x}
    val_rows = {tuple(r.flatten().tolist()) for x, _, i in plain.val.batches(10) for r in x}
    assert len(train_rows) == 50 and not train_rows & val_rows
    with pytest.raises(ValueError, match="--val-split < 120"):
        load_data(DataSpec("fmnist", data_dir=str(root), val_split=120), "cpu", seed=0)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("subset", 0, "--subset >= 1"), ("in_memory", "sometimes", "--in-memory to be one of"),
    ("image_size", 32, "--image-size only with --dataset folder:PATH"),
    ("mean", (0.5, 0.5), "1 mean value"), ("std", (0.0,), "std values > 0"),
    ("bad_images", "ignore", "--bad-images to be one of"),
    ("augment", "yes", "--augment to be true or false"),
])
def test_bad_data_settings_get_one_clear_line(tmp_path, field, value, message):
    with pytest.raises(Attn2dError, match=f"^(attn2d.data: )?expected .*{message}"):
        load_data(DataSpec("fmnist", data_dir=str(tmp_path), **{field: value}), "cpu", seed=0)


class Pairs(Dataset):
    """A user's Dataset: (image, label) pairs of any dtype."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def test_user_float_datasets_are_used_as_given():
    images = torch.randn(20, 2, 5, 5)
    labels = torch.arange(20) % 3
    for in_memory in ("always", "never"):
        data = data_from_datasets(Pairs(images, labels), Pairs(images[:7], labels[:7]), 3,
                                  "cpu", seed=2, in_memory=in_memory)
        assert data.train.in_memory == (in_memory == "always")
        assert (data.info.name, data.info.in_channels, data.info.image_size) == ("custom", 2, 5)
        assert data.info.mean == (0.0, 0.0) and data.info.crop_padding == 0
        order = torch.cat(list(data.train.batch_indices(0, 4)))
        x = torch.cat([x for x, _ in data.train.batches(0, 4)])
        assert torch.equal(x, images[order])  # no augmentation, no normalisation added
        assert data.test.targets.tolist() == labels[:7].tolist()
        assert [i.tolist() for _, _, i in data.test.batches(4)] == [[0, 1, 2, 3], [4, 5, 6, -1]]


def test_user_uint8_datasets_are_normalised_with_computed_statistics():
    images = torch.randint(0, 256, (12, 1, 4, 4), dtype=torch.uint8)
    labels = torch.arange(12) % 2
    data = data_from_datasets(Pairs(images, labels), Pairs(images, labels), 2, "cpu")
    pixels = images.double() / 255
    assert data.info.mean[0] == pytest.approx(pixels.mean().item())
    assert data.info.std[0] == pytest.approx(pixels.std(unbiased=False).item())
    x, _, _ = next(data.test.batches(12))
    torch.testing.assert_close(x, ((pixels - pixels.mean()) / pixels.std(unbiased=False)).float())
    info = DatasetInfo("mine", 1, 4, 2, ("a", "b"), (0.5,), (0.25,), 0, False)
    given = data_from_datasets(Pairs(images, labels), Pairs(images, labels), info, "cpu")
    assert given.info.mean == (0.5,) and given.info.classes == ("a", "b")


def test_user_datasets_with_bad_items_are_refused():
    good = Pairs(torch.zeros(4, 1, 3, 3), torch.zeros(4))
    with pytest.raises(Attn2dError, match="uint8 or float tensors, got list"):
        data_from_datasets(Pairs([[1]] * 4, torch.zeros(4)), good, 2, "cpu")
    with pytest.raises(ValueError, match=r"labels in \[0, 2\), got \[0, 5\]"):
        data_from_datasets(Pairs(torch.zeros(4, 1, 3, 3), torch.tensor([0, 1, 5, 1])), good, 2,
                           "cpu")
    with pytest.raises(ValueError, match="square train images"):
        data_from_datasets(Pairs(torch.zeros(4, 1, 3, 5), torch.zeros(4)), good, 2, "cpu")
    with pytest.raises(Attn2dError, match="DatasetInfo or a number of classes"):
        data_from_datasets(good, good, 0, "cpu")


def test_resample_train_draws_the_training_subset_from_the_seed(fake_fashion_mnist):
    root = fake_fashion_mnist(120, 40)

    def images(seed: int, resample: bool) -> set:
        data = load_data(DataSpec("fmnist", data_dir=root, subset=30, augment=False,
                                  resample_train=resample), "cpu", seed=seed)
        return {tuple(x.flatten().tolist()) for batch, _ in data.train.batches(0, 10)
                for x in batch}

    assert images(0, False) == images(1, False)  # the default: every seed, the same images
    assert images(0, True) != images(1, True)
    assert images(0, True) == images(0, True)
