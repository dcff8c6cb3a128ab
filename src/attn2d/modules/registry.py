"""The registry: every mechanism by name, and spec strings such as ``"cbam(reduction=8)"``.

Spec strings are parsed with :mod:`ast` and accept literal keyword values only; nothing
in them is ever evaluated as code.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .._base.errors import Attn2dError
from . import channel, global_, hybrid, spatial

__all__ = [
    "NO_ATTENTION",
    "LayerFactory",
    "Mechanism",
    "available",
    "create",
    "get",
    "is_mechanism",
    "lookup",
    "no_attention",
    "outermost_mechanisms",
    "parse_spec",
]

NO_ATTENTION = "none"  # the spec of a model without attention (a comparison's baseline)


def no_attention(spec: object) -> bool:
    """True for the specs that mean "no attention": None, ``""`` and ``"none"`` in any case."""
    return spec is None or (isinstance(spec, str) and spec.strip().lower() in ("",
                                                                              NO_ATTENTION))


@dataclass(frozen=True)
class Mechanism:
    """One registry row: what a name builds and where it usually goes."""

    name: str
    cls: type[nn.Module]
    family: str  # channel | spatial | hybrid | global
    placement: str  # block | stage: the default place in a backbone
    paper: str
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)

    def keywords(self) -> list[inspect.Parameter]:
        """The keywords a spec may set (the constructor's after ``channels``), each with
        its default as this registry name gives it (``rcca``: recurrence 2)."""
        params = list(inspect.signature(self.cls).parameters.values())[1:]
        return [p.replace(default=self.defaults.get(p.name, p.default)) for p in params
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


_TABLE: dict[str, Mechanism] = {
    m.name: m
    for m in (
        # name, class, family, placement, paper, one line
        Mechanism("se", channel.SqueezeExcite, "channel", "block",
                  "Hu et al., CVPR 2018 (arXiv:1709.01507)",
                  "squeeze-and-excitation: pooled MLP gate per channel"),
        Mechanism("eca", channel.EfficientChannelAttention, "channel", "block",
                  "Wang et al., CVPR 2020 (arXiv:1910.03151)",
                  "efficient channel attention: 1-D conv across pooled channels"),
        Mechanism("cbam", hybrid.CBAM, "hybrid", "block",
                  "Woo et al., ECCV 2018 (arXiv:1807.06521)",
                  "channel gate then spatial gate"),
        Mechanism("cbam-parallel", hybrid.ParallelCBAM, "hybrid", "block",
                  "Woo et al., ECCV 2018 (parallel arrangement, §4.1)",
                  "channel and spatial gates from the same input, averaged"),
        Mechanism("cbam-lite", hybrid.LiteCBAM, "hybrid", "block",
                  "Woo et al., ECCV 2018, factorised spatial conv",
                  "CBAM with a 1×k then k×1 spatial conv"),
        Mechanism("cbam-dynamic", hybrid.DynamicCBAM, "hybrid", "block",
                  "Woo et al., ECCV 2018, learned kernel and reduction",
                  "CBAM mixing kernels 3/5/7 and reductions 8/16/32 by learned softmax"),
        Mechanism("bam", hybrid.BAM, "hybrid", "stage",
                  "Park et al., BMVC 2018 (arXiv:1807.06514)",
                  "bottleneck attention: (1 + σ(Mc + Ms))·x between stages"),
        Mechanism("nonlocal", global_.NonLocal2d, "global", "stage",
                  "Wang et al., CVPR 2018 (arXiv:1711.07971)",
                  "non-local block: every position attends to every position"),
        Mechanism("gc", global_.GlobalContext, "global", "block",
                  "Cao et al., ICCVW 2019 (arXiv:1904.11492)",
                  "global context: one attention-pooled context added to every position"),
        Mechanism("pam", global_.PositionAttention, "global", "stage",
                  "Fu et al., CVPR 2019 (arXiv:1809.02983)",
                  "DANet position attention over all positions"),
        Mechanism("cam", global_.ChannelSelfAttention, "global", "stage",
                  "Fu et al., CVPR 2019 (arXiv:1809.02983)",
                  "DANet channel self-attention (C×C affinity)"),
        Mechanism("danet", global_.DualAttention, "global", "stage",
                  "Fu et al., CVPR 2019 (arXiv:1809.02983)",
                  "DANet dual attention: position + channel branches summed"),
        Mechanism("criss-cross", global_.CrissCrossAttention, "global", "stage",
                  "Huang et al., ICCV 2019 (arXiv:1811.11721)",
                  "criss-cross: each pixel attends to its row and column"),
        Mechanism("rcca", global_.CrissCrossAttention, "global", "stage",
                  "Huang et al., ICCV 2019 (arXiv:1811.11721)",
                  "recurrent criss-cross (2 passes, shared weights): full-image context",
                  defaults={"recurrence": 2}),
        Mechanism("coord", hybrid.CoordAttention, "hybrid", "block",
                  "Hou et al., CVPR 2021 (arXiv:2103.02907)",
                  "coordinate attention: gates along H and along W"),
        Mechanism("triplet", spatial.TripletAttention, "spatial", "block",
                  "Misra et al., WACV 2021 (arXiv:2010.03045)",
                  "three rotated spatial gates (C–H, C–W, H–W), averaged"),
        Mechanism("simam", spatial.SimAM, "spatial", "block",
                  "Yang et al., ICML 2021",
                  "parameter-free energy-based 3-D weights"),
    )
}  # fmt: skip

_SPEC = re.compile(r"^\s*(?P<name>[A-Za-z][\w-]*)\s*(?:\((?P<args>.*)\))?\s*$", re.DOTALL)


def _unknown(kind: str, given: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(given, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {given!r}{hint}; valid: {', '.join(valid)}"


def _lookup(name: str) -> Mechanism:
    key = name.strip().lower()
    if key not in _TABLE:
        raise Attn2dError(_unknown("mechanism", name, list(_TABLE)))
    return _TABLE[key]


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name(key=literal, ...)"`` into the name and its keyword arguments.

    Values must be Python literals (numbers, strings, booleans, None, tuples, lists), and
    each keyword may appear once.
    """
    if not isinstance(spec, str):
        raise Attn2dError(f"expected a mechanism name or spec string such as "
                          f"'cbam(reduction=8)', got {type(spec).__name__}")
    match = _SPEC.match(spec)
    if match is None:
        raise Attn2dError(f"malformed spec {spec!r}; expected 'name' or "
                          "'name(key=value, ...)', e.g. 'cbam(reduction=8, spatial_kernel=3)'")
    name, args = match["name"], match["args"]
    if args is None or not args.strip():
        return name, {}
    try:
        call = ast.parse(f"_({args})", mode="eval").body
    except SyntaxError as err:
        raise Attn2dError(f"malformed arguments in spec {spec!r}: {err.msg}") from None
    assert isinstance(call, ast.Call)
    if call.args:
        raise Attn2dError(f"expected keywords only in spec {spec!r}, got positional "
                          "arguments; e.g. 'se(reduction=8)'")
    kwargs: dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise Attn2dError(f"expected key=value keywords in spec {spec!r}; "
                              "'**' is not allowed")
        if kw.arg in kwargs:
            raise Attn2dError(f"expected each keyword once in spec {spec!r}, got "
                              f"{kw.arg!r} twice")
        try:
            kwargs[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise Attn2dError(f"expected a literal value for {kw.arg!r} in spec "
                              f"{spec!r}, got {ast.unparse(kw.value)!r} (values must be a "
                              "literal: a number, string, bool, None, tuple or list)") from None
    return name, kwargs


class LayerFactory:
    """A mechanism with some keywords bound, called like its class: ``factory(channels)``.

    Keywords given to the call override the bound ones, and are checked the same way. Also
    takes the ``device``/``dtype`` keywords that layer factories receive (timm passes them
    to ``attn_layer``), so ``attn2d.get("cbam")`` plugs into other libraries' blocks.
    """

    def __init__(self, mechanism: Mechanism, kwargs: dict[str, Any]) -> None:
        _check_keywords(mechanism, kwargs)
        self.mechanism = mechanism
        self.cls = mechanism.cls
        self.name = mechanism.name
        self.kwargs = {**mechanism.defaults, **kwargs}

    def __call__(self, channels: int, *, device: Any = None, dtype: Any = None,
                 **kwargs: Any) -> nn.Module:
        _check_keywords(self.mechanism, kwargs)
        module = self.cls(channels, **{**self.kwargs, **kwargs})
        if device is not None or dtype is not None:
            module.to(device=device, dtype=dtype)
        return module

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"LayerFactory({self.cls.__name__}{', ' if args else ''}{args})"


def get(name: str) -> LayerFactory:
    """A layer factory for a name or spec: ``get("se")(64)``, ``get("cbam(reduction=8)")``."""
    spec_name, kwargs = parse_spec(name)
    return LayerFactory(_lookup(spec_name), kwargs)


def _check_keywords(mechanism: Mechanism, kwargs: dict[str, Any]) -> None:
    valid = [p.name for p in mechanism.keywords()]
    for key in kwargs:
        if key not in valid:
            raise Attn2dError(_unknown(f"keyword for {mechanism.name!r}:", key, valid))


def create(spec: str, channels: int, **overrides: Any) -> nn.Module:
    """Build a mechanism from a spec string for ``channels`` input channels.

    ``create(spec, channels, **overrides)`` is ``get(spec)(channels, **overrides)``.

    >>> create("cbam(reduction=8, spatial_kernel=3)", 64)  # doctest: +SKIP
    """
    return get(spec)(channels, **overrides)


def available() -> list[Mechanism]:
    """Every registered mechanism, in registry order."""
    return list(_TABLE.values())


def lookup(name: str) -> Mechanism:
    """The registry row for a name or spec string."""
    return _lookup(parse_spec(name)[0])


_CLASSES = tuple({m.cls: None for m in _TABLE.values()})


def is_mechanism(module: nn.Module) -> bool:
    """True for instances of any registered mechanism class."""
    return isinstance(module, _CLASSES)


def outermost_mechanisms(
    model: nn.Module, match: Callable[[nn.Module], bool] | None = None
) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of every registered mechanism (or module ``match`` accepts) not
    nested in another one, in ``model.named_modules()`` order (DANet's branches belong to
    the DANet block)."""
    match = match or is_mechanism
    found: list[tuple[str, nn.Module]] = []
    for path, module in model.named_modules():  # pre-order: ancestors come first
        if match(module) and not any(path.startswith(f"{p}.") or p == "" for p, _ in found):
            found.append((path, module))
    return found
