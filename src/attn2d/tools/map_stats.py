"""Attention statistics: summaries of attention maps over a sample of images (mean, spread,
entropy, saturation), with flags for maps that are near-uniform or saturated
(``attn2d stats``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._base.errors import Attn2dError
from .._base.tables import Table
from ..modules.capture import DISTRIBUTION_KINDS, AttentionRecorder, MapRecord

__all__ = ["MapStats", "attention_stats", "collect_attention_stats", "format_stats"]

LOW, HIGH = 0.05, 0.95
UNIFORM_STD = 0.01  # a gate whose weights differ by less than this scales everything alike
UNIFORM_ENTROPY = 0.98  # normalised row entropy at or above this: rows spread almost evenly
SATURATED_SHARE = 0.5  # "most": over half the weights (gates) or rows (distributions)


@dataclass
class MapStats:
    """Statistics of one attention map over a sample of images.

    Attributes:
        label: the map's ``path:kind`` label.
        kind: its kind.
        images: images seen.
        count: weights seen.
        mean, std, minimum, maximum: of all weights.
        entropy: for distributions (softmax rows: position, criss-cross,
            channel-affinity, mixture) the mean over rows of the row entropy divided by
            log(number of entries the row can use), in [0, 1], 1 = uniform; for gates in
            [0, 1] (sigmoid: channel, spatial, …) the mean Bernoulli entropy
            −w·log₂ w − (1 − w)·log₂(1 − w), in [0, 1], 1 = every weight 0.5,
            0 = every weight 0 or 1; ``None`` when the weights are neither.
        entropy_name: ``"row entropy"`` or ``"gate entropy"``.
        low, high: share of weights below 0.05 and above 0.95.
        peaked: for distributions, share of rows with one entry above 0.95.
        flags: ``"near-uniform: …"`` / ``"saturated: …"`` with the reason; empty if healthy.
        sample, sample_weights: a weighted random sample of the values, for histograms.
    """

    label: str
    kind: str
    images: int
    count: int
    mean: float
    std: float
    minimum: float
    maximum: float
    entropy: float | None
    entropy_name: str
    low: float
    high: float
    peaked: float | None
    flags: list[str] = field(default_factory=list)
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    sample_weights: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def status(self) -> str:
        return ", ".join(f.split(":")[0] for f in self.flags) or "ok"

    def as_dict(self) -> dict[str, Any]:
        keys = ("label", "kind", "images", "count", "mean", "std", "minimum", "maximum",
                "entropy", "entropy_name", "low", "high", "peaked", "flags")
        return {k: getattr(self, k) for k in keys}


def _free_weights(t: Tensor, kind: str) -> Tensor:
    """The weights as a flat vector, without the criss-cross map's structural zeros (each
    pixel's own entry in its column part, there only for the layout)."""
    if kind == "criss-cross" and t.dim() == 4 and t.shape[3] == t.shape[1] + t.shape[2]:
        h, w = t.shape[1], t.shape[2]
        keep = torch.ones(h, w, w + h, dtype=torch.bool, device=t.device)
        rows = torch.arange(h, device=t.device)
        keep[rows, :, w + rows] = False
        return t[:, keep].reshape(-1)
    return t.reshape(-1)


