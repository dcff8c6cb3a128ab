"""Image folders, on folders of small PNG files written here."""

from __future__ import annotations

import pytest
import torch

from attn2d import Attn2dError
from attn2d.data import DataSpec, dataset_info, get_dataset, load_data

from ..datasets import CLASSES, write_folder, write_image


def eval_pixels(data, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """All images of an evaluation split in order, back to 0..255, and their labels."""
    batches = getattr(data, split)
    xs, ys = [], []
    for x, y, index in batches.batches(4):
        keep = index >= 0
        xs.append(x[keep])
        ys.append(y[keep])
    mean = torch.tensor(data.info.mean)[:, None, None]
    std = torch.tensor(data.info.std)[:, None, None]
    return ((torch.cat(xs) * std + mean) * 255).round(), torch.cat(ys)


def test_folder_images_load_with_statistics_of_the_training_split(tmp_path):
    written = write_folder(tmp_path)
    data = load_data(DataSpec(f"folder:{tmp_path}"), "cpu", seed=0)
    info = data.info
    assert info.name == f"folder:{tmp_path}" and info.classes == CLASSES
    assert (info.in_channels, info.image_size, info.num_classes) == (3, 8, 3)
    assert (info.crop_padding, info.flip) == (1, True)
    train = torch.stack([im for im, _ in written["train"]]).double() / 255
    torch.testing.assert_close(torch.tensor(info.mean, dtype=torch.float64),
                               train.mean((0, 2, 3)))
    torch.testing.assert_close(torch.tensor(info.std, dtype=torch.float64),
                               train.permute(1, 0, 2, 3).flatten(1).std(1, unbiased=False))
    pixels, labels = eval_pixels(data)
    assert torch.equal(pixels, torch.stack([im for im, _ in written["test"]]).float())
    assert labels.tolist() == [label for _, label in written["test"]]
    assert len(data.train) == 12 and data.train.steps_per_epoch(4) == 3
    assert dataset_info(f"folder:{tmp_path}") == info


def test_folder_options_size_channels_statistics_and_augmentation(tmp_path):
    write_folder(tmp_path, size=10)
    spec = DataSpec(f"Folder:{tmp_path}", image_size=4, channels=1, mean=(0.5,), std=(0.25,),
                    augment=False)
    data = load_data(spec, "cpu", seed=0)
    assert (data.info.in_channels, data.info.image_size) == (1, 4)
    assert (data.info.mean, data.info.std) == ((0.5,), (0.25,))
    assert (data.info.crop_padding, data.info.flip) == (0, False)
    x, _ = next(data.train.batches(0, 6))
    assert x.shape == (6, 1, 4, 4)


def test_grey_folders_default_to_one_channel_and_val_stands_in_for_test(tmp_path):
    written = write_folder(tmp_path, channels=1, test="val")
    data = load_data(DataSpec(f"folder:{tmp_path}"), "cpu", seed=0)
    assert data.info.in_channels == 1 and len(data.test) == 6
    pixels, _ = eval_pixels(data)
    assert torch.equal(pixels, torch.stack([im for im, _ in written["val"]]).float())


def test_mixed_sizes_need_an_image_size(tmp_path):
    write_folder(tmp_path)
    write_image(tmp_path / "train" / "cat" / "big.png", torch.zeros(3, 12, 9, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"expected --image-size for .*, got sizes 8x8, 9x12"):
        load_data(DataSpec(f"folder:{tmp_path}"), "cpu", seed=0)
    data = load_data(DataSpec(f"folder:{tmp_path}", image_size=6), "cpu", seed=0)
    assert data.info.image_size == 6 and len(data.train) == 13


def test_a_test_class_missing_from_train_is_named(tmp_path):
    write_folder(tmp_path)
    write_image(tmp_path / "test" / "emu" / "0.png", torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="got 'emu' only in"):
        load_data(DataSpec(f"folder:{tmp_path}"), "cpu", seed=0)


def test_a_test_folder_may_lack_a_class(tmp_path):
    write_folder(tmp_path)
    for file in (tmp_path / "test" / "dog").iterdir():
        file.unlink()
    (tmp_path / "test" / "dog").rmdir()
    data = load_data(DataSpec(f"folder:{tmp_path}"), "cpu", seed=0)
    assert data.test.targets.tolist() == [0, 0, 2, 2]  # owl keeps label 2


def test_an_empty_class_folder_is_named(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "train" / "bat").mkdir()
    with pytest.raises(ValueError, match=r"expected images in every class folder, got none in "
                                         r".*train/bat"):
        load_data(DataSpec(f"folder:{tmp_path}"), "cpu", seed=0)


def test_missing_folders_are_explained(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        load_data(DataSpec(f"folder:{tmp_path / 'nowhere'}"), "cpu", seed=0)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"test or .*val beside"):
        load_data(DataSpec(f"folder:{tmp_path}"), "cpu", seed=0)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_images_are_refused_or_skipped(tmp_path, damage, caplog):
    write_folder(tmp_path)
    bad = tmp_path / "train" / "dog" / "zzz.png"
    good = (tmp_path / "train" / "dog" / "000.png").read_bytes()
    # Random bytes fail at the header; a cut-off PNG has a good header and fails to decode.
    bad.write_bytes(b"not a png at all" if damage == "garbage" else good[: len(good) // 2])
    with pytest.raises(ValueError, match=f"expected a readable image, got {bad} .*"
                                         "--bad-images skip"):
        load_data(DataSpec(f"folder:{tmp_path}"), "cpu", seed=0)
    data = load_data(DataSpec(f"folder:{tmp_path}", bad_images="skip"), "cpu", seed=0)
    assert f"skipped 1 unreadable image, e.g. {bad}" in caplog.text
    assert len(data.train) == 12


def test_streamed_folders_equal_in_memory_folders(tmp_path):
    write_folder(tmp_path)
    memory = load_data(DataSpec(f"folder:{tmp_path}", in_memory="always", val_split=3), "cpu",
                       seed=5)
    streamed = load_data(DataSpec(f"folder:{tmp_path}", in_memory="never", val_split=3,
                                  num_workers=1), "cpu", seed=5)
    assert memory.train.in_memory and not streamed.train.in_memory
    assert memory.info == streamed.info
    for a, b in zip(memory.train.batches(2, 3), streamed.train.batches(2, 3), strict=True):
        assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    for split in ("val", "test"):
        for a, b in zip(getattr(memory, split).batches(4), getattr(streamed, split).batches(4),
                        strict=True):
            assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_an_image_damaged_after_the_scan_is_one_line_from_a_worker_process(tmp_path):
    write_folder(tmp_path)
    data = load_data(DataSpec(f"folder:{tmp_path}", in_memory="never", num_workers=1), "cpu",
                     seed=0)
    for path in (tmp_path / "train").rglob("*.png"):  # damaged while the run goes on
        path.write_bytes(b"not a png any more")
    with pytest.raises(Attn2dError) as caught:
        list(data.train.batches(4, 1))
    message = str(caught.value)
    assert message.startswith("attn2d.data: expected a readable image, got ")
    assert "\n" not in message and "Traceback" not in message


def test_get_dataset_reads_folders_for_pictures(tmp_path):
    written = write_folder(tmp_path)
    ds = get_dataset(f"folder:{tmp_path}", "test")
    image, label = ds[3]
    assert image.shape == (3, 8, 8) and label == written["test"][3][1]
