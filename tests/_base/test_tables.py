"""The one table renderer: formats, missing values, alignment, HTML."""

from __future__ import annotations

import math

import pytest

from attn2d._base.tables import MISSING, Table


def table() -> Table:
    rows = [{"name": "se", "ms": 1.234, "note": "`x|y`"},
            {"name": "cbam", "ms": None, "note": "ok"},
            {"name": "eca", "ms": math.nan, "note": None}]
    return Table([("name", "mechanism"), ("ms", "step (ms)"), ("note", "note")], rows,
                 {"ms": "{:.1f}".format}, align_left=("name", "note"))


def test_missing_values_show_as_a_dash_without_reaching_the_formatter():
    cells = table().cells()
    assert cells == [["se", "1.2", "`x|y`"], ["cbam", MISSING, "ok"],
                     ["eca", MISSING, MISSING]]
    text = table().to_text().splitlines()
    assert text[0].split() == ["mechanism", "step", "(ms)", "note"]
    assert text[3].startswith("cbam") and MISSING in text[3]


def test_markdown_escapes_pipes_and_aligns_by_column():
    markdown = table().to_markdown().splitlines()
    assert markdown[1] == "| :--- | ---: | :--- |"
    assert markdown[2] == "| se | 1.2 | `x\\|y` |"


def test_csv_and_json_keep_raw_values_with_missing_ones_empty():
    assert table().to_csv().splitlines()[2:] == ["cbam,,ok", "eca,,"]
    assert '"ms": null' in table().to_json()


def test_html_escapes_marks_left_cells_and_turns_code_spans_into_code():
    page = table().to_html(lambda key, row: "slow" if key == "ms" and row["ms"] else "")
    assert page.startswith('<table><tr><th class="l">mechanism</th><th>step (ms)</th>')
    assert '<td class="l"><code>x|y</code></td>' in page
    assert '<td class="slow">1.2</td>' in page and f"<td>{MISSING}</td>" in page


def test_an_unknown_format_is_refused_by_name():
    with pytest.raises(ValueError, match="expected a table format in"):
        table().render("xml")
