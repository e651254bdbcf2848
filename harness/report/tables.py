"""Markdown and HTML tables from a header and rows of cell strings: the one layout of
every table the harness writes (a run's report, the grid report, `harness compare`,
`harness plan`).

`markdown_table(header, rows)` returns the table's lines (`| a | b |`, `|---|---|`, one
line per row) for the caller to join; `html_table(header, rows)` returns one `<table>`
element. Cells are written as given, except through `cell=`: a caller whose cells hold
user text passes its escaping there (report.py escapes Markdown and renders HTML).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence


def _as_is(text: str) -> str:
    return text


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, cell: Callable[[str], str] = _as_is
) -> list[str]:
    """The lines of a Markdown table: header, `---` separator, one line per row."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(map(cell, cells)) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *(line(r) for r in rows)]


def html_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, cell: Callable[[str], str] = html.escape
) -> str:
    """One `<table>` with a `<thead>` row and a `<tbody>`; each cell through `cell`
    (HTML-escaped unless told otherwise)."""
    head = "".join(f"<th>{cell(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
