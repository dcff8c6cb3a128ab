"""The README's quick start runs as written, with the base dependencies only, and the
README stays a page a newcomer reads (at most 200 lines)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
EXTRAS = ("timm", "tensorboard", "onnx", "onnxruntime", "onnxscript", "hypothesis")


def test_quick_start_runs_with_the_base_dependencies_only(monkeypatch):
    for name in EXTRAS:  # importing any of them now raises ImportError
        monkeypatch.setitem(sys.modules, name, None)
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quick start"):text.index("## Mechanisms")]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0]
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md (quick start)", "exec"), namespace)  # the doc is the test
    assert namespace["cbam"](namespace["x"]).shape == namespace["x"].shape
    assert namespace["maps"]  # the recorder saw RCCA's maps


def test_readme_is_at_most_200_lines():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200


DOCS = [README, *sorted((README.parent / "docs").glob("*.md"))]
# `from attn2d.x.y import a, b` (also inside parentheses) and `attn2d.x.y.name` in prose
_FROM = re.compile(r"^\s*from (attn2d[\w.]*) import \(?([\w, \n]+?)\)?$", re.M)
_DOTTED = re.compile(r"`(attn2d(?:\.\w+)+)")


def _documented_paths() -> set[tuple[str, str | None]]:
    found: set[tuple[str, str | None]] = set()
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for module, names in _FROM.findall(text):
            found |= {(module, n.strip()) for n in names.split(",") if n.strip()}
        found |= {(dotted, None) for dotted in _DOTTED.findall(text)}
    return found


def test_every_import_path_the_docs_name_imports():
    import importlib
    import warnings

    missing = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # old paths may warn; not fail
        for module, name in sorted(_documented_paths(), key=str):
            parts = module.split(".")
            # the longest importable prefix, then attributes
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                    break
                except ImportError:
                    continue
            try:
                for attr in [*parts[cut:], *([name] if name else [])]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(f"{module}{'.' + name if name else ''}")
    assert not missing, missing


def test_old_import_paths_still_work_and_say_where_things_moved():
    import importlib
    import warnings

    for old, new in (("attn2d.train", "attn2d.training"), ("attn2d.compare", "attn2d.comparison"),
                     ("attn2d.report", "attn2d.comparison"),
                     ("attn2d.capture", "attn2d.modules.capture")):
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert any(new in str(w.message) for w in caught), old
        assert module.__all__ and all(hasattr(module, n) for n in module.__all__)
    from attn2d.compare import compare
    from attn2d.train import TrainConfig, train

    assert compare.__module__ == "attn2d.comparison.compare" and callable(train)
    assert TrainConfig.__module__ == "attn2d.training.config"
