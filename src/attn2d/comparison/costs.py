"""The cost columns: every model of a comparison timed in one process, interleaved.

After the runs, :func:`measure_costs` builds each mechanism's model once more and times its
eval-mode forward pass and its training step round by round, alternating models
(:func:`attn2d.tools.timing.measure_interleaved`), so load on a shared machine hits them
alike; a row whose rounds disagree is measured again. The figures are stored in
``OUT/costs.json`` so that ``attn2d report`` never re-measures.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .._base.amp import autocast
from .._base.io import read_json, write_json
from ..tools.timing import Timing, measure_interleaved, peak_memory
from ..training import RunResult, build_model
from .plan import slug

__all__ = ["MAX_SPREAD", "PASSES", "costs_measured", "measure_costs"]

log = logging.getLogger(__name__)


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


# Rounds that disagree by more than this (interquartile range over the median) mean the
# machine's load changed during the pass: such a row is measured again, up to PASSES times.
MAX_SPREAD = 0.25
PASSES = 3


def measure_costs(out: str | Path, specs: Sequence[str], device: torch.device | str = "cpu",
                  budget_s: float = 2.0) -> dict[str, Any]:
    """Time every model of a comparison in this one process and store ``costs.json``.

    For each mechanism with a finished run: the forward latency of a batch in eval mode
    (no grad), the time of a training step (forward, loss, backward, optimiser step) and
    the allocator's peak memory of a training step above what was allocated before it
    (CUDA ``max_memory_allocated``; on the CPU the allocator's records). Steps of all models
    alternate round by round (:func:`attn2d.tools.timing.measure_interleaved`), so load on a
    shared machine hits them alike; the spread of each row's rounds is measured too, and a
    row whose rounds disagree (a burst of load) is measured again. Eager execution, the
    runs' batch size, autocast and layout.
    """
    out, device = Path(out), torch.device(device)
    configs = _finished_configs(out, specs)
    if not configs:
        return {}
    log.info("cost pass: timing %d models on %s, interleaved...", len(configs), device)
    forward, train_steps, nets = {}, {}, {}
    for spec, config in configs.items():
        forward[spec], train_steps[spec], nets[spec] = _cost_steps(config, device)
    latency = _steady(forward, "forward", budget_s, device)
    step = _steady(train_steps, "training step", budget_s, device)
    rows = {}
    for spec, config in configs.items():
        steps_per_epoch = config["train_images"] // config["batch_size"] \
            if "train_images" in config else None
        rows[spec] = {
            "forward_ms": 1e3 * latency[spec].median,
            "train_step_ms": 1e3 * step[spec].median,
            "epoch_s": step[spec].median * steps_per_epoch if steps_per_epoch else None,
            "train_peak_mib": _train_peak(nets[spec], train_steps[spec], device) / 2**20,
            "forward_spread": latency[spec].spread, "train_step_spread": step[spec].spread,
        }
        log.info("cost pass: %s: forward %.1f ms, training step %.1f ms (rounds spread %.0f %% "
                 "and %.0f %%)", spec, rows[spec]["forward_ms"], rows[spec]["train_step_ms"],
                 100 * latency[spec].spread, 100 * step[spec].spread)
    any_config = next(iter(configs.values()))
    costs = {"device": describe_device(device), "torch": torch.__version__,
             "threads": torch.get_num_threads(), "batch_size": any_config["batch_size"],
             "amp": any_config["amp"], "channels_last": any_config["channels_last"],
             "execution": "eager", "max_spread": MAX_SPREAD, "passes": PASSES,
             "load_before": _load(), "rows": rows}
    write_json(out / "costs.json", costs)
    return costs


def describe_device(device: torch.device) -> str:
    """The device and the machine, as the cost footnote names them: ``cuda:0 (NVIDIA H100
    80GB HBM3) on node gpu017`` (SLURM's node name in a job), ``cpu on host vm``."""
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    node = os.environ.get("SLURMD_NODENAME")
    where = f"node {node}" if node else f"host {socket.gethostname()}"
    return f"{device}{name} on {where}"


def _steady(steps: dict[str, Callable[[], None]], what: str, budget_s: float,
            device: torch.device) -> dict[str, Timing]:
    """Interleaved timings; rows whose rounds spread more than :data:`MAX_SPREAD` are
    measured again (among themselves) and keep their steadiest pass."""
    timings = measure_interleaved(steps, budget_s, device=device)
    for _ in range(PASSES - 1):
        noisy = [name for name, t in timings.items() if t.spread > MAX_SPREAD]
        if not noisy:
            break
        log.info("cost pass: the rounds of %s (%s) disagree by more than %.0f %%; measuring "
                 "again", ", ".join(noisy), what, 100 * MAX_SPREAD)
        again = measure_interleaved({n: steps[n] for n in noisy}, budget_s, device=device)
        for name, timing in again.items():
            if timing.spread < timings[name].spread:
                timings[name] = timing
    return timings


def _load() -> float | None:
    """The 1-minute load average per core when the pass started (None where unknown):
    above 1, other processes competed for the cores."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return None


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

