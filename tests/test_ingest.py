"""Reading the user's document files (harness/data/ingest.py): PDF, DOCX, HTML, Markdown and text
to plain text (every page, every list item, every table cell once), one-line errors for bad
and hostile files (nested 200,000 deep, broken zip members and XML, a zip bomb refused
before parsing), bounded parsing time, and nothing read from outside the documents folder."""

import os
import time
from pathlib import Path

import pytest

from docfiles import (
    corrupt_docx_member,
    replace_docx_member,
    write_deep_pdf,
    write_docx,
    write_encrypted_pdf,
    write_html,
    write_image_only_pdf,
    write_pdf_pages,
    write_printed_pdf,
    write_saved_page,
    write_zip_bomb_docx,
)
from harness.data import ingest
from harness.data.ingest import load_documents, load_user_dataset, pdf_content, read_documents
from harness.data.items import DataError

W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def test_every_type_reads_to_its_text(tmp_path):
    write_pdf_pages(
        tmp_path / "station.pdf",
        [["Halvard Station opened in 2091."], ["Mira Tolland runs engineering."], ["The reactor is called Kestrel."]],
    )
    write_docx(
        tmp_path / "ferry.docx",
        ["The Vessin ferry line started in 1887."],
        table=[
            ["Captain", "Ilse Varga", ""],
            ["Boats", "4", ""],
            ["Backups", "Yes", "Yes"],
            ["Route", "Vessin to Lund", ""],
        ],
        merge=[((3, 1), (3, 2))],
    )
    write_html(
        tmp_path / "page.html",
        "<h1>Reactor</h1><p>The reactor is called <b>Kestrel</b>.</p>"
        "<ul><li>Output: 40 MW</li><li>Crew: 12</li></ul>"
        "<table><tr><th>Role</th><th>Name</th></tr>"
        "<tr><td>Captain</td><td>Ilse Varga</td></tr></table>",
        title="Power",
    )
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.md").write_text("# Notes\n\nDorran is the archivist.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\ufeffCeyra keeps the logbook.", encoding="utf-8")
    docs = {d.id: d.text for d in load_documents(tmp_path)}
    assert sorted(docs) == ["b", "ferry", "notes/a", "page", "station"]
    assert docs["station"] == (
        "Halvard Station opened in 2091.\nMira Tolland runs engineering.\nThe reactor is called Kestrel."
    )  # every page, in order
    assert docs["ferry"] == (
        "The Vessin ferry line started in 1887.\n\nCaptain | Ilse Varga\n\nBoats | 4\n\n"
        "Backups | Yes | Yes\n\nRoute | Vessin to Lund"
    )  # two equal cells both, a merged one once
    assert docs["page"] == (
        "Reactor\n\nThe reactor is called Kestrel.\n\nOutput: 40 MW\n\nCrew: 12\n\nRole | Name\n\nCaptain | Ilse Varga"
    )
    assert "SCRIPT" not in docs["page"] and "TEMPLATE" not in docs["page"] and "color" not in docs["page"]
    assert "Power" not in docs["page"]  # the head's title is the browser tab's, not content
    assert docs["notes/a"] == "# Notes\n\nDorran is the archivist."
    assert docs["b"] == "Ceyra keeps the logbook."  # the byte-order mark is dropped


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: (p / "empty.pdf").write_bytes(b""), r"empty\.pdf: not a readable PDF"),
        (lambda p: write_image_only_pdf(p / "scan.pdf"), r"scan\.pdf: PDF has no text layer"),
        (lambda p: write_encrypted_pdf(p / "locked.pdf", ["Secret."]), r"locked\.pdf: encrypted PDF"),
        (lambda p: write_zip_bomb_docx(p / "bomb.docx", unpacked_mib=210), r"bomb\.docx: \.docx unpacks to 21\d MiB"),
        (lambda p: (p / "fake.docx").write_text("not a zip"), r"fake\.docx: not a valid \.docx"),
        (
            lambda p: (p / "latin.txt").write_bytes("Caf\xe9 Tolland.".encode("latin-1")),
            r"latin\.txt: not UTF-8 text \(invalid byte at offset 3\)",
        ),
        (lambda p: (p / "sheet.xlsx").write_bytes(b"PK"), r"sheet\.xlsx: unknown document type '\.xlsx'"),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, make, message):
    (tmp_path / "ok.txt").write_text("A fine document.")
    make(tmp_path)
    with pytest.raises(DataError, match=message) as err:
        load_documents(tmp_path)
    assert "\n" not in str(err.value)


