"""Slow, obvious references for the gates (channel, spatial) shared by several test files.

Plain matrix algebra and shifted sums; they read a module's parameters but share no code
with it.
"""

from __future__ import annotations

import torch


def mlp_by_matmuls(pooled: torch.Tensor, fc1: torch.nn.Linear, fc2: torch.nn.Linear):
    """Linear → ReLU → Linear on (B, C) rows, as plain matrix algebra."""
    hidden = (pooled @ fc1.weight.T + fc1.bias).clamp(min=0)
    return hidden @ fc2.weight.T + fc2.bias


def pool_by_hand(x: torch.Tensor, kind: str) -> torch.Tensor:
    """One CBAM descriptor per (sample, channel) over its H·W values, the textbook way."""
    flat = x.flatten(2)
    if kind == "avg":
        return flat.sum(-1) / flat.shape[-1]
    if kind == "max":
        return flat.max(-1).values
    if kind == "lp":  # F.lp_pool2d with p=2 over the whole map: the L2 norm
        return flat.pow(2).sum(-1).sqrt()
    if kind == "lse":
        return flat.exp().sum(-1).log()
    raise AssertionError(kind)


def channel_gate_weights_by_hand(gate: torch.nn.Module, x: torch.Tensor, pools) -> torch.Tensor:
    """σ(Σ_pools MLP(pool(x))): one shared MLP, raw outputs summed before the sigmoid."""
    fc1, fc2 = gate.mlp[0], gate.mlp[2]
    return torch.sigmoid(sum(mlp_by_matmuls(pool_by_hand(x, p), fc1, fc2) for p in pools))


def conv_by_shifts(x, weight, padding=(0, 0), dilation=1, groups=1, bias=None):
    """Zero-padded cross-correlation as a sum of shifted slices, one weight at a time."""
    b, c_in, h, w = x.shape
    c_out, c_in_group, kh, kw = weight.shape
    ph, pw = padding
    padded = x.new_zeros(b, c_in, h + 2 * ph, w + 2 * pw)
    padded[:, :, ph : ph + h, pw : pw + w] = x
    h_out, w_out = h + 2 * ph - dilation * (kh - 1), w + 2 * pw - dilation * (kw - 1)
    out = x.new_zeros(b, c_out, h_out, w_out)
    for o in range(c_out):
        first = (o // (c_out // groups)) * c_in_group
        for i in range(c_in_group):
            for u in range(kh):
                for v in range(kw):
                    du, dv = u * dilation, v * dilation
                    out[:, o] += (
                        weight[o, i, u, v] * padded[:, first + i, du : du + h_out, dv : dv + w_out]
                    )
        if bias is not None:
            out[:, o] += bias[o]
    return out


def batch_norm_by_hand(y, bn, batch_stats=None):
    """(y − μ)/√(σ² + ε)·γ + β per channel (dim 1); batch statistics (biased variance) in
    training, running ones in eval or when a channel holds a single value."""
    if batch_stats is None:
        batch_stats = bn.training and y.numel() != y.shape[1]
    shape = [1, -1] + [1] * (y.dim() - 2)
    if batch_stats:
        dims = [d for d in range(y.dim()) if d != 1]
        mean, var = y.mean(dims), y.var(dims, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    return (y - mean.view(shape)) / (var.view(shape) + bn.eps).sqrt() * bn.weight.view(
        shape
    ) + bn.bias.view(shape)


def max_mean_over_channels(x):
    return torch.cat([x.max(1, keepdim=True).values, x.mean(1, keepdim=True)], dim=1)


def spatial_conv_by_hand(pooled, conv, kind: str, k: int):
    """The spatial gate's map conv, checking the structure each kind promises."""
    p = (k - 1) // 2
    if kind == "full":
        assert conv.weight.shape == (1, 2, k, k) and conv.bias is None
        return conv_by_shifts(pooled, conv.weight, (p, p))
    assert all(layer.bias is None for layer in conv)
    if kind == "factorized":  # 1×k, 2→2, then k×1, 2→1
        assert [layer.weight.shape for layer in conv] == [(2, 2, 1, k), (1, 2, k, 1)]
        rows = conv_by_shifts(pooled, conv[0].weight, (0, p))
        return conv_by_shifts(rows, conv[1].weight, (p, 0))
    # separable: depthwise 1×k, depthwise k×1, pointwise 2→1
    assert [layer.weight.shape for layer in conv] == [(2, 1, 1, k), (2, 1, k, 1), (1, 2, 1, 1)]
    rows = conv_by_shifts(pooled, conv[0].weight, (0, p), groups=2)
    cols = conv_by_shifts(rows, conv[1].weight, (p, 0), groups=2)
    return conv_by_shifts(cols, conv[2].weight)


def spatial_map_by_hand(gate, x, kind: str = "full", k: int = 7):
    """σ(BN(conv([max_c x, mean_c x]))), shape (B, 1, H, W)."""
    y = spatial_conv_by_hand(max_mean_over_channels(x), gate.conv, kind, k)
    return torch.sigmoid(batch_norm_by_hand(y, gate.bn))
