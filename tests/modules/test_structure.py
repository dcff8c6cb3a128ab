"""How mechanisms are put together, across the registry: composites call their children as
modules (hooks fire), check the input once, re-initialise, and take an empty batch."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import attn2d
from attn2d.modules import _common
from attn2d.modules.capture import capturing
from tests.helpers import activate

NAMES = [m.name for m in attn2d.available()]

# Every child that computes part of the output; taps of fast paths only while capturing.
PARTS = {
    "cbam": ["channel_gate", "spatial_gate", "channel_gate.mlp", "spatial_gate.conv",
             "spatial_gate.bn", "channel_gate.weights", "spatial_gate.weights"],
    "cbam-parallel": ["channel_gate", "spatial_gate", "channel_gate.weights",
                      "spatial_gate.weights"],
    "cbam-lite": ["channel_gate", "spatial_gate", "spatial_gate.conv"],
    "cbam-dynamic": ["mlps.0", "mlps.1", "mlps.2", "spatial.0", "spatial.1", "spatial.2",
                     "reduction_mixture", "kernel_mixture", "channel_weights",
                     "spatial_weights"],
    "bam": ["channel", "spatial", "channel.fc1", "channel.bn", "channel.fc2", "weights"],
    "danet": ["position", "channel", "position.query", "position.key", "position.value",
              "channel.weights"],
    "rcca": ["query", "key", "value", "attention"],
    "triplet": ["over_cw", "over_hc", "over_hw", "weights_cw", "weights_hc", "weights_hw"],
}
CAPTURED_ONLY = {"danet": ["position.weights"], "rcca": ["attention.weights"]}


class Calls:
    """Counts forward and pre-forward hook calls on chosen submodules."""

    def __init__(self, root: nn.Module, paths: list[str]) -> None:
        modules = dict(root.named_modules())
        self.pre = dict.fromkeys(paths, 0)
        self.post = dict.fromkeys(paths, 0)
        self.handles = []
        for path in paths:
            module = modules[path]
            self.handles.append(module.register_forward_pre_hook(self._count(self.pre, path)))
            self.handles.append(module.register_forward_hook(self._count(self.post, path)))

    @staticmethod
    def _count(counts: dict[str, int], path: str):
        def hook(*_args) -> None:
            counts[path] += 1

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("name", list(PARTS))
def test_hooks_fire_on_every_child_that_computes_part_of_the_output(name):
    module = attn2d.create(name, 16).eval()
    x = torch.randn(2, 16, 5, 6)
    late = CAPTURED_ONLY.get(name, [])
    calls = Calls(module, PARTS[name] + late)
    module(x)
    fired = {p for p, n in calls.post.items() if n}
    assert fired == set(PARTS[name]), set(PARTS[name]) - fired
    assert calls.pre == calls.post
    with capturing(module):
        module(x)
    calls.remove()
    assert all(calls.post[p] >= 1 for p in late)


def test_rcca_calls_its_attention_once_per_pass():
    rcca = attn2d.create("rcca", 8)
    calls = Calls(rcca, ["attention", "query"])
    rcca(torch.randn(1, 8, 4, 4))
    calls.remove()
    assert calls.post == {"attention": 2, "query": 2}


def test_danet_branches_return_their_terms_and_the_block_adds_x_once():
    danet = activate(attn2d.create("danet", 8)).double().eval()
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    seen = {}
    handles = [getattr(danet, n).register_forward_hook(
        lambda _m, _i, out, n=n: seen.__setitem__(n, out)) for n in ("position", "channel")]
    y = danet(x)
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(y, x + seen["position"] + seen["channel"])
    # the same branches used alone (as pam and cam) add the residual
    pam, cam = attn2d.create("pam", 8).double(), attn2d.create("cam", 8).double()
    pam.load_state_dict(danet.position.state_dict())
    cam.load_state_dict(danet.channel.state_dict())
    torch.testing.assert_close(pam(x), x + seen["position"])
    torch.testing.assert_close(cam(x), x + seen["channel"])


@pytest.mark.parametrize("name", ["cbam", "cbam-parallel", "cbam-lite", "danet"])
def test_composites_check_their_input_once(name, monkeypatch):
    checks = []
    original = _common.expect_feature_map
    monkeypatch.setattr(_common, "expect_feature_map",
                        lambda *args, **kwargs: (checks.append(kwargs.get("owner")),
                                                 original(*args, **kwargs)))
    attn2d.create(name, 16)(torch.randn(1, 16, 4, 4))
    assert checks == [name]


def test_children_used_alone_still_check_their_input():
    cbam = attn2d.create("cbam", 16)
    gate = attn2d.modules.ChannelGate(16)
    gate.load_state_dict(cbam.channel_gate.state_dict())
    with pytest.raises(ValueError, match="channel-gate: expected 16 channels"):
        gate(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="danet-head: expected 16 channels"):
        attn2d.modules.DANetHead(16, 3)(torch.randn(1, 8, 4, 4))


# -- re-initialisation ---------------------------------------------------------------


def perturb(module: nn.Module) -> None:
    activate(module, scale=3.0, seed=7)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_batches_tracked is not None:
            m.num_batches_tracked.fill_(5)


@pytest.mark.parametrize("name", NAMES)
def test_reset_parameters_gives_a_fresh_modules_state(name):
    torch.manual_seed(3)
    fresh = attn2d.create(name, 16).state_dict()
    module = attn2d.create(name, 16)
    perturb(module)
    changed = [k for k, v in module.state_dict().items() if not torch.equal(v, fresh[k])]
    assert len(changed) == len(fresh)  # every parameter and buffer was moved away
    torch.manual_seed(3)
    module.reset_parameters()
    state = module.state_dict()
    assert list(state) == list(fresh)
    for key, value in fresh.items():
        assert torch.equal(state[key], value), key


@pytest.mark.parametrize("name", ["pam", "cam", "danet", "criss-cross", "rcca", "nonlocal", "gc"])
def test_reset_parameters_restores_the_identity_start(name):
    module = attn2d.create(name, 16)
    perturb(module)
    x = torch.randn(2, 16, 5, 4)
    assert not torch.equal(module(x), x)
    module.reset_parameters()
    assert torch.equal(module.train()(x), x)


# -- empty batch -----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("capture", [False, True])
def test_an_empty_batch_gives_an_empty_output(name, training, capture):
    module = activate(attn2d.create(name, 16)).train(training)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    x = torch.randn(0, 16, 5, 6, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with capturing(module) if capture else warnings.catch_warnings():
            y = module(x)
        y.sum().backward()
    assert y.shape == x.shape and y.dtype == x.dtype
    assert x.grad is not None and x.grad.shape == x.shape
    for key, value in module.state_dict().items():  # no statistics from nothing
        if value.is_floating_point():  # (PyTorch's BatchNorm still counts the call)
            assert torch.equal(value, before[key]), key
