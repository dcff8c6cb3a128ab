"""torchvision and timm classifiers as backbones through create_model."""

from __future__ import annotations

import itertools
import sys

import pytest
import torch
import torchvision
from torch import nn

from attn2d import Attn2dError
from attn2d.models import (
    attention_modules,
    create_model,
    find_stages,
    is_model_name,
    list_models,
    load_backbone_state,
)


def step(model: nn.Module, x: torch.Tensor) -> float:
    """One SGD step; every attention parameter must get a gradient."""
    model.train()
    loss = nn.functional.cross_entropy(model(x), torch.arange(len(x)) % 3)
    loss.backward()
    for path, module in attention_modules(model):
        grads = [p.grad for p in module.parameters()]
        assert grads and all(g is not None for g in grads), path
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    return loss.item()


@pytest.mark.parametrize("name", ["torchvision:mobilenet_v3_small", "timm:mobilenetv3_small_050",
                                  "timm:convnext_atto", "timm:efficientnet_b0"])
def test_external_models_train_with_block_attention_on_one_channel(name):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    model = create_model(name, attention="cbam", num_classes=3, in_channels=1)
    assert len(attention_modules(model)) > 3
    assert torch.isfinite(torch.tensor(step(model, torch.randn(4, 1, 32, 32))))


def test_torchvision_stem_is_replaced_at_the_same_path():
    model = create_model("torchvision:resnet18", num_classes=5, in_channels=1)
    plain = torchvision.models.resnet18(weights=None, num_classes=5)
    assert list(model.state_dict()) == list(plain.state_dict())
    assert model.conv1.weight.shape == (64, 1, 7, 7) and model.fc.out_features == 5
    # fan-out Kaiming: the new stem has the scale torchvision gives a 64x7x7 stem
    assert abs(model.conv1.weight.std().item() / plain.conv1.weight.std().item() - 1) < 0.15
    assert model.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 5)


def test_timm_models_get_in_chans():
    pytest.importorskip("timm")
    model = create_model("timm:resnet26d", num_classes=4, in_channels=2, attention="se")
    assert model.conv1[0].in_channels == 2
    assert model.eval()(torch.randn(1, 2, 32, 32)).shape == (1, 4)


def test_plain_state_dict_loads_into_the_injected_model():
    torch.manual_seed(0)
    plain = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10).eval()
    torch.manual_seed(1)
    model = create_model("torchvision:mobilenet_v3_small", attention="nonlocal",
                         placement="block").eval()
    assert set(plain.state_dict()) <= set(model.state_dict())
    left = load_backbone_state(model, plain.state_dict())
    assert left and all(".attn." in k for k in left)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # non-local starts as the identity: the plain network's output
        torch.testing.assert_close(model(x), plain(x))


def test_replaced_se_keys_are_skipped_when_loading():
    plain = torchvision.models.mobilenet_v3_small(weights=None)
    model = create_model("torchvision:mobilenet_v3_small", attention="eca", replace=True,
                         num_classes=1000)
    assert "features.1.block.1.fc1.weight" in plain.state_dict()  # the SE's key
    left = load_backbone_state(model, plain.state_dict())
    places = tuple(f"{p}." for p, _ in attention_modules(model))
    assert left == [k for k in model.state_dict() if k.startswith(places)]
    assert "features.1.block.1.conv.weight" in left  # ECA where the SE was
    torch.testing.assert_close(model.classifier[3].weight, plain.classifier[3].weight)


def test_load_backbone_state_names_what_does_not_fit():
    model = create_model("torchvision:resnet18", attention="se", in_channels=1)
    plain = torchvision.models.resnet18(weights=None, num_classes=10).state_dict()
    with pytest.raises(ValueError, match=r"'conv1.weight' of shape \(64, 1, 7, 7\)"):
        load_backbone_state(model, plain)
    del plain["fc.bias"]
    with pytest.raises(ValueError, match=r"expected key 'fc\.bias'"):
        load_backbone_state(model, plain)


def test_stages_of_a_flat_mobilenet_end_before_each_stride_two_block():
    model = create_model("torchvision:mobilenet_v2", width_mult=0.25)
    blocks = [(f"features.{i}", m) for i, m in enumerate(model.features)
              if type(m).__name__ == "InvertedResidual"]
    ends = [p for (p, _), (_, nxt) in itertools.pairwise(blocks) if nxt.stride == 2]
    assert [s.path for s in find_stages(model)] == [*ends, blocks[-1][0]]
    assert sum(len(s.blocks) for s in find_stages(model)) == len(blocks)


def test_stage_placement_and_stage_choice_on_external_models():
    pytest.importorskip("timm")
    model = create_model("timm:mobilenetv3_small_050", attention="nonlocal")  # stage default
    assert [p for p, _ in attention_modules(model)] == [
        "attn.blocks_0", "attn.blocks_1", "attn.blocks_2"]
    model = create_model("timm:mobilenetv3_small_050", attention="se", stages=(2,))
    assert [p for p, _ in attention_modules(model)] == ["blocks.1.0.attn", "blocks.1.1.attn"]
    model = create_model("torchvision:efficientnet_b0", attention="eca",
                         placement=["features.2", "features.4.1"])
    assert [p for p, _ in attention_modules(model)] == ["attn.features_2", "attn.features_4_1"]


def test_replace_swaps_the_se_of_mobilenet_v3():
    se = torchvision.ops.SqueezeExcitation
    plain = torchvision.models.mobilenet_v3_small()
    with_se = [i for i, b in enumerate(plain.features) if any(isinstance(m, se)
                                                             for m in b.modules())]
    model = create_model("torchvision:mobilenet_v3_small", attention="eca", replace=True)
    assert [p for p, _ in attention_modules(model)] == [
        f"features.{i}.block.{'1' if i == 1 else '2'}" for i in with_se]
    assert not any(isinstance(m, se) for m in model.modules())


def test_list_models_and_names():
    assert list_models() == ["resnet18", "resnet34", "resnet50", "small_cnn"]
    assert "torchvision:resnet50" in list_models("torchvision")
    assert is_model_name("timm:anything") and is_model_name(" ResNet18")
    assert not is_model_name("vgg") and not is_model_name(3)
    with pytest.raises(ValueError, match="source"):
        list_models("keras")


def test_bad_external_names_and_options_get_one_line():
    with pytest.raises(ValueError, match=r"did you mean torchvision:resnet50"):
        create_model("torchvision:resnet05")
    with pytest.raises(ValueError, match="'torchvision:<name>' / 'timm:<name>'"):
        create_model("keras:resnet50")
    with pytest.raises(ValueError, match="never downloads"):
        create_model("torchvision:resnet18", weights="DEFAULT")
    with pytest.raises(Attn2dError, match="keywords that torchvision:resnet18 takes"):
        create_model("torchvision:resnet18", depth=3)
    with pytest.raises(ValueError, match="expected residual blocks of a known type"):
        create_model("torchvision:squeezenet1_1", attention="se", placement="block")
    with pytest.raises(ValueError, match="num_classes"):
        create_model("torchvision:resnet18", num_classes=0)


def test_unknown_timm_model_suggests_close_names():
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=r"did you mean timm:resnet26\b"):
        create_model("timm:resnet26e")


def test_missing_timm_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now fails
    with pytest.raises(Attn2dError, match="pip install timm"):
        create_model("timm:resnet26d")