def test_zip_bomb_is_refused_before_parsing(tmp_path, monkeypatch):
    bomb = write_zip_bomb_docx(tmp_path / "bomb.docx", unpacked_mib=3)
    monkeypatch.setattr(ingest, "MAX_UNPACKED_BYTES", 2 * 2**20)
    import docx

    def never(*args, **kwargs):
        raise AssertionError("parsed a zip bomb")

    monkeypatch.setattr(docx, "Document", never)
    with pytest.raises(DataError, match=r"unpacks to \d MiB, over the 2 MiB limit"):
        ingest.read_file(bomb)


def test_skip_unreadable_counts_what_it_left_out(tmp_path):
    (tmp_path / "ok.txt").write_text("A fine document.")
    write_image_only_pdf(tmp_path / "scan.pdf")
    (tmp_path / "data.csv").write_text("a,b")
    (tmp_path / ".hidden").write_text("ignored")
    docs, skipped = read_documents(tmp_path, skip_unreadable=True)
    assert [d.id for d in docs] == ["ok"]
    assert [s["file"] for s in skipped] == ["data.csv", "scan.pdf"]
    assert "no text layer" in skipped[1]["reason"]


def test_two_files_with_one_id_are_an_error(tmp_path):
    (tmp_path / "policy.txt").write_text("One.")
    write_docx(tmp_path / "policy.docx", ["Two."])
    with pytest.raises(DataError, match=r"policy\.txt: same document id 'policy' as .*policy\.docx"):
        load_documents(tmp_path)


def test_a_cell_merged_down_the_rows_is_in_each_row_it_spans(tmp_path):
    """Word marks the cells below a vertical merge `continue`; python-docx's row.cells
    finds their text by recursing one row up per row, which breaks on a long merge."""
    short = write_docx(
        tmp_path / "shifts.docx",
        [],
        [["Site", "Shift", "Lead"], ["Halvard", "Day", "Mira"], ["", "Night", "Tomas"]],
        merge_down=[(0, 1, 2)],
    )
    assert ingest.read_file(short) == "Site | Shift | Lead\n\nHalvard | Day | Mira\n\nHalvard | Night | Tomas"
    rows = [["Site", "Shift"]] + [["Halvard" if i == 0 else "", f"shift {i}"] for i in range(1500)]
    long = ingest.read_file(write_docx(tmp_path / "long.docx", [], rows, merge_down=[(0, 1, 1500)]))
    assert long.split("\n\n")[1500] == "Halvard | shift 1499"


def _nested_divs(depth: int) -> str:
    return "<html><body>" + "<div>" * depth + "deep text" + "</div>" * depth + "</body></html>"


HOSTILE = [
    (
        "deep.pdf",
        lambda p: write_deep_pdf(p, depth=200_000),
        r"deep\.pdf: not a readable PDF \(objects nested deeper than Python's recursion limit",
    ),
    (
        "deep.html",
        lambda p: p.write_text(_nested_divs(100_000)),  # 1.1 MB
        r"deep\.html: HTML nested deeper than 512 elements \(line 1; unclosed tags\?\); refused",
    ),
    (
        "section.html",
        lambda p: p.write_text("<p>Fine.</p><![bogus[ x ]]>"),
        r"section\.html: not readable HTML \(unknown status keyword 'bogus'",
    ),
    (
        "xml.docx",
        lambda p: replace_docx_member(p, "word/document.xml", b"<w:document><unclosed"),
        r"xml\.docx: not a valid \.docx \(Namespace prefix w on document is not defined",
    ),
    (
        "types.docx",
        lambda p: replace_docx_member(p, "[Content_Types].xml", b"garbage"),
        r"types\.docx: not a valid \.docx \(Start tag expected",
    ),
    (
        "nested.docx",
        lambda p: replace_docx_member(
            p,
            "word/document.xml",
            (
                f'<?xml version="1.0"?><w:document {W}><w:body>'
                + "<w:p>" * 300
                + "</w:p>" * 300
                + "</w:body></w:document>"
            ).encode(),
        ),
        r"nested\.docx: not a valid \.docx \(Excessive depth in document: 256,",
    ),
    (
        "nobody.docx",
        lambda p: replace_docx_member(p, "word/document.xml", f'<?xml version="1.0"?><w:document {W}/>'.encode()),
        r"nobody\.docx: not a valid \.docx \(word/document\.xml has no body\)",
    ),
    ("inflate.docx", corrupt_docx_member, r"inflate\.docx: not a valid \.docx \(Error -3 while decompressing data"),
]


