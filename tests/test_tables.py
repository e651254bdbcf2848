"""The one table layout (harness/report/tables.py) that the run report, the grid report,
`harness compare` and `harness plan` share: Markdown lines and one HTML element."""

from harness.report.tables import html_table, markdown_table


def test_markdown_table_lines_with_cells_as_given_or_through_the_callers_escaping():
    assert markdown_table(["cell", "rag"], [["a", "1.0 [0.5, 2]"], ["b", "–"]]) == [
        "| cell | rag |",
        "|---|---|",
        "| a | 1.0 [0.5, 2] |",
        "| b | – |",
    ]
    assert markdown_table(["x|y"], [["<b>"]], cell=lambda s: s.replace("|", "\\|").upper()) == [
        "| X\\|Y |",
        "|---|",
        "| <B> |",
    ]
    assert markdown_table(["only", "a", "header"], []) == ["| only | a | header |", "|---|---|---|"]


def test_html_table_escapes_by_default():
    assert html_table(["a", "b"], [["<x>", "1 & 2"]]) == (
        "<table><thead><tr><th>a</th><th>b</th></tr></thead>"
        "<tbody><tr><td>&lt;x&gt;</td><td>1 &amp; 2</td></tr></tbody></table>"
    )
    assert html_table(["h"], [["**b**"]], cell=lambda s: s.strip("*")) == (
        "<table><thead><tr><th>h</th></tr></thead><tbody><tr><td>b</td></tr></tbody></table>"
    )
