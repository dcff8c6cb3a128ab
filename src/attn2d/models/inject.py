"""Add a mechanism to a model that already exists (torchvision, timm or attn2d networks).

The model's own modules and their ``state_dict`` keys stay as they are, so pretrained
weights load before or after injecting. Each added module is registered on the model
(``<block>.attn`` inside residual blocks, ``attn.<path>`` after named modules) and applied
by a forward hook on the module it follows; the hook looks the attention module up by
name at every call, so it survives ``copy.deepcopy`` and pickling, and setting the
attribute to ``nn.Identity()`` switches it off.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ._common import AttentionFactory, Backbone, make_attention, resolve_attention
from .resnet import BasicBlock, Bottleneck
from .small_cnn import ConvBlock

__all__ = ["inject"]

_OWN_BLOCKS = (BasicBlock, Bottleneck, ConvBlock)
_BLOCK_NAMES = ("BasicBlock", "Bottleneck")  # torchvision's and timm's residual blocks
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


class _ApplyAfter:
    """Forward hook: pass the hooked module's output through ``owner._modules[name]``."""

    def __init__(self, owner: nn.Module, name: str) -> None:
        self.owner = owner
        self.name = name

    def __call__(self, module: nn.Module, inputs: object, output: Tensor) -> Tensor:
        return self.owner._modules[self.name](output)