@pytest.mark.parametrize("name, make, message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_files_are_one_line_errors_in_seconds(tmp_path, name, make, message):
    make(tmp_path / name)
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=message) as err:
        ingest.read_file(tmp_path / name)
    assert "\n" not in str(err.value) and err.value.__cause__ is None
    assert time.perf_counter() - t0 < 10  # the nested <div>s took over 180 s through BeautifulSoup


def test_html_depth_counts_open_elements_as_html_closes_them(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "MAX_HTML_DEPTH", 8)
    page = tmp_path / "page.html"
    page.write_text("<html><body>" + "<div>" * 6 + "six deep" + "</div>" * 6 + "</body></html>")
    assert ingest.read_file(page) == "six deep"  # html, body and six divs: 8 open at once
    page.write_text("<html><body>" + "<div>" * 7 + "seven deep")
    with pytest.raises(DataError, match=r"page\.html: HTML nested deeper than 8 elements"):
        ingest.read_file(page)
    # what people leave unclosed is closed as a browser would: a next <p>, <li>, <td> or <tr>
    page.write_text(
        "<body><p>One<p>Two<ul><li>Three<li>Four</ul><table><tr><td>Five<td>Six<tr><td>Seven</table>" + "<p>More" * 50
    )
    assert (
        ingest.read_file(page).split("\n\n") == ["One", "Two", "Three", "Four", "Five | Six", "Seven"] + ["More"] * 50
    )


@pytest.mark.parametrize(
    "make, where",
    [
        (lambda p: write_pdf_pages(p / "a.pdf", [["One."], ["Two."]]), "page 1"),
        (lambda p: write_docx(p / "a.docx", ["One."]), "block 1"),
        (lambda p: write_html(p / "a.html", "<p>One.</p>"), "line 1"),
    ],
)
def test_parsing_stops_at_its_time_limit(tmp_path, monkeypatch, make, where):
    path = make(tmp_path)
    assert ingest.read_file(path).startswith("One.")
    monkeypatch.setattr(ingest, "MAX_PARSE_SECONDS", 0.0)
    with pytest.raises(DataError, match=rf"a\.\w+: parsing took over 0 s \(stopped at {where}\); refused"):
        ingest.read_file(path)


def _folder_with_links(tmp_path: Path) -> tuple[Path, str]:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("The vault code is 7731-CANARY.")
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "ok.txt").write_text("Mira Tolland runs engineering.")
    (docs / "passwd.txt").symlink_to("/etc/passwd")
    (docs / "secret.txt").symlink_to(secret)
    (docs / "sub" / "up.md").symlink_to(Path("..", "..", "outside", "secret.txt"))
    (docs / "etc").symlink_to("/etc", target_is_directory=True)
    return docs, "7731-CANARY"


def test_links_out_of_the_documents_folder_are_refused_or_skipped(tmp_path):
    docs, canary = _folder_with_links(tmp_path)
    with pytest.raises(DataError, match=r"docs/etc: a link to /etc, outside the documents folder; refused"):
        read_documents(docs)
    read, skipped = read_documents(docs, skip_unreadable=True)
    assert [d.id for d in read] == ["ok"]
    assert [s["file"] for s in skipped] == ["etc", "passwd.txt", "secret.txt", "sub/up.md"]
    assert (
        skipped[1]["reason"] == f"{docs}/passwd.txt: a link to /etc/passwd, outside the documents folder; "
        "refused (copy the file in instead)"
    )
    (tmp_path / "q.jsonl").write_text('{"question": "Who runs engineering?", "answers": ["Mira Tolland"]}\n')
    data = load_user_dataset(
        documents=str(docs), questions=str(tmp_path / "q.jsonl"), train_questions=None, skip_unreadable=True
    )
    passwd = Path("/etc/passwd").read_text().splitlines()[0]
    seen = [d.text for d in data.documents] + list(data.train_texts)  # what retrieval, prompts and training read
    assert not [t for t in seen if canary in t or passwd in t]


