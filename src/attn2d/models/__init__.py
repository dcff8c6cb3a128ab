"""Backbones with attention placement, and :func:`inject` for models that already exist.

>>> model = create_model("resnet18", attention="cbam")              # doctest: +SKIP
>>> model = create_model("small_cnn", attention="nonlocal", in_channels=1)  # doctest: +SKIP
>>> model = create_model("timm:mobilenetv3_large_100", attention="eca")  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from .._base.errors import Attn2dError
from .._base.validate import check_int
from ._common import (
    AttentionFactory,
    AttentionOptions,
    Backbone,
    check_init,
    check_stages,
    default_stages,
    resolve_attention,
)
from .attention import ResidualBlend, attention_modules, load_backbone_state
from .external import SOURCES, build_external, external_models, split_source
from .inject import find_stages, inject
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50
from .small_cnn import ConvBlock, SmallCNN, small_cnn

__all__ = [
    "AttentionOptions",
    "Backbone",
    "BasicBlock",
    "Bottleneck",
    "ConvBlock",
    "ResNet",
    "ResidualBlend",
    "SmallCNN",
    "attention_modules",
    "create_model",
    "find_stages",
    "inject",
    "is_model_name",
    "list_models",
    "load_backbone_state",
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


def list_models(source: str | None = None) -> list[str]:
    """Names accepted by :func:`create_model`.

    ``source=None``: the built-in backbones. ``"torchvision"`` or ``"timm"``: every
    classifier of that library, as ``"torchvision:<name>"`` / ``"timm:<name>"``.
    """
    if source is None:
        return list(_MODELS)
    return external_models(source)


def is_model_name(name: object) -> bool:
    """True for a built-in backbone name or any ``torchvision:`` / ``timm:`` name (the
    model itself is checked when it is built)."""
    if not isinstance(name, str):
        return False
    source = name.strip().partition(":")
    if source[1]:
        return source[0].lower() in SOURCES
    return name.strip().lower().replace("-", "_") in _MODELS


def create_model(
    name: str,
    *,
    attention: str | AttentionFactory | None = None,
    placement: str | Sequence[str] | None = None,
    stages: Sequence[int] | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
    attention_init: str = "default",
    replace: bool = False,
    input_shape: Sequence[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a backbone by name, with attention where ``placement`` says.

    Args:
        name: a built-in backbone (:func:`list_models`), ``"torchvision:<name>"`` (any
            classifier of ``torchvision.models``) or ``"timm:<name>"`` (any timm model;
            needs timm). External models are built without weights and get the
            attention through :func:`inject`; their state-dict keys are those of the
            plain library model.
        attention: a registry spec string, a class or factory ``factory(channels)``, or
            None / ``"none"``.
        placement: ``"block"`` (inside every residual block, before the add; for external
            models every block of a type :func:`inject` knows), ``"stage"`` (after
            stages), a list of module paths (after each), or None for the mechanism's
            registry default.
        stages: 1-based stages receiving attention; default every stage for ``"block"``,
            stages 1-3 for ``"stage"`` (see :func:`find_stages` for external models).
        num_classes: outputs of the classifier.
        in_channels: image channels (1 for Fashion-MNIST). timm models get ``in_chans``;
            torchvision models get their RGB stem convolution replaced (same path).
        attention_init: ``"default"`` (the papers' initialisation) or ``"identity"``:
            mechanisms wrapped in :class:`ResidualBlend`, so the model starts as the one
            without attention.
        replace: external models with ``"block"`` placement: the mechanism replaces the
            SE of each block that has one (see :func:`inject`).
        input_shape: (C, H, W) of the dry pass that measures feature maps for module-path
            placement and for the stages of flat networks; default 64×64.
        **kwargs: passed to the model's constructor (torchvision / timm builder).
    """
    if not isinstance(name, str):
        raise Attn2dError(f"create_model: expected a model name, got {type(name).__name__}")
    check_init(attention_init, "create_model")
    paths = None
    if placement is not None and not isinstance(placement, str):
        paths, placement = list(placement), None
        if stages is not None:
            raise Attn2dError(f"create_model: expected stages only with placement 'block' or "
                              f"'stage', got stages={stages!r} with module paths")
    external = split_source(name)
    if external is None and paths is None and not replace:
        key = name.strip().lower().replace("-", "_")
        if key not in _MODELS:
            close = difflib.get_close_matches(key, list(_MODELS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise Attn2dError(f"create_model: unknown model {name!r}{hint}; valid: "
                              f"{', '.join(_MODELS)}, or torchvision:<name> / timm:<name>")
        return _MODELS[key](num_classes=num_classes, in_channels=in_channels,
                            attention=attention, placement=placement, stages=stages,
                            attention_init=attention_init, **kwargs)
    check_int(num_classes, "num_classes", owner="create_model")
    check_int(in_channels, "in_channels", owner="create_model")
    factory, placement = resolve_attention(attention, placement, "create_model")
    if external is None:
        model = create_model(name, num_classes=num_classes, in_channels=in_channels, **kwargs)
    else:
        model = build_external(*external, num_classes=num_classes, in_channels=in_channels,
                               **kwargs)
    if factory is None:
        return model
    if paths is None and placement == "stage":
        found = find_stages(model, input_shape)
        chosen = check_stages(stages, len(found), default_stages("stage", len(found)),
                              "create_model")
        paths = [found[s - 1].path for s in chosen]
    return inject(model, factory, paths if paths is not None else "block", replace=replace,
                  init=attention_init, stages=stages, input_shape=input_shape)
