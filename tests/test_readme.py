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
