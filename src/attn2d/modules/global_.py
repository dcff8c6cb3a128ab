"""Global attention: every position (or channel) gathers context from the whole map.

Non-local blocks, global context (GC), DANet's position / channel self-attention and its
segmentation head, and CCNet's criss-cross attention.

Softmax attention over positions goes through
:func:`torch.nn.functional.scaled_dot_product_attention`, so the N×N weights are never
stored unless capture is on for the module's :class:`AttentionMap` (see
:mod:`attn2d.capture`); criss-cross attention never builds anything larger than
B·H·W·(H + W), and unless capturing its training step stores nothing that wide (the
linear-memory operator of :mod:`._cross`).
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._base.errors import Attn2dError
from .._base.validate import check_choice, check_flag, check_int
from ._common import (
    AttentionMap,
    AttentionModule,
    BatchNorm2d,
    as_child,
    hidden_width,
    softmax_dtype,
)
from ._cross import criss_cross, criss_cross_explicit
from ._ops import exporting, weighted_sum
from ._recompute import rebuilt_in_backward

__all__ = [
    "ChannelSelfAttention",
    "CrissCrossAttention",
    "DANetHead",
    "DualAttention",
    "GlobalContext",
    "NonLocal2d",
    "PositionAttention",
]


def _tokens(t: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H·W, C); a free view for channels-last input."""
    return t.flatten(2).transpose(1, 2)


def _untokens(t: Tensor, like: Tensor) -> Tensor:
    """(B, H·W, C) -> (B, C, H, W) with the spatial size of ``like``."""
    b, _, h, w = like.shape
    return t.transpose(1, 2).reshape(b, t.shape[2], h, w)  # C given: B may be 0


def _softmax_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, amap: AttentionMap) -> Tensor:
    """softmax(q·kᵀ·scale)·v for token tensors q (B, N, d), k (B, M, d), v (B, M, e).

    The fused kernel never stores the (B, N, M) weights. The CPU flash kernel needs one
    head width for q, k and v, else PyTorch silently falls back to the math kernel, which
    stores them; so the narrower side is zero-padded (zeros add nothing to q·kᵀ and give
    output columns that are sliced off). When M is at most four times the padded width the
    weights are at most four times the padded tensors, so memory still grows linearly with
    positions, and the plain product is faster (padding q, k from C/8 to C multiplies their
    product's cost by 8); that case, and capture on ``amap``, take the explicit route. Only
    while capturing do the weights pass through ``amap``, and those it returns are applied.
    """
    d_qk, d_v = q.shape[-1], v.shape[-1]
    width = max(d_qk, d_v)
    if amap.capture or (d_qk != d_v and k.shape[1] <= 4 * width):
        # Softmax statistics in fp32 even under autocast, as the fused kernel keeps them.
        logits = softmax_dtype(torch.bmm(q, k.transpose(1, 2)))
        weights = (logits * scale if scale != 1.0 else logits).softmax(-1)
        if amap.capture:
            weights = amap(weights)
        return torch.bmm(weights.to(v.dtype), v)
    # The flash kernel also needs unit stride along the head width; any other layout (the
    # transposed view of an NCHW map) silently takes the math kernel too.
    q, k, v = (_widen_to(t, width) for t in (q, k, v))
    # One head axis: the ONNX exporter only accepts 4-D attention.
    out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=scale)
    return out[:, 0, :, :d_v]


def _widen_to(t: Tensor, width: int) -> Tensor:
    """Zero-pad the last dim to ``width``, with unit stride there (what flash needs)."""
    return F.pad(t, (0, width - t.shape[-1])) if t.shape[-1] < width else t.contiguous()


