"""Gradient checks: :func:`torch.autograd.gradcheck` on a float64 copy of a module, with
respect to the input and to every parameter (``attn2d trace --gradcheck``)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd.gradcheck import GradcheckError
from torch.func import functional_call

from .._base.errors import Attn2dError
from ..modules.registry import create

__all__ = ["GradcheckReport", "check_gradients"]


@dataclass
class GradcheckReport:
    """Result of :func:`check_gradients`: one ``(what, shape, passed, detail)`` per check."""

    module: str
    input_shape: tuple[int, ...]
    checks: list[tuple[str, tuple[int, ...], bool, str]]

    @property
    def passed(self) -> bool:
        return all(ok for _, _, ok, _ in self.checks)

    def render(self) -> str:
        head = (f"gradcheck {self.module} on input {tuple(self.input_shape)} (float64, eval "
                f"mode): {'PASS' if self.passed else 'FAIL'}")
        width = max(len(w) for w, *_ in self.checks)
        lines = [head]
        for what, shape, ok, detail in self.checks:
            line = f"  {'ok  ' if ok else 'FAIL'}  {what.ljust(width)}  {tuple(shape)}"
            lines.append(line + (f"\n        {detail}" if detail else ""))
        return "\n".join(lines)

    __str__ = render


def _first_lines(message: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    return " | ".join(lines[:n])


def check_gradients(
    module_or_spec: nn.Module | str,
    input_shape: Sequence[int],
    channels: int | None = None,
    *,
    train: bool = False,
    seed: int = 0,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> GradcheckReport:
    """:func:`torch.autograd.gradcheck` of a module w.r.t. its input and each parameter.

    The module is deep-copied and converted to float64 (the original is untouched), then
    put in eval mode: gradcheck evaluates the function hundreds of times and compares
    finite differences with autograd, so it must be the same deterministic function on
    every call: dropout must be off, and BatchNorm must use its running statistics (a
    fixed affine map) rather than update them on every call. ``train=True`` checks train
    mode instead (BatchNorm then normalises with batch statistics, still deterministic).

    Args:
        module_or_spec: a module, or a registry spec string such as ``"cbam"``.
        input_shape: (B, C, H, W) of the random test input; keep it small (every input
            and parameter element costs two forward passes).
        channels: channels for a spec string; default ``input_shape[1]``.
        train: check in train mode instead of eval mode.
        seed: seed of the random input.
        atol, rtol: gradcheck tolerances.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) < 1 or any(d < 1 for d in shape):
        raise Attn2dError(f"check_gradients: expected a positive input shape such as "
                          f"(1, 8, 5, 5), got {tuple(input_shape)}")
    if isinstance(module_or_spec, str):
        name = module_or_spec
        module = create(module_or_spec, channels if channels is not None else shape[1])
    elif isinstance(module_or_spec, nn.Module):
        name = type(module_or_spec).__name__
        module = copy.deepcopy(module_or_spec)
    else:
        raise Attn2dError("check_gradients: expected an nn.Module or a spec string, got "
                          f"{type(module_or_spec).__name__}")
    module = module.double().train(train)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    params = {n: p.detach().clone().requires_grad_(True) for n, p in module.named_parameters()}

    checks = []
    for what in ["input", *names]:
        def f(t: Tensor, what: str = what) -> Tensor:
            if what == "input":
                return functional_call(module, params, (t,))
            return functional_call(module, {**params, what: t}, (x,))

        target = x if what == "input" else params[what]
        try:
            ok = torch.autograd.gradcheck(f, (target,), eps=1e-6, atol=atol, rtol=rtol,
                                          raise_exception=True)
            detail = ""
        except GradcheckError as err:
            ok, detail = False, _first_lines(str(err))
        except RuntimeError as err:  # e.g. an output that does not require grad
            ok, detail = False, f"{type(err).__name__}: {_first_lines(str(err), 2)}"
        checks.append((what, tuple(target.shape), bool(ok), detail))
    return GradcheckReport(name, shape, checks)