def inject(
    model: nn.Module,
    spec: str | AttentionFactory,
    where: str | Sequence[str] = "block",
    *,
    input_shape: Sequence[int] | None = None,
) -> nn.Module:
    """Add a mechanism to ``model`` in place and return it.

    Args:
        model: the network, e.g. ``torchvision.models.resnet18(weights=None)`` or a timm
            ResNet.
        spec: a registry spec string (``"cbam(reduction=8)"``) or a class / factory called
            as ``factory(channels)``.
        where: ``"block"``: inside every residual block (``BasicBlock`` / ``Bottleneck`` of
            torchvision, timm or attn2d, and attn2d's small-CNN blocks), after the last
            normalisation layer and before the residual add; ``"stage"``: after each stage
            (``layer1`` … ``layer4``, or ``stages.0`` … for timm's staged networks); or a
            module path or list of paths (``["layer3.1.conv2", "layer4"]``): after each.
        input_shape: (C, H, W) or (B, C, H, W) of a dry forward pass that finds the channel
            count after a named module or stage; default (1, C_in, 64, 64) with C_in taken
            from the first convolution.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"inject: expected an nn.Module, got {type(model).__name__}")
    factory, _ = resolve_attention(spec, None, owner="inject")
    if factory is None:
        raise ValueError(f"inject: expected a mechanism spec or factory, got {spec!r}")
    if isinstance(where, str) and where == "block":
        _inject_blocks(model, factory)
    else:
        paths = _stage_paths(model) if isinstance(where, str) and where == "stage" else where
        _inject_after(model, factory, [paths] if isinstance(paths, str) else list(paths),
                      input_shape)
    return model


def _last_norm(block: nn.Module) -> nn.Module | None:
    """The block's last normalisation layer among its direct children (the shortcut's BN
    is nested in ``downsample``, so it is never picked)."""
    norms = [m for m in block.children() if isinstance(m, _NORMS)]
    return norms[-1] if norms else None


def _inject_blocks(model: nn.Module, factory: AttentionFactory) -> None:
    found = [(p, m) for p, m in model.named_modules()
             if isinstance(m, _OWN_BLOCKS) or type(m).__name__ in _BLOCK_NAMES]
    if not found:
        raise ValueError(
            f"inject: expected residual blocks (BasicBlock / Bottleneck of torchvision, timm "
            f"or attn2d) in {type(model).__name__}, found none; pass where='stage' or a list "
            "of module paths"
        )
    plan = []
    for path, block in found:
        if isinstance(block, _OWN_BLOCKS):
            if not isinstance(block.attn, nn.Identity):
                raise ValueError(f"inject: expected {path!r} without attention, got "
                                 f"{type(block.attn).__name__} already in {path}.attn")
            plan.append((path, block, None, block.out_channels))
            continue
        norm = _last_norm(block)
        if norm is None:
            raise ValueError(f"inject: expected a BatchNorm/GroupNorm layer in block {path!r} "
                             f"({type(block).__name__}), found none")
        if hasattr(block, "attn"):
            raise ValueError(f"inject: expected block {path!r} to have no attribute 'attn', "
                             "got one (already injected?)")
        channels = norm.num_features if hasattr(norm, "num_features") else norm.num_channels
        plan.append((path, block, norm, channels))
    # Build everything first so that a failing factory leaves the model untouched.
    built = [make_attention(factory, ch, path, "inject") for path, _, _, ch in plan]
    for (_, block, norm, _), module in zip(plan, built, strict=True):
        block.attn = module
        if norm is not None:
            norm.register_forward_hook(_ApplyAfter(block, "attn"))


def _stage_paths(model: nn.Module) -> list[str]:
    if isinstance(model, Backbone):
        return list(model.stage_names)
    layers = [f"layer{i}" for i in range(1, 5) if f"layer{i}" in model._modules]
    if layers:
        return layers
    stages = model._modules.get("stages")
    if isinstance(stages, (nn.Sequential, nn.ModuleList)) and len(stages):
        return [f"stages.{i}" for i in range(len(stages))]
    raise ValueError(
        f"inject: expected stages named layer1..layer4 or stages.0.. in "
        f"{type(model).__name__}, found none; pass a list of module paths instead"
    )


def _output_channels(
    model: nn.Module, targets: dict[str, nn.Module], input_shape: Sequence[int] | None
) -> dict[str, int]:
    """Channels after each target, from one dry forward pass in eval mode."""
    if input_shape is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise ValueError("inject: expected input_shape=(C, H, W) for a model without "
                             "Conv2d layers, got None")
        input_shape = (first.in_channels, 64, 64)
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        raise ValueError(f"inject: expected input_shape as (C, H, W) or (B, C, H, W), "
                         f"got {tuple(input_shape)!r}")
    seen: dict[str, tuple[int, ...]] = {}

    def recorder(path: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            seen.setdefault(path, tuple(output.shape) if isinstance(output, Tensor) else ())
        return hook

    handles = [m.register_forward_hook(recorder(p)) for p, m in targets.items()]
    modes = {m: m.training for m in model.modules()}
    param = next(model.parameters(), None)
    x = torch.zeros(shape, device=param.device if param is not None else None,
                    dtype=param.dtype if param is not None and param.is_floating_point()
                    else None)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    channels = {}
    for path in targets:
        got = seen.get(path)
        if got is None:
            raise ValueError(f"inject: expected {path!r} to run in the forward pass, "
                             "it did not")
        if len(got) != 4:
            raise ValueError(f"inject: expected the output of {path!r} to be a (B, C, H, W) "
                             f"feature map, got shape {got}")
        channels[path] = got[1]
    return channels


def _inject_after(
    model: nn.Module,
    factory: AttentionFactory,
    paths: list[str],
    input_shape: Sequence[int] | None,
) -> None:
    modules = dict(model.named_modules())
    targets = {}
    for path in paths:
        if not isinstance(path, str):
            raise TypeError(f"inject: expected where as 'block', 'stage' or module paths, "
                            f"got {path!r}")
        if path not in modules or not path:
            close = difflib.get_close_matches(path, [p for p in modules if p], n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ValueError(f"inject: expected 'block', 'stage' or a module path of "
                             f"{type(model).__name__}, got {path!r}{hint}")
        targets[path] = modules[path]
    container = model._modules.get("attn")
    if container is not None and not isinstance(container, nn.ModuleDict):
        raise ValueError(f"inject: expected {type(model).__name__}.attn to be free or a "
                         f"ModuleDict, got {type(container).__name__}")
    keys = {p: p.replace(".", "_") for p in targets}
    taken = [p for p, k in keys.items() if container is not None and k in container]
    if taken:
        raise ValueError(f"inject: expected no attention after {taken[0]!r} yet, got one "
                         f"at attn.{keys[taken[0]]}")
    channels = _output_channels(model, targets, input_shape)
    built = {p: make_attention(factory, channels[p], p, "inject") for p in targets}
    if container is None:
        container = model.attn = nn.ModuleDict()
    for path, module in built.items():
        container[keys[path]] = module
        # attn2d backbones apply attn[<stage name>] themselves; anything else needs a hook
        if not (isinstance(model, Backbone) and path in model.stage_names):
            targets[path].register_forward_hook(_ApplyAfter(container, keys[path]))
