"""The residual block types :func:`attn2d.inject` knows, and where attention goes in each.

In every known block the attention acts on the residual branch's output, before the
residual add (and before drop-path / stochastic depth): after the branch's last
normalisation layer, after the block's own SE where that follows the last norm (timm's
SE-ResNets), and, in ConvNeXt blocks, after the MLP's last projection (before the layer
scale γ, so the mechanism sees unscaled features). None of these blocks adds its
residual in a separate module, so the attention is applied by a forward hook on the
module whose output ends the branch.

Blocks are recognised by class (module and name along the class's MRO), never by
importing timm, so subclasses such as timm's ``CondConvResidual`` are known too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .._base.errors import Attn2dError

__all__ = ["BlockRule", "SESlot", "Site", "known_block_types", "rule_for"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


@dataclass(frozen=True)
class Site:
    """Where attention acts in a block: on ``module``'s output, which has ``channels``
    channels; ``channels_last`` when that output is (B, H, W, C)."""

    module: nn.Module
    channels: int
    channels_last: bool = False


@dataclass(frozen=True)
class SESlot:
    """A block's own squeeze-and-excitation: ``getattr(parent, name)``, on ``channels``."""

    parent: nn.Module
    name: str
    channels: int


@dataclass(frozen=True)
class BlockRule:
    """One block type: its library, class name, the models using it, and its places."""

    library: str
    name: str
    models: str
    site: Callable[[nn.Module], Site]
    se: Callable[[nn.Module], SESlot | None]


def _channels(norm: nn.Module) -> int:
    return norm.num_features if hasattr(norm, "num_features") else norm.num_channels


def _last_child_norm(block: nn.Module) -> nn.Module:
    """The last norm among the block's direct children (the shortcut's BN is nested in
    ``downsample``, so it is never picked)."""
    norms = [m for m in block.children() if isinstance(m, _NORMS)]
    if not norms:
        raise Attn2dError(f"inject: expected a BatchNorm/GroupNorm layer among the children of "
                          f"{type(block).__name__}, found none")
    return norms[-1]


def _last_norm_in(branch: nn.Module) -> nn.Module:
    """The last norm of a Sequential branch (its order is its execution order)."""
    norms = [m for m in branch.modules() if isinstance(m, _NORMS)]
    if not norms:
        raise Attn2dError(f"inject: expected a BatchNorm/GroupNorm layer in the branch of "
                          f"{type(branch).__name__}, found none")
    return norms[-1]


def _after_norm(norm: nn.Module) -> Site:
    return Site(norm, _channels(norm))


def _no_se(block: nn.Module) -> SESlot | None:
    return None


def _named_se(*norm_names: str) -> Callable[[nn.Module], SESlot | None]:
    """timm blocks: ``block.se`` (an ``nn.Identity`` when absent), on the channels of the
    first of ``norm_names`` that the block has (the norm right before the SE)."""

    def find(block: nn.Module) -> SESlot | None:
        se = getattr(block, "se", None)
        if se is None or isinstance(se, nn.Identity):
            return None
        norm = next(getattr(block, n) for n in norm_names if getattr(block, n, None) is not None)
        return SESlot(block, "se", _channels(norm))

    return find


def _sequential_se(branch_name: str) -> Callable[[nn.Module], SESlot | None]:
    """torchvision blocks: a ``SqueezeExcitation`` inside the Sequential ``branch_name``."""

    def find(block: nn.Module) -> SESlot | None:
        branch = getattr(block, branch_name)
        for name, child in branch.named_children():
            if _is_class(child, "torchvision.ops.misc", "SqueezeExcitation"):
                return SESlot(branch, name, child.fc1.in_channels)
        return None

    return find


def _timm_resnet_site(block: nn.Module) -> Site:
    # timm's SE-ResNets apply ``se`` after the last BN: attention goes after the SE.
    norm = _last_child_norm(block)
    return Site(block.se if block.se is not None else norm, _channels(norm))


def _timm_resnet_se(block: nn.Module) -> SESlot | None:
    if block.se is None:
        return None
    return SESlot(block, "se", _channels(_last_child_norm(block)))


def _timm_convnext_site(block: nn.Module) -> Site:
    # The MLP runs channels-last unless conv_mlp=True; γ, drop-path and the add follow.
    return Site(block.mlp, block.conv_dw.out_channels, channels_last=not block.use_conv_mlp)


