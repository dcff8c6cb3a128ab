"""torchvision and timm classifiers as backbones: ``"torchvision:resnet50"``, ``"timm:resnet26d"``.

Built without weights (nothing downloads), with the class count and input channels set.
timm is optional and imported only when a ``timm:`` name is used.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from .._base.errors import Attn2dError

__all__ = ["SOURCES", "build_external", "external_models", "split_source"]

SOURCES = ("torchvision", "timm")


def split_source(name: str) -> tuple[str, str] | None:
    """``("torchvision", "resnet50")`` for ``"torchvision:resnet50"``; None without a prefix."""
    source, colon, model = name.strip().partition(":")
    if not colon:
        return None
    if source.lower() not in SOURCES:
        raise Attn2dError(f"create_model: expected a model name or 'torchvision:<name>' / "
                          f"'timm:<name>', got {name!r}")
    if not model.strip():
        raise Attn2dError(f"create_model: expected a model name after {source.lower()}:, "
                          f"got {name!r}")
    return source.lower(), model.strip()


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise Attn2dError("create_model: expected the timm package for timm: models, got "
                          "none installed; pip install timm") from None
    return timm


def external_models(source: str) -> list[str]:
    """Every ``"<source>:<name>"`` accepted by :func:`build_external` (timm: needs timm)."""
    if source == "torchvision":
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
    elif source == "timm":
        names = _timm().list_models()
    else:
        raise Attn2dError(f"list_models: expected source in {(None, *SOURCES)}, got {source!r}")
    return [f"{source}:{n}" for n in names]


def _unknown(source: str, name: str, valid: list[str]) -> ValueError:
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" (did you mean {', '.join(f'{source}:{c}' for c in close)}?)" if close else ""
    return ValueError(f"create_model: unknown {source} model {name!r}{hint}; "
                      f"list_models({source!r}) names them all")


def build_external(
    source: str, name: str, num_classes: int, in_channels: int, **kwargs: Any
) -> nn.Module:
    """A torchvision or timm classifier without weights, ``num_classes`` outputs and
    ``in_channels`` input channels; ``kwargs`` go to its builder."""
    for key in ("weights", "pretrained", "pretrained_cfg", "checkpoint_path"):
        if kwargs.get(key):
            raise Attn2dError(f"create_model: expected no {key}= (attn2d builds models without "
                              f"weights and never downloads; load a state dict instead), got "
                              f"{kwargs[key]!r}")
        kwargs.pop(key, None)
    try:
        if source == "torchvision":
            import torchvision

            if name not in torchvision.models.list_models(module=torchvision.models):
                raise _unknown(source, name, torchvision.models.list_models(
                    module=torchvision.models))
            model = torchvision.models.get_model(name, weights=None, num_classes=num_classes,
                                                 **kwargs)
            _set_in_channels(model, in_channels, f"torchvision:{name}")
            return model
        timm = _timm()
        if not timm.is_model(name):
            raise _unknown(source, name, timm.list_models())
        return timm.create_model(name, pretrained=False, num_classes=num_classes,
                                 in_chans=in_channels, **kwargs)
    except TypeError as err:  # a keyword the builder does not take
        raise Attn2dError(f"create_model: expected keywords that {source}:{name} takes, got "
                          f"{sorted(kwargs)} ({err})") from err


def _set_in_channels(model: nn.Module, in_channels: int, name: str) -> None:
    """Replace torchvision's RGB stem convolution by one taking ``in_channels``.

    The new convolution keeps everything but its input width: same output channels,
    kernel, stride, padding, bias (copied) and module path, so state-dict keys do not
    change. Its weights are drawn from a normal distribution with the replaced weights'
    standard deviation: torchvision draws stems from fan-out Kaiming or fixed-σ truncated
    normals, whose scale does not depend on the input width.
    """
    if in_channels == 3:
        return
    path, conv = next(((p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d)),
                      ("", None))
    if conv is None or conv.in_channels != 3 or conv.groups != 1:
        raise Attn2dError(f"create_model: expected {name} to start with an RGB convolution "
                          f"that in_channels={in_channels} can replace, got "
                          f"{'none' if conv is None else f'{path} with {conv.in_channels}'}")
    stem = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                     padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                     padding_mode=conv.padding_mode, device=conv.weight.device,
                     dtype=conv.weight.dtype)
    with torch.no_grad():
        stem.weight.normal_(0.0, conv.weight.std().item())
        if conv.bias is not None:
            stem.bias.copy_(conv.bias)
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent), child, stem)
