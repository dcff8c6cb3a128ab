"""What every backbone and :func:`attn2d.inject` share: turning ``attention=`` into a factory,
checking ``placement=`` and ``stages=``, and the standard weight initialisation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypedDict

from torch import Tensor, nn

from .._base.errors import Attn2dError
from .._base.validate import check_choice, check_int
from ..modules.registry import get, lookup, no_attention
from .attention import ResidualBlend, mark_attention, starts_as_identity

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "INITS",
    "PLACEMENTS",
    "AttentionFactory",
    "AttentionOptions",
    "Backbone",
    "check_init",
    "check_stages",
    "default_stages",
    "init_backbone",
    "make_attention",
    "resolve_attention",
]

AttentionFactory = Callable[[int], nn.Module]
PLACEMENTS = ("block", "stage")
INITS = ("default", "identity")


def resolve_attention(
    attention: str | AttentionFactory | None, placement: str | None, owner: str
) -> tuple[AttentionFactory | None, str | None]:
    """Turn ``attention=`` into ``factory(channels) -> module`` and settle the placement.

    ``attention`` is a registry spec string (``"cbam(reduction=8)"``), a class or
    ``functools.partial`` called as ``factory(channels)``, or ``None`` / ``"none"``.
    ``placement=None`` means the registry default for a spec and ``"block"`` for a factory.
    """
    if placement is not None:
        check_choice(placement, PLACEMENTS, "placement", owner)
    if no_attention(attention):
        return None, placement
    if isinstance(attention, str):
        factory = get(attention)  # validates the name and keywords before any layer is built
        return factory, placement or lookup(attention).placement
    if isinstance(attention, nn.Module):
        raise Attn2dError(
            f"{owner}: expected attention as a spec string, a class or a factory (each place "
            f"needs its own module), got an instance of {type(attention).__name__}"
        )
    if not callable(attention):
        raise Attn2dError(
            f"{owner}: expected attention as a spec string, a class, a factory or None, "
            f"got {type(attention).__name__}"
        )
    return attention, placement or "block"


def make_attention(
    factory: AttentionFactory, channels: int, where: str, owner: str, init: str = "default"
) -> nn.Module:
    """Call ``factory(channels)``, check that it built a module, and mark it as attention.

    ``init="identity"`` wraps it in :class:`ResidualBlend` (β = 0: the model computes what
    it computed without attention), unless it already starts as the identity (non-local,
    GC, DANet, criss-cross), where the wrapper would stop its gradient.
    """
    module = factory(channels)
    if not isinstance(module, nn.Module):
        raise Attn2dError(
            f"{owner}: expected the attention factory to return an nn.Module for {where} "
            f"({channels} channels), got {type(module).__name__}"
        )
    if init == "identity" and not starts_as_identity(module, channels):
        module = ResidualBlend(mark_attention(module))
    return mark_attention(module)


def check_init(init: str, owner: str) -> str:
    """Validate ``attention_init`` / ``init``: ``"default"`` or ``"identity"``."""
    return check_choice(init, INITS, "attention_init", owner)


def check_stages(
    stages: Sequence[int] | None, count: int, default: Sequence[int], owner: str
) -> tuple[int, ...]:
    """Validate 1-based stage numbers (``None`` gives ``default``); sorted, without repeats."""
    if stages is None:
        return tuple(default)
    if isinstance(stages, int) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in stages
    ):
        raise Attn2dError(f"{owner}: expected stages as a sequence of ints, got {stages!r}")
    bad = [s for s in stages if not 1 <= s <= count]
    if bad or len(set(stages)) != len(stages) or not stages:
        raise Attn2dError(
            f"{owner}: expected distinct stage numbers in 1..{count}, got {tuple(stages)!r}"
        )
    return tuple(sorted(stages))


def default_stages(placement: str, count: int) -> tuple[int, ...]:
    """Block attention goes in every stage; stage attention after stages 1-3 (all but the
    last of a ResNet's four), as in the non-local / DANet / CCNet tutorials."""
    return tuple(range(1, (count if placement == "block" else min(count, 3)) + 1))


def init_backbone(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) convolutions, BatchNorm γ=1 β=0.

    Called before any attention is attached, so a mechanism's own initialisation (the
    zero BatchNorm of non-local, the zero conv of GC, the zero γ of DANet) is kept.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class AttentionOptions(TypedDict, total=False):
    """The attention keywords every attn2d backbone takes, defined once.

    Keys:
        attention: a registry spec string (``"cbam(reduction=8)"``), a class or factory
            called as ``factory(channels)``, or None / ``"none"`` for the plain network.
        placement: ``"block"`` (inside every block: after the last BN and before the
            residual add in a ResNet), ``"stage"`` (after whole stages), or None for the
            mechanism's registry default (``"block"`` for a class or factory).
        stages: 1-based stages that receive attention; default every stage for ``"block"``
            and the backbone's stage default for ``"stage"``.
        attention_init: ``"default"`` (the mechanism's own initialisation, as in the papers)
            or ``"identity"`` (each mechanism wrapped in :class:`ResidualBlend`, so the
            network starts as the one without attention).
    """

    attention: str | AttentionFactory | None
    placement: str | None
    stages: Sequence[int] | None
    attention_init: str


class Backbone(nn.Module):
    """Base of the attn2d backbones: named stages, each a list of blocks with an ``attn`` slot.

    Attention inside a block replaces the block's ``attn`` placeholder (an ``nn.Identity``);
    attention after a stage lives in the ``attn`` ModuleDict under the stage's name, so
    ``model.layer2[1].attn`` and ``model.attn["layer1"]`` are where users find it.
    Subclasses set :attr:`stage_names`; a stage is an ``nn.Sequential`` of blocks or a
    single block, and every block has ``attn`` and ``out_channels``.
    """

    stage_names: tuple[str, ...] = ()

    def __init__(self, num_classes: int, in_channels: int, owner: str) -> None:
        super().__init__()
        check_int(num_classes, "num_classes", owner=owner)
        check_int(in_channels, "in_channels", owner=owner)

    def stage_blocks(self, name: str) -> list[nn.Module]:
        """The blocks of the stage called ``name``, in order."""
        stage = getattr(self, name)
        return list(stage) if isinstance(stage, nn.Sequential) else [stage]

    def _attach(self, owner: str, **options: Unpack[AttentionOptions]) -> None:
        """Put attention where ``options`` (:class:`AttentionOptions`) say."""
        unknown = sorted(set(options) - set(AttentionOptions.__annotations__))
        if unknown:
            raise Attn2dError(f"{owner}: unknown keyword {unknown[0]!r}; valid: num_classes, "
                              f"in_channels, {', '.join(AttentionOptions.__annotations__)}")
        attention, placement = options.get("attention"), options.get("placement")
        stages, init = options.get("stages"), options.get("attention_init", "default")
        check_init(init, owner)
        factory, placement = resolve_attention(attention, placement, owner)
        self.attn = nn.ModuleDict()
        self.placement = placement if factory is not None else None
        if factory is None:
            return
        count = len(self.stage_names)
        for s in check_stages(stages, count, default_stages(placement, count), owner):
            name = self.stage_names[s - 1]
            blocks = self.stage_blocks(name)
            if placement == "block":
                for i, block in enumerate(blocks):
                    block.attn = make_attention(factory, block.out_channels, f"{name}.{i}",
                                                owner, init)
            else:
                self.attn[name] = make_attention(factory, blocks[-1].out_channels, name, owner,
                                                 init)

    def forward_stages(self, x: Tensor) -> Tensor:
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self.attn:
                x = self.attn[name](x)
        return x