class NonLocal2d(AttentionModule):
    """Non-local block (Wang et al., CVPR 2018, arXiv:1711.07971).

    z = x + BN(W·y), y_i = Σ_j f(x_i, x_j)·g(x_j) / 𝒞(x) over every key position j.
    Follows the reference implementation (AlexHex7/Non-local_pytorch, after
    facebookresearch/video-nonlocal-net): θ, φ, g and W are 1×1 convs with bias, inner
    width C/2, and the BatchNorm after W starts with weight and bias at zero so the block
    starts as the identity.

    Args:
        channels: input channels C.
        mode: pairwise function f: ``"embedded_gaussian"`` softmax(θᵢ·φⱼ),
            ``"gaussian"`` softmax(xᵢ·xⱼ) on the raw input (no θ, φ),
            ``"dot_product"`` θᵢ·φⱼ / N, ``"concatenation"`` ReLU(w·[θᵢ; φⱼ]) / N, with N the
            number of key positions and w a bias-free 1×1 conv ``concat_project`` (2·C/2 → 1).
        reduction: inner width is max(1, C // reduction).
        sub_sample: max-pool keys and values (φ and g) by 2 (the paper's §4 trick); off by
            default (every key position counts), although AlexHex7's ``NONLocalBlock2D``
            turns it on.
        scale: divide the pairwise energies by √d, d the width of θ (C in gaussian mode);
            off in the reference code.
    """

    MODES = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")
    owner = "nonlocal"

    def __init__(
        self,
        channels: int,
        mode: str = "embedded_gaussian",
        reduction: float = 2,
        sub_sample: bool = False,
        scale: bool = False,
    ) -> None:
        super().__init__()
        owner = "nonlocal"
        inner = hidden_width(channels, reduction, owner=owner)
        self.mode = check_choice(mode, self.MODES, "mode", owner)
        self.sub_sample = check_flag(sub_sample, "sub_sample", owner)
        self.scale = check_flag(scale, "scale", owner)
        self.channels = channels
        self.inner = inner
        self.g = nn.Conv2d(channels, inner, 1)
        if mode != "gaussian":
            self.theta = nn.Conv2d(channels, inner, 1)
            self.phi = nn.Conv2d(channels, inner, 1)
        if mode == "concatenation":
            self.concat_project = nn.Conv2d(2 * inner, 1, 1, bias=False)
        self.out = nn.Conv2d(inner, channels, 1)
        self.norm = BatchNorm2d(channels)
        self.weights = AttentionMap("position")
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.zeros_(self.norm.weight)  # the block starts as the identity
        nn.init.zeros_(self.norm.bias)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, sub_sample={self.sub_sample}, scale={self.scale}"

    def _keys(self, t: Tensor) -> Tensor:
        return F.max_pool2d(t, 2) if self.sub_sample else t

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        if self.sub_sample and min(x.shape[2:]) < 2:
            raise Attn2dError(
                f"nonlocal: expected H, W >= 2 with sub_sample=True, got shape {tuple(x.shape)}"
            )
        value = _tokens(self._keys(self.g(x)))  # (B, M, inner)
        if self.mode == "gaussian":
            query, key = _tokens(x), _tokens(self._keys(x))
        else:
            query, key = _tokens(self.theta(x)), _tokens(self._keys(self.phi(x)))
        scale = 1.0 / math.sqrt(query.shape[-1]) if self.scale else 1.0
        if self.mode in ("embedded_gaussian", "gaussian"):
            y = _softmax_attention(query, key, value, scale, self.weights)
        elif self.mode == "dot_product":
            y = self._dot_product(query, key, value, scale)
        else:
            y = self._concatenation(query, key, value, scale)
        return x + self.norm(self.out(_untokens(y, x)))

    def _dot_product(self, query: Tensor, key: Tensor, value: Tensor, scale: float) -> Tensor:
        n_keys = key.shape[1]
        if self.weights.capture:
            weights = self.weights(torch.bmm(query, key.transpose(1, 2)) * (scale / n_keys))
            return torch.bmm(weights, value)
        # Associativity: θ·(φᵀ·g) never forms the N×M matrix.
        return torch.bmm(query, torch.bmm(key.transpose(1, 2), value)) * (scale / n_keys)

    def _concatenation(self, query: Tensor, key: Tensor, value: Tensor, scale: float) -> Tensor:
        # w·[θᵢ; φⱼ] splits into wθ·θᵢ + wφ·φⱼ: two (B, N) vectors instead of (B, 2d, N, M).
        w = self.concat_project.weight.flatten()
        a = query @ w[: self.inner].to(query.dtype)  # (B, N)
        b = key @ w[self.inner :].to(key.dtype)  # (B, M)
        weights = F.relu(a[:, :, None] + b[:, None, :]) * (scale / key.shape[1])
        if self.weights.capture:
            weights = self.weights(weights)
        return torch.bmm(weights, value)


