"""The model of a run: built from its config, loaded from a checkpoint, started from a
baseline (``--init-from``), frozen but for attention (``--freeze-backbone``), and the
attention warm-up blend."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from .._base.errors import Attn2dError
from ..models import attention_modules, create_model, load_backbone_state
from .checkpoint import read_checkpoint, read_state_dict

__all__ = ["AttentionWarmup", "build_model", "freeze_backbone", "init_from", "load_model"]


def build_model(config: dict[str, Any]) -> nn.Module:
    """The model a run's config describes (model, attention, placement, classes, gate init)."""
    return create_model(
        config["model"], attention=config.get("attention"), placement=config.get("placement"),
        num_classes=config["num_classes"], in_channels=config["in_channels"],
        attention_init=config.get("gate_init") or "default")


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a checkpoint with its weights, in eval mode, and the run's config.

    It is exactly the model the run evaluated when the checkpoint was written: a
    checkpoint saved during an attention warm-up (``attention_alpha`` < 1) gets the same
    blend installed.
    """
    checkpoint = read_checkpoint(path)
    model = build_model(checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    alpha = float(checkpoint.get("attention_alpha", 1.0))
    if alpha < 1.0:
        AttentionWarmup(model).set(alpha)
    return model.eval(), checkpoint["config"]


class AttentionWarmup:
    """Blend each attention module's output with its input: ``α·out + (1 − α)·in``.

    ``α`` is a 0-d tensor on the model's device, updated in place every step, so a compiled
    (or CUDA-graph) step sees its new value without recompiling. It rises linearly to 1
    over the warm-up steps, starting above 0, so the mechanism gets gradient from the
    first step while the backbone is barely disturbed.
    """

    def __init__(self, model: nn.Module) -> None:
        param = next(model.parameters(), None)
        self.alpha = torch.ones((), device=param.device if param is not None else None)
        self.value = 1.0
        self.handles = [m.register_forward_hook(self._blend)
                        for _, m in attention_modules(model)]

    def set(self, value: float) -> None:
        self.value = float(value)
        self.alpha.fill_(self.value)

    def _blend(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        alpha = self.alpha.to(output.dtype)
        return alpha * output + (1 - alpha) * inputs[0]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _classifier(model: nn.Module, attention: list[nn.Module]) -> nn.Module:
    inside = {id(p) for module in attention for p in module.parameters()}
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and id(m.weight) not in inside]
    if not heads:
        raise Attn2dError(f"expected a final nn.Linear classifier in "
                          f"{type(model).__name__} for --freeze-backbone, got none")
    return heads[-1]


def freeze_backbone(model: nn.Module) -> list[nn.Module]:
    """Train only the attention modules and the classifier; return the norm layers that
    must stay in eval mode (a frozen BatchNorm must not update its running statistics)."""
    attention = [m for _, m in attention_modules(model)]
    trainable = [*attention, _classifier(model, attention)]
    model.requires_grad_(False)
    inside = set()
    for module in trainable:
        module.requires_grad_(True)
        inside.update(id(m) for m in module.modules())
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and id(m) not in inside]


def init_from(model: nn.Module, path: str) -> None:
    """Start from a checkpoint or plain state dict of the same network without attention
    (torchvision, timm or attn2d); the attention modules keep their initial weights."""
    try:
        load_backbone_state(model, read_state_dict(path))
    except ValueError as err:
        raise Attn2dError(f"expected --init-from {path} to hold the backbone's "
                          f"weights, got a mismatch ({err})") from None
