from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

import attn2d
from attn2d import Attn2dError
from attn2d.models import attention_modules, create_model, inject
from attn2d.modules.registry import is_mechanism


def mechanisms(model: nn.Module) -> dict[str, int]:
    return {p: m.channels for p, m in model.named_modules() if is_mechanism(m)}


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def tv_resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def test_block_injection_into_torchvision_resnet18_keeps_keys_and_adds_one_per_block(x):
    model = tv_resnet18()
    before = model.state_dict()
    inject(model, "se")
    assert mechanisms(model) == {f"layer{s}.{i}.attn": 64 * 2 ** (s - 1)
                                 for s in range(1, 5) for i in range(2)}
    missing, unexpected = model.load_state_dict(before, strict=False)
    assert not unexpected and all(".attn." in k for k in missing)
    assert model(x).shape == (2, 10)


def test_block_injection_acts_after_last_bn_before_the_add(x):
    model = tv_resnet18()
    block = model.layer1[0]
    inject(model, lambda c: nn.Identity() if c != 64 else _Zero())
    h = torch.randn(1, 64, 8, 8)
    torch.testing.assert_close(block(h), torch.relu(h))  # residual branch erased


class _Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


@pytest.mark.parametrize("where", ["block", "stage", ["layer2.1.bn2", "layer3"]])
def test_nonlocal_injection_keeps_torchvision_output_at_init(where, x):
    model = tv_resnet18()
    with torch.no_grad():
        expected = model(x)
        inject(model, "nonlocal", where)
        torch.testing.assert_close(model(x), expected)
    if where == "stage":
        assert mechanisms(model) == {"attn.layer1": 64, "attn.layer2": 128,
                                     "attn.layer3": 256, "attn.layer4": 512}
    elif where != "block":
        assert mechanisms(model) == {"attn.layer2_1_bn2": 128, "attn.layer3": 256}


def test_injection_into_torchvision_resnet50_bottlenecks_uses_expanded_channels():
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    inject(model, "nonlocal")
    assert mechanisms(model)["layer1.0.attn"] == 256
    assert mechanisms(model)["layer4.2.attn"] == 2048
    assert len(mechanisms(model)) == 16


def test_injection_into_timm_resnet_blocks():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    inject(model, "cbam")
    assert len(mechanisms(model)) == 8 and mechanisms(model)["layer4.1.attn"] == 512
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


# timm >= 1.0.20 calls attn_layer(channels, device=..., dtype=...).
def test_timm_accepts_an_attn2d_class_as_its_attention_layer():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=10,
                              block_args=dict(attn_layer=attn2d.get("cbam"))).eval()
    assert sum(isinstance(m, attn2d.CBAM) for m in model.modules()) == 8
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_injected_model_trains(x):
    model = inject(tv_resnet18().train(), "se")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    y = torch.tensor([1, 2])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert model.layer3[1].attn.fc1.weight.grad.abs().sum() > 0
    opt.step()
    assert torch.isfinite(nn.functional.cross_entropy(model(x), y))


def test_deepcopy_of_an_injected_model_uses_its_own_attention(x):
    model = inject(tv_resnet18(), "se")
    twin = copy.deepcopy(model)
    with torch.no_grad():
        expected = model(x)
        twin.layer1[0].attn = _Zero()  # only the copy changes
        assert not torch.allclose(twin(x), expected)
        torch.testing.assert_close(model(x), expected)


def test_injection_into_attn2d_backbones_fills_their_slots(x):
    model = inject(create_model("small_cnn"), "se")
    assert mechanisms(model) == {"block1.attn": 32, "block2.attn": 64, "block3.attn": 128}
    model = create_model("resnet18").eval()
    with torch.no_grad():
        expected = model(x)
        inject(model, "nonlocal", "stage")
        torch.testing.assert_close(model(x), expected)
    assert sorted(mechanisms(model)) == [f"attn.layer{s}" for s in range(1, 5)]
    calls = []
    model.attn["layer4"].register_forward_hook(lambda *a: calls.append(1))
    model(x)
    assert calls == [1]  # applied once, by the backbone itself (no extra hook)


def test_no_matching_place_or_bad_path_gives_a_clear_error():
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    with pytest.raises(ValueError, match="found none"):
        inject(plain, "se")
    with pytest.raises(ValueError, match=r"stages .* found none; e\.g\. where=\['0', '1'\]"):
        inject(plain, "se", "stage")
    with pytest.raises(ValueError, match=r"did you mean .*'layer1'"):
        inject(tv_resnet18(), "se", ["layer11"])
    with pytest.raises(ValueError, match="feature map"):
        inject(tv_resnet18(), "se", ["fc"])
    model = inject(tv_resnet18(), "se")
    with pytest.raises(ValueError, match="already injected"):
        inject(model, "eca")


def test_sequential_models_keep_their_layers_and_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    keys = list(model.state_dict())
    inject(model, "se", where=["1", "2"])
    assert len(model) == 6 and [type(m) for m in model][-1] is nn.Linear
    assert [k for k in model.state_dict() if ".attn." not in k] == keys
    after_relu, after_stage = model[1].attn["1"], model[2][1].attn["2"]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():  # by hand, calling no hooked module (model[1], model[2])
        h = after_relu(torch.relu(model[0](x)))
        h = after_stage(model[2][1](model[2][0](h)))
        expected = model[5](model[4](model[3](h)))
        torch.testing.assert_close(model(x), expected)


def test_places_without_a_feature_map_are_refused_by_name():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
    with pytest.raises(ValueError, match=r"run on a \(1, 3, 64, 64\) input.*input_shape"):
        inject(model, "se", where=["2"])  # the guessed 64x64 input does not fit the Linear
    with pytest.raises(ValueError, match=r"output of '2' \(Linear\) to be a \(B, C, H, W\)"):
        inject(model, "se", where=["2"], input_shape=(3, 32, 32))
    assert not any(is_mechanism(m) for m in model.modules())


def test_a_module_used_twice_is_refused():
    with pytest.raises(ValueError, match=r"'layer1.0.relu' to run once .* ran 2 times"):
        inject(tv_resnet18(), "se", ["layer1.0.relu"])


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="attention_init"):
        inject(tv_resnet18(), "se", init="zero")
    with pytest.raises(Attn2dError, match="replace"):
        inject(tv_resnet18(), "se", replace="yes")
    with pytest.raises(ValueError, match="stages only with"):
        inject(tv_resnet18(), "se", ["layer1"], stages=(1,))
    with pytest.raises(Attn2dError, match="own module"):
        inject(tv_resnet18(), attn2d.create("se", 64))
    with pytest.raises(Attn2dError, match=r"return an nn\.Module"):
        inject(tv_resnet18(), lambda c: 3)


def test_attention_follows_the_model_dtype():
    model = inject(tv_resnet18().double(), "cbam")
    inject(model, "eca", ["layer2"])
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model(torch.randn(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64


def test_stages_restrict_block_injection_in_attn2d_backbones_too():
    model = inject(create_model("small_cnn"), "se", stages=(2,))
    assert mechanisms(model) == {"block2.attn": 64}
    model = inject(create_model("resnet18"), "eca", stages=(4,), init="identity")
    assert sorted(p for p, _ in attention_modules(model)) == ["layer4.0.attn", "layer4.1.attn"]
    with pytest.raises(ValueError, match=r"stage numbers in 1\.\.3"):
        inject(create_model("small_cnn"), "se", stages=(4,))
