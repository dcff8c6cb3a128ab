"""Test-side helpers shared by several test files (never used by the library)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn2d.modules import AttentionMap
from attn2d.modules.capture import capturing


def activate(module: nn.Module, scale: float = 0.5, seed: int = 0) -> nn.Module:
    """Give every parameter and BN statistic random non-trivial values.

    Zero-initialised parts (gammas, zero BN weights, zero last convs) would otherwise hide
    the attention path from any comparison.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_((torch.rand(p.shape, generator=gen, dtype=p.dtype) * 2 - 1) * scale)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return module


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def attention_maps(module: nn.Module) -> dict[str, AttentionMap]:
    return {name: m for name, m in module.named_modules() if isinstance(m, AttentionMap)}


class MapCatcher:
    """Capture on and a forward hook on every AttentionMap (as the recorder does);
    ``maps[name]`` lists what each one saw."""

    def __init__(self, module: nn.Module) -> None:
        self.maps: dict[str, list[torch.Tensor]] = {}
        self._handles = []
        self._capture = capturing(module)
        self._capture.__enter__()
        for name, point in attention_maps(module).items():
            self.maps[name] = []
            self._handles.append(point.register_forward_hook(self._catch(name)))

    def _catch(self, name: str):
        def hook(_module, _inputs, output):
            self.maps[name].append(output.detach().clone())

        return hook

    def __enter__(self) -> MapCatcher:
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._capture.__exit__(None, None, None)


class SdpaCalls:
    """Counts calls of F.scaled_dot_product_attention (the fused, no-N×N route)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = F.scaled_dot_product_attention

        def counting(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