class GlobalContext(AttentionModule):
    """Global context block (Cao et al., ICCVW 2019, arXiv:1904.11492).

    One context vector per image, pooled with softmax weights over positions, transformed
    by a LayerNorm bottleneck and fused into every position. Follows the official code
    (xvjiarui/GCNet ``ContextBlock``): convs with bias, the last conv zero-initialised.

    Args:
        channels: input channels C.
        reduction: bottleneck width is max(1, C // reduction) (the paper's ratio 1/16).
        fusion: ``"add"`` adds the transform to x (official ``channel_add``, identity at
            init); ``"mul"`` scales x by its sigmoid (official ``channel_mul``).
    """

    FUSIONS = ("add", "mul")
    owner = "gc"

    def __init__(self, channels: int, reduction: float = 16, fusion: str = "add") -> None:
        super().__init__()
        hidden = hidden_width(channels, reduction, owner="gc")
        self.fusion = check_choice(fusion, self.FUSIONS, "fusion", "gc")
        self.channels = channels
        self.mask = nn.Conv2d(channels, 1, 1)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        self.weights = AttentionMap("spatial")
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.kaiming_normal_(self.mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.mask.bias)
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def extra_repr(self) -> str:
        return f"fusion={self.fusion!r}"

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        b, _, h, w = x.shape
        stat = torch.promote_types(x.dtype, torch.float32)  # fp32 softmax under autocast
        pool = self.weights(self.mask(x).flatten(1).softmax(-1, dtype=stat).view(b, 1, h, w))
        context = weighted_sum(x.flatten(2), pool.view(b, h * w))  # (B, C), see _ops
        term = self.transform(context.view(b, self.channels, 1, 1))
        return x + term if self.fusion == "add" else x * torch.sigmoid(term)


class _FromIdentity(AttentionModule):
    """A block x + γ·(attended x) whose learned scalar γ starts at 0: at first, the identity."""

    gamma: nn.Parameter

    def _init_weights(self) -> None:
        nn.init.zeros_(self.gamma)


def _query_key_value(channels: int, hidden: int) -> tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]:
    """1×1 projections with bias: query and key to ``hidden`` channels, value keeping C."""
    return (nn.Conv2d(channels, hidden, 1), nn.Conv2d(channels, hidden, 1),
            nn.Conv2d(channels, channels, 1))


class PositionAttention(_FromIdentity):
    """DANet position attention module (Fu et al., CVPR 2019, arXiv:1809.02983).

    out_i = Σ_j softmax_j(qᵢ·kⱼ)·vⱼ over all positions, then γ·out + x with γ from 0.

    Args:
        channels: input channels C.
        reduction: query and key width is max(1, C // reduction); the value keeps C.

    Attributes:
        residual: add x (True); :class:`DualAttention`'s branch returns γ·out alone.
    """

    owner = "pam"
    residual = True

    def __init__(self, channels: int, reduction: float = 8) -> None:
        super().__init__()
        hidden = hidden_width(channels, reduction, owner=self.owner)
        self.channels = channels
        self.query, self.key, self.value = _query_key_value(channels, hidden)
        self.gamma = nn.Parameter(torch.empty(1))
        self.weights = AttentionMap("position")
        self._init_weights()

    def attend(self, x: Tensor) -> Tensor:
        """The attended features, before γ and the residual; x is not checked."""
        q, k, v = _tokens(self.query(x)), _tokens(self.key(x)), _tokens(self.value(x))
        return _untokens(_softmax_attention(q, k, v, 1.0, self.weights), x)

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        term = self.gamma * self.attend(x)
        return x + term if self.residual else term


