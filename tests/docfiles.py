"""Real document files for the tests, produced with the libraries that write them
(fpdf2 for PDF, python-docx for Word), and hostile ones built from them or by hand (a PDF
nested 200,000 deep, a .docx with broken XML or a member that does not inflate): no
binary is committed."""

from __future__ import annotations

import zipfile
from pathlib import Path


def write_pdf(path: Path, paragraphs: list[str]) -> Path:
    return write_pdf_pages(path, [paragraphs])


def write_pdf_pages(path: Path, pages: list[list[str]]) -> Path:
    """A PDF with one page per list of paragraphs."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for paragraphs in pages:
        pdf.add_page()
        for text in paragraphs:
            pdf.multi_cell(0, 6, text)
            pdf.ln(3)
    pdf.output(str(path))
    return path


def write_deep_pdf(path: Path, *, depth: int) -> Path:
    """A one-page PDF, by hand, whose content stream shows "Hello" and then an array
    nested `depth` deep (pypdf parses arrays recursively)."""
    content = b"BT /F1 12 Tf 72 712 Td (Hello) Tj " + b"[" * depth + b"]" * depth + b" TJ ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def write_image_only_pdf(path: Path) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 80, 40, style="F")  # a drawing, no text: what a scan looks like to a text extractor
    pdf.output(str(path))
    return path


def write_encrypted_pdf(path: Path, paragraphs: list[str]) -> Path:
    from pypdf import PdfReader, PdfWriter

    plain = write_pdf(path.with_name(f"plain-{path.name}"), paragraphs)
    writer = PdfWriter()
    writer.append(PdfReader(str(plain)))
    writer.encrypt("secret", algorithm="RC4-128")
    writer.write(str(path))
    plain.unlink()
    return path


def write_docx(
    path: Path,
    paragraphs: list[str],
    table: list[list[str]] | None = None,
    *,
    merge: list[tuple[tuple[int, int], tuple[int, int]]] = (),
    merge_down: list[tuple[int, int, int]] = (),
) -> Path:
    """Paragraphs, then a table. `merge` lists (top-left, bottom-right) cells merged by
    python-docx (the merged cell keeps the text of the cells it covers); `merge_down`
    lists (column, first row, last row) merged as Word writes it, one `vMerge` mark per
    cell (python-docx's own merge recurses once per row, so it cannot make a long one)."""
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        rows = list(grid.rows)
        for row, values in zip(rows, table):
            for cell, value in zip(row.cells, values):
                cell.text = value
        for (r0, c0), (r1, c1) in merge:
            grid.cell(r0, c0).merge(grid.cell(r1, c1))
        for c, r0, r1 in merge_down:
            for r in range(r0, r1 + 1):
                rows[r]._tr.tc_lst[c].vMerge = "restart" if r == r0 else "continue"
    document.save(str(path))
    return path


def replace_docx_member(path: Path, member: str, data: bytes) -> Path:
    """A real .docx with one member's bytes replaced (broken XML, a missing body)."""
    good = path.with_name(f"good-{path.name}")
    write_docx(good, ["A harmless looking paragraph."])
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            out.writestr(info, data if info.filename == member else source.read(info))
    good.unlink()
    return path


def corrupt_docx_member(path: Path, member: str = "word/document.xml") -> Path:
    """A real .docx whose member's compressed bytes are flipped: the zip's directory
    reads, the member does not inflate."""
    write_docx(path, ["A harmless looking paragraph that is long enough to compress. " * 4])
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 10, start + 40):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def write_zip_bomb_docx(path: Path, *, unpacked_mib: int) -> Path:
    """A real .docx with one extra member of `unpacked_mib` MiB of zeros (a few hundred kB
    compressed)."""
    write_docx(path, ["A harmless looking paragraph."])
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("word/media/padding.bin", "w") as member:
            block = bytes(2**20)
            for _ in range(unpacked_mib):
                member.write(block)
    return path


def write_html(path: Path, body: str, *, title: str = "") -> Path:
    path.write_text(
        f"<!doctype html><html><head><title>{title}</title>"
        "<style>p { color: red; }</style><script>var secret = 'SCRIPT_TEXT';</script></head>"
        f"<body><noscript>Enable NOSCRIPT_TEXT</noscript>{body}<template>TEMPLATE_TEXT</template>"
        "<script>document.write('MORE_SCRIPT');</script></body></html>",
        encoding="utf-8",
    )
    return path


def write_printed_pdf(path: Path, pages: list[list[str]], *, title: str, url: str) -> Path:
    """A PDF laid out as Chromium prints a page with "Headers and footers" on: the date
    and time top left, the title top centre, the address bottom left and "n/N" bottom
    right of every page (what pypdf reads from a real print: "12/3/26, 6:32 PM Astoria",
    "file:///tmp/page.html 1/1")."""
    from fpdf import FPDF

    class Printed(FPDF):
        def header(self):
            self.set_font("Helvetica", size=8)
            self.cell(60, 5, "12/3/26, 11:15 AM")
            self.cell(70, 5, title, align="C")
            self.ln(10)

        def footer(self):
            self.set_y(-12)
            self.set_font("Helvetica", size=8)
            self.cell(150, 5, url)
            self.cell(0, 5, f"{self.page_no()}/{{nb}}", align="R")

    pdf = Printed()
    for paragraphs in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=11)
        for text in paragraphs:
            pdf.multi_cell(0, 6, text)
            pdf.ln(3)
    pdf.output(str(path))
    return path


def write_saved_page(path: Path, body: str, *, title: str) -> Path:
    """A web page as a browser saves it from a company wiki: the site's header with its
    navigation, breadcrumbs, a sidebar, the article, the site's footer and scripts."""
    path.write_text(
        f"<!doctype html><html><head><title>{title} - Northwind Internal Wiki</title>"
        "<script>window.dataLayer = [];</script></head><body>"
        '<header class="site-header"><a class="logo" href="/">Northwind</a>'
        "<nav><ul><li>Home</li><li>Wiki</li><li>Search</li><li>Sign in</li></ul></nav></header>"
        '<ol class="breadcrumb"><li>Wiki</li><li>Places</li><li>' + title + "</li></ol>"
        '<div class="page-sidebar"><p>Recent changes</p><p>Random page</p></div>'
        f"<main><article><header><h1>{title}</h1></header>{body}"
        "<footer><p>This article was last edited by the wiki team.</p></footer></article></main>"
        '<div role="contentinfo"><p>© 2026 Northwind Internal Wiki. All rights reserved.</p></div>'
        '<footer><p>Privacy | Terms | Contact</p></footer><script>track("view");</script></body></html>',
        encoding="utf-8",
    )
    return path
