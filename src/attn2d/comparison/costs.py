"""The cost columns: every model of a comparison timed in one process, interleaved.

After the runs, :func:`measure_costs` builds each mechanism's model once more and times its
eval-mode forward pass and its training step round by round, alternating models
(:func:`attn2d.tools.timing.time_interleaved`), so load on a shared machine hits them alike;
the figures are stored in ``OUT/costs.json`` so that ``attn2d report`` never re-measures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .._base.amp import autocast
from .._base.io import read_json, write_json
from ..tools.timing import peak_memory, time_interleaved
from ..training import RunResult, build_model
from .plan import slug

__all__ = ["costs_measured", "measure_costs"]


def costs_measured(out: Path, specs: Sequence[str]) -> bool:
    """Whether ``costs.json`` already holds every mechanism (a rerun measures nothing
    again, so its table stays the same)."""
    path = out / "costs.json"
    return path.is_file() and set(specs) <= set(
        read_json(path, "a comparison's costs.json")["rows"])


def _finished_configs(out: Path, specs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One finished run's saved config per mechanism (any seed: costs ignore the weights)."""
    found = {}
    for spec in specs:
        for result in sorted((out / "runs").glob(f"{slug(spec)}-seed*/result.json")):
            found[spec] = RunResult.read(result).config
            break
    return found


def measure_costs(out: str | Path, specs: Sequence[str], device: torch.device | str = "cpu",
                  budget_s: float = 2.0) -> dict[str, Any]:
    """Time every model of a comparison in this one process and store ``costs.json``.

    For each mechanism with a finished run: the forward latency of a batch in eval mode
    (no grad), the time of a training step (forward, loss, backward, optimiser step) and
    the allocator's peak memory of a training step above what was allocated before it
    (CUDA ``max_memory_allocated``; on the CPU the allocator's records). Steps of all models
    alternate round by round (:func:`attn2d.timing.time_interleaved`), so load on a shared
    machine hits them alike. Eager execution, the runs' batch size, autocast and layout.
    """
    out, device = Path(out), torch.device(device)
    configs = _finished_configs(out, specs)
    if not configs:
        return {}
    forward, train_steps, nets = {}, {}, {}
    for spec, config in configs.items():
        forward[spec], train_steps[spec], nets[spec] = _cost_steps(config, device)
    latency = time_interleaved(forward, budget_s, device=device)
    step = time_interleaved(train_steps, budget_s, device=device)
    rows = {}
    for spec, config in configs.items():
        steps_per_epoch = config["train_images"] // config["batch_size"] \
            if "train_images" in config else None
        rows[spec] = {
            "forward_ms": 1e3 * latency[spec], "train_step_ms": 1e3 * step[spec],
            "epoch_s": step[spec] * steps_per_epoch if steps_per_epoch else None,
            "train_peak_mib": _train_peak(nets[spec], train_steps[spec], device) / 2**20,
        }
    any_config = next(iter(configs.values()))
    costs = {"device": str(device), "torch": torch.__version__,
             "threads": torch.get_num_threads(), "batch_size": any_config["batch_size"],
             "amp": any_config["amp"], "channels_last": any_config["channels_last"],
             "execution": "eager", "rows": rows}
    write_json(out / "costs.json", costs)
    return costs


def _train_peak(net: torch.nn.Module, step: Callable[[], None], device: torch.device) -> int:
    # Gradients of the previous step would be freed inside the measured one; a training
    # step of the loop starts without them too (zero_grad(set_to_none=True)).
    net.zero_grad(set_to_none=True)
    return peak_memory(step, device)


def _cost_steps(config: dict[str, Any], device: torch.device
                ) -> tuple[Callable[[], None], Callable[[], None], torch.nn.Module]:
    torch.manual_seed(0)
    net = build_model(config).to(device)
    memory = torch.channels_last if config.get("channels_last") else torch.contiguous_format
    net = net.to(memory_format=memory)
    shape = (config["batch_size"], config["in_channels"], config["input_size"],
             config["input_size"])
    x = torch.randn(shape, device=device).contiguous(memory_format=memory)
    y = torch.randint(0, config["num_classes"], (shape[0],), device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    amp = config.get("amp", "none")

    def forward() -> None:
        net.eval()
        with torch.no_grad(), autocast(device, amp):
            net(x)

    def train_step() -> None:
        net.train()
        with autocast(device, amp):
            loss = F.cross_entropy(net(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return forward, train_step, net

