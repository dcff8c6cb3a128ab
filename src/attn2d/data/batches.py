"""Training and evaluation batches, built on the training device a whole batch at a time.

Two sources feed the same batching: images held on the device (uint8, gathered by index),
or a :class:`~torch.utils.data.DataLoader` that reads the same indices from a Dataset with
workers (for data that does not fit in memory) and moves each batch to the device. Either
way crops, flips and normalisation run on the device on the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from .._base.errors import Attn2dError
from .augment import Normalize, crop_and_flip, epoch_order, hash32, random_crops
from .split import Loader, Split

__all__ = ["EvalBatches", "TrainBatches"]

_LOADER_WORD = 0x4C4F4144  # "LOAD": seeds a streamed loader's workers per epoch


def _check_shard(batch_size: int, rank: int, world: int) -> None:
    for name, value in (("batch_size", batch_size), ("rank", rank), ("world", world)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Attn2dError(f"attn2d.data: expected {name} to be an int, got "
                              f"{type(value).__name__}")
    if batch_size < 1 or world < 1:
        raise Attn2dError(f"attn2d.data: expected batch_size >= 1 and world >= 1, got "
                          f"batch_size={batch_size}, world={world}")
    if not 0 <= rank < world:
        raise Attn2dError(f"attn2d.data: expected 0 <= rank < world={world}, got {rank}")
    if batch_size % world:
        raise Attn2dError(f"attn2d.data: expected batch_size divisible by world={world}, got "
                          f"{batch_size}")


def _shard(order: Tensor, step: int, batch_size: int, rank: int, world: int) -> Tensor:
    """Rank ``rank``'s rows of global batch ``step``: ``order[s·B:(s+1)·B][rank::world]``."""
    return order[step * batch_size : (step + 1) * batch_size][rank::world]


