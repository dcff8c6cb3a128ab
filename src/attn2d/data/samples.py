"""Per-image access to in-memory images, for pictures and for code that wants one image."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .augment import Normalize, crop_and_flip, random_crops
from .catalog import DatasetInfo

__all__ = ["ImageDataset"]


class ImageDataset(Dataset):
    """In-memory images with labels, normalised on access and optionally augmented.

    Image ``i`` at epoch ``e`` gets exactly the crop, flip and normalisation that
    :meth:`~attn2d.data.TrainBatches.batches` gives it (same functions, batch of one).

    Args:
        images: uint8 tensor (N, C, H, W).
        targets: int64 tensor (N,).
        info: the dataset's :class:`DatasetInfo` (normalisation and augmentation).
        augment: apply the training augmentation.
        seed: seed of the augmentation; with :meth:`set_epoch`, fixes every crop and flip.
    """

    def __init__(self, images: Tensor, targets: Tensor, info: DatasetInfo, augment: bool,
                 seed: int = 0) -> None:
        self.images = images
        self.targets = targets
        self.info = info
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._normalize = Normalize(info.mean, info.std)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose crops and flips ``__getitem__`` returns."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        index = range(len(self))[index]  # negative indices count from the end; IndexError
        image = self.images[index : index + 1]
        pad, flip = self.info.crop_padding, self.info.flip
        if self.augment and (pad or flip):
            # The hash on a plain int: the same function as for a batch, without tensor calls.
            drawn = torch.tensor([random_crops(self.seed, self.epoch, index, pad, flip)])
            image = crop_and_flip(image, drawn[:, 0], drawn[:, 1], drawn[:, 2], pad)
        return self._normalize(image)[0], int(self.targets[index])
