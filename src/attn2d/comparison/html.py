"""``results.html``: one self-contained page of a comparison (every image embedded)."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path
from typing import Any

from .._base.errors import Attn2dError
from .._base.io import write_atomic
from .._base.tables import Table
from .records import BASELINE
from .report import PLOTS, Comparison, PathLike, settings_line, table

__all__ = ["write_html"]


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f4f4f4} td.l,th.l{text-align:left} code{font-size:12px}
pre{white-space:pre-wrap;word-break:break-all;background:#f7f7f7;padding:.5em}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5em 0}
.note{color:#555;font-size:12px} .better{color:#1a7f37;font-weight:600}
.worse{color:#c62828;font-weight:600} details{margin:.6em 0}
.gallery{display:flex;flex-wrap:wrap;gap:8px} .gallery img{width:380px}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _verdict_class(key: str, row: dict[str, Any]) -> str:
    return row["verdict"] if key == "verdict" and row.get("verdict") in ("better", "worse") \
        else ""


def write_html(comparison: Comparison, out: PathLike, results: Table | None = None) -> Path:
    """One self-contained ``results.html``: every image embedded, no external asset."""
    out = Path(out)
    t = results or table(comparison)
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>attn2d compare: {html.escape(str(comparison.settings['dataset']))}</title>",
             f"<style>{_STYLE}</style></head><body>", "<h1>attn2d compare</h1>"]
    if comparison.command:
        parts.append(f"<pre><code>{html.escape(comparison.command)}</code></pre>")
    parts += [f"<p>{html.escape(settings_line(comparison))}</p>", t.to_html(_verdict_class)]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in t.notes]
    parts.append("<h2>Plots</h2>")
    parts += [_img(out / name, name) for name in PLOTS if (out / name).is_file()]
    parts.append("<h2>Runs</h2>")
    parts.append(_settings_table(comparison.settings))
    parts += _run_sections(comparison, out)
    parts += ["<h2>Attention maps</h2>", _explore(comparison, out), *_gallery(comparison)]
    parts.append("</body></html>")
    return write_atomic(out / "results.html", "\n".join(parts))


def _settings_table(settings: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td class='l'>{html.escape(k)}</td><td class='l'>"
                   f"{html.escape(json.dumps(v))}</td></tr>" for k, v in sorted(settings.items()))
    return f"<details><summary>Settings shared by every run</summary><table>{rows}</table>" \
           "</details>"


def _run_sections(comparison: Comparison, out: Path) -> list[str]:
    from ..viz.plots import plot_training_curves

    parts = []
    runs = comparison.runs
    with tempfile.TemporaryDirectory() as tmp:
        for spec in (r.mechanism for r in comparison.rows):
            mine = sorted((r for r in runs if r["mechanism"] == spec), key=lambda r: r["seed"])
            run_table = Table(
                [("seed", "seed"), ("test_acc", "test acc (%)"), ("test_epoch", "epoch"),
                 ("time_per_epoch_s", "time/epoch (s, this run)"),
                 ("images_per_s", "images/s"), ("compile_time_s", "compile (s)")],
                mine, {"test_acc": lambda v: f"{100 * v:.2f}",
                       "time_per_epoch_s": "{:.1f}".format, "images_per_s": "{:.0f}".format,
                       "compile_time_s": "{:.1f}".format})
            png = Path(tmp) / f"{len(parts)}.png"
            metrics = [Path(r["dir"]) / "metrics.jsonl" for r in mine]
            plot_training_curves(metrics, labels=[f"seed {r['seed']}" for r in mine],
                                 keys=["train_acc", "test_acc"], title=f"{spec}: accuracy",
                                 path=png)
            parts.append(f"<details><summary><code>{html.escape(spec)}</code>: {len(mine)} "
                         f"run(s)</summary>{run_table.to_html()}{_img(png, spec)}</details>")
    return parts


def _first_runs(comparison: Comparison, baseline: bool = True) -> list[dict[str, Any]]:
    """Each mechanism's run with the lowest seed, in the table's order."""
    return [min((r for r in comparison.runs if r["mechanism"] == row.mechanism),
                key=lambda r: r["seed"])
            for row in comparison.rows if baseline or row.mechanism != BASELINE]


def _explore(comparison: Comparison, out: Path) -> str:
    """``explore.html`` next to the report (each mechanism's first run, interactive), and
    a link to it; a note instead when the checkpoints or the data are not at hand."""
    from ..viz.explorer import explore

    try:
        explore([Path(r["dir"]) for r in _first_runs(comparison)], out / "explore.html")
    except (OSError, Attn2dError) as err:
        (out / "explore.html").unlink(missing_ok=True)
        return f'<p class="note">No interactive page ({html.escape(str(err))}).</p>'
    return ('<p><a href="explore.html">explore.html</a>: every mechanism\'s attention maps '
            'on 16 test images, side by side and interactive (each mechanism\'s first seed).</p>')


def _gallery(comparison: Comparison, per_mechanism: int = 2) -> list[str]:
    """A few attention pictures per mechanism, for one test image, from its first run's
    selected checkpoint; a note instead when the checkpoint or the data are not at hand."""
    from ..viz.pictures import gallery_pictures

    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in _first_runs(comparison, baseline=False):
            spec = run["mechanism"]
            try:
                pictures = gallery_pictures(Path(run["dir"]) / "best.pt", Path(tmp) / spec,
                                            limit=per_mechanism)
            except (OSError, Attn2dError) as err:
                parts.append(f'<p class="note">{html.escape(spec)}: no pictures '
                             f"({html.escape(str(err))})</p>")
                continue
            if pictures:
                parts.append(f"<h3><code>{html.escape(spec)}</code></h3><div class='gallery'>"
                             + "".join(_img(p, p.stem) for p in pictures) + "</div>")
    return parts

