"""Bad input: each case must name the module and say what was expected and what was given."""

from __future__ import annotations

import pytest
import torch

import attn2d
from attn2d import Attn2dError

NAMES = [m.name for m in attn2d.available()]


def owner_names(name: str) -> set[str]:
    """The registry names sharing this mechanism's class (rcca reports as criss-cross)."""
    cls = attn2d.lookup(name).cls
    return {row.name for row in attn2d.available() if row.cls is cls} | {cls.__name__.lower()}


def assert_clear(info: pytest.ExceptionInfo, name: str) -> None:
    message = str(info.value)
    assert "expected" in message, message
    assert any(owner in message.lower() for owner in owner_names(name)), message


@pytest.mark.parametrize("name", NAMES)
def test_wrong_channel_count(name):
    module = attn2d.create(name, 16)
    with pytest.raises(ValueError) as info:
        module(torch.randn(2, 12, 5, 5))
    assert_clear(info, name)
    assert "16" in str(info.value) and "12" in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_input_that_is_not_four_dimensional(name):
    module = attn2d.create(name, 16)
    with pytest.raises(ValueError) as info:
        module(torch.randn(16, 5, 5))
    assert_clear(info, name)
    assert "(16, 5, 5)" in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_integer_input(name):
    module = attn2d.create(name, 16)
    with pytest.raises(Attn2dError) as info:
        module(torch.ones(2, 16, 5, 5, dtype=torch.int64))
    assert_clear(info, name)
    assert "int64" in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_input_that_is_not_a_tensor(name):
    module = attn2d.create(name, 16)
    with pytest.raises(Attn2dError) as info:
        module([[1.0]])
    assert_clear(info, name)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "simam"])
@pytest.mark.parametrize("channels", [0, -3])
def test_channel_count_must_be_positive(name, channels):
    with pytest.raises(ValueError) as info:
        attn2d.create(name, channels)
    assert_clear(info, name)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "simam"])
def test_channel_count_must_be_an_int(name):
    with pytest.raises(Attn2dError) as info:
        attn2d.create(name, 16.0)
    assert_clear(info, name)


@pytest.mark.parametrize("spec, name", [
    ("se(reduction=0)", "se"),
    ("se(reduction=-4)", "se"),
    ("cbam(reduction=0)", "cbam"),
    ("bam(reduction=0)", "bam"),
    ("gc(reduction=0)", "gc"),
    ("pam(reduction=0)", "pam"),
    ("criss-cross(reduction=0)", "criss-cross"),
    ("nonlocal(reduction=0)", "nonlocal"),
])
def test_hidden_width_below_one(spec, name):
    with pytest.raises(ValueError) as info:
        attn2d.create(spec, 16)
    assert_clear(info, name)


@pytest.mark.parametrize("spec, name", [
    ("cbam(spatial_kernel=4)", "cbam"),
    ("cbam-parallel(spatial_kernel=6)", "cbam-parallel"),
    ("cbam-lite(spatial_kernel=2)", "cbam-lite"),
    ("eca(kernel_size=4)", "eca"),
    ("triplet(kernel_size=8)", "triplet"),
])
def test_even_kernel(spec, name):
    with pytest.raises(ValueError) as info:
        attn2d.create(spec, 16)
    assert_clear(info, name)
    assert "odd" in str(info.value)


@pytest.mark.parametrize("spec, name, fragment", [
    ("nonlocal(mode='gaussain')", "nonlocal", "gaussain"),
    ("cbam(pool_types=('avg', 'median'))", "cbam", "median"),
    ("bam(combine='sum')", "bam", "sum"),
])
def test_unknown_option_value(spec, name, fragment):
    with pytest.raises(ValueError) as info:
        attn2d.create(spec, 16)
    assert_clear(info, name)
    assert fragment in str(info.value)
