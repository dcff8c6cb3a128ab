"""Properties every mechanism must have, checked across the whole registry."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attn2d
from tests.helpers import MapCatcher, activate, attention_maps

NAMES = [m.name for m in attn2d.available()]
IDENTITY_AT_INIT = ["nonlocal", "pam", "cam", "danet", "criss-cross", "rcca", "gc"]


def test_registry_has_every_spec_mechanism():
    assert set(NAMES) == {
        "se", "eca", "cbam", "cbam-parallel", "cbam-lite", "cbam-dynamic", "bam", "nonlocal",
        "gc", "pam", "cam", "danet", "criss-cross", "rcca", "coord", "triplet", "simam",
    }  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.integers(1, 3),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    channels=st.sampled_from([8, 16, 24]),
    training=st.booleans(),
)
def test_output_shape_equals_input_shape(name, batch, height, width, channels, training):
    module = attn2d.create(name, channels).train(training)
    x = torch.randn(batch, channels, height, width)
    y = module(x)
    assert y.shape == x.shape
    assert y.dtype == x.dtype
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", IDENTITY_AT_INIT)
@pytest.mark.parametrize("training", [True, False])
def test_residual_blocks_start_as_identity(name, training):
    module = attn2d.create(name, 32).train(training)
    x = torch.randn(2, 32, 6, 5)
    assert torch.equal(module(x), x)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    module = activate(attn2d.create(name, 8)).double().eval()
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64, requires_grad=True)
    params = [p for p in module.parameters()]
    names = [n for n, _ in module.named_parameters()]

    def run(x, *param_values):
        return torch.func.functional_call(module, dict(zip(names, param_values)), (x,))

    inputs = (x, *(p.detach().clone().requires_grad_(True) for p in params))
    assert torch.autograd.gradcheck(run, inputs, fast_mode=True, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_is_finite_and_close(name):
    module = activate(attn2d.create(name, 32)).eval()
    x = torch.randn(2, 32, 12, 10)
    reference = module(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    scale = reference.abs().max()
    assert (y.float() - reference).abs().max() <= 0.05 * scale + 0.05


@pytest.mark.parametrize("name", NAMES)
def test_attention_maps_are_hooked_and_released(name):
    module = activate(attn2d.create(name, 16)).eval()
    points = attention_maps(module)
    assert points, f"{name} exposes no AttentionMap"
    with MapCatcher(module) as catcher:
        assert all(p.capture for p in points.values())
        module(torch.randn(2, 16, 6, 7))
    assert not any(p.capture for p in points.values())
    assert all(len(seen) >= 1 for seen in catcher.maps.values()), catcher.maps.keys()
    for seen in catcher.maps.values():
        for weights in seen:
            assert torch.isfinite(weights).all()


@pytest.mark.parametrize("name", NAMES)
def test_hooks_do_not_change_the_output(name):
    module = activate(attn2d.create(name, 16)).eval()
    x = torch.randn(2, 16, 6, 7)
    plain = module(x)
    with MapCatcher(module):
        listened = module(x)
    torch.testing.assert_close(listened, plain, rtol=1e-5, atol=1e-5)


class EveryMechanism(torch.nn.Module):
    """All mechanisms side by side, so one compilation covers the whole registry."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mechanisms = torch.nn.ModuleDict(
            {name.replace("-", "_"): attn2d.create(name, channels) for name in NAMES}
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: m(x) for name, m in self.mechanisms.items()}


@pytest.mark.slow
def test_torch_compile_matches_eager_for_every_mechanism():
    torch._dynamo.reset()
    model = activate(EveryMechanism(16)).eval()
    x = torch.randn(2, 16, 8, 6)
    expected = model(x)
    compiled = torch.compile(model)(x)
    for name in expected:
        torch.testing.assert_close(compiled[name], expected[name], rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_multilevel_applies_one_module_per_level():
    levels = attn2d.MultiLevel("cbam(reduction=4)", [8, 16, 32])
    features = [torch.randn(2, c, s, s) for c, s in [(8, 16), (16, 8), (32, 4)]]
    out = levels(features)
    assert [o.shape for o in out] == [f.shape for f in features]
    assert len(levels.levels) == 3
    for level, x, y in zip(levels.levels, features, out):
        torch.testing.assert_close(level(x), y)


def test_multilevel_rejects_wrong_number_of_maps():
    levels = attn2d.MultiLevel("se", [8, 16])
    with pytest.raises(ValueError, match="multilevel: expected 2 feature maps, got 1"):
        levels([torch.randn(1, 8, 4, 4)])
