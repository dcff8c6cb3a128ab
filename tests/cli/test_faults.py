"""A hostile day through the command line: each fault ends in one line naming its cause, exit
2 and no traceback (issue 17): a full disk, no network for --download, an unusable
--data-dir, out of memory, a --resume with other settings, and the defaults of visualize and
stats on a small folder."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from attn2d.cli import main
from attn2d.training.checkpoint import read_checkpoint

from ..datasets import CLASSES, write_fashion_mnist, write_folder, write_image


def one_line_error(capsys, argv: list[str]) -> str:
    """Run ``attn2d argv``; it must fail with exit 2 and end in one line without a traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"attn2d {argv[0]}: error: "), last
    return last


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[None]:
    """A tmpfs mounted at ``folder`` (root with CAP_SYS_ADMIN only; else the test skips)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root; the injected fault covers the same path")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the injected fault "
                    "covers the same path")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="module")
def data_dir(fake_fashion_mnist):
    return fake_fashion_mnist(64, 32)


def small_run(data_dir: str, out: Path, *extra: str) -> list[str]:
    return ["train", "--data-dir", data_dir, "--subset", "32", "--batch-size", "16",
            "--no-progress", "--out", str(out), *extra]


# -- a full disk ------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["tmpfs", "injected"])
def test_a_full_disk_is_one_line_that_keeps_the_previous_checkpoint(how, data_dir, tmp_path,
                                                                    capsys, monkeypatch):
    # The size of one checkpoint, from a run of one epoch, sizes the disk: room for the first
    # epoch's last.pt and best.pt (a copy), not for the second epoch's last.pt beside them.
    assert main(small_run(data_dir, tmp_path / "probe", "--epochs", "1")) == 0
    size = (tmp_path / "probe" / "last.pt").stat().st_size
    disk = tmp_path / "disk"
    if how == "tmpfs":
        mounted = tmpfs(disk, f"size={(5 * size // 2) // 1024}k")
    else:
        disk.mkdir()
        mounted = contextlib.nullcontext()
        saves = []
        real_save = torch.save

        def save(obj, path, *args, **kwargs):  # the second checkpoint meets a full disk
            saves.append(path)
            if len(saves) == 2:
                Path(path).write_bytes(b"partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real_save(obj, path, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    with mounted:
        run = disk / "run"
        last = one_line_error(capsys, small_run(data_dir, run, "--epochs", "3"))
        assert f"expected room to write {run / 'last.pt'}, got a full disk" in last
        assert last.endswith("the previous last.pt is kept")
        assert read_checkpoint(run / "last.pt")["epoch"] == 1  # intact, not truncated
        assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
        # Never lost work: with room again, the run resumes from that checkpoint.
        shutil.copytree(run, tmp_path / "moved")
    monkeypatch.undo()
    assert main(small_run(data_dir, tmp_path / "moved", "--epochs", "3", "--resume")) == 0
    result = json.loads((tmp_path / "moved" / "result.json").read_text())
    assert result["test_epoch"] == 3
    rows = (tmp_path / "moved" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1, 2, 3]


# -- no network for --download ----------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    """Name resolution fails, as on a machine without a network (nothing is downloaded)."""
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)


@pytest.mark.parametrize("dataset", ["fashion-mnist", "cifar10", "svhn"])
def test_download_without_a_network_says_so(dataset, no_network, tmp_path, capsys):
    last = one_line_error(capsys, ["train", "--dataset", dataset, "--download", "--data-dir",
                                   str(tmp_path / "data"), "--out", str(tmp_path / "run")])
    assert f"expected to download {dataset} into {tmp_path / 'data'} (--download), got no " \
           "network (" in last
    assert "Name or service not known" in last and "leave out --download" in last


# -- an unusable --data-dir ------------------------------------------------------------------
@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only: by its mode for a user, by a read-only mount for root (whom
    modes do not stop)."""
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
    else:
        with tmpfs(folder, "size=1m,ro"):
            yield


