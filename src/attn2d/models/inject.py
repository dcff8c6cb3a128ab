"""Add a mechanism to a model that already exists (torchvision, timm or attn2d networks).

With ``replace=False`` the model's own modules and their ``state_dict`` keys stay as they
are, so weights of the plain network load before or after injecting. Each added module
is registered on the model and applied by a forward hook on the module it follows:

- inside a residual block: ``<block>.attn``, applied to the output of the module that
  ends the block's residual branch (see :mod:`attn2d.models.blocks`);
- after a named module or stage: ``attn.<path with _>`` on the model, or, when the model
  is an ``nn.Sequential`` (whose forward runs every child), on the first module along
  the path that is not a container (``<that module>.attn.<path with _>``);
- in place of a block's own SE (``replace=True``): the SE's attribute now holds the
  mechanism, which the block calls itself.

The hook looks the attention module up by name at every call, so it survives
``copy.deepcopy`` and pickling, and setting the attribute to ``nn.Identity()`` switches
it off.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._base.errors import Attn2dError
from ._common import (
    AttentionFactory,
    Backbone,
    check_init,
    check_stages,
    make_attention,
    resolve_attention,
)
from .attention import is_attention
from .blocks import BlockRule, known_block_types, rule_for
from .resnet import BasicBlock, Bottleneck
from .small_cnn import ConvBlock

__all__ = ["Stage", "find_stages", "inject"]

_OWN_BLOCKS = (BasicBlock, Bottleneck, ConvBlock)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class _ApplyAfter:
    """Forward hook: pass the hooked module's output through ``owner._modules[name]``
    (permuted to channels-first and back when the output is channels-last)."""

    def __init__(self, owner: nn.Module, name: str, channels_last: bool = False) -> None:
        self.owner = owner
        self.name = name
        self.channels_last = channels_last

    def __call__(self, module: nn.Module, inputs: object, output: Tensor) -> Tensor:
        attention = self.owner._modules[self.name]
        if self.channels_last:
            return attention(output.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return attention(output)


@dataclass(frozen=True)
class Stage:
    """A stage of a network: the path attention after it follows, and its blocks' paths."""

    path: str
    blocks: tuple[str, ...]


def inject(
    model: nn.Module,
    spec: str | AttentionFactory,
    where: str | Sequence[str] = "block",
    *,
    replace: bool = False,
    init: str = "default",
    stages: Sequence[int] | None = None,
    input_shape: Sequence[int] | None = None,
) -> nn.Module:
    """Add a mechanism to ``model`` in place and return it.

    Args:
        model: the network, e.g. ``torchvision.models.mobilenet_v3_small(weights=None)``,
            a timm model, an attn2d backbone or an ``nn.Sequential``.
        spec: a registry spec string (``"cbam(reduction=8)"``) or a class / factory called
            as ``factory(channels)``.
        where: ``"block"``: inside every residual block of a known type (see
            :mod:`attn2d.models.blocks`: torchvision's and timm's ResNet, MobileNetV2/V3,
            EfficientNet and ConvNeXt blocks, attn2d's), on the residual branch's output
            before the add; ``"stage"``: after each stage (``layer1`` …, ``stages.0`` …,
            or the runs of same-resolution blocks of flat networks, see
            :func:`find_stages`); or a module path or list of paths
            (``["layer3.1.conv2", "layer4"]``): after each.
        replace: with ``where="block"``: put the mechanism in place of the SE of each
            block that has one (MobileNetV3, EfficientNet, timm SE-ResNets), calling it
            where the block called its SE; blocks without an SE are left alone. The SE's
            parameters leave the model, so its state-dict keys change there. With
            ``replace=False`` such blocks get the mechanism after their last norm, i.e.
            after their SE.
        init: ``"default"`` (the mechanism's own initialisation, as in its paper) or
            ``"identity"``: each mechanism wrapped in :class:`ResidualBlend`, so the model
            computes exactly what it computed before (mechanisms that already start as
            the identity, such as non-local or GC, are left unwrapped).
        stages: 1-based stages that receive attention (with ``"block"`` or ``"stage"``);
            default all.
        input_shape: (C, H, W) or (B, C, H, W) of a dry forward pass that finds the channel
            count after a named module (and the stages of flat networks); default
            (1, C_in, 64, 64) with C_in taken from the first convolution.
    """
    if not isinstance(model, nn.Module):
        raise Attn2dError(f"inject: expected an nn.Module, got {type(model).__name__}")
    check_init(init, "inject")
    if not isinstance(replace, bool):
        raise Attn2dError(f"inject: expected replace to be True or False, got {replace!r}")
    factory, _ = resolve_attention(spec, None, owner="inject")
    if factory is None:
        raise Attn2dError(f"inject: expected a mechanism spec or factory, got {spec!r}")
    is_block = isinstance(where, str) and where == "block"
    if replace and not is_block:
        raise Attn2dError(f"inject: expected where='block' with replace=True (it swaps the "
                          f"SE inside blocks), got where={where!r}")
    if is_block:
        _inject_blocks(model, factory, replace, init, stages, input_shape)
        return model
    if isinstance(where, str) and where == "stage":
        found = find_stages(model, input_shape)
        chosen = check_stages(stages, len(found), range(1, len(found) + 1), "inject")
        paths = [found[s - 1].path for s in chosen]
    else:
        if stages is not None:
            raise Attn2dError(f"inject: expected stages only with where='block' or 'stage', "
                              f"got stages={stages!r} with module paths")
        paths = [where] if isinstance(where, str) else list(where)
    _inject_after(model, factory, paths, input_shape, init)
    return model


