"""Atomic writes when the disk fills: one line naming the file, the previous file intact."""

from __future__ import annotations

import errno
import os
import shutil
from collections import namedtuple

import pytest

from attn2d import Attn2dError
from attn2d._base.io import atomic_path, write_atomic

Usage = namedtuple("Usage", "total used free")


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path):
    path = write_atomic(tmp_path / "last.pt", b"epoch 1")
    with pytest.raises(Attn2dError, match=r"expected room to write .*last\.pt, got a full disk "
                                          r"\(.* bytes free on its file system\); the previous "
                                          r"last\.pt is kept"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half of epoch 2")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_bytes() == b"epoch 1"
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_a_writers_own_error_on_a_nearly_full_disk_is_a_full_disk(tmp_path, monkeypatch):
    # torch.save reports ENOSPC as "[enforce fail at inline_container.cc:672] . unexpected
    # pos"; only the free space tells it from a bug.
    message = "[enforce fail at inline_container.cc:672] . unexpected pos 640 vs 512"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 30, 1 << 30, 4096))
    with pytest.raises(Attn2dError, match=r"new\.pt, got a full disk \(4,096 bytes free"), \
            atomic_path(tmp_path / "new.pt"):
        raise RuntimeError(message)
    assert not (tmp_path / "new.pt").exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 30, 0, 1 << 30))
    with pytest.raises(RuntimeError, match="unexpected pos"), atomic_path(tmp_path / "new.pt"):
        raise RuntimeError(message)  # room enough: a bug, which keeps its traceback