def test_an_unusable_data_dir_is_named_with_its_cause(tmp_path, capsys, monkeypatch):
    system = tmp_path / "system"  # a copy to unpack, as Debian's package would be
    write_fashion_mnist(system, n_train=20, n_test=10)
    monkeypatch.setenv("ATTN2D_FASHION_MNIST", str(system))
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    base = ["train", "--out", str(tmp_path / "run")]
    last = one_line_error(capsys, [*base, "--data-dir", str(a_file)])
    assert f"expected --data-dir to be a folder for fashion-mnist, got {a_file}, a file" in last
    last = one_line_error(capsys, [*base, "--data-dir", str(a_file), "--dataset", "cifar10",
                                   "--download"])
    assert f"got {a_file}, a file" in last
    last = one_line_error(capsys, [*base, "--data-dir", str(a_file / "data")])
    assert f"expected --data-dir {a_file / 'data'} to be a folder where fashion-mnist can be " \
           "unpacked, got not a directory" in last
    with read_only(tmp_path / "ro"):
        last = one_line_error(capsys, [*base, "--data-dir", str(tmp_path / "ro")])
    assert f"expected --data-dir {tmp_path / 'ro'} to be a folder where fashion-mnist can be " \
           "unpacked, got " in last
    assert ("read-only file system" in last) or ("permission denied" in last)


def test_a_file_given_as_a_folder_dataset_is_called_a_file(tmp_path, capsys):
    (tmp_path / "hostname").write_text("box\n")
    last = one_line_error(capsys, ["train", "--dataset", f"folder:{tmp_path / 'hostname'}",
                                   "--out", str(tmp_path / "run")])
    assert last.endswith(f"expected a folder dataset at {tmp_path / 'hostname'}, got a file, "
                         "not a folder")


# -- out of memory ----------------------------------------------------------------------------
def exhaust_memory(*args, **kwargs):
    """A real failed allocation (torch's own error), far beyond any machine's address space,
    so nothing is ever touched."""
    return torch.empty(1 << 62, dtype=torch.uint8)


def python_memory_error(*args, **kwargs):
    return bytearray(1 << 62)  # MemoryError, as PIL raises it


@pytest.mark.parametrize("bad_images", ["error", "skip"])
@pytest.mark.parametrize("failure", [exhaust_memory, python_memory_error])
def test_out_of_memory_while_decoding_is_not_a_bad_image(failure, bad_images, tmp_path, capsys,
                                                         monkeypatch):
    write_folder(tmp_path / "pets", per_class=(4, 2), size=8)
    monkeypatch.setattr("attn2d.data.folder.decode_file", failure)
    last = one_line_error(capsys, ["train", "--dataset", f"folder:{tmp_path / 'pets'}",
                                   "--image-size", "16", "--batch-size", "4", "--bad-images",
                                   bad_images, "--out", str(tmp_path / "run")])
    assert "out of memory while decoding/resizing " in last
    assert f"{tmp_path / 'pets' / 'train' / CLASSES[0]}" in last
    assert "at --image-size 16 (768 B per decoded image" in last
    assert "readable image" not in last and "skipped" not in capsys.readouterr().err


