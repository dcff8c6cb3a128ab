"""Identity start (ResidualBlend) and finding the attention parts of a model."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import attn2d
from attn2d.models import (
    ResidualBlend,
    attention_modules,
    create_model,
    inject,
    load_backbone_state,
)
from tests.helpers import MapCatcher, activate


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("spec", ["se", "cbam", "eca"])
@pytest.mark.parametrize("name", ["resnet18", "torchvision:mobilenet_v3_small"])
def test_identity_start_computes_the_plain_model(name, spec):
    x = torch.randn(2, 3, 32, 32)
    plain = activate(create_model(name), scale=0.2)  # trained-looking weights and BN stats
    expected = outputs(plain, x)
    model = create_model(name, attention=spec, placement="block", attention_init="identity")
    load_backbone_state(model, plain.state_dict())
    found = attention_modules(model)
    assert found and all(isinstance(m, ResidualBlend) for _, m in found)
    torch.testing.assert_close(outputs(model, x), expected)
    default = create_model(name, attention=spec, placement="block")
    load_backbone_state(default, plain.state_dict())
    assert not torch.allclose(outputs(default, x), expected, rtol=0.01, atol=0)


def test_beta_learns_first_then_the_mechanism():
    model = create_model("small_cnn", attention="se", attention_init="identity", in_channels=1)
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    blends = [m for _, m in attention_modules(model)]
    nn.functional.cross_entropy(model(x), y).backward()
    for blend in blends:
        assert blend.beta.grad is not None and blend.beta.grad.abs() > 0
        assert all(torch.count_nonzero(p.grad) == 0 for p in blend.mechanism.parameters())
    model.zero_grad()
    with torch.no_grad():
        for blend in blends:
            blend.beta.fill_(0.1)  # where one step of training takes it
    nn.functional.cross_entropy(model(x), y).backward()
    for blend in blends:
        assert all(torch.count_nonzero(p.grad) > 0 for p in blend.mechanism.parameters())


def test_blend_mixes_mechanism_and_input_and_keeps_hooks():
    mechanism = activate(attn2d.create("cbam", 8)).eval()
    blend = ResidualBlend(mechanism)
    with torch.no_grad():
        blend.beta.fill_(0.3)
    x = torch.randn(2, 8, 5, 6)
    with MapCatcher(blend) as catcher, torch.no_grad():
        out = blend(x)
    with torch.no_grad():
        torch.testing.assert_close(out, 0.7 * x + 0.3 * mechanism(x))
    assert all(len(maps) == 1 for maps in catcher.maps.values()) and catcher.maps
    assert set(blend.state_dict()) == {"beta", *(f"mechanism.{k}"
                                                 for k in mechanism.state_dict())}


def test_identity_mechanisms_are_not_wrapped_and_still_learn():
    model = create_model("resnet18", attention="nonlocal", attention_init="identity")
    found = attention_modules(model)
    assert [type(m) for _, m in found] == [attn2d.NonLocal2d] * 3
    x = torch.randn(2, 3, 16, 16)
    nn.functional.cross_entropy(model(x), torch.tensor([1, 2])).backward()
    assert all(any(p.grad.abs().sum() > 0 for p in m.parameters()) for _, m in found)


def test_inject_identity_keeps_a_torchvision_output_and_extends_keys_by_one_level():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = outputs(model, x)
    inject(model, "se", init="identity")
    torch.testing.assert_close(outputs(model, x), expected)
    assert {"layer1.0.attn.beta", "layer1.0.attn.mechanism.fc1.weight"} <= set(model.state_dict())


def test_attention_modules_lists_the_outermost_added_parts_only():
    class Scale(nn.Module):  # a custom factory's module, not a registered mechanism
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(channels, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    model = create_model("torchvision:mobilenet_v3_small", attention=Scale, stages=(1, 2))
    assert [(p, type(m)) for p, m in attention_modules(model)] == [
        ("features.1.attn", Scale), ("features.2.attn", Scale), ("features.3.attn", Scale)]
    model = create_model("small_cnn", attention="cbam", attention_init="identity")
    assert [p for p, _ in attention_modules(model)] == ["block1.attn", "block2.attn",
                                                        "block3.attn"]
