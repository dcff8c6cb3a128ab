"""The README's quick start runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quick start"):text.index("## Mechanisms")]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0]
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md (quick start)", "exec"), namespace)  # the doc is the test
    assert namespace["cbam"](namespace["x"]).shape == namespace["x"].shape