def test_an_image_size_that_cannot_fit_is_refused_before_decoding(tmp_path, capsys,
                                                                 monkeypatch):
    write_folder(tmp_path / "pets", per_class=(4, 2), size=8)
    monkeypatch.setattr("attn2d.data.memory._host_available", lambda: 256 << 20)

    def never(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr("attn2d.data.folder.decode_file", never)
    base = ["train", "--dataset", f"folder:{tmp_path / 'pets'}", "--image-size", "4096",
            "--out", str(tmp_path / "run")]
    last = one_line_error(capsys, [*base, "--batch-size", "8"])
    assert "out of memory at --image-size 4096: a training batch of 8 images takes 1.5 GiB " \
           "as float32, 256 MiB available on cpu" in last
    # One image fits a batch of one, not the decoding pass: 48 MiB per image, decoded and
    # resized, beside a batch of five.
    last = one_line_error(capsys, [*base, "--batch-size", "1"])
    assert f"out of memory while decoding/resizing the 18 images of {tmp_path / 'pets'} at " \
           "--image-size 4096 (48 MiB per decoded image, 256 MiB available)" in last


def test_out_of_memory_in_a_training_step_is_one_line(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("attn2d.training.loop.train_step", exhaust_memory)
    last = one_line_error(capsys, small_run(data_dir, tmp_path / "run", "--epochs", "1"))
    assert "out of memory while training (torch asked for 4.19e+06 TiB) at --batch-size 16, " \
           "--eval-batch-size 512" in last


# -- resuming with other settings -------------------------------------------------------------
def test_resume_with_other_settings_is_refused_naming_them(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(small_run(data_dir, run, "--epochs", "1", "--attention", "se")) == 0
    capsys.readouterr()
    finished = one_line_error(capsys, small_run(data_dir, run, "--epochs", "1", "--resume",
                                                "--attention", "cbam"))
    assert "expected the settings of the finished run" in finished
    assert "attention: 'se' -> 'cbam'" in finished
    extended = one_line_error(capsys, small_run(data_dir, run, "--epochs", "2", "--resume",
                                                "--attention", "cbam", "--lr", "0.1"))
    assert f"expected the settings of the checkpoint {run / 'last.pt'}" in extended
    assert "attention: 'se' -> 'cbam'" in extended and "lr: 0.05 -> 0.1" in extended
    assert json.loads((run / "result.json").read_text())["config"]["attention"] == "se"


# -- defaults that fit the data ---------------------------------------------------------------
@pytest.fixture
def forty_images(tmp_path) -> Path:
    """A folder of 40 images: 27 for training, 13 to test."""
    root = tmp_path / "forty"
    write_folder(root, per_class=(9, 4), size=16)
    write_image(root / "test" / CLASSES[0] / "999.png", torch.zeros(3, 16, 16, dtype=torch.uint8))
    assert len(list(root.rglob("*.png"))) == 40
    return root


def test_visualize_and_stats_at_their_defaults_use_a_small_folder_whole(forty_images, tmp_path,
                                                                         capsys):
    model = ["--model", "small_cnn", "--attention", "se", "--dataset", f"folder:{forty_images}"]
    assert main(["visualize", *model, "--out", str(tmp_path / "pictures")]) == 0
    out, err = capsys.readouterr()
    assert (tmp_path / "pictures" / "10-histograms.png").is_file()
    assert f"--sample 256 is more than the 13 images in the test split of folder:{forty_images}: " \
           "using all 13" in err
    assert main(["stats", *model]) == 0
    out, err = capsys.readouterr()
    assert f"on 13 folder:{forty_images} test images" in out
    assert "--images 256 is more than the 13 images" in err
    rows = [line.split() for line in out.splitlines() if line.startswith("block")]
    assert len(rows) == 3 and all(row[1] == "13" for row in rows)  # the images column


def test_visualize_help_calls_out_required(capsys):
    with pytest.raises(SystemExit):
        main(["visualize", "--help"])
    out = capsys.readouterr().out
    block = out[out.index("\n  --out OUT"):]
    block = block[: block.index("\n  --", 1)]
    assert "(required)" in block and "default" not in block


def test_more_workers_than_cores_is_one_warning_not_torchs(tmp_path, capsys, recwarn):
    write_folder(tmp_path / "pets", per_class=(4, 2), size=8)
    cores = len(os.sched_getaffinity(0))
    assert main(["train", "--dataset", f"folder:{tmp_path / 'pets'}", "--batch-size", "4",
                 "--epochs", "1", "--in-memory", "never", "--num-workers", str(cores + 1),
                 "--no-progress", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert err.count(f"attn2d train: warning: --num-workers {cores + 1} exceeds the") == 1
    assert not [w for w in recwarn if "worker" in str(w.message)]