class _Accumulator:
    """Running sums for one map over many batches, so no map is kept whole."""

    def __init__(self, label: str, kind: str, sample_size: int, gen: torch.Generator) -> None:
        self.label, self.kind = label, kind
        self.sample_size, self.gen = sample_size, gen
        self.images = self.count = self.low = self.high = 0
        self.total = self.total_sq = 0.0
        self.minimum, self.maximum = math.inf, -math.inf
        self.rows = self.peaked_rows = 0
        self.entropy_sum = 0.0
        self.is_distribution = kind in DISTRIBUTION_KINDS
        self.is_gate = not self.is_distribution
        self.in_unit = True
        self.samples: list[Tensor] = []
        self.weights: list[float] = []

    def update(self, t: Tensor) -> None:
        t = t.detach().double()
        flat = _free_weights(t, self.kind)
        if flat.numel() == 0:
            return
        self.images += t.shape[0] if self.kind != "mixture" and t.dim() > 1 else 1
        self.count += flat.numel()
        self.total += float(flat.sum())
        self.total_sq += float((flat * flat).sum())
        self.minimum = min(self.minimum, float(flat.min()))
        self.maximum = max(self.maximum, float(flat.max()))
        self.low += int((flat < LOW).sum())
        self.high += int((flat > HIGH).sum())
        self.in_unit &= bool(((flat >= 0) & (flat <= 1)).all())
        if self.is_distribution:
            self._rows(t)
        elif self.is_gate and self.in_unit:
            w = flat.clamp(1e-12, 1 - 1e-12)
            bern = -(w * w.log2() + (1 - w) * (1 - w).log2())
            self.entropy_sum += float(bern.sum())
        m = min(flat.numel(), self.sample_size)
        idx = torch.randint(flat.numel(), (m,), generator=self.gen)
        self.samples.append(flat[idx].float())
        self.weights.append(flat.numel() / m)  # each sampled value stands for this many

    def _rows(self, t: Tensor) -> None:
        rows = t.reshape(-1, t.shape[-1])
        sums = rows.sum(-1)
        # A "position" map of dot-product non-local is not a softmax: no row entropy then.
        if bool((rows < 0).any()) or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            self.is_distribution = False
            return
        support = t.shape[-1]
        if self.kind == "criss-cross":  # the pixel's own column entry is structurally zero
            support = t.shape[-1] - 1
        ent = -(rows * rows.clamp_min(1e-300).log()).sum(-1)
        self.entropy_sum += float(ent.sum()) / max(math.log(support), 1e-12)
        self.rows += rows.shape[0]
        self.peaked_rows += int((rows.amax(-1) > HIGH).sum())

    def result(self) -> MapStats:
        n = max(self.count, 1)
        mean = self.total / n
        std = math.sqrt(max(self.total_sq / n - mean * mean, 0.0))
        low, high = self.low / n, self.high / n
        if self.is_distribution and self.rows:
            entropy, name = self.entropy_sum / self.rows, "row entropy"
            peaked = self.peaked_rows / self.rows
        elif self.is_gate and self.in_unit:
            entropy, name, peaked = self.entropy_sum / n, "gate entropy", None
        else:
            entropy, name, peaked = None, "entropy", None
        mode = ("distribution" if self.is_distribution and self.rows
                else "gate" if self.is_gate and self.in_unit else "other")
        flags = _flags(mode, mean, std, entropy, low, high, peaked)
        sample, weights = np.zeros(0), np.zeros(0)
        if self.samples:
            sample = torch.cat(self.samples).numpy()
            weights = np.concatenate([np.full(len(s), w)
                                      for s, w in zip(self.samples, self.weights, strict=True)])
        return MapStats(self.label, self.kind, self.images, self.count, mean, std,
                        self.minimum, self.maximum, entropy, name, low, high, peaked, flags,
                        sample, weights)


def _flags(mode: str, mean: float, std: float, entropy: float | None, low: float,
           high: float, peaked: float | None) -> list[str]:
    flags = []
    if mode == "distribution":
        assert entropy is not None and peaked is not None
        if entropy >= UNIFORM_ENTROPY:
            flags.append(f"near-uniform: mean normalised row entropy {entropy:.3f} >= "
                         f"{UNIFORM_ENTROPY} (rows spread evenly; the map prefers nothing)")
        if peaked > SATURATED_SHARE:
            flags.append(f"saturated: {peaked:.0%} of rows put > {HIGH} on one entry "
                         "(one-hot rows; softmax gradients vanish)")
        return flags
    if mode == "gate":
        if std < UNIFORM_STD:
            flags.append(f"near-uniform: std {std:.4f} < {UNIFORM_STD} (every weight ≈ "
                         f"{mean:.3f}; the gate scales all features alike)")
        if low + high > SATURATED_SHARE:
            flags.append(f"saturated: {low:.0%} of weights < {LOW} and {high:.0%} > {HIGH} "
                         "(sigmoid in its flat tails; gradients vanish)")
    elif std < UNIFORM_STD * max(abs(mean), 1e-12):
        flags.append(f"near-uniform: std {std:.3g} is under 1% of |mean| {abs(mean):.3g}")
    return flags


