from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import attn2d
from attn2d import Attn2dError
from attn2d.models import BasicBlock, create_model, list_models
from attn2d.modules.registry import is_mechanism


class Zero(nn.Module):
    """A stand-in mechanism that erases its input: shows exactly where attention acts."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.channels
        return torch.zeros_like(x)


def attention_paths(model: nn.Module) -> dict[str, nn.Module]:
    return {p: m for p, m in model.named_modules() if is_mechanism(m)}


def test_resnet18_has_11173962_parameters_with_10_classes():
    assert sum(p.numel() for p in create_model("resnet18").parameters()) == 11_173_962


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "small_cnn"])
def test_every_model_takes_one_channel_28x28_input(name):
    model = create_model(name, in_channels=1, num_classes=7, attention="eca").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    if name == "resnet50":  # Bottleneck blocks: attention sees the 4x expanded width
        assert model.layer1[0].attn.channels == 256 and model.layer4[2].attn.channels == 2048


def test_list_models_and_unknown_name_lists_the_valid_ones():
    assert list_models() == ["resnet18", "resnet34", "resnet50", "small_cnn"]
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50, small_cnn"):
        create_model("resnet19")


def test_block_placement_puts_one_module_in_every_residual_block():
    model = create_model("resnet18", attention="se")
    found = attention_paths(model)
    assert sorted(found) == sorted(f"layer{s}.{i}.attn" for s in range(1, 5) for i in range(2))
    for path, module in found.items():
        block = model.get_submodule(path.rpartition(".")[0])
        assert module.channels == block.out_channels
    assert model.placement == "block" and len(model.attn) == 0


def test_stage_placement_defaults_to_stages_1_to_3_with_their_channels():
    model = create_model("resnet18", attention="nonlocal")  # registry default: stage
    assert model.placement == "stage"
    assert {p: m.channels for p, m in attention_paths(model).items()} == {
        "attn.layer1": 64, "attn.layer2": 128, "attn.layer3": 256}


def test_stage_placement_on_chosen_stages_uses_each_stage_width():
    model = create_model("resnet18", attention="eca", placement="stage", stages=(4, 2))
    assert {p: m.channels for p, m in attention_paths(model).items()} == {
        "attn.layer2": 128, "attn.layer4": 512}


def test_explicit_stages_restrict_block_placement():
    model = create_model("resnet18", attention="cbam", stages=(3, 4))
    assert sorted(attention_paths(model)) == [
        "layer3.0.attn", "layer3.1.attn", "layer4.0.attn", "layer4.1.attn"]


def test_a_class_or_partial_defaults_to_block_placement():
    model = create_model("small_cnn", attention=attn2d.get("nonlocal"))
    assert model.placement == "block"
    assert sorted(attention_paths(model)) == ["block1.attn", "block2.attn", "block3.attn"]


def test_block_attention_acts_after_the_last_bn_and_before_the_residual_add():
    torch.manual_seed(0)
    model = create_model("resnet18", attention=Zero, stages=(1,)).eval()
    block = model.layer1[0]
    x = torch.randn(2, 64, 8, 8)
    # Zeroing the residual branch leaves relu(shortcut) = relu(x): nothing after the add
    # and the whole branch (conv, BN) before the attention.
    torch.testing.assert_close(block(x), torch.relu(x))


def test_small_cnn_block_attention_acts_before_the_pool_and_stage_attention_after():
    x = torch.randn(2, 3, 8, 8)
    block_model = create_model("small_cnn", attention=Zero, placement="block", stages=(1,))
    assert torch.count_nonzero(block_model.block1(x)) == 0
    stage_model = create_model("small_cnn", attention=Zero, placement="stage", stages=(1,))
    # attention after block 1 receives the pooled map: 32 channels at half resolution
    seen = []
    stage_model.attn["block1"].register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    stage_model(x)
    assert seen == [torch.Size([2, 32, 4, 4])]


def test_backbone_is_initialised_before_attention_so_identity_blocks_stay_identity():
    x = torch.randn(2, 3, 16, 16)
    for name in ("small_cnn", "resnet18"):
        torch.manual_seed(1)
        plain = create_model(name).eval()
        torch.manual_seed(1)
        attended = create_model(name, attention="nonlocal").eval()
        for path in ("attn.layer1", "attn.block1"):
            if path in dict(attended.named_modules()):
                norm = attended.get_submodule(path).norm
                assert torch.count_nonzero(norm.weight) == 0  # not reset to 1 by the init
        with torch.no_grad():
            torch.testing.assert_close(attended(x), plain(x))


def test_backbone_uses_kaiming_fan_out_and_unit_batchnorm():
    torch.manual_seed(0)
    model = create_model("resnet18", attention="gc")
    conv = model.layer3[0].conv2  # 256 -> 256, 3x3: std sqrt(2 / (256 * 9))
    assert math.isclose(conv.weight.std().item(), math.sqrt(2 / (256 * 9)), rel_tol=0.05)
    assert torch.all(model.layer2[1].bn2.weight == 1) and torch.all(model.layer2[1].bn2.bias == 0)
    gc = model.layer1[0].attn
    last_conv = [m for m in gc.modules() if isinstance(m, nn.Conv2d)][-1]
    assert torch.count_nonzero(last_conv.weight) == 0  # GC's zero-initialised conv kept


@pytest.mark.parametrize("attention", [None, "none"])
def test_no_attention_gives_identity_slots(attention):
    model = create_model("resnet18", attention=attention)
    assert isinstance(model.layer1[0], BasicBlock) and isinstance(model.layer1[0].attn, nn.Identity)
    assert model.placement is None and not attention_paths(model)


def test_bad_arguments_fail_with_a_clear_message():
    with pytest.raises(ValueError, match="placement"):
        create_model("resnet18", attention="se", placement="everywhere")
    with pytest.raises(ValueError, match=r"stage numbers in 1\.\.4"):
        create_model("resnet18", attention="se", stages=(0, 5))
    with pytest.raises(ValueError, match=r"stage numbers in 1\.\.3"):
        create_model("small_cnn", attention="se", stages=(4,))
    with pytest.raises(Attn2dError, match="own module"):
        create_model("small_cnn", attention=attn2d.create("se", 32))
    with pytest.raises(ValueError, match="unknown mechanism"):
        create_model("small_cnn", attention="sse")
    with pytest.raises(ValueError, match="expected num_classes >= 1"):
        create_model("small_cnn", num_classes=0)


def test_models_train_one_step():
    model = create_model("small_cnn", attention="cbam", in_channels=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None for p in model.block2.attn.parameters())
    opt.step()


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_every_backbone_takes_the_one_set_of_attention_keywords(name):
    from attn2d.models import AttentionOptions

    assert set(AttentionOptions.__annotations__) == {"attention", "placement", "stages",
                                                      "attention_init"}
    model = create_model(name, attention="se", placement="stage", stages=(1,),
                         attention_init="identity")
    assert list(model.attn) == [model.stage_names[0]]
    with pytest.raises(Attn2dError, match=r"unknown keyword 'placment'; valid: .*placement"):
        create_model(name, attention="se", placment="stage")
