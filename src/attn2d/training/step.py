"""The optimisation step, on its own so that compiling it (:mod:`.setup`) and the loop
(:mod:`.loop`) share it."""

from __future__ import annotations

from torch import Tensor

from .._base.amp import autocast
from .._base.errors import Attn2dError
from .state import Run

__all__ = ["NonFiniteLoss", "train_step"]


class NonFiniteLoss(Attn2dError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


def train_step(run: Run, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """One optimisation step; returns the loss and the predictions, still on the device."""
    with autocast(run.process.device, run.config.amp):
        logits = run.model(run.to_input(x))
        loss = run.loss_fn(logits.float(), y)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return loss.detach(), logits.detach().argmax(1)
