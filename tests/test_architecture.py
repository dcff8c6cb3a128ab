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

# component -> layer; a module belongs to the most specific component its dotted name starts
# with. The folders are the layers; the few top-level modules are the package facade, the
# low statistics leaf, and deprecated import paths that re-export the new homes.
LAYERS = {
    "attn2d._base": 0,
    "attn2d.stats": 1,
    "attn2d.modules": 2,
    "attn2d.models": 3,
    "attn2d.data": 4,
    "attn2d.tools": 5,
    "attn2d.training": 6,
    "attn2d.viz": 7,
    "attn2d.comparison": 8,
    "attn2d.cli": 9, "attn2d.__main__": 9,
    # the facade and the deprecated paths, above everything they re-export
    "attn2d": 10, "attn2d.train": 10, "attn2d.compare": 10, "attn2d.report": 10,
    "attn2d.capture": 10, "attn2d.debug": 10, "attn2d.bench": 10,
}
# Within a layer, the parts that must not import each other upward either.
SUBLAYERS = {
    "attn2d.modules": ["attn2d.modules._common", "attn2d.modules._ops", "attn2d.modules._cross",
                       "attn2d.modules.channel", "attn2d.modules.spatial",
                       "attn2d.modules.hybrid", "attn2d.modules.global_",
                       "attn2d.modules.capture", "attn2d.modules.registry",
                       "attn2d.modules.multilevel"],
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
    source = PACKAGE / "training" / "loop.py"
    assert "attn2d.tools.profiler" in _imports(source)  # imported inside finish()


@pytest.mark.parametrize("layer", sorted(SUBLAYERS))
def test_files_within_a_layer_import_in_one_direction(layer):
    order = SUBLAYERS[layer]
    backward = [f"{a} imports {b}" for i, a in enumerate(order)
                for b in _imports(PACKAGE.parent / Path(*a.split(".")).with_suffix(".py"))
                if b in order[i + 1:]]
    assert not backward, "\n".join(backward)


def test_the_package_top_holds_only_the_facade_and_deprecated_paths():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "train", "compare", "report", "capture", "debug",
                   "bench"}


def test_no_source_file_is_longer_than_600_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


@pytest.mark.parametrize("module", ["attn2d.training", "attn2d.tools.map_stats",
                                    "attn2d.modules.capture", "attn2d.comparison.compare",
                                    "attn2d.stats", "attn2d.tools.bench",
                                    "attn2d.data"])
def test_low_layers_do_not_import_matplotlib(module):
    code = f"import sys, {module}; sys.exit('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(PACKAGE.parent), "PATH": ""}, timeout=120)
    assert done.returncode == 0, f"import {module} pulled in matplotlib {done.stderr[-500:]}"
