"""TensorBoard events for ``attn2d train --tensorboard`` (the optional extra
``attn2d[tensorboard]``): scalars every epoch; attention maps and weight histograms every
K epochs, read with the capture hooks (no plotting library involved)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from .._base.errors import Attn2dError
from ..modules.capture import AttentionRecorder

__all__ = ["TensorBoardLog", "map_image"]

_GATE_KINDS = frozenset({"spatial", "elementwise", "height", "width"})


def map_image(tensor: Tensor, kind: str) -> Tensor | None:
    """A (B, 1, H, W) image in [0, 1] of a map with a spatial layout (mean over channels,
    min-max scaled per image); None for maps without one (channel weights, affinities)."""
    if kind not in _GATE_KINDS or tensor.dim() != 4:
        return None
    image = tensor.float().mean(1, keepdim=True)
    low = image.amin((2, 3), keepdim=True)
    span = (image.amax((2, 3), keepdim=True) - low).clamp_min(1e-12)
    return (image - low) / span


class TensorBoardLog:
    """Writes a run's events under ``folder`` (``tensorboard --logdir folder``).

    Args:
        folder: the event folder (``OUT/tensorboard``).
        every: attention maps and weight histograms every this many epochs (and at the
            last epoch).
        images: test images whose maps are shown.
    """

    def __init__(self, folder: str | os.PathLike[str], every: int = 1, images: int = 8) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise Attn2dError("expected the tensorboard package for "
                              "--tensorboard, got none installed; pip install "
                              "'attn2d[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(folder))
        self.every = every
        self.images = images

    def log_epoch(self, run: Any, row: dict[str, Any]) -> None:
        """Scalars of one epoch's metrics row; maps and histograms when due."""
        epoch = row["epoch"]
        for key, tag in (("train_loss", "loss/train"), ("test_loss", "loss/test"),
                         ("val_loss", "loss/val"), ("train_acc", "accuracy/train"),
                         ("test_acc", "accuracy/test"), ("val_acc", "accuracy/val"),
                         ("lr", "optimisation/lr"), ("images_per_s", "speed/images_per_s"),
                         ("attention_alpha", "optimisation/attention_alpha")):
            if row.get(key) is not None:
                self.writer.add_scalar(tag, row[key], epoch)
        if epoch % self.every == 0 or epoch == run.config.epochs:
            self.log_maps(run, epoch)
            self.log_weights(run.net, epoch)
        self.writer.flush()

    @torch.no_grad()
    def log_maps(self, run: Any, epoch: int) -> None:
        """Every attention map of a few test images: images where they have a spatial
        layout, histograms of the weights for all."""
        x, _, _ = next(iter(run.data.test.batches(self.images)))
        net = run.net
        was_training = net.training
        net.eval()
        try:
            with AttentionRecorder(net) as recorder:
                net(run.to_input(x))
        finally:
            net.train(was_training)
        for record in recorder.records:
            tag = f"attention/{record.label}"
            self.writer.add_histogram(tag, record.tensor.float(), epoch)
            image = map_image(record.tensor, record.kind)
            if image is not None:
                self.writer.add_images(tag, image, epoch, dataformats="NCHW")

    def log_weights(self, net: torch.nn.Module, epoch: int) -> None:
        for name, param in net.named_parameters():
            self.writer.add_histogram(f"weights/{name}", param.detach().float(), epoch)

    def close(self) -> None:
        self.writer.close()