class _Source:
    """Rows of a split, fetched by index onto ``device``: from a tensor already there, or
    through a DataLoader.

    :meth:`fetch` walks ``order`` in global batches of ``batch_size``; batch ``s`` is
    ``order[s·B:(s+1)·B]`` and a rank takes its rows ``rank::world``. Indices -1 (padding)
    fetch image 0 and stay -1 in the returned index.
    """

    def __init__(self, split: Split, device: torch.device, in_memory: bool,
                 num_workers: int = 0) -> None:
        self.device = device
        self.in_memory = in_memory
        self.num_workers = num_workers
        if in_memory:
            if split.images is None:
                raise Attn2dError("attn2d.data: expected images in memory, got a Dataset")
            self.images = split.images.to(device)
            self.targets = split.labels().to(device)
        else:
            self.dataset = split.as_dataset()

    def fetch(self, order: Tensor, batch_size: int, start_step: int, steps: int, rank: int,
              world: int, loader_seed: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(rows, labels, index)`` on the device for each step in [start_step, steps)."""
        padded = bool((order < 0).any())
        if self.in_memory:
            order = order.to(self.device)  # once per pass: no host-to-device copy per batch
            for step in range(start_step, steps):
                index = _shard(order, step, batch_size, rank, world)
                safe = index.clamp(min=0) if padded else index
                yield self.images.index_select(0, safe), self.targets.index_select(0, safe), index
            return
        shards = [_shard(order, step, batch_size, rank, world)
                  for step in range(start_step, steps)]
        loader = Loader(self.dataset, batch_sampler=[s.clamp(min=0).tolist() for s in shards],
                            num_workers=self.num_workers,
                            pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(loader_seed))
        for (rows, labels), index in zip(loader, shards, strict=True):
            yield (rows.to(self.device, non_blocking=True),
                   labels.to(self.device, non_blocking=True),
                   index.to(self.device, non_blocking=True))


class TrainBatches:
    """The training images, served in seeded, augmented, normalised batches.

    Determinism: the order of an epoch is :func:`~attn2d.data.augment.epoch_order` of
    ``(seed, epoch)``; an image's crop and flip are a hash of ``(seed, epoch, index)``, where
    ``index`` is its position in this (subset) training set. The last partial batch is
    dropped (static shapes), and each epoch draws a fresh order, so every image is still
    seen.

    Args:
        split: the training images.
        normalize: the normalisation of the dataset.
        device: where batches are built (and in-memory images live).
        seed: the run's seed.
        crop_padding: zero padding of the random crop (0: no crop).
        flip: random horizontal flips.
        in_memory: hold the images on ``device`` (else stream them through a DataLoader);
            kept as the attribute of that name.
        num_workers: DataLoader workers for the streaming path.
    """

    def __init__(self, split: Split, normalize: Normalize, device: torch.device, seed: int,
                 crop_padding: int = 0, flip: bool = False, in_memory: bool = True,
                 num_workers: int = 0) -> None:
        self._source = _Source(split, device, in_memory, num_workers)
        self._size = len(split)
        self._normalize = normalize
        self.seed = seed
        self.crop_padding = crop_padding
        self.flip = flip
        self.device = device
        self.in_memory = in_memory

    def __len__(self) -> int:
        return self._size

    def steps_per_epoch(self, batch_size: int) -> int:
        """Full global batches of ``batch_size`` per epoch (the last partial one dropped)."""
        _check_shard(batch_size, 0, 1)
        if batch_size > self._size:
            raise Attn2dError(f"attn2d.data: expected batch_size <= {self._size} training "
                              f"images, got {batch_size}")
        return self._size // batch_size

    def order(self, epoch: int) -> Tensor:
        """The epoch's permutation of the image indices (CPU int64)."""
        return epoch_order(self._size, self.seed, epoch)

    def batch_indices(self, epoch: int, batch_size: int, *, start_step: int = 0, rank: int = 0,
                      world: int = 1) -> Iterator[Tensor]:
        """The image indices (CPU int64) of each batch :meth:`batches` yields."""
        order, steps = self._plan(epoch, batch_size, start_step, rank, world)
        for step in range(start_step, steps):
            yield _shard(order, step, batch_size, rank, world)

    def batches(self, epoch: int, batch_size: int, *, start_step: int = 0, rank: int = 0,
                world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """``(x, y)`` for the steps ``start_step ..`` of ``epoch``.

        ``batch_size`` is the global batch; each of ``world`` ranks gets its rows
        ``rank::world`` of the same global batch (``batch_size // world`` rows). ``x`` is
        float32 (B, C, H, W), normalised, contiguous, on the device; ``y`` int64 there.
        """
        order, steps = self._plan(epoch, batch_size, start_step, rank, world)
        crops = None
        if self.crop_padding or self.flip:
            # One draw per image for the whole epoch, moved once; each batch gathers its rows.
            top, left, flip = random_crops(self.seed, epoch, torch.arange(self._size),
                                           self.crop_padding, self.flip)
            crops = torch.stack([top, left, flip], 1).to(self.device)
        loader_seed = int(hash32(self.seed, epoch & 0xFFFFFFFF, _LOADER_WORD))
        for rows, labels, index in self._source.fetch(order, batch_size, start_step, steps,
                                                      rank, world, loader_seed):
            if crops is not None:
                drawn = crops.index_select(0, index)
                rows = crop_and_flip(rows, drawn[:, 0], drawn[:, 1], drawn[:, 2],
                                     self.crop_padding)
            yield self._normalize(rows), labels

    def _plan(self, epoch: int, batch_size: int, start_step: int, rank: int, world: int
              ) -> tuple[Tensor, int]:
        _check_shard(batch_size, rank, world)
        steps = self.steps_per_epoch(batch_size)
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise Attn2dError(f"attn2d.data: expected epoch to be an int >= 0, got {epoch!r}")
        if isinstance(start_step, bool) or not isinstance(start_step, int) \
                or not 0 <= start_step <= steps:
            raise Attn2dError(f"attn2d.data: expected 0 <= start_step <= {steps}, got "
                              f"{start_step!r}")
        return self.order(epoch), steps


class EvalBatches:
    """Images for evaluation in a fixed order (index 0 .. N-1), normalised, not augmented.

    The last batch is padded to the full batch size with copies of image 0 whose index is
    -1: mask them out (``index >= 0``) when summing losses or counting correct answers.

    Args:
        split: the images.
        normalize: the normalisation of the dataset.
        device: where batches are built (and in-memory images live).
        in_memory: hold the images on ``device`` (else stream them through a DataLoader);
            kept as the attribute of that name.
        num_workers: DataLoader workers for the streaming path.
    """

    def __init__(self, split: Split, normalize: Normalize, device: torch.device,
                 in_memory: bool = True, num_workers: int = 0) -> None:
        self._source = _Source(split, device, in_memory, num_workers)
        self._split = split
        self._normalize = normalize
        self.device = device
        self.in_memory = in_memory

    @property
    def targets(self) -> Tensor:
        """The labels in index order (CPU int64)."""
        return self._split.labels()

    def __len__(self) -> int:
        return len(self._split)

    def steps(self, batch_size: int) -> int:
        """Batches per pass: ``ceil(N / batch_size)``, the same on every rank."""
        _check_shard(batch_size, 0, 1)
        return math.ceil(len(self) / batch_size)

    def batches(self, batch_size: int, *, rank: int = 0, world: int = 1
                ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(x, y, index)`` per batch: global batch ``s`` holds the images
        ``s·B .. (s+1)·B - 1`` (padded), each rank its rows ``rank::world``
        (``batch_size // world`` rows). ``index`` (int64, on the device) is each row's image
        index, -1 for padding."""
        _check_shard(batch_size, rank, world)
        steps = self.steps(batch_size)
        order = torch.arange(steps * batch_size)
        order[len(self):] = -1
        for rows, labels, index in self._source.fetch(order, batch_size, 0, steps, rank, world):
            yield self._normalize(rows), labels, index