class ChannelSelfAttention(_FromIdentity):
    """DANet channel attention module (Fu et al., CVPR 2019, arXiv:1809.02983).

    Energy E = X·Xᵀ between channels (no projections), A = softmax(E) per row, out = A·X,
    then γ·out + x with γ from 0.

    Args:
        channels: input channels C.
        invert: use the official code's softmax(rowmax(E) − E), which favours dissimilar
            channels; ``False`` gives the paper's softmax(E).

    Attributes:
        residual: add x (True); :class:`DualAttention`'s branch returns γ·out alone.
    """

    owner = "cam"
    residual = True

    def __init__(self, channels: int, invert: bool = True) -> None:
        super().__init__()
        check_int(channels, "channels", owner=self.owner)
        self.channels = channels
        self.invert = check_flag(invert, "invert", self.owner)
        self.gamma = nn.Parameter(torch.empty(1))
        self.weights = AttentionMap("channel-affinity")
        self._init_weights()

    def extra_repr(self) -> str:
        return f"invert={self.invert}"

    def attend(self, x: Tensor) -> Tensor:
        """The attended features, before γ and the residual; x is not checked."""
        feats = x.flatten(2)  # (B, C, N)
        # E grows with N and softmax(rowmax − E) is sensitive to its absolute error, so the
        # energies are formed in fp32 even under autocast.
        with torch.autocast(x.device.type, enabled=False):
            wide = softmax_dtype(feats)
            energy = torch.bmm(wide, wide.transpose(1, 2))
        if self.invert:
            energy = energy.amax(-1, keepdim=True) - energy
        weights = self.weights(energy.softmax(-1))
        return torch.bmm(weights.to(feats.dtype), feats).view_as(x)

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        term = self.gamma * self.attend(x)
        return x + term if self.residual else term


_Branch = TypeVar("_Branch", PositionAttention, ChannelSelfAttention)


def _branch(module: _Branch) -> _Branch:
    """A DANet branch: the composite checks x and adds it once, so the branch gives γ·out."""
    module.residual = False
    return as_child(module)


class DualAttention(AttentionModule):
    """DANet dual attention as a plug-in block (Fu et al., CVPR 2019, arXiv:1809.02983).

    x + γp·P(x) + γc·C(x): the position and channel branches share one identity path, both
    γ start at 0. The children ``position`` (:class:`PositionAttention`) and ``channel``
    (:class:`ChannelSelfAttention`) are called as modules and return their γ-scaled terms
    without the residual (``residual = False``).

    Args:
        channels: input channels C.
        reduction: query/key reduction of the position branch.
        invert: channel-branch energy form (see :class:`ChannelSelfAttention`).
    """

    owner = "danet"

    def __init__(self, channels: int, reduction: float = 8, invert: bool = True) -> None:
        super().__init__()
        # Validate under this module's name before the branches validate under theirs.
        hidden_width(channels, reduction, owner=self.owner)
        check_flag(invert, "invert", self.owner)
        self.channels = channels
        self.position = _branch(PositionAttention(channels, reduction))
        self.channel = _branch(ChannelSelfAttention(channels, invert))

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        return x + self.position(x) + self.channel(x)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _classifier(cin: int, classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(cin, classes, 1))


