"""Naive reference versions of every attn2d mechanism, for ``attn2d bench``.

Each one is written the way attention code is usually found in tutorials and zoo
repositories: full N×N position maps, one tensor per intermediate step, ``expand_as``
before every product, Python loops over pools and branches. They compute the same
function as the attn2d module (``tests/tools/test_bench.py`` checks it in float64), so a
benchmark ratio measures only how the computation is organised.

Every class keeps the attn2d module's parameter names, so :func:`naive_version` copies a
module's weights with a strict ``load_state_dict``. Criss-cross attention is computed with a
dense N×N energy masked to each pixel's row and column, the common way to get it right
without a custom kernel.

They ship with the package because the benchmark ratios against them are part of what
attn2d claims; nothing else in the package uses them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._base.errors import Attn2dError

__all__ = ["DENSE_MAPS", "dense_map_bytes", "naive_version"]

# How many N×N (or, for criss-cross, N×N plus its mask) tensors each naive position
# mechanism keeps alive at its peak, forward-only and forward+backward; used to skip sizes
# that would not fit in memory instead of running them.
DENSE_MAPS: dict[str, tuple[float, float]] = {
    "nonlocal": (2, 4),
    "pam": (2, 4),
    "danet": (2, 4),
    "criss-cross": (3.25, 5.25),
    "rcca": (3.25, 8.5),
}


def dense_map_bytes(name: str, shape: Sequence[int], itemsize: int = 4, train: bool = True) -> int:
    """Estimated peak bytes of the N×N maps a naive mechanism builds for a (B, C, H, W) input."""
    if name not in DENSE_MAPS:
        return 0
    b, _, h, w = shape
    n = h * w
    return int(DENSE_MAPS[name][int(train)] * b * n * n * itemsize)


# --- channel ---------------------------------------------------------------------------


class NaiveSE(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        b, c, _, _ = x.size()
        y = F.adaptive_avg_pool2d(x, 1).view(b, c)
        y = torch.sigmoid(self.fc2(F.relu(self.fc1(y)))).view(b, c, 1, 1)
        return x * y.expand_as(x)


class NaiveECA(nn.Module):
    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = F.adaptive_avg_pool2d(x, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * torch.sigmoid(y).expand_as(x)


# --- CBAM family -------------------------------------------------------------------------


def _pool(x: Tensor, kind: str) -> Tensor:
    """One global descriptor per channel, (B, C), the way the original CBAM code pools."""
    b, c, h, w = x.shape
    if kind == "avg":
        return F.avg_pool2d(x, (h, w)).view(b, c)
    if kind == "max":
        return F.max_pool2d(x, (h, w)).view(b, c)
    if kind == "lp":
        return F.lp_pool2d(x, 2, (h, w)).view(b, c)
    flat = x.view(b, c, -1)
    top = flat.max(dim=2, keepdim=True)[0]
    return (top + (flat - top).exp().sum(dim=2, keepdim=True).log()).view(b, c)


class NaiveChannelGate(nn.Module):
    def __init__(self, channels: int, hidden: int, pool_types: Sequence[str]) -> None:
        super().__init__()
        self.pool_types = tuple(pool_types)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, channels))

    def forward(self, x: Tensor) -> Tensor:
        total = None
        for kind in self.pool_types:
            raw = self.mlp(_pool(x, kind))
            total = raw if total is None else total + raw
        scale = torch.sigmoid(total).unsqueeze(2).unsqueeze(3).expand_as(x)
        return x * scale


def _map_conv(kernel_size: int, conv: str) -> nn.Module:
    pad = (kernel_size - 1) // 2
    if conv == "full":
        return nn.Conv2d(2, 1, kernel_size, padding=pad, bias=False)
    groups = 2 if conv == "separable" else 1
    layers = [
        nn.Conv2d(2, 2, (1, kernel_size), padding=(0, pad), groups=groups, bias=False),
        nn.Conv2d(2, 2 if conv == "separable" else 1, (kernel_size, 1), padding=(pad, 0),
                  groups=groups, bias=False),
    ]
    if conv == "separable":
        layers.append(nn.Conv2d(2, 1, 1, bias=False))
    return nn.Sequential(*layers)


def _compress(x: Tensor) -> Tensor:
    """[max, mean] over dim 1, concatenated (the original ChannelPool / ZPool)."""
    return torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)


class NaiveMapHead(nn.Module):
    """compress → conv → BN → sigmoid → x · scale, the CBAM / triplet gate."""

    def __init__(self, kernel_size: int, conv: str = "full") -> None:
        super().__init__()
        self.conv = _map_conv(kernel_size, conv)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def score(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.bn(self.conv(_compress(x))))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.score(x)


class NaiveCBAM(nn.Module):
    def __init__(self, channels: int, hidden: int, pool_types: Sequence[str],
                 spatial_kernel: int | None, conv: str = "full", parallel: bool = False) -> None:
        super().__init__()
        self.parallel = parallel
        self.channel_gate = NaiveChannelGate(channels, hidden, pool_types)
        self.spatial_gate = None if spatial_kernel is None else NaiveMapHead(spatial_kernel, conv)

    def forward(self, x: Tensor) -> Tensor:
        refined = self.channel_gate(x)
        if self.spatial_gate is None:
            return refined
        if self.parallel:
            return (refined + self.spatial_gate(x)) / 2
        return self.spatial_gate(refined)


class NaiveDynamicCBAM(nn.Module):
    """Every candidate branch gates a full copy of x; the copies are mixed afterwards."""

    def __init__(self, channels: int, hidden: Sequence[int], kernel_sizes: Sequence[int],
                 pool_types: Sequence[str]) -> None:
        super().__init__()
        self.pool_types = tuple(pool_types)
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, h), nn.ReLU(), nn.Linear(h, channels))
            for h in hidden
        )
        self.spatial = nn.ModuleList(NaiveMapHead(k) for k in kernel_sizes)
        self.reduction_logits = nn.Parameter(torch.zeros(len(hidden)))
        self.kernel_logits = nn.Parameter(torch.zeros(len(kernel_sizes)))

    def forward(self, x: Tensor) -> Tensor:
        mix = torch.softmax(self.reduction_logits, 0)
        out = 0
        for k, mlp in enumerate(self.mlps):
            raw = sum(mlp(_pool(x, kind)) for kind in self.pool_types)
            out = out + mix[k] * (x * torch.sigmoid(raw)[:, :, None, None].expand_as(x))
        mix = torch.softmax(self.kernel_logits, 0)
        return sum(mix[k] * head(out) for k, head in enumerate(self.spatial))


class NaiveBAM(nn.Module):
    def __init__(self, channels: int, hidden: int, dilation: int, combine: str) -> None:
        super().__init__()
        self.combine = combine
        self.channel = nn.Module()
        self.channel.fc1 = nn.Linear(channels, hidden)
        self.channel.bn = nn.BatchNorm1d(hidden)
        self.channel.fc2 = nn.Linear(hidden, channels)
        layers: list[nn.Module] = [nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden),
                                   nn.ReLU()]
        for _ in range(2):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
                       nn.BatchNorm2d(hidden), nn.ReLU()]
        self.spatial = nn.Sequential(*layers, nn.Conv2d(hidden, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        pooled = F.avg_pool2d(x, (h, w)).view(b, c)
        mc = self.channel.fc2(F.relu(self.channel.bn(self.channel.fc1(pooled))))
        mc = mc.unsqueeze(2).unsqueeze(3).expand_as(x)
        ms = self.spatial(x).expand_as(x)
        att = 1 + torch.sigmoid(mc + ms if self.combine == "add" else mc * ms)
        return att * x


class NaiveCoord(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv_h = nn.Conv2d(hidden, channels, 1)
        self.conv_w = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.size()
        x_h = F.adaptive_avg_pool2d(x, (h, 1))
        x_w = F.adaptive_avg_pool2d(x, (1, w)).permute(0, 1, 3, 2)
        y = self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2)))
        y = y * F.relu6(y + 3) / 6  # h-swish
        x_h, x_w = torch.split(y, [h, w], dim=2)
        a_h = torch.sigmoid(self.conv_h(x_h)).expand_as(x)
        a_w = torch.sigmoid(self.conv_w(x_w.permute(0, 1, 3, 2))).expand_as(x)
        return x * a_w * a_h


# --- spatial -----------------------------------------------------------------------------


class NaiveTriplet(nn.Module):
    """The original code: rotate x, gate it, rotate back, for each of the three branches."""

    def __init__(self, kernel_size: int, no_spatial: bool) -> None:
        super().__init__()
        self.over_cw = NaiveMapHead(kernel_size)
        self.over_hc = NaiveMapHead(kernel_size)
        self.over_hw = None if no_spatial else NaiveMapHead(kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        out_cw = self.over_cw(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3).contiguous()
        out_hc = self.over_hc(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
        if self.over_hw is None:
            return 1 / 2 * (out_cw + out_hc)
        return 1 / 3 * (self.over_hw(x) + out_cw + out_hc)


class NaiveSimAM(nn.Module):
    def __init__(self, e_lambda: float) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.size()
        n = max(w * h - 1, 1)
        x_minus_mu_square = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        denominator = 4 * (x_minus_mu_square.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)
        return x * torch.sigmoid(x_minus_mu_square / denominator + 0.5)


# --- global ------------------------------------------------------------------------------


class NaiveNonLocal(nn.Module):
    """The widely copied AlexHex7 / video-nonlocal-net form: the (B, N, M) map is stored."""

    def __init__(self, channels: int, inner: int, mode: str, sub_sample: bool,
                 scale: bool) -> None:
        super().__init__()
        self.mode, self.sub_sample, self.use_scale, self.inner = mode, sub_sample, scale, inner
        self.g = nn.Conv2d(channels, inner, 1)
        if mode != "gaussian":
            self.theta = nn.Conv2d(channels, inner, 1)
            self.phi = nn.Conv2d(channels, inner, 1)
        if mode == "concatenation":
            self.concat_project = nn.Conv2d(2 * inner, 1, 1, bias=False)
        self.out = nn.Conv2d(inner, channels, 1)
        self.norm = nn.BatchNorm2d(channels)

    def _pool(self, t: Tensor) -> Tensor:
        return F.max_pool2d(t, 2) if self.sub_sample else t

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.size()
        g_x = self._pool(self.g(x)).view(b, self.inner, -1).permute(0, 2, 1)
        if self.mode == "gaussian":
            theta_x = x.view(b, c, -1).permute(0, 2, 1)
            phi_x = self._pool(x).view(b, c, -1)
        else:
            theta_x = self.theta(x).view(b, self.inner, -1).permute(0, 2, 1)
            phi_x = self._pool(self.phi(x)).view(b, self.inner, -1)
        scale = 1 / math.sqrt(theta_x.shape[-1]) if self.use_scale else 1.0
        if self.mode == "concatenation":
            n, m = theta_x.shape[1], phi_x.shape[2]
            theta_rep = theta_x.permute(0, 2, 1).unsqueeze(3).repeat(1, 1, 1, m)
            phi_rep = phi_x.unsqueeze(2).repeat(1, 1, n, 1)
            f = F.relu(self.concat_project(torch.cat([theta_rep, phi_rep], dim=1))).squeeze(1)
        else:
            f = torch.matmul(theta_x, phi_x)
        f = f * scale
        if self.mode in ("embedded_gaussian", "gaussian"):
            f_div_c = F.softmax(f, dim=-1)
        else:
            f_div_c = f / f.size(-1)
        y = torch.matmul(f_div_c, g_x).permute(0, 2, 1).contiguous().view(b, self.inner, h, w)
        return x + self.norm(self.out(y))


class NaiveGC(nn.Module):
    def __init__(self, channels: int, hidden: int, fusion: str) -> None:
        super().__init__()
        self.fusion = fusion
        self.mask = nn.Conv2d(channels, 1, 1)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.LayerNorm([hidden, 1, 1]), nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.size()
        input_x = x.view(b, c, h * w).unsqueeze(1)
        context_mask = F.softmax(self.mask(x).view(b, 1, h * w), dim=2).unsqueeze(-1)
        context = torch.matmul(input_x, context_mask).view(b, c, 1, 1)
        term = self.transform(context)
        return x + term if self.fusion == "add" else x * torch.sigmoid(term)


class NaivePAM(nn.Module):
    """The official DANet PAM_Module: energy (B, N, N), softmax, bmm."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, hidden, 1)
        self.key = nn.Conv2d(channels, hidden, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attend(self, x: Tensor) -> Tensor:
        b, c, h, w = x.size()
        proj_query = self.query(x).view(b, -1, w * h).permute(0, 2, 1)
        proj_key = self.key(x).view(b, -1, w * h)
        attention = F.softmax(torch.bmm(proj_query, proj_key), dim=-1)
        proj_value = self.value(x).view(b, -1, w * h)
        return torch.bmm(proj_value, attention.permute(0, 2, 1)).view(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        return self.gamma * self.attend(x) + x


class NaiveCAM(nn.Module):
    """The official DANet CAM_Module."""

    def __init__(self, invert: bool) -> None:
        super().__init__()
        self.invert = invert
        self.gamma = nn.Parameter(torch.zeros(1))

    def attend(self, x: Tensor) -> Tensor:
        b, c, h, w = x.size()
        proj_query = x.view(b, c, -1)
        energy = torch.bmm(proj_query, x.view(b, c, -1).permute(0, 2, 1))
        if self.invert:
            energy = torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy
        attention = F.softmax(energy, dim=-1)
        return torch.bmm(attention, x.view(b, c, -1)).view(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        return self.gamma * self.attend(x) + x


class NaiveDANet(nn.Module):
    def __init__(self, channels: int, hidden: int, invert: bool) -> None:
        super().__init__()
        self.position = NaivePAM(channels, hidden)
        self.channel = NaiveCAM(invert)

    def forward(self, x: Tensor) -> Tensor:
        # Each branch returns its own γ·out + x; the sum counts x twice.
        return self.position(x) + self.channel(x) - x


class NaiveCrissCross(nn.Module):
    """Criss-cross attention as a dense N×N softmax masked to each pixel's row and column."""

    def __init__(self, channels: int, hidden: int, recurrence: int) -> None:
        super().__init__()
        self.recurrence = recurrence
        self.query = nn.Conv2d(channels, hidden, 1)
        self.key = nn.Conv2d(channels, hidden, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def once(self, x: Tensor) -> Tensor:
        b, c, h, w = x.size()
        rows = torch.arange(h, device=x.device).repeat_interleave(w)
        cols = torch.arange(w, device=x.device).repeat(h)
        visible = (rows[:, None] == rows[None, :]) | (cols[:, None] == cols[None, :])
        q = self.query(x).view(b, -1, h * w).permute(0, 2, 1)
        k = self.key(x).view(b, -1, h * w)
        energy = torch.bmm(q, k).masked_fill(~visible, float("-inf"))
        attention = F.softmax(energy, dim=-1)
        out = torch.bmm(self.value(x).view(b, c, h * w), attention.permute(0, 2, 1))
        return self.gamma * out.view(b, c, h, w) + x

    def forward(self, x: Tensor) -> Tensor:
        for _ in range(self.recurrence):
            x = self.once(x)
        return x


# --- from an attn2d module ---------------------------------------------------------------


def _build(module: nn.Module) -> nn.Module:
    kind = type(module).__name__
    if kind == "SqueezeExcite":
        return NaiveSE(module.channels, module.fc1.out_features)
    if kind == "EfficientChannelAttention":
        return NaiveECA(module.conv.kernel_size[0])
    if kind in ("CBAM", "ParallelCBAM", "LiteCBAM"):
        gate, spatial = module.channel_gate, module.spatial_gate
        kernel, conv = None, "full"
        if spatial is not None:
            first = spatial.conv if isinstance(spatial.conv, nn.Conv2d) else spatial.conv[0]
            kernel = first.kernel_size[-1]
            if isinstance(spatial.conv, nn.Sequential):
                conv = "separable" if len(spatial.conv) == 3 else "factorized"
        return NaiveCBAM(module.channels, gate.mlp[0].out_features, gate.pool_types, kernel,
                         conv, parallel=kind == "ParallelCBAM")
    if kind == "DynamicCBAM":
        return NaiveDynamicCBAM(module.channels, [m[0].out_features for m in module.mlps],
                                [h.conv.kernel_size[0] for h in module.spatial],
                                module.pool_types)
    if kind == "BAM":
        return NaiveBAM(module.channels, module.channel.fc1.out_features,
                        module.spatial[3].dilation[0], module.combine)
    if kind == "CoordAttention":
        return NaiveCoord(module.channels, module.conv1.out_channels)
    if kind == "TripletAttention":
        return NaiveTriplet(module.over_cw.conv.kernel_size[0], module.over_hw is None)
    if kind == "SimAM":
        return NaiveSimAM(module.e_lambda)
    if kind == "NonLocal2d":
        return NaiveNonLocal(module.channels, module.inner, module.mode, module.sub_sample,
                             module.scale)
    if kind == "GlobalContext":
        return NaiveGC(module.channels, module.transform[0].out_channels, module.fusion)
    if kind == "PositionAttention":
        return NaivePAM(module.channels, module.query.out_channels)
    if kind == "ChannelSelfAttention":
        return NaiveCAM(module.invert)
    if kind == "DualAttention":
        return NaiveDANet(module.channels, module.position.query.out_channels,
                          module.channel.invert)
    if kind == "CrissCrossAttention":
        return NaiveCrissCross(module.channels, module.query.out_channels, module.recurrence)
    raise Attn2dError(f"naive_version: expected an attn2d mechanism, got {kind}")


def naive_version(module: nn.Module) -> nn.Module:
    """The naive reference of an attn2d mechanism, with the module's weights, dtype and mode."""
    naive = _build(module)
    naive.load_state_dict(module.state_dict(), strict=True)
    reference = next(iter(module.parameters()), None)
    if reference is not None:
        naive = naive.to(dtype=reference.dtype, device=reference.device)
    return naive.train(module.training)