# ----------------------------------------------------------------------------- blocks


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module, BlockRule | None]]:
    """``(path, block, rule)`` of every known block; rule None for attn2d's own blocks."""
    found = []
    for path, module in model.named_modules():
        if isinstance(module, _OWN_BLOCKS):
            found.append((path, module, None))
        elif (rule := rule_for(module)) is not None:
            found.append((path, module, rule))
    return found


def _inject_blocks(
    model: nn.Module,
    factory: AttentionFactory,
    replace: bool,
    init: str,
    stages: Sequence[int] | None,
    input_shape: Sequence[int] | None,
) -> None:
    found = _blocks(model)
    if not found:
        names = _named_stages(model)
        stage_hint = f"where='stage' (after {', '.join(names)}) or " if names else ""
        raise Attn2dError(
            f"inject: expected residual blocks of a known type in {type(model).__name__} "
            f"({known_block_types()}), found none; use {stage_hint}module paths, "
            f"{_places(model)}"
        )
    if stages is not None:
        staged = find_stages(model, input_shape)
        chosen = check_stages(stages, len(staged), range(1, len(staged) + 1), "inject")
        keep = {b for s in chosen for b in staged[s - 1].blocks}
        found = [entry for entry in found if entry[0] in keep]
    plan = []  # (path, channels, attach): attach(module) puts the built module in place
    for path, block, rule in found:
        if replace:
            slot = rule.se(block) if rule is not None else None
            if slot is None:
                continue
            if is_attention(getattr(slot.parent, slot.name)):
                raise Attn2dError(f"inject: expected the SE of block {path!r} to be the "
                                  f"block's own, got attention already there")
            plan.append((f"{path} (its SE)", slot.channels, _setter(slot.parent, slot.name)))
            continue
        if rule is None:
            if not isinstance(block.attn, nn.Identity):
                raise Attn2dError(f"inject: expected {path!r} without attention, got "
                                  f"{type(block.attn).__name__} already in {path}.attn")
            plan.append((path, block.out_channels, _setter(block, "attn")))
            continue
        if hasattr(block, "attn"):
            raise Attn2dError(f"inject: expected block {path!r} to have no attribute 'attn', "
                              "got one (already injected?)")
        site = rule.site(block)
        plan.append((path, site.channels, _hooked(block, site.module, site.channels_last)))
    if not plan and replace:
        raise Attn2dError(f"inject: expected blocks holding an SE of their own for "
                          f"replace=True in {type(model).__name__}, found none")
    if not plan:
        raise Attn2dError(f"inject: expected known blocks in stages {tuple(stages or ())} of "
                          f"{type(model).__name__}, found none")
    # Build everything first so that a failing factory leaves the model untouched.
    built = _like(model, [make_attention(factory, ch, path, "inject", init)
                          for path, ch, _ in plan])
    for (_, _, attach), module in zip(plan, built, strict=True):
        attach(module)


