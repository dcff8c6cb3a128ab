"""The package's layers go one way: every import (module level or inside a function) points
to the same or a lower layer, there is no cycle between components, and the low layers do
not pull in plotting. See docs/architecture.md."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "attn2d"

# component -> layer; a module belongs to the first component its dotted name starts with.
LAYERS = {
    "attn2d._io": 0, "attn2d._shape": 0, "attn2d._amp": 0, "attn2d.tables": 0,
    "attn2d.lock": 0,
    "attn2d.modules": 1,
    "attn2d.capture": 2,
    "attn2d.registry": 3, "attn2d.multilevel": 3,
    "attn2d.models": 4,
    "attn2d.data": 5, "attn2d.profiler": 5, "attn2d.timing": 5, "attn2d.checkpoint": 5,
    "attn2d.stats": 5, "attn2d.naive": 5,
    "attn2d.train": 6, "attn2d.tensorboard": 6,
    "attn2d.bench": 7, "attn2d.debug": 7,
    "attn2d.viz": 8,
    "attn2d.compare": 9, "attn2d.report": 9, "attn2d.slurm": 9,
    "attn2d.cli": 10, "attn2d.__main__": 10, "attn2d": 10,  # the package facade: top
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def component(module: str) -> str:
    """The most specific LAYERS key that ``module`` falls under."""
    matches = [k for k in LAYERS if module == k or module.startswith(k + ".")]
    if not matches:
        raise AssertionError(f"{module} belongs to no component: add it to LAYERS (and to "
                             "docs/architecture.md)")
    return max(matches, key=len)


def _imports(path: Path) -> set[str]:
    """Every attn2d module ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("attn2d")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("attn2d"):
                continue
            for alias in node.names:  # `from . import x` may name a submodule
                sub = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").is_file() \
                    or (PACKAGE.parent / Path(*sub.split("."))).is_dir()
                found.add(sub if is_module else target)
    return found


def import_graph() -> dict[str, set[str]]:
    """component -> the components it imports."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = component(_module_name(path))
        targets = {component(m) for m in _imports(path)} - {source}
        graph.setdefault(source, set()).update(targets)
    return graph


def test_every_import_points_to_the_same_or_a_lower_layer():
    upward = [f"{a} (layer {LAYERS[a]}) imports {b} (layer {LAYERS[b]})"
              for a, targets in import_graph().items() for b in targets
              if LAYERS[b] > LAYERS[a]]
    assert not upward, "\n".join(upward)


def test_no_cycle_between_components():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_function_level_imports():
    source = PACKAGE / "train.py"
    assert "attn2d.profiler" in _imports(source)  # imported inside finish()


@pytest.mark.parametrize("module", ["attn2d.train", "attn2d.debug", "attn2d.capture",
                                    "attn2d.compare", "attn2d.stats", "attn2d.bench"])
def test_low_layers_do_not_import_matplotlib(module):
    code = f"import sys, {module}; sys.exit('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(PACKAGE.parent), "PATH": ""}, timeout=120)
    assert done.returncode == 0, f"import {module} pulled in matplotlib {done.stderr[-500:]}"