_TV, _TIMM_EFF = "torchvision.models", "timm.models._efficientnet_blocks"

RULES: dict[tuple[str, str], BlockRule] = {
    (module, rule.name): rule
    for module, rule in (
        (f"{_TV}.resnet", BlockRule("torchvision", "BasicBlock", "ResNet-18/34",
                                    lambda b: _after_norm(_last_child_norm(b)), _no_se)),
        (f"{_TV}.resnet", BlockRule("torchvision", "Bottleneck", "ResNet-50+, ResNeXt, Wide",
                                    lambda b: _after_norm(_last_child_norm(b)), _no_se)),
        (f"{_TV}.mobilenetv2", BlockRule("torchvision", "InvertedResidual", "MobileNetV2",
                                         lambda b: _after_norm(_last_norm_in(b.conv)), _no_se)),
        (f"{_TV}.mobilenetv3", BlockRule("torchvision", "InvertedResidual", "MobileNetV3",
                                         lambda b: _after_norm(_last_norm_in(b.block)),
                                         _sequential_se("block"))),
        (f"{_TV}.efficientnet", BlockRule("torchvision", "MBConv", "EfficientNet-B0..B7",
                                          lambda b: _after_norm(_last_norm_in(b.block)),
                                          _sequential_se("block"))),
        (f"{_TV}.efficientnet", BlockRule("torchvision", "FusedMBConv", "EfficientNetV2",
                                          lambda b: _after_norm(_last_norm_in(b.block)),
                                          _no_se)),
        (f"{_TV}.convnext", BlockRule("torchvision", "CNBlock", "ConvNeXt",
                                      lambda b: Site(b.block, b.layer_scale.shape[0]), _no_se)),
        ("timm.models.resnet", BlockRule("timm", "BasicBlock", "ResNet-18/34, SE-ResNet",
                                         _timm_resnet_site, _timm_resnet_se)),
        ("timm.models.resnet", BlockRule("timm", "Bottleneck", "ResNet-26/50+, ResNet-D, "
                                         "SE-ResNet, ECA-ResNet", _timm_resnet_site,
                                         _timm_resnet_se)),
        (_TIMM_EFF, BlockRule("timm", "InvertedResidual", "EfficientNet, MobileNetV2/V3, "
                              "MNASNet", lambda b: _after_norm(b.bn3), _named_se("bn2"))),
        (_TIMM_EFF, BlockRule("timm", "DepthwiseSeparableConv", "first stage of EfficientNet "
                              "and MobileNet", lambda b: _after_norm(b.bn2), _named_se("bn1"))),
        (_TIMM_EFF, BlockRule("timm", "EdgeResidual", "EfficientNetV2 (fused stages)",
                              lambda b: _after_norm(b.bn2), _named_se("bn1"))),
        ("timm.models.convnext", BlockRule("timm", "ConvNeXtBlock", "ConvNeXt",
                                           _timm_convnext_site, _no_se)),
    )
}  # fmt: skip

# Residual blocks of other libraries that follow torchvision's layout.
_ANY_RESNET_BLOCK = {
    name: BlockRule("any", name, "other libraries' ResNets",
                    lambda b: _after_norm(_last_child_norm(b)), _no_se)
    for name in ("BasicBlock", "Bottleneck")
}


def _is_class(module: nn.Module, module_name: str, class_name: str) -> bool:
    return any(c.__module__ == module_name and c.__qualname__ == class_name
               for c in type(module).__mro__)


def rule_for(module: nn.Module) -> BlockRule | None:
    """The rule of a known block type (by class along the MRO), or None."""
    for cls in type(module).__mro__:
        rule = RULES.get((cls.__module__, cls.__qualname__))
        if rule is not None:
            return rule
    return _ANY_RESNET_BLOCK.get(type(module).__name__)


def known_block_types() -> str:
    """One line naming the block types :func:`rule_for` knows, for error messages."""
    by_library: dict[str, list[str]] = {}
    for rule in RULES.values():
        names = by_library.setdefault(rule.library, [])
        if rule.name not in names:
            names.append(rule.name)
    return "; ".join(f"{lib}: {', '.join(names)}" for lib, names in by_library.items())
