"""From recorded maps to 2-D pictures: the weights of one query pixel, RCCA's composed
map, gates reduced over channels.

Layouts (see :class:`attn2d.AttentionMap`): ``"position"`` (B, Nq, Nk) over flattened
positions; ``"criss-cross"`` (B, H, W, W + H), entries [:W] over the pixel's row and [W:]
over its column (the pixel itself zero there, as it is counted in the row).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._base.errors import Attn2dError

__all__ = [
    "compose_criss_cross",
    "criss_cross_dense",
    "criss_cross_query",
    "gate_picture",
    "key_grid",
    "position_query",
]


def _check_cell(query: tuple[int, int], size: tuple[int, int], owner: str) -> tuple[int, int]:
    i, j = (int(v) for v in query)
    if not (0 <= i < size[0] and 0 <= j < size[1]):
        raise Attn2dError(f"{owner}: expected a query cell inside the {size[0]}×{size[1]} "
                          f"feature grid, got ({i}, {j})")
    return i, j


def _check_criss_cross(amap: Tensor, owner: str) -> tuple[int, int]:
    if amap.dim() != 3 or amap.shape[2] != amap.shape[0] + amap.shape[1]:
        raise Attn2dError(f"{owner}: expected one image's criss-cross map of shape "
                          f"(H, W, W + H), got {tuple(amap.shape)}")
    return int(amap.shape[0]), int(amap.shape[1])


def criss_cross_query(amap: Tensor, query: tuple[int, int]) -> Tensor:
    """(H, W) weights of query pixel (i, j) from one image's (H, W, W + H) map: its row
    weights on row i, its column weights on column j, zero everywhere else."""
    h, w = _check_criss_cross(amap, "criss_cross_query")
    i, j = _check_cell(query, (h, w), "criss_cross_query")
    out = amap.new_zeros(h, w)
    out[i, :] = amap[i, j, :w]
    out[:, j] += amap[i, j, w:]  # the centre entry here is 0: the pixel counts in its row
    return out


def criss_cross_dense(amap: Tensor) -> Tensor:
    """The (H·W, H·W) matrix of one image's criss-cross map, rows = queries, columns = keys,
    positions flattened row-major; zero off each query's row and column."""
    h, w = _check_criss_cross(amap, "criss_cross_dense")
    dense = amap.new_zeros(h, w, h, w)
    rows = torch.arange(h)
    cols = torch.arange(w)
    # dense[i, j, i, k] = amap[i, j, k];  dense[i, j, k, j] += amap[i, j, w + k]
    dense[rows[:, None, None], cols[None, :, None], rows[:, None, None], cols[None, None, :]] = (
        amap[..., :w])
    dense[rows[:, None, None], cols[None, :, None], rows[None, None, :], cols[None, :, None]] += (
        amap[..., w:])
    return dense.reshape(h * w, h * w)


def compose_criss_cross(maps: Sequence[Tensor], query: tuple[int, int]) -> Tensor:
    """(H, W) map of query q after all recurrent passes: the composition of the passes.

    For two passes, pixel k reaches q through every intermediate p:
    ``C[q, k] = Σ_p A2[q, p] · A1[p, k]`` (the row q of A2·A1 with each Aᵣ the dense
    (H·W, H·W) matrix of pass r). This is how strongly the value at k enters q's output
    through the attention paths alone; the residual ``x +`` terms and the value
    projections are left out. Every row of the result still sums to 1, and after two
    passes it covers the whole image (q → its row/column → their rows/columns).
    """
    if not maps:
        raise Attn2dError("compose_criss_cross: expected at least one pass, got none")
    h, w = _check_criss_cross(maps[0], "compose_criss_cross")
    i, j = _check_cell(query, (h, w), "compose_criss_cross")
    row = criss_cross_dense(maps[-1].double())[i * w + j]  # (N,): q's weights in the last pass
    for amap in reversed(maps[:-1]):
        row = row @ criss_cross_dense(amap.double())
    return row.view(h, w).to(maps[0].dtype)


def key_grid(n_keys: int, feature_size: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) grid of ``n_keys`` key positions: the feature grid itself, or that grid
    max-pooled by 2 (non-local ``sub_sample``; floor division like ``max_pool2d``)."""
    h, w = feature_size
    for stride in (1, 2, 4):
        if (h // stride) * (w // stride) == n_keys:
            return h // stride, w // stride
    raise Attn2dError(f"key_grid: expected {n_keys} keys to tile the {h}×{w} feature grid "
                      "or a 2× / 4× pooled version of it, got no match")


def position_query(
    amap: Tensor, query: tuple[int, int], feature_size: tuple[int, int] | None = None
) -> Tensor:
    """(h_k, w_k) weights of query pixel (i, j) from one image's (Nq, Nk) position map.

    Args:
        amap: (Nq, Nk) weights, queries and keys flattened row-major.
        query: (row, column) of the query on the feature grid.
        feature_size: (H, W) of the queries' grid; default square.
    """
    if amap.dim() != 2:
        raise Attn2dError(f"position_query: expected one image's (Nq, Nk) map, got shape "
                          f"{tuple(amap.shape)}")
    n_q, n_k = amap.shape
    if feature_size is None:
        side = round(n_q**0.5)
        if side * side != n_q:
            raise Attn2dError(f"position_query: expected feature_size for a non-square map, "
                              f"got {n_q} queries and no size")
        feature_size = (side, side)
    if feature_size[0] * feature_size[1] != n_q:
        raise Attn2dError(f"position_query: expected {n_q} queries to fill feature_size "
                          f"{feature_size}, got {feature_size[0] * feature_size[1]}")
    i, j = _check_cell(query, feature_size, "position_query")
    return amap[i * feature_size[1] + j].view(key_grid(n_k, feature_size))


def gate_picture(gate: Tensor) -> Tensor:
    """A sigmoid gate of one image as an (h, w) picture: the mean over channels.

    Accepts (1, H, W) spatial maps, (C, H, W) element-wise gates, (C, H, 1) height and
    (C, 1, W) width gates (these stay 1 pixel thick; the plot stretches them).
    """
    if gate.dim() != 3:
        raise Attn2dError(f"gate_picture: expected one image's gate of shape (C, H, W), got "
                          f"{tuple(gate.shape)}")
    return gate.float().mean(0)
