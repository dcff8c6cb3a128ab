"""Slow, obvious references for the global mechanisms (test side only).

Written from the papers and the official code's equations with plain tensor algebra and
Python loops; they read the module's parameters but share no code with it. Every function
returns (output, weights) so tests can compare the attention maps too.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def conv1x1(x: Tensor, conv: nn.Conv2d) -> Tensor:
    y = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)
    return y if conv.bias is None else y + conv.bias[None, :, None, None]


def max_pool_2x2(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2)
    return x.amax(dim=(3, 5))


def batch_norm_eval(x: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    shape = (1, -1, 1, 1)
    normed = (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return normed * bn.weight.view(shape) + bn.bias.view(shape)


def as_rows(t: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H·W, C), position index i·W + j."""
    return t.reshape(t.shape[0], t.shape[1], -1).transpose(1, 2)


def nonlocal_reference(m: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """z = x + BN(W·y), y = f/𝒞 · g with the explicit (B, N, M) pairwise matrix (BN in eval)."""
    g = conv1x1(x, m.g)
    if m.mode == "gaussian":
        theta, phi = x, x
    else:
        theta, phi = conv1x1(x, m.theta), conv1x1(x, m.phi)
    if m.sub_sample:
        phi, g = max_pool_2x2(phi), max_pool_2x2(g)
    theta, phi, g = as_rows(theta), as_rows(phi), as_rows(g)
    n, n_keys, d = theta.shape[1], phi.shape[1], theta.shape[2]
    if m.mode == "concatenation":
        pairs = torch.cat(
            [
                theta[:, :, None, :].expand(-1, n, n_keys, d),
                phi[:, None, :, :].expand(-1, n, n_keys, d),
            ],
            dim=-1,
        )  # (B, N, M, 2d): [θ_i; φ_j] for every pair
        f = torch.relu(pairs @ m.concat_project.weight.flatten())
    else:
        f = theta @ phi.transpose(1, 2)
    if m.scale:
        f = f / math.sqrt(d)
    weights = f.softmax(-1) if m.mode in ("embedded_gaussian", "gaussian") else f / n_keys
    y = (weights @ g).transpose(1, 2).reshape(x.shape[0], -1, *x.shape[2:])
    return x + batch_norm_eval(conv1x1(y, m.out), m.norm), weights


def gc_reference(m: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    b, c, h, w = x.shape
    pool = conv1x1(x, m.mask).reshape(b, h * w).softmax(-1)
    context = (x.reshape(b, c, h * w) * pool[:, None, :]).sum(-1)  # (B, C)
    first, norm, _, last = m.transform
    t = context @ first.weight[:, :, 0, 0].T + first.bias
    mean = t.mean(-1, keepdim=True)
    var = ((t - mean) ** 2).mean(-1, keepdim=True)
    t = (t - mean) / torch.sqrt(var + norm.eps) * norm.weight.flatten() + norm.bias.flatten()
    t = torch.relu(t) @ last.weight[:, :, 0, 0].T + last.bias
    t = t[:, :, None, None]
    out = x + t if m.fusion == "add" else x * torch.sigmoid(t)
    return out, pool.reshape(b, 1, h, w)


def pam_reference(m: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    q, k, v = as_rows(conv1x1(x, m.query)), as_rows(conv1x1(x, m.key)), conv1x1(x, m.value)
    weights = (q @ k.transpose(1, 2)).softmax(-1)  # (B, N, N), softmax over keys
    b, c = v.shape[:2]
    out = torch.einsum("bij,bcj->bci", weights, v.reshape(b, c, -1)).reshape(x.shape)
    return x + m.gamma * out, weights


def cam_reference(m: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    feats = x.reshape(x.shape[0], x.shape[1], -1)
    energy = feats @ feats.transpose(1, 2)
    if m.invert:
        energy = energy.max(-1, keepdim=True).values - energy
    weights = energy.softmax(-1)
    return x + m.gamma * (weights @ feats).reshape(x.shape), weights


def criss_cross_by_loops(m: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """For each pixel: list its row and column (centre once), score, one softmax, sum.

    Returns the output and one (B, H, W, W + H) map per pass in the AttentionMap layout.
    """
    b, _, h, w = x.shape
    maps = []
    for _ in range(m.recurrence):
        q, k, v = conv1x1(x, m.query), conv1x1(x, m.key), conv1x1(x, m.value)
        out = torch.zeros_like(x)
        amap = x.new_zeros(b, h, w, w + h)
        for n in range(b):
            for i in range(h):
                for j in range(w):
                    places = [(i, jj) for jj in range(w)] + [(ii, j) for ii in range(h) if ii != i]
                    rows = [p[0] for p in places]
                    cols = [p[1] for p in places]
                    scores = (q[n, :, i, j, None] * k[n, :, rows, cols]).sum(0)
                    a = scores.softmax(0)
                    out[n, :, i, j] = (a[None, :] * v[n, :, rows, cols]).sum(1)
                    amap[n, i, j, :w] = a[:w]
                    others = [ii for ii in range(h) if ii != i]
                    amap[n, i, j, [w + ii for ii in others]] = a[w:]
        x = x + m.gamma * out
        maps.append(amap)
    return x, maps
