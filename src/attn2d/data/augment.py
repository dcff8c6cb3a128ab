"""Stateless randomness and whole-batch augmentation.

Every random choice of the data pipeline is a hash of integers: the epoch's order hashes
``(seed, epoch)`` into a generator seed, and an image's crop and flip hash
``(seed, epoch, index, draw)``. Nothing depends on a global generator, the device, the number
of processes or loader workers, or on where a run was interrupted.

The hash is lowbias32 (C. Wellons, "Prospecting for hash functions", 2018), a bijection on
32-bit words, chained over the words of the key. It runs on Python ints and on int64 tensors
alike; products are split into 16-bit halves so that no intermediate leaves int64's range
(signed overflow is undefined in C++ and right shifts of negative int64 are arithmetic, so
every value stays in [0, 2**32)).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Normalize",
    "crop_and_flip",
    "epoch_order",
    "hash32",
    "random_crops",
]

_MASK32 = 0xFFFFFFFF
_START = 0x9E3779B9  # 2**32 / golden ratio: a non-zero start, so a key of zeros still mixes
_ORDER_WORD = 0x4F524452  # "ORDR": keeps the order's key apart from the images' keys
# Which draw of an image's key: the crop's row, its column, the flip.
_TOP, _LEFT, _FLIP = 0, 1, 2

Word = TypeVar("Word", int, Tensor)


def _mul32(x: Word, c: int) -> Word:
    # (x * c) mod 2**32 for 0 <= x < 2**32 without an intermediate above 2**49.
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: Word) -> Word:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _words(value: int) -> tuple[int, int]:
    # A Python int as two 32-bit words of its 64-bit two's complement.
    value = int(value) & ((1 << 64) - 1)  # numpy and tensor ints too
    return value & _MASK32, value >> 32


def hash32(seed: int, *words: int | Tensor) -> int | Tensor:
    """A 32-bit hash of ``seed`` (any 64-bit int) and 32-bit ``words`` (ints or int64
    tensors with values in [0, 2**32), broadcast together); an int when every word is."""
    h: int | Tensor = _START
    for w in (*_words(seed), *words):
        h = _mix32(h ^ w)
    return h


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The epoch's order of ``n`` images: a permutation drawn on the CPU from a generator
    seeded by ``hash32(seed, epoch)``, so it is the same on every device and process."""
    generator = torch.Generator().manual_seed(int(hash32(seed, epoch & _MASK32, _ORDER_WORD)))
    return torch.randperm(n, generator=generator)


def random_crops(seed: int, epoch: int, index: Word, padding: int, flip: bool
                 ) -> tuple[Word, Word, Word]:
    """The crop offsets ``(top, left)`` in [0, 2·padding] and flip flags (0 or 1) of the
    images ``index`` (an int, or an int64 tensor) at ``epoch``: each a hash of
    ``(seed, epoch, index, draw)`` taken modulo the number of choices."""
    per_image = hash32(seed, epoch & _MASK32, index)
    choices = 2 * padding + 1
    top = _mix32(per_image ^ _TOP) % choices
    left = _mix32(per_image ^ _LEFT) % choices
    flips = _mix32(per_image ^ _FLIP) & 1 if flip else per_image * 0
    return top, left, flips


@functools.lru_cache(maxsize=16)
def _grid(b: int, c: int, h: int, w: int, device: torch.device
          ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    # Index tensors of a batch shape, built once: fewer kernel launches per batch.
    return (torch.arange(b, device=device)[:, None, None, None],
            torch.arange(c, device=device)[None, :, None, None],
            torch.arange(h, device=device), torch.arange(w, device=device),
            torch.arange(w - 1, -1, -1, device=device))


def crop_and_flip(images: Tensor, top: Tensor, left: Tensor, flip: Tensor, padding: int
                  ) -> Tensor:
    """Crop each image of a (B, C, H, W) batch at ``(top, left)`` of its zero-padded copy
    (as torchvision's ``RandomCrop(padding=p)``), then mirror it where ``flip`` is non-zero:
    one gather for the whole batch, on the batch's device."""
    batch, channel, rows, columns, mirrored = _grid(*images.shape, images.device)
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = top[:, None] + rows  # (B, H)
    # A mirrored crop reads its columns right to left.
    cols = left[:, None] + torch.where(flip[:, None].bool(), mirrored, columns)  # (B, W)
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


class Normalize:
    """``(x / 255 - mean) / std`` of uint8 images as float32, ``x`` as float32 otherwise
    (images already normalised by their owner).

    Written as two exactly rounded operations (subtract ``255·mean``, multiply by
    ``1 / (255·std)``), so one image gives the same bits alone or in a batch, on any device.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(mean)
        self.std = tuple(std)
        self._shift: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def __call__(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8:
            return images.float().contiguous()
        if images.device not in self._shift:
            shape = (-1, 1, 1)
            mean = torch.tensor(self.mean, dtype=torch.float64).view(shape) * 255
            scale = 1 / (torch.tensor(self.std, dtype=torch.float64).view(shape) * 255)
            self._shift[images.device] = (mean.float().to(images.device),
                                          scale.float().to(images.device))
        shift, scale = self._shift[images.device]
        return images.float().sub_(shift).mul_(scale)