def _like(model: nn.Module, modules: list[nn.Module]) -> list[nn.Module]:
    """Move new modules to the device and floating dtype of the model's parameters."""
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is not None:
        for module in modules:
            module.to(device=param.device, dtype=param.dtype)
    return modules


def _setter(parent: nn.Module, name: str) -> Callable[[nn.Module], None]:
    def attach(module: nn.Module) -> None:
        setattr(parent, name, module)
    return attach


def _hooked(
    block: nn.Module, end: nn.Module, channels_last: bool
) -> Callable[[nn.Module], None]:
    def attach(module: nn.Module) -> None:
        block.attn = module
        end.register_forward_hook(_ApplyAfter(block, "attn", channels_last))
    return attach


# ----------------------------------------------------------------------------- stages


def find_stages(model: nn.Module, input_shape: Sequence[int] | None = None) -> list[Stage]:
    """The stages of ``model``, in order.

    attn2d backbones name theirs; otherwise children ``layer1`` … ``layer4`` (ResNets),
    the items of a ``stages`` container (timm), or else the model's known blocks grouped
    by parent and, within one parent, into runs of the same output resolution (found by a
    dry forward pass), each stage ending at the parent when the run is all of it and at
    its last block otherwise (torchvision's flat MobileNets).
    """
    blocks = _blocks(model)

    def under(prefix: str) -> tuple[str, ...]:
        return tuple(p for p, _, _ in blocks if p == prefix or p.startswith(f"{prefix}."))

    names = _named_stages(model)
    if names:
        return [Stage(name, under(name)) for name in names]
    if not blocks:
        raise Attn2dError(
            f"inject: expected stages (layer1.., stages.0.., or residual blocks of a known "
            f"type) in {type(model).__name__}, found none; {_places(model)}"
        )
    shapes = _dry_run(model, {p: b for p, b, _ in blocks}, input_shape)
    runs: list[list[str]] = []
    for path in sorted(shapes, key=lambda p: shapes[p].order):
        if runs:
            last = runs[-1][-1]
            if (_parent(last) == _parent(path)
                    and shapes[last].shapes[0][2:] == shapes[path].shapes[0][2:]):
                runs[-1].append(path)
                continue
        runs.append([path])
    stages = []
    for run in runs:
        parent = _parent(run[-1])
        complete = bool(parent) and len(under(parent)) == len(run) and (
            f"{parent}.{list(model.get_submodule(parent)._modules)[-1]}" == run[-1])
        stages.append(Stage(parent if complete else run[-1], tuple(run)))
    return stages


def _named_stages(model: nn.Module) -> list[str]:
    """Stages the model names: an attn2d backbone's, ``layer1``.., or ``stages.0``.."""
    if isinstance(model, Backbone):
        return list(model.stage_names)
    names = [f"layer{i}" for i in range(1, 5) if f"layer{i}" in model._modules]
    container = model._modules.get("stages")
    if not names and isinstance(container, _CONTAINERS) and len(container):
        names = [f"stages.{key}" for key in container._modules]
    return names


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


def _places(model: nn.Module) -> str:
    """A hint naming places a user could pass: the first few shallow module paths."""
    paths = [p for p, m in model.named_modules() if p and p.count(".") <= 1
             and not isinstance(m, (nn.Identity, nn.Dropout))]
    more = f", … ({len(paths) - 8} more)" if len(paths) > 8 else ""
    return f"e.g. where=[{', '.join(map(repr, paths[:8]))}{more}]"


# ----------------------------------------------------------------------------- after paths


@dataclass
class _Seen:
    order: int
    shapes: list[tuple[int, ...]]


