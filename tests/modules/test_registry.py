"""The registry: names, spec strings (parsed, never evaluated) and clear errors."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import attn2d
from attn2d import Attn2dError
from attn2d.models import create_model
from attn2d.modules.registry import is_mechanism, outermost_mechanisms


def test_create_from_plain_name_and_from_spec_with_keywords():
    plain = attn2d.create("cbam", 64)
    tuned = attn2d.create("cbam(reduction=8, spatial_kernel=3)", 64)
    assert isinstance(plain, attn2d.CBAM) and isinstance(tuned, attn2d.CBAM)
    assert sum(p.numel() for p in tuned.parameters()) > sum(p.numel() for p in plain.parameters())
    x = torch.randn(2, 64, 5, 5)
    assert tuned(x).shape == x.shape


def test_spec_values_are_literals_of_any_kind():
    name, kwargs = attn2d.parse_spec(" cbam( reduction = 4, pool_types=('avg', 'lse'), "
                                     "no_spatial=True ) ")
    assert name == "cbam"
    assert kwargs == {"reduction": 4, "pool_types": ("avg", "lse"), "no_spatial": True}


def test_get_returns_a_factory_usable_as_a_layer():
    se = attn2d.get("se")
    assert se.cls is attn2d.SqueezeExcite
    assert isinstance(se(64), attn2d.SqueezeExcite)
    assert attn2d.get("rcca")(16).recurrence == 2
    assert attn2d.get("se(reduction=4)")(64).fc1.out_features == 16
    assert attn2d.get("se")(64, reduction=8).fc1.out_features == 8


def test_factory_takes_device_and_dtype_like_torch_layers():
    module = attn2d.get("cbam")(32, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in module.parameters())


def test_keyword_overrides_a_registry_default():
    assert attn2d.create("rcca(recurrence=3)", 16).recurrence == 3
    assert attn2d.create("rcca", 16, recurrence=1).recurrence == 1


def test_available_describes_every_mechanism():
    rows = attn2d.available()
    assert len(rows) == 17
    for row in rows:
        assert row.family in {"channel", "spatial", "hybrid", "global"}
        assert row.placement in {"block", "stage"}
        assert row.paper and row.summary
        assert is_mechanism(attn2d.create(row.name, 16))


def test_names_are_case_insensitive():
    assert isinstance(attn2d.create("SE", 16), attn2d.SqueezeExcite)


BAD_SPECS = [
    # (call, exception, every fragment the message must contain)
    (lambda: attn2d.create("cbma", 64), Attn2dError,
     ["unknown mechanism 'cbma'", "did you mean 'cbam'", "se, eca, cbam"]),
    (lambda: attn2d.create("se(redution=8)", 64), Attn2dError,
     ["unknown keyword", "'redution'", "did you mean 'reduction'", "valid: reduction"]),
    (lambda: attn2d.create("se(reduction=8", 64), Attn2dError, ["malformed spec"]),
    (lambda: attn2d.create("se(8)", 64), Attn2dError, ["positional", "keywords only"]),
    (lambda: attn2d.create("se(reduction=__import__('os').getpid())", 64), Attn2dError,
     ["must be a literal"]),
    (lambda: attn2d.create("se(**{'reduction': 2})", 64), Attn2dError, ["'**' is not allowed"]),
    (lambda: attn2d.create("", 64), Attn2dError, ["malformed spec"]),
    (lambda: attn2d.create(None, 64), Attn2dError, ["expected a mechanism name or spec string"]),
    (lambda: attn2d.get(7), Attn2dError, ["expected a mechanism name"]),
    (lambda: attn2d.create("cbam(reduction=8, reduction=4)", 64), Attn2dError,
     ["expected each keyword once", "'reduction' twice"]),
    (lambda: attn2d.get("se")(64, redution=8), Attn2dError,
     ["unknown keyword", "did you mean 'reduction'"]),
    (lambda: attn2d.get("se(redution=8)"), Attn2dError, ["unknown keyword", "'redution'"]),
]


@pytest.mark.parametrize("call, error, fragments", BAD_SPECS)
def test_bad_spec_gives_a_clear_error(call, error, fragments):
    with pytest.raises(error) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value)
    # the one type the CLI turns into one line, worded "expected|unknown|malformed …"
    assert isinstance(info.value, Attn2dError)
    assert re.match(r"(expected|unknown|malformed) ", str(info.value)), info.value


def test_spec_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ValueError):
        attn2d.create(f"se(reduction=open({str(marker)!r}, 'w'))", 64)
    assert not marker.exists()


def test_create_is_get_then_call():
    torch.manual_seed(0)
    made = attn2d.create("cbam(reduction=8)", 32, spatial_kernel=3)
    torch.manual_seed(0)
    got = attn2d.get("cbam(reduction=8)")(32, spatial_kernel=3)
    assert repr(made) == repr(got)
    for (k, a), (_, b) in zip(made.state_dict().items(), got.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_outermost_mechanisms_skip_nested_ones():
    model = create_model("small_cnn", attention="danet", placement="stage", in_channels=1)
    found = outermost_mechanisms(model)
    assert [type(m).__name__ for _, m in found] == ["DualAttention"] * len(found) and found
    paths = [p for p, _ in found]
    assert all(not q.startswith(f"{p}.") for p in paths for q in paths)
    assert all(f"{p}.position" in dict(model.named_modules()) for p in paths)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), attn2d.create("cbam", 4))
    assert outermost_mechanisms(plain) == [("1", plain[1])]
    mechanism = attn2d.create("danet", 8)
    assert outermost_mechanisms(mechanism) == [("", mechanism)]
