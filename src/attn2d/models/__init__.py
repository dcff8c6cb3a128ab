"""Backbones with attention placement, and :func:`inject` for models that already exist.

>>> model = create_model("resnet18", attention="cbam")              # doctest: +SKIP
>>> model = create_model("small_cnn", attention="nonlocal", in_channels=1)  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ._common import AttentionFactory, Backbone
from .inject import inject
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50
from .small_cnn import ConvBlock, SmallCNN, small_cnn

__all__ = [
    "Backbone",
    "BasicBlock",
    "Bottleneck",
    "ConvBlock",
    "ResNet",
    "SmallCNN",
    "create_model",
    "inject",
    "list_models",
    "resnet18",
    "resnet34",
    "resnet50",
    "small_cnn",
]

_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "small_cnn": small_cnn,
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return list(_MODELS)


def create_model(
    name: str,
    *,
    attention: str | AttentionFactory | None = None,
    placement: str | None = None,
    stages: Sequence[int] | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """Build a backbone by name, with attention where ``placement`` says.

    Args:
        name: one of :func:`list_models`.
        attention: a registry spec string, a class or factory ``factory(channels)``, or
            None / ``"none"``.
        placement: ``"block"``, ``"stage"`` or None for the mechanism's registry default.
        stages: 1-based stages receiving attention; default every stage for ``"block"``,
            stages 1-3 for ``"stage"``.
        num_classes: outputs of the classifier.
        in_channels: image channels (1 for Fashion-MNIST).
        **kwargs: passed to the model's constructor.
    """
    if not isinstance(name, str):
        raise TypeError(f"create_model: expected a model name, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key not in _MODELS:
        close = difflib.get_close_matches(key, list(_MODELS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"create_model: unknown model {name!r}{hint}; valid: "
                         f"{', '.join(_MODELS)}")
    return _MODELS[key](num_classes=num_classes, in_channels=in_channels, attention=attention,
                        placement=placement, stages=stages, **kwargs)