def _dry_run(
    model: nn.Module, targets: dict[str, nn.Module], input_shape: Sequence[int] | None
) -> dict[str, _Seen]:
    """Output shapes of each target (one per call), from one forward pass in eval mode."""
    if input_shape is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise Attn2dError("inject: expected input_shape=(C, H, W) for a model without "
                              "Conv2d layers, got None")
        input_shape = (first.in_channels, 64, 64)
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise Attn2dError(f"inject: expected input_shape as (C, H, W) or (B, C, H, W) of "
                          f"positive ints, got {tuple(input_shape)!r}")
    seen: dict[str, _Seen] = {}

    def recorder(path: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            entry = seen.setdefault(path, _Seen(len(seen), []))
            entry.shapes.append(tuple(output.shape) if isinstance(output, Tensor) else ())
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
    except (RuntimeError, ValueError, TypeError, AssertionError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise Attn2dError(
            f"inject: expected {type(model).__name__} to run on a {shape} input (a dry pass "
            f"that measures its feature maps), got {type(err).__name__}: {reason}; pass "
            f"input_shape=(C, H, W)"
        ) from err
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    for path in targets:
        if path not in seen:
            raise Attn2dError(f"inject: expected {path!r} to run in the forward pass, "
                              "it did not")
    return seen


def _owner(model: nn.Module, path: str) -> nn.Module:
    """Where the attention after ``path`` is registered: the model, unless its forward
    runs every child (an ``nn.Sequential``); then the first module along the path that is
    not a container, or the last non-container inside the target (same output)."""
    if not isinstance(model, nn.Sequential):
        return model
    module = model
    for part in path.split("."):
        module = module._modules[part]
        if not isinstance(module, _CONTAINERS):
            return module
    while isinstance(module, nn.Sequential) and len(module):
        module = module[-1]
        if not isinstance(module, _CONTAINERS):
            return module
    raise Attn2dError(f"inject: expected {path!r} to hold a module that is not a container, "
                      "got none; choose a module inside it")


def _inject_after(
    model: nn.Module,
    factory: AttentionFactory,
    paths: list[str],
    input_shape: Sequence[int] | None,
    init: str,
) -> None:
    modules = dict(model.named_modules())
    targets = {}
    for path in paths:
        if not isinstance(path, str):
            raise Attn2dError(f"inject: expected where as 'block', 'stage' or module paths, "
                              f"got {path!r}")
        if path not in modules or not path:
            close = difflib.get_close_matches(path, [p for p in modules if p], n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise Attn2dError(f"inject: expected 'block', 'stage' or a module path of "
                              f"{type(model).__name__}, got {path!r}{hint}")
        targets[path] = modules[path]
    places = {}
    for path in targets:
        owner = _owner(model, path)
        container = owner._modules.get("attn")
        if container is None and hasattr(owner, "attn"):
            container = owner.attn
        if container is not None and not isinstance(container, nn.ModuleDict):
            raise Attn2dError(f"inject: expected {type(owner).__name__}.attn to be free or a "
                              f"ModuleDict, got {type(container).__name__}")
        key = path.replace(".", "_")
        if container is not None and key in container:
            raise Attn2dError(f"inject: expected no attention after {path!r} yet, got one "
                              f"at attn.{key}")
        places[path] = (owner, key)
    seen = _dry_run(model, targets, input_shape)
    channels = {}
    for path in targets:
        calls = seen[path].shapes
        if len(calls) > 1:
            raise Attn2dError(f"inject: expected {path!r} to run once per forward pass, it "
                              f"ran {len(calls)} times (a module used in several places); "
                              "choose a module used once")
        if len(calls[0]) != 4:
            raise Attn2dError(f"inject: expected the output of {path!r} "
                              f"({type(targets[path]).__name__}) to be a (B, C, H, W) feature "
                              f"map, got shape {calls[0]}")
        channels[path] = calls[0][1]
    built = dict(zip(targets, _like(model, [make_attention(factory, channels[p], p, "inject",
                                                           init) for p in targets])))
    for path, module in built.items():
        owner, key = places[path]
        if "attn" not in owner._modules:
            owner.attn = nn.ModuleDict()
        owner.attn[key] = module
        # attn2d backbones apply attn[<stage name>] themselves; anything else needs a hook
        if not (owner is model and isinstance(model, Backbone) and path in model.stage_names):
            targets[path].register_forward_hook(_ApplyAfter(owner.attn, key))
