"""One training run's state, which every step of the loop reads and updates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data import Data
from .checkpoint import rng_state
from .config import TrainConfig
from .model import AttentionWarmup
from .process import Process

__all__ = ["EpochTotals", "Run"]


@dataclass
class EpochTotals:
    """Running sums of the epoch in progress (device tensors: reading them syncs)."""

    loss: Tensor
    correct: Tensor
    seen: int = 0
    elapsed: float = 0.0

    @classmethod
    def zero(cls, device: torch.device) -> EpochTotals:
        return cls(torch.zeros((), device=device, dtype=torch.float64),
                   torch.zeros((), device=device, dtype=torch.int64))

    def state(self) -> dict[str, Any]:
        return {"loss": float(self.loss), "correct": int(self.correct), "seen": self.seen,
                "elapsed": self.elapsed}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> EpochTotals:
        return cls(torch.tensor(state["loss"], device=device, dtype=torch.float64),
                   torch.tensor(state["correct"], device=device, dtype=torch.int64),
                   state["seen"], state["elapsed"])


@dataclass
class Run:
    """One training run's state; every step below reads and updates it."""

    config: TrainConfig
    process: Process
    data: Data
    net: nn.Module  # the model whose weights are saved
    model: nn.Module  # what runs the steps: net, or net under DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    saved_config: dict[str, Any]  # the config with the dataset's facts, as checkpoints hold it
    frozen_norms: list[nn.Module]
    warmup: AttentionWarmup | None
    steps_per_epoch: int
    dir: Path
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    totals: EpochTotals | None = None
    selected: dict[str, Any] = field(default_factory=dict)  # the epoch the run reports
    predictions: Tensor | None = None  # test predictions of the latest evaluation
    compile_time_s: float = 0.0
    tensorboard: Any = None

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step

    def to_input(self, x: Tensor) -> Tensor:
        """A batch in the model's memory format."""
        if self.config.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "config": self.saved_config, "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
            "rng": rng_state(), "totals": self.totals.state() if self.totals else None,
            "history": self.history, "selected": self.selected,
            "predictions": self.predictions,
            "attention_alpha": self.warmup.value if self.warmup else 1.0,
        }
