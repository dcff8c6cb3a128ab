"""Decoding in bounded memory: channel statistics counted a chunk at a time equal the
statistics of all the pixels at once, and failed allocations are told from bad files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from attn2d.data import folder
from attn2d.data.memory import format_bytes, is_out_of_memory
from attn2d.data.split import Loader


@pytest.mark.parametrize("chunk", [1 << 22, 7 * 5, 3 * 11 * 5])  # whole batch, rows, images
def test_channel_stats_in_chunks_equal_the_statistics_of_every_pixel(chunk, monkeypatch):
    monkeypatch.setattr(folder, "_STATS_CHUNK", chunk)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 256, (n, 3, 11, 5), dtype=torch.uint8, generator=gen)
               for n in (4, 1, 6)]
    stats = folder.ChannelStats()
    for batch in batches:
        stats.add(batch)
    mean, std = stats.result()
    # The reference: every pixel of a channel in one NumPy array, in [0, 1].
    pixels = np.concatenate([b.numpy() for b in batches]).transpose(1, 0, 2, 3).reshape(3, -1)
    assert mean == pytest.approx(tuple(pixels.mean(1) / 255), abs=1e-12)
    assert std == pytest.approx(tuple(pixels.std(1) / 255), abs=1e-12)


def test_failed_allocations_are_out_of_memory_and_other_errors_are_not():
    def error_of(call) -> BaseException:
        try:
            call()
        except BaseException as err:  # the error itself is under test
            return err
        raise AssertionError("no error")

    assert is_out_of_memory(error_of(lambda: torch.empty(1 << 62, dtype=torch.uint8)))
    assert is_out_of_memory(error_of(lambda: bytearray(1 << 62)))
    assert not is_out_of_memory(error_of(lambda: torch.ones(2) @ torch.ones(3)))
    assert not is_out_of_memory(OSError("image file is truncated"))
    assert [format_bytes(n) for n in (512, 768 << 10, 48 << 20, 3 << 29)] == \
        ["512 B", "768 KiB", "48 MiB", "1.5 GiB"]


def test_attn2d_loaders_leave_the_worker_count_warning_to_the_run():
    data = [(torch.zeros(1), 0)] * 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = Loader(data, batch_size=2, num_workers=64)
        loader.check_worker_number_rationality()
    assert not caught