def test_links_inside_are_read_and_folder_links_not_followed(tmp_path):
    docs = tmp_path / "docs"
    (docs / "a").mkdir(parents=True)
    (docs / "a" / "x.txt").write_text("Ilse Varga founded the ferry line.")
    (docs / "y.txt").symlink_to(Path("a", "x.txt"))
    (docs / "b").symlink_to("a", target_is_directory=True)  # its files are read where they are
    (docs / "loop").symlink_to(".", target_is_directory=True)
    assert {d.id: d.text for d in load_documents(docs)} == {
        "a/x": "Ilse Varga founded the ferry line.",
        "y": "Ilse Varga founded the ferry line.",
    }


def test_fifos_and_broken_links_are_named_not_waited_on(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.txt").write_text("A fine document.")
    os.mkfifo(docs / "pipe.txt")  # opening it for reading would wait for a writer forever
    (docs / "gone.txt").symlink_to(docs / "nowhere.txt")
    with pytest.raises(DataError, match=r"docs/gone\.txt: a link to nothing, not a document; refused"):
        load_documents(docs)
    read, skipped = read_documents(docs, skip_unreadable=True)
    assert [d.id for d in read] == ["ok"]
    assert [(s["file"], s["reason"].split(": ", 1)[1]) for s in skipped] == [
        ("gone.txt", "a link to nothing, not a document; refused"),
        ("pipe.txt", "a FIFO, not a document; refused"),
    ]


PAGES = {
    "astoria": "<p>Astoria is a port city founded in 1887 by Ilse Varga.</p><p>Its harbour has 12 piers.</p>",
    "derby": "<p>Derby is a river town on the Vessin.</p><table><tr><td>Mayor</td><td>Petra Hollis</td></tr></table>",
    "meridia": "<p>Meridia is an island with one ferry.</p><nav>See also: Astoria</nav>",
}
FURNITURE = (
    "Home",
    "Sign in",
    "Northwind",
    "Places",
    "Recent changes",
    "Random page",
    "©",
    "Privacy",
    "track",
    "dataLayer",
    "last edited",
    "See also",
)


def test_saved_web_pages_lose_their_navigation_header_footer_and_repeated_lines(tmp_path):
    for name, body in PAGES.items():
        write_saved_page(tmp_path / f"{name}.html", body, title=name.title())
    (tmp_path / "notes.md").write_text("# Notes\n\nThe wiki team meets on Mondays.\n", encoding="utf-8")
    for day in ("Tuesday", "Friday", "Sunday", "Monday"):  # 3 pages of 8 documents: their footer is still theirs
        (tmp_path / f"{day}.md").write_text(f"The canteen is closed on {day}.", encoding="utf-8")
    counts = {}
    docs = {d.id: d.text for d in read_documents(tmp_path, counts=counts)[0]}
    assert (
        docs["astoria"]
        == "Astoria\n\nAstoria is a port city founded in 1887 by Ilse Varga.\n\nIts harbour has 12 piers."
    )
    assert docs["derby"] == "Derby\n\nDerby is a river town on the Vessin.\n\nMayor | Petra Hollis"
    assert docs["meridia"] == "Meridia\n\nMeridia is an island with one ferry."
    assert docs["notes"] == "# Notes\n\nThe wiki team meets on Mondays."
    assert not [(d, f) for d, text in docs.items() for f in FURNITURE if f in text]
    # the article's own footer is content by the element rule, and furniture by repetition
    assert counts == {"repeated_lines": 1, "repeated_line_copies": 3}


def test_a_line_in_half_the_documents_goes_and_one_in_fewer_stays(tmp_path):
    for i, (name, extra) in enumerate(zip(["Ana", "Bo", "Cy", "Di"], ["Confidential.", "Confidential.", "", ""])):
        lines = [f"{name} is {i} years old.", extra, "Only here." if i == 0 else "", f"Last page {i}."]
        (tmp_path / f"d{i}.md").write_text("\n\n".join(line for line in lines if line))
    docs = {d.id: d.text for d in load_documents(tmp_path)}
    # "Confidential." in 2 of 4 goes; "Last page N." differs by its number in each, a fact
    assert docs == {
        "d0": "Ana is 0 years old.\n\nOnly here.\n\nLast page 0.",
        "d1": "Bo is 1 years old.\n\nLast page 1.",
        "d2": "Cy is 2 years old.\n\nLast page 2.",
        "d3": "Di is 3 years old.\n\nLast page 3.",
    }
    (tmp_path / "d4.md").write_text("Ed is 4 years old.")  # now in 2 of 5: below half, kept
    assert "Confidential." in {d.id: d.text for d in load_documents(tmp_path)}["d0"]


def test_a_printed_pdf_loses_the_browsers_header_and_footer_and_its_running_lines(tmp_path):
    pages = [
        ["Halvard Station is a research outpost on the moon Ceyra.", "Northwind Internal - Confidential"],
        ["It was opened in 2091 by the Ostrel Consortium.", "Northwind Internal - Confidential"],
        ["The reactor is called Kestrel."],
    ]
    write_printed_pdf(tmp_path / "halvard.pdf", pages, title="Halvard", url="file:///home/ana/wiki/halvard.html")
    assert ingest.read_file(tmp_path / "halvard.pdf") == (
        "Halvard Station is a research outpost on the moon Ceyra.\nIt was opened in 2091 by the Ostrel "
        "Consortium.\nThe reactor is called Kestrel."
    )


# What pypdf reads from a page Chromium printed with headers and footers (the text layer
# of a real print of a wiki page, its ligature glyphs and all).
CHROMIUM_PAGE = (
    "Astoria\nAstoria is a small signi\ufb01cant port city with e\ufb03cient ferries founded in 1887.\n"
    "It o\ufb00ers a people-friendly waterfront along the river that \ufb02ows into the sea.\n"
    "12/3/26, 6:32 PM Astoria\n\ufb01le:///tmp/wiki/astoria.html 1/1"
)


def test_chromium_print_header_footer_and_ligatures_are_gone_from_the_text():
    text = pdf_content([CHROMIUM_PAGE])
    assert text.endswith("It offers a people-friendly waterfront along the river that flows into the sea.")
    assert "significant" in text and "efficient" in text
    assert not any(0xFB00 <= ord(c) <= 0xFB06 for c in text)
    assert "6:32" not in text and "file:" not in text and "1/1" not in text


@pytest.mark.parametrize(
    "lines, text",
    [
        (["It is a signi-", "ficant port."], "It is a significant port."),  # "ficant" is a word ending
        (["Its manage-", "ment is local."], "Its management is local."),
        (["A people-", "friendly port."], "A people-friendly port."),  # a hyphen of the text
        (
            ["The harbour-", "master is Ilse.", "A harbourmaster works there."],
            "The harbourmaster is Ilse.\nA harbourmaster works there.",
        ),  # the document spells it without
        (["A self-", "less act.", "It was self-less."], "A self-less act.\nIt was self-less."),  # spelt so
        (["Founded in 1887 by Ilse Varga-", "Holm."], "Founded in 1887 by Ilse Varga-\nHolm."),  # upper case: kept
    ],
)
def test_pdf_line_break_hyphens_join_by_the_documented_rule(lines, text):
    assert pdf_content(["\n".join(lines)]) == text


def test_a_pdf_title_and_headings_are_units_of_their_own(tmp_path):
    write_pdf_pages(
        tmp_path / "astoria.pdf",
        [
            [
                "Astoria",
                "Astoria is a port city on the Vessin coast, founded in 1887 by the harbourmaster Ilse Varga.",
                "History",
                "The first pier was built in 1890.",
            ]
        ],
    )
    assert ingest.read_file(tmp_path / "astoria.pdf") == (
        "Astoria\n\nAstoria is a port city on the Vessin coast, founded in 1887 by the harbourmaster Ilse Varga."
        "\n\nHistory\n\nThe first pier was built in 1890."
    )


def test_a_folder_that_cannot_be_listed_is_named_with_the_reason(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    (docs / "locked").mkdir(parents=True)
    (docs / "ok.txt").write_text("A fine document.")
    real = os.scandir

    def scandir(path):  # root lists any folder whatever its mode: the refusal is simulated
        if Path(path) == docs / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match=rf"^{docs}/locked: cannot list folder \(Permission denied\)$"):
        load_documents(docs)
    read, skipped = read_documents(docs, skip_unreadable=True)
    assert [d.id for d in read] == ["ok"]
    assert [(s["file"], s["reason"]) for s in skipped] == [
        ("locked", f"{docs}/locked: cannot list folder (Permission denied)")
    ]


def test_the_question_sets_manifest_is_kept_in_the_provenance(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Mira Tolland runs engineering.")
    (tmp_path / "q.jsonl").write_text('{"question": "Who runs engineering?", "answers": ["Mira Tolland"]}\n')
    args = {"documents": str(tmp_path / "docs"), "questions": str(tmp_path / "q.jsonl"), "train_questions": None}
    assert load_user_dataset(**args).provenance["question_set"] is None
    (tmp_path / "q.manifest.json").write_text('{"generator": "cloze", "kept": 1}')
    data = load_user_dataset(**args)
    assert data.provenance == {"skipped_documents": [], "question_set": {"generator": "cloze", "kept": 1}}
    (tmp_path / "q.manifest.json").write_text("{")
    with pytest.raises(DataError, match=r"q\.manifest\.json: not a valid JSON manifest \(delete it or rerun"):
        load_user_dataset(**args)


def test_read_folder_refuses_by_default_and_logs_each_file_it_skips(tmp_path, caplog):
    import logging

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.txt").write_text("A fine document.")
    os.mkfifo(docs / "pipe.txt")
    with pytest.raises(DataError, match=r"pipe\.txt: a FIFO, not a document; refused"):
        ingest.read_folder(docs)
    with caplog.at_level(logging.WARNING):
        read, skipped = ingest.read_folder(docs, skip_unreadable=True)
    assert [d.id for d in read] == ["ok"] and [s["file"] for s in skipped] == ["pipe.txt"]
    assert caplog.messages == [f"skipped: {docs}/pipe.txt: a FIFO, not a document; refused"]


def test_documents_from_a_jsonl_file_and_each_bad_line_named(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": 7, "text": "  Mira Tolland runs engineering. "}\n{"id": "b", "text": "Kestrel."}\n')
    docs, skipped = read_documents(path)
    assert [(d.id, d.text) for d in docs] == [("7", "Mira Tolland runs engineering."), ("b", "Kestrel.")]
    assert skipped == []
    for lines, error in [
        ('{"id": "a", "text": "x"}\n{"id": "", "text": "y"}\n', r"docs\.jsonl:2: 'id' must be a non-empty string"),
        ('{"id": "a", "text": " "}\n', r"docs\.jsonl:1: 'text' must be a non-empty string"),
        ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', r"docs\.jsonl:2: duplicate id 'a'"),
        ("", r"docs\.jsonl: no documents \(the file is empty\)"),
    ]:
        path.write_text(lines)
        with pytest.raises(DataError, match=error):
            read_documents(path)


def test_a_folder_link_is_logged_as_not_followed_and_the_size_limit_named_in_mib(tmp_path, monkeypatch, caplog):
    import logging

    docs = tmp_path / "docs"
    (docs / "a").mkdir(parents=True)
    (docs / "a" / "x.txt").write_text("Ilse Varga founded the ferry line.")
    (docs / "b").symlink_to("a", target_is_directory=True)
    with caplog.at_level(logging.INFO, logger="harness.data.ingest"):
        assert [d.id for d in load_documents(docs)] == ["a/x"]
    assert f"{docs}/b: a link to a folder inside the documents folder, not followed" in caplog.messages
    monkeypatch.setattr(ingest, "MAX_FILE_BYTES", 2 << 20)
    (docs / "c.txt").write_text("x" * (3 << 20))
    with pytest.raises(
        DataError, match=rf"^{docs}: documents together are over the limit of 2 MiB \(at {docs}/c\.txt\)$"
    ):
        load_documents(docs)