def attention_stats(
    maps: Iterable[MapRecord] | Mapping[str, tuple[str, Tensor]],
    *,
    sample_size: int = 20_000,
    seed: int = 0,
) -> list[MapStats]:
    """Statistics of attention maps, with near-uniform / saturated flags and the reason.

    Args:
        maps: recorded maps (e.g. ``AttentionRecorder.merged()``; records with the same
            label are pooled), or ``{label: (kind, tensor)}``.
        sample_size: values kept per map and batch for histograms.
        seed: seed of that sampling.

    Definitions (thresholds are module constants): weights are "low" below 0.05 and "high"
    above 0.95. A gate (values in [0, 1]) is *near-uniform* when its std is below 0.01 and
    *saturated* when over half its weights are low or high. A distribution (softmax rows)
    is *near-uniform* when its mean normalised row entropy is at least 0.98 and
    *saturated* when over half its rows put more than 0.95 on one entry.
    """
    gen = torch.Generator().manual_seed(seed)
    accs: dict[str, _Accumulator] = {}
    items = ([(label, kind, t) for label, (kind, t) in maps.items()]
             if isinstance(maps, Mapping) else [(r.label, r.kind, r.tensor) for r in maps])
    for label, kind, tensor in items:
        if not isinstance(tensor, Tensor):
            raise Attn2dError(f"attention_stats: expected a tensor for {label!r}, got "
                              f"{type(tensor).__name__}")
        acc = accs.setdefault(label, _Accumulator(label, kind, sample_size, gen))
        acc.update(tensor)
    return [acc.result() for acc in accs.values()]


def collect_attention_stats(
    model: nn.Module,
    batches: Iterable[Tensor],
    *,
    sample_size: int = 20_000,
    seed: int = 0,
) -> list[MapStats]:
    """Run ``model`` (in eval mode, no grad) on ``batches`` and summarise every attention
    map with :func:`attention_stats`, one batch at a time so no map is kept whole."""
    gen = torch.Generator().manual_seed(seed)
    accs: dict[str, _Accumulator] = {}
    was_training = model.training
    model.eval()
    try:
        with AttentionRecorder(model) as recorder, torch.no_grad():
            for x in batches:
                model(x)
                for r in recorder.records:
                    accs.setdefault(r.label, _Accumulator(r.label, r.kind, sample_size, gen)
                                    ).update(r.tensor)
                recorder.clear()
    finally:
        model.train(was_training)
    return [acc.result() for acc in accs.values()]


def format_stats(stats: Sequence[MapStats]) -> str:
    """A text table of :class:`MapStats`, flag reasons listed under it."""
    if not stats:
        return "no attention maps found (is the model built with an attention mechanism?)"
    def entropy(s: MapStats) -> str:
        if s.entropy is None:
            return "-"
        return f"{s.entropy:.3f} ({'row' if s.entropy_name == 'row entropy' else 'gate'})"

    columns = [("label", "map"), ("images", "images"), ("mean", "mean"), ("std", "std"),
               ("entropy", "entropy"), ("low", "<0.05"), ("high", ">0.95"),
               ("status", "status")]
    rows = [{**s.as_dict(), "entropy": entropy(s), "status": s.status} for s in stats]
    percent = "{:.1%}".format
    notes = [f"  {s.label}: {flag}" for s in stats for flag in s.flags]
    table = Table(columns, rows, {"mean": "{:.4f}".format, "std": "{:.4f}".format,
                                  "low": percent, "high": percent},
                  align_left=tuple(k for k, _ in columns),
                  notes=["", "flags:", *notes] if notes else [])
    return table.render("text").rstrip("\n")