class DANetHead(AttentionModule):
    """DANet segmentation head (Fu et al., CVPR 2019, arXiv:1809.02983).

    Each branch: 3×3 conv-BN-ReLU to in/4, attention (position or channel), 3×3
    conv-BN-ReLU; the two are summed, then Dropout2d and a 1×1 classifier. As in the
    official head, each branch also has its own classifier for auxiliary losses:
    :meth:`forward_branches` returns (fused, position, channel) logits; ``forward`` returns
    the fused logits only.

    Args:
        in_channels: input channels.
        num_classes: output channels (classes).
        reduction: the branches work at max(1, in_channels // reduction) channels.
        dropout: Dropout2d probability before each classifier.
    """

    owner = "danet-head"

    def __init__(
        self, in_channels: int, num_classes: int, reduction: float = 4, dropout: float = 0.1
    ) -> None:
        super().__init__()
        owner = self.owner
        inner = hidden_width(in_channels, reduction, owner=owner)
        check_int(num_classes, "num_classes", owner)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise Attn2dError(
                f"{owner}: expected dropout to be a number, got {type(dropout).__name__}"
            )
        if not 0 <= dropout < 1:
            raise Attn2dError(f"{owner}: expected 0 <= dropout < 1, got {dropout}")
        self.in_channels = self.channels = in_channels
        self.reduce_position = _conv_bn_relu(in_channels, inner)
        self.reduce_channel = _conv_bn_relu(in_channels, inner)
        self.position = as_child(PositionAttention(inner))
        self.channel = as_child(ChannelSelfAttention(inner))
        self.expand_position = _conv_bn_relu(inner, inner)
        self.expand_channel = _conv_bn_relu(inner, inner)
        self.classify = _classifier(inner, num_classes, dropout)
        self.classify_position = _classifier(inner, num_classes, dropout)
        self.classify_channel = _classifier(inner, num_classes, dropout)

    def _branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.expect_input(x)
        pos = self.expand_position(self.position(self.reduce_position(x)))
        chan = self.expand_channel(self.channel(self.reduce_channel(x)))
        return pos, chan

    def forward_branches(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Logits (fused, position branch, channel branch), each (B, num_classes, H, W)."""
        pos, chan = self._branches(x)
        return self.classify(pos + chan), self.classify_position(pos), self.classify_channel(chan)

    def forward(self, x: Tensor) -> Tensor:
        pos, chan = self._branches(x)
        return self.classify(pos + chan)


class _RowColumnAttention(nn.Module):
    """One pass of criss-cross attention from its projections, before the residual: each
    pixel's single softmax over its row and column (the centre once), applied to v.

    Unless capturing, the linear-memory operator of :mod:`._cross` runs (γ folded in, so
    its output need not be stored either); while capturing, the explicit path builds the
    (B, H, W, W + H) map and its tap ``weights`` sees it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.weights = AttentionMap("criss-cross")

    def forward(self, q: Tensor, k: Tensor, v: Tensor, scale: Tensor | None = None) -> Tensor:
        """The attended values times ``scale`` (if given)."""
        if self.weights.capture or exporting():  # the explicit map, or plain ATen ops
            tap = self.weights if self.weights.capture else _unchanged
            out = criss_cross_explicit(q, k, v, tap)
            return out if scale is None else scale * out
        return criss_cross(q, k, v, scale)  # linear memory: nothing (H + W)-wide is kept


def _unchanged(t: Tensor) -> Tensor:
    return t


class CrissCrossAttention(_FromIdentity):
    """Criss-cross attention (Huang et al., ICCV 2019, arXiv:1811.11721).

    Each pixel attends to the H + W − 1 pixels of its row and column (itself once) with a
    single softmax; γ·out + x with γ from 0. ``recurrence`` applies the module (residual
    included) that many times with the same weights; two passes (RCCA) give every pixel a
    path to every other. Each pass calls the child ``attention`` as a module, whose tap
    ``attention.weights`` sees the pass's map while capturing.

    Args:
        channels: input channels C.
        reduction: query and key width is max(1, C // reduction); the value keeps C.
        recurrence: passes R with shared weights; the map is emitted once per pass.
    """

    def __init__(self, channels: int, reduction: float = 8, recurrence: int = 1) -> None:
        super().__init__()
        # Recurrent criss-cross is registered as "rcca": errors use the name the user chose.
        self.owner = "criss-cross" if recurrence == 1 else "rcca"
        self.recurrence = check_int(recurrence, "recurrence", self.owner)
        hidden = hidden_width(channels, reduction, owner=self.owner)
        self.channels = channels
        self.query, self.key, self.value = _query_key_value(channels, hidden)
        self.gamma = nn.Parameter(torch.empty(1))
        self.attention = _RowColumnAttention()
        self._init_weights()

    def extra_repr(self) -> str:
        return f"recurrence={self.recurrence}"

    def attend(self, x: Tensor, scale: Tensor | None = None, rebuild: bool = False) -> Tensor:
        """One pass of criss-cross attention, before the residual (times ``scale`` if given);
        x is not checked. With ``rebuild`` the backward pass recomputes the projections
        from x instead of keeping them (see :mod:`._recompute`)."""
        # v last: autograd then runs its convolution's backward first, which frees v's
        # gradient (input-sized) before the narrower q and k add theirs to x's.
        q, k, v = self.query(x), self.key(x), self.value(x)
        if not rebuild or self.attention.weights.capture:
            return self.attention(q, k, v, scale)
        with rebuilt_in_backward(x, ((q, self.query), (k, self.key), (v, self.value))):
            return self.attention(q, k, v, scale)

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        for r in range(self.recurrence):
            # Every pass but the last drops its projections until its backward: they would
            # be kept through the later passes' backward, the step's peak. The last pass's
            # backward runs first and needs them at once, so it keeps them.
            rebuild = r < self.recurrence - 1
            x = x + self.attend(x, self.gamma, rebuild)  # γ inside: the output is not stored
        return x
