"""The attention parts of a model: the identity-start wrapper, finding them, loading around them.

A mechanism added to a trained network changes its features at once (fresh SE gates
halve them), which frozen BatchNorm layers and the head were not trained for.
:class:`ResidualBlend` starts every mechanism as the identity and learns how much of it
to mix in. :func:`attention_modules` lists what :func:`attn2d.inject` and the backbones
added, so training code can train or freeze exactly those parts, and
:func:`load_backbone_state` loads a state dict of the network without attention.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .._base.errors import Attn2dError
from ..modules.registry import is_mechanism, outermost_mechanisms

__all__ = [
    "ResidualBlend",
    "attention_modules",
    "is_attention",
    "load_backbone_state",
    "mark_attention",
    "starts_as_identity",
]

# Set on every module that attn2d adds to a model; a plain attribute, so it survives
# copy.deepcopy and pickling and needs no registry of paths.
_MARK = "_attn2d_attention"


class ResidualBlend(nn.Module):
    """``x + β·(mechanism(x) − x)`` with a learnable scalar β that starts at 0.

    At β = 0 the block is the identity, so a model with attention added computes exactly
    what the model without it computed; β then learns how much of the mechanism to mix
    in (β = 1 is the mechanism alone). At β = 0 the mechanism's own parameters receive
    no gradient; β does (its gradient is ⟨mechanism(x) − x, ∂L/∂y⟩), and once it moves
    away from 0 the mechanism trains too. This departs from the papers' initialisation,
    which start the mechanism at its own random state; use it to add attention to a
    trained network (fine-tuning, frozen backbone).

    The mechanism stays a child module called as a module, so hooks on it (maps,
    profilers) fire. State-dict keys: ``<path>.beta`` and ``<path>.mechanism.<its keys>``.

    Args:
        mechanism: the attention module; its output must have its input's shape.
    """

    def __init__(self, mechanism: nn.Module) -> None:
        super().__init__()
        if not isinstance(mechanism, nn.Module):
            raise Attn2dError(f"ResidualBlend: expected an nn.Module, got "
                              f"{type(mechanism).__name__}")
        self.mechanism = mechanism
        self.beta = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.beta * (self.mechanism(x) - x)

    def extra_repr(self) -> str:
        return f"beta={self.beta.item():.4g}"


@torch.no_grad()
def starts_as_identity(module: nn.Module, channels: int) -> bool:
    """True when ``module`` returns its input unchanged at its initial state.

    Non-local, GC, DANet and criss-cross attention start as the identity (a zero γ or a
    zero last layer). Wrapping them in :class:`ResidualBlend` would stop all learning:
    with β = 0 and mechanism(x) = x, neither β nor the mechanism gets a gradient. Found
    by one probe on a random 8×8 map in eval mode; a module that cannot run on it counts
    as not the identity (its real input will tell).
    """
    param = next(module.parameters(), None)
    x = torch.randn(2, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        out = module(x)
    except (RuntimeError, ValueError, TypeError):
        return False
    finally:
        for m, mode in modes.items():
            m.training = mode
    return isinstance(out, Tensor) and out.shape == x.shape and torch.allclose(out, x)


def mark_attention(module: nn.Module) -> nn.Module:
    """Mark ``module`` as attention added by attn2d (found by :func:`attention_modules`)."""
    setattr(module, _MARK, True)
    return module


def is_attention(module: nn.Module) -> bool:
    """True for modules attn2d added as attention, blends and registered mechanisms."""
    return (getattr(module, _MARK, False) or isinstance(module, ResidualBlend)
            or is_mechanism(module))


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of the outermost attention modules of ``model``, in module order.

    Attention is what the backbones and :func:`attn2d.inject` added (a
    :class:`ResidualBlend` when present, else the mechanism, custom factories' modules
    included) and any registered mechanism elsewhere. A network's own SE layers (timm's
    or torchvision's MobileNetV3 / EfficientNet) are part of the backbone and not listed.
    """
    return outermost_mechanisms(model, is_attention)


def load_backbone_state(model: nn.Module, state_dict: Mapping[str, Tensor]) -> list[str]:
    """Load the state dict of the same network without attention; return the keys left
    at their initial values (those of the attention modules).

    Attention added with ``replace=False`` only adds keys, so every other key of
    ``model`` must be in ``state_dict`` with the same shape. With ``replace=True`` a
    block's SE keys are no longer in ``model``; they are skipped. Anything else missing,
    unexpected or of another shape is refused with the first such key named.
    """
    if not isinstance(state_dict, Mapping):
        raise Attn2dError(f"load_backbone_state: expected a state dict, got "
                          f"{type(state_dict).__name__}")
    prefixes = tuple(f"{p}." for p, _ in attention_modules(model))
    own = model.state_dict()
    attention_keys = [k for k in own if k.startswith(prefixes)]
    wanted = [k for k in own if not k.startswith(prefixes)]
    missing = [k for k in wanted if k not in state_dict]
    if missing:
        raise Attn2dError(f"load_backbone_state: expected key {missing[0]!r} in the state dict, "
                          f"got none ({len(missing)} of {len(wanted)} model keys missing)")
    unexpected = [k for k in state_dict if k not in own and not k.startswith(prefixes)]
    if unexpected:
        raise Attn2dError(f"load_backbone_state: expected only keys of "
                          f"{type(model).__name__}, got {unexpected[0]!r} "
                          f"({len(unexpected)} unexpected)")
    for key in wanted:
        if tuple(state_dict[key].shape) != tuple(own[key].shape):
            raise Attn2dError(f"load_backbone_state: expected {key!r} of shape "
                              f"{tuple(own[key].shape)}, got {tuple(state_dict[key].shape)}")
    model.load_state_dict({k: state_dict[k] for k in wanted}, strict=False)
    return attention_keys
