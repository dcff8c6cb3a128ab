"""inject's knowledge of torchvision's and timm's blocks, each tested on one block built alone."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models import convnext, efficientnet, mobilenetv2, mobilenetv3, resnet

from attn2d.models import attention_modules, inject
from tests.helpers import activate

try:  # timm is optional: its cases are skipped without it
    import timm
    from timm.models import _efficientnet_blocks as eff
    from timm.models import convnext as timm_convnext
    from timm.models import resnet as timm_resnet
except ImportError:
    timm = None

C = 16


def tv_mobilenet_v3(se: bool = True) -> nn.Module:
    cnf = mobilenetv3.InvertedResidualConfig(C, 3, 48, C, se, "HS", 1, 1, 1.0)
    return mobilenetv3.InvertedResidual(cnf, nn.BatchNorm2d)


# name -> (block builder, its input channels, what the block returns once its branch is zero)
BLOCKS = {
    "tv-basic": (lambda: resnet.BasicBlock(C, C), C, torch.relu),
    "tv-bottleneck": (lambda: resnet.Bottleneck(4 * C, C), 4 * C, torch.relu),
    "tv-mobilenet-v2": (lambda: mobilenetv2.InvertedResidual(C, C, 1, 4), C, None),
    "tv-mobilenet-v3": (tv_mobilenet_v3, C, None),
    "tv-mbconv": (lambda: efficientnet.MBConv(efficientnet.MBConvConfig(4, 3, 1, C, C, 1), 0.0,
                                              nn.BatchNorm2d), C, None),
    "tv-fused-mbconv": (lambda: efficientnet.FusedMBConv(
        efficientnet.FusedMBConvConfig(4, 3, 1, C, C, 1), 0.0, nn.BatchNorm2d), C, None),
    "tv-cnblock": (lambda: convnext.CNBlock(C, 0.5, 0.0), C, None),
    "timm-basic": (lambda: timm_resnet.BasicBlock(C, C), C, torch.relu),
    "timm-se-bottleneck": (lambda: timm_resnet.Bottleneck(
        4 * C, C, attn_layer=timm.layers.SEModule), 4 * C, torch.relu),
    "timm-inverted-residual": (lambda: eff.InvertedResidual(
        C, C, exp_ratio=4, se_layer=eff.SqueezeExcite), C, None),
    "timm-depthwise-separable": (lambda: eff.DepthwiseSeparableConv(
        C, C, se_layer=eff.SqueezeExcite), C, None),
    "timm-edge-residual": (lambda: eff.EdgeResidual(C, C, exp_ratio=4), C, None),
    "timm-convnext": (lambda: timm_convnext.ConvNeXtBlock(C, ls_init_value=0.5), C, None),
    "timm-convnext-conv-mlp": (lambda: timm_convnext.ConvNeXtBlock(
        C, conv_mlp=True, ls_init_value=0.5), C, None),
}


def cases(*names: str) -> list:
    return [pytest.param(n, marks=pytest.mark.skipif(
        timm is None and n.startswith("timm"), reason="needs timm")) for n in names]


class Zero(nn.Module):
    """Erases the residual branch; checks it sees a channels-first map of its width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 4 and x.shape[1] == self.channels, (tuple(x.shape), self.channels)
        return torch.zeros_like(x)


class Ones(Zero):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        super().forward(x)
        return torch.ones_like(x)


class Pass(Zero):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        super().forward(x)
        return x


def built(name: str) -> tuple[nn.Module, torch.Tensor]:
    make, channels, _ = BLOCKS[name]
    block = activate(make()).eval()
    # 5x7 maps: a channels-last tensor would fail Zero's channel check
    return block, torch.randn(2, channels, 5, 7, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", cases(*BLOCKS))
def test_erasing_the_branch_leaves_the_shortcut(name):
    block, x = built(name)
    inject(block, Zero)
    after_add = BLOCKS[name][2]
    with torch.no_grad():
        torch.testing.assert_close(block(x), after_add(x) if after_add else x)


@pytest.mark.parametrize("name", cases(*BLOCKS))
def test_identity_mechanisms_keep_output_and_keys(name):
    block, x = built(name)
    with torch.no_grad():
        expected = block(x)
    keys = set(block.state_dict())
    for spec in ("nonlocal", "gc", "pam", "danet", "criss-cross"):
        twin = inject(copy.deepcopy(block), spec)
        added = set(twin.state_dict()) - keys
        assert keys <= set(twin.state_dict()) and added and all(k.startswith("attn.")
                                                                 for k in added)
        with torch.no_grad():
            torch.testing.assert_close(twin(x), expected, msg=f"{spec} changed {name}")


@pytest.mark.parametrize("name", cases("tv-cnblock", "timm-convnext", "timm-convnext-conv-mlp"))
def test_convnext_attention_acts_before_the_layer_scale(name):
    block, x = built(name)
    inject(block, Ones)
    gamma = block.layer_scale if name == "tv-cnblock" else block.gamma.reshape(-1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + gamma)  # x + γ·1, not x + 1


@pytest.mark.parametrize("name", cases("tv-mobilenet-v3", "tv-mbconv", "timm-inverted-residual",
                                      "timm-depthwise-separable", "timm-se-bottleneck"))
def test_replace_puts_the_mechanism_where_the_se_was(name):
    block, x = built(name)
    parent, attr = {"tv-mobilenet-v3": ("block", "2"), "tv-mbconv": ("block", "2")}.get(
        name, ("", "se"))
    owner = block.get_submodule(parent)
    se_type = type(getattr(owner, attr))
    reference = copy.deepcopy(block)
    setattr(reference.get_submodule(parent), attr, nn.Identity())  # what a no-op SE gives
    inject(block, Pass, replace=True)
    place = f"{parent}.{attr}".lstrip(".")
    assert [p for p, _ in attention_modules(block)] == [place]
    assert not any(isinstance(m, se_type) for m in block.modules())
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference(x))


def test_without_replace_the_mechanism_follows_the_se():
    pytest.importorskip("timm")
    block, x = built("timm-se-bottleneck")
    seen = {}

    def keep(name):
        def hook(module, inputs, output):
            seen[name] = (inputs[0] if name == "attn" else output).clone()
        return hook

    block.se.register_forward_hook(keep("se"))
    inject(block, Pass)
    block.attn.register_forward_hook(keep("attn"))
    with torch.no_grad():
        block(x)
    torch.testing.assert_close(seen["attn"], seen["se"])


def test_replace_refuses_blocks_without_an_se():
    with pytest.raises(ValueError, match="holding an SE of their own"):
        inject(tv_mobilenet_v3(se=False), "eca", replace=True)
    with pytest.raises(ValueError, match="where='block' with replace=True"):
        inject(tv_mobilenet_v3(), "eca", "stage", replace=True)


def test_replacing_twice_is_refused():
    pytest.importorskip("timm")
    block = inject(built("timm-inverted-residual")[0], "eca", replace=True)
    with pytest.raises(ValueError, match="attention already there"):
        inject(block, "se", replace=True)
    block = inject(tv_mobilenet_v3(), "eca", replace=True)  # the SE's class is gone
    with pytest.raises(ValueError, match="holding an SE of their own"):
        inject(block, "se", replace=True)
