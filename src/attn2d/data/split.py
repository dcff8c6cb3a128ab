"""A split of a dataset: images in a tensor, or a Dataset read one image at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from .._base.errors import Attn2dError

__all__ = ["Loader", "Split", "TensorImages", "stratified_subset"]


def stratified_subset(targets: Tensor, size: int, seed: int = 0) -> Tensor:
    """Indices of ``size`` samples with the class proportions of ``targets`` (sorted).

    Each class gets its proportional share (largest remainders get the leftover places);
    within a class the samples are a seeded random choice.
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise Attn2dError(f"attn2d.data: expected subset to be an int, got {type(size).__name__}")
    if not 1 <= size <= len(targets):
        raise Attn2dError(f"attn2d.data: expected 1 <= subset <= {len(targets)}, got {size}")
    classes, counts = torch.unique(targets, return_counts=True)
    exact = counts.double() * size / len(targets)
    quota = exact.floor().long()
    leftover = size - int(quota.sum())
    # Stable sort: ties go to the lower class index, so the split is reproducible.
    order = torch.sort(exact - quota, descending=True, stable=True).indices
    quota[order[:leftover]] += 1
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label, k in zip(classes.tolist(), quota.tolist(), strict=True):
        members = torch.nonzero(targets == label).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(chosen).sort().values


class TensorImages(Dataset):
    """``(images[i], targets[i])`` of two tensors: a streamed view of in-memory images."""

    def __init__(self, images: Tensor, targets: Tensor) -> None:
        self.images = images
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.targets[index])


def _as_list(batch: list) -> list:
    return batch


class Loader(DataLoader):
    """The DataLoader of every attn2d data path. torch warns on each loader (and on each
    pass over it) when ``num_workers`` exceeds the CPUs; a run says that once, in one line,
    naming ``--num-workers`` (see :func:`attn2d.training.start`). An :class:`Attn2dError`
    raised in a worker process comes out as itself, one line, as it would without workers.
    """

    def check_worker_number_rationality(self) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from super().__iter__()
        except Attn2dError as err:
            raise _as_raised(err) from None


def _as_raised(err: Attn2dError) -> Attn2dError:
    """torch re-raises a worker's exception with the worker's traceback as its text
    ("Caught Attn2dError in DataLoader worker process 0. Original Traceback … Attn2dError:
    <message>"); the message is the part after the last ``Attn2dError:``."""
    text, marker = str(err), f"{Attn2dError.__name__}: "
    if text.startswith("Caught ") and marker in text:
        return Attn2dError(text.rsplit(marker, 1)[1].strip())
    return err


@dataclass
class Split:
    """Images with labels, either all in one tensor or read from a Dataset on demand.

    Args:
        images: (N, C, H, W) uint8 (or float32 already normalised), or None.
        dataset: a Dataset of ``(image, label)`` pairs, used when ``images`` is None.
        targets: int64 labels (N,), or None when only ``dataset`` knows them (read on first
            use of :meth:`labels`, one pass over the dataset).
    """

    images: Tensor | None = None
    dataset: Dataset | None = None
    targets: Tensor | None = field(default=None)

    def __post_init__(self) -> None:
        if (self.images is None) == (self.dataset is None):
            raise Attn2dError("attn2d.data: expected images or a dataset, got "
                              f"{'both' if self.images is not None else 'neither'}")

    def __len__(self) -> int:
        return len(self.images if self.images is not None else self.dataset)

    def labels(self) -> Tensor:
        """The int64 labels in index order (CPU)."""
        if self.targets is None:
            labels = [int(label) for batch in Loader(self.dataset, batch_size=256,
                                                     collate_fn=_as_list)
                      for _, label in batch]
            self.targets = torch.tensor(labels, dtype=torch.int64)
        return self.targets

    def take(self, keep: Tensor) -> Split:
        """The images ``keep`` (int64 indices), in that order."""
        targets = self.labels()[keep]
        if self.images is not None:
            return Split(images=self.images[keep], targets=targets)
        return Split(dataset=Subset(self.dataset, keep.tolist()), targets=targets)

    def as_dataset(self) -> Dataset:
        """A Dataset of ``(image, label)`` pairs over this split."""
        if self.images is not None:
            return TensorImages(self.images, self.labels())
        return self.dataset
