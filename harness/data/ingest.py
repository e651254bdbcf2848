"""Turning the user's files into documents and a dataset, one reader per file type.

    text = read_file(Path("docs/handbook.pdf"))            # DataError names the file
    docs, skipped = read_folder(Path("docs"), skip_unreadable=True)
    docs, skipped = read_documents("docs")                 # a folder, or a JSONL of {id, text}
    data = load_user_dataset(documents="docs", questions="q/questions.jsonl", train_questions=None)

Readers (`READERS`, by suffix), all offline, each given the file's bytes (read once,
within `data.MAX_FILE_BYTES`):

- `.pdf`: pypdf's text layer, page by page (`pdf_content`), NFKC-normalised (ligature
  glyphs such as U+FB01 become "fi"), without what a browser prints around a page (the
  date and time, the address, "1/3") or lines repeated on half the pages or more (a
  running header or footer). A line-break hyphen is joined by `_rejoin`'s rule ("signi-"
  + "ficant" -> "significant", "people-" + "friendly" -> "people-friendly"), and a title
  or heading line is a unit of its own (`_is_heading`), never the start of the first
  sentence. A PDF without a text layer (a scan), an encrypted one or a
  damaged one is an error: harness does no OCR and guesses no passwords. Objects nested
  deeper than Python's recursion limit are a damaged file, not a crash.
- `.docx`: python-docx, paragraphs and table rows in document order; a row is its
  cells joined by ` | `, a cell merged across columns once, a cell merged down rows in
  each row it spans. The archive's uncompressed size is checked before anything is
  parsed (`MAX_UNPACKED_BYTES`), so a zip bomb costs a directory listing, not the memory
  of the machine; broken zip members and broken XML are one-line errors (lxml refuses
  XML nested deeper than 256 levels).
- `.html`/`.htm`: the standard library's HTML parser, streamed (no tree is built, so
  nesting costs nothing), the bytes decoded by BeautifulSoup's encoding detection;
  `script`, `style`, `noscript`, `template`, `svg`, `iframe`, the head (its title too)
  and page furniture are left out: `nav`, `aside`, the page's own `header` and `footer`,
  the ARIA roles navigation, banner, contentinfo, complementary, search, menubar and
  toolbar, `hidden` elements and classes or ids such as `breadcrumb` or `site-footer`
  (`_is_furniture`). Block elements become line breaks and table cells are joined by
  ` | `. More than `MAX_HTML_DEPTH` elements open at once is refused: a browser's parser
  stops nesting there too (Chromium's at 512). Everything else of the page is kept:
  boilerplate removers such as trafilatura are tuned for news sites and drop short
  blocks and tables, which is where facts live in a company's pages.
- `.md`/`.txt`: UTF-8 text (a byte-order mark is dropped); anything else is an error
  naming the first bad byte.

A folder's documents then lose the lines repeated across them (`drop_repeated_lines`:
in half the documents or more, at least two, of the folder or of one file type), which is
where a site's or a template's furniture that no element marks ends up; the counts go to
the question set's manifest and the report.

Parsing one file may take `MAX_PARSE_SECONDS` (checked between PDF pages, DOCX blocks
and HTML tags); past it the file is refused.

A document's id is its path relative to the folder without the suffix
(`policies/leave.pdf` -> `policies/leave`), so two files differing only in their suffix
are an error. Hidden files (a name starting with a dot) are ignored. Documents are
regular files inside the folder: a link that resolves outside it, a FIFO, a device or a
socket is an error naming it (or, with `skip_unreadable`, left out and listed), so a
`docs/passwd.txt -> /etc/passwd` is never read. A link to a folder inside is not
followed (its files are read where they are).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import re
import stat
import time
import unicodedata
import zipfile
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

from harness.data.items import (
    MAX_FILE_BYTES,
    DataError,
    Dataset,
    Document,
    check_id,
    load_questions,
    manifest_path,
    read_bytes_limited,
    read_jsonl,
)

log = logging.getLogger(__name__)

MAX_UNPACKED_BYTES = 200 * 2**20  # a .docx whose members unpack to more is refused unread
MAX_HTML_DEPTH = 512  # HTML elements open at once
MAX_PARSE_SECONDS = 120.0  # one file's parsing


class _Clock:
    """The time one file's parsing may take: `check(where)` raises DataError once it is
    spent, naming the file and how far the reader got."""

    def __init__(self, path: Path):
        self.path, self.end = path, time.monotonic() + MAX_PARSE_SECONDS

    def check(self, where: str) -> None:
        if time.monotonic() >= self.end:
            raise DataError(
                f"{self.path}: parsing took over {MAX_PARSE_SECONDS:g} s (stopped at {where}); refused "
                "(a damaged or hostile file?)"
            )


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err).strip() else type(err).__name__


def _read_text(path: Path, raw: bytes, clock: _Clock) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (invalid byte at offset {err.start}); save it as UTF-8") from None


def _pdf_pages(reader, clock: _Clock) -> list[str]:
    pages = []
    for number, page in enumerate(reader.pages, 1):
        clock.check(f"page {number}")
        pages.append(page.extract_text() or "")
    return pages


def _read_pdf(path: Path, raw: bytes, clock: _Clock) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        encrypted = reader.is_encrypted
        pages = [] if encrypted else _pdf_pages(reader, clock)
    except DataError:
        raise
    except RecursionError:  # pypdf reads nested arrays and dictionaries recursively
        raise DataError(
            f"{path}: not a readable PDF (objects nested deeper than Python's recursion limit; a "
            "damaged or hostile file)"
        ) from None
    except (PdfReadError, ValueError, KeyError, OSError) as err:
        raise DataError(f"{path}: not a readable PDF ({_first_line(err)})") from None
    if encrypted:
        raise DataError(f"{path}: encrypted PDF (password-protected); save an unprotected copy")
    if not "".join(pages).strip():
        raise DataError(
            f"{path}: PDF has no text layer ({len(pages)} page(s), a scan or images only); run OCR on it first"
        )
    return pdf_content(pages)


# What a browser prints around each page (Chromium's "Headers and footers"): the date and
# time (with the page title beside it), the page's address (with "1/3" beside it), and a
# page number on its own line ("2/5", "Page 2 of 5").
_PRINT_FURNITURE = re.compile(
    r"\d{1,2}/\d{1,2}/\d{2,4},? \d{1,2}:\d{2}(?: ?[AP]M)?(?: .*)?"
    r"|(?:file|https?)://\S+(?: \d+ ?/ ?\d+)?"
    r"|(?:page )?\d+ ?(?:/|of) ?\d+",
    re.IGNORECASE,
)


def _line_key(line: str, *, digits: bool = True) -> str:
    """A line as furniture is compared: spaces collapsed, lower case, and with `digits`
    False every digit a 0 (so "Page 2 of 5" on one page of a PDF and "Page 3 of 5" on
    the next are the same line; documents are compared with their numbers, which are
    facts)."""
    key = " ".join(line.split()).lower()
    return key if digits else re.sub(r"\d", "0", key)


def pdf_content(pages: list[str]) -> str:
    """The text of a PDF from its pages' text layers (pypdf's `extract_text`): NFKC-normalised (the ligature glyphs U+FB00-FB06 become
    their letters), print headers and footers (`_PRINT_FURNITURE`) and lines repeated on
    half the pages or more (at least two: a running header or footer) left out, then
    each page's hyphenated line breaks joined and its headings set apart (`_pdf_page`)."""
    pages = [[line.strip() for line in unicodedata.normalize("NFKC", page).splitlines()] for page in pages]
    pages = [[line for line in page if line and not _PRINT_FURNITURE.fullmatch(line)] for page in pages]
    on_pages = Counter(key for page in pages for key in {_line_key(line, digits=False) for line in page})
    running = {key for key, n in on_pages.items() if n >= max(2, math.ceil(len(pages) / 2))}
    kept = ([line for line in page if _line_key(line, digits=False) not in running] for page in pages)
    return _tidy("\n".join(_pdf_page(page) for page in kept))


# Endings that are no word of their own: a line-break hyphen before one ("signi-" +
# "ficant", "manage-" + "ment") is a word broken by hyphenation, not a hyphen of the text.
_WORD_ENDINGS = re.compile(
    r"(?:ti|si|ca|fi|ri)?(?:on|ons|al|ally|ant|ants|ance|ances|ent|ents|ence|ences|ic|ics|ical|ically|cant|cance)"
    r"|ment|ments|ness|ity|ities|ing|ings|ible|able|ably|ous|ive|ively|ly|ful|less|ise|ised|ize|ized|ure|ures"
    r"|ed|er|ers|est|ary|ory|ism|ist|ists"
)
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
_HEADING_WORDS = 12  # a line of at most this many words, without final punctuation, can be a heading


def _rejoin(head: str, tail: str, words: set[str]) -> str:
    """`head` ending in "x-" and `tail` starting with "y" (lower case) as one line: "xy"
    when the document spells "xy" elsewhere or "y" is a word ending (`_WORD_ENDINGS`),
    "x-y" when it spells "x-y" elsewhere or otherwise (browsers and word processors break
    lines only at hyphens the text has)."""
    x, y = re.search(r"([^\W\d_]+)-$", head).group(1), re.match(r"[^\W\d_]+", tail).group()
    joined = (x + y).lower()
    keep = f"{x}-{y}".lower() in words or (joined not in words and not _WORD_ENDINGS.fullmatch(y.lower()))
    return head + tail if keep else head[:-1] + tail


def _is_heading(lines: list[str], i: int, width: int) -> bool:
    """A title or heading line: short (at most `_HEADING_WORDS` words and 60% of the
    page's widest line), no final punctuation, after a sentence's end or the page's
    start, and followed by a line that starts with a capital or a digit."""
    line, after = lines[i], lines[i + 1] if i + 1 < len(lines) else ""
    before = lines[i - 1] if i else "."
    return (
        len(line.split()) <= _HEADING_WORDS
        and len(line) <= 0.6 * width
        and not re.search(r"[.!?,;:)\-]$", line)
        and re.search(r"[.!?:]['\")]?$", before) is not None
        and after[:1].isupper() | after[:1].isdigit()
    )


def _pdf_page(lines: list[str]) -> str:
    """One page's lines as text: a line ending in a hyphen joined to the next one when
    that starts in lower case (`_rejoin`), and headings set apart by blank lines (so a
    title never runs into the first sentence)."""
    words = set(_WORD.findall(" ".join(lines).lower()))
    joined: list[str] = []
    for line in lines:
        if joined and re.search(r"[^\W\d_]-$", joined[-1]) and line[:1].islower():
            joined[-1] = _rejoin(joined[-1], line, words)
        else:
            joined.append(line)
    width = max((len(line) for line in joined), default=0)
    return "\n".join(f"\n{line}\n" if _is_heading(joined, i, width) else line for i, line in enumerate(joined))


def _check_unpacked_size(path: Path, raw: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        raise DataError(f"{path}: not a valid .docx (not a zip archive)") from None
    if unpacked > MAX_UNPACKED_BYTES:
        raise DataError(
            f"{path}: .docx unpacks to {unpacked / 2**20:.0f} MiB, over the "
            f"{MAX_UNPACKED_BYTES / 2**20:.0f} MiB limit (a zip bomb?); refused unread"
        )


def _docx_rows(table) -> list[str]:
    """A table's rows as `a | b | c`, one entry per <w:tc>: a cell merged across columns
    once, two cells with the same text both. A cell continuing a vertical merge shows the
    text of the cell it continues, remembered per grid column (python-docx's `row.cells`
    finds it by recursing up the rows, which fails on a long merge)."""
    from docx.table import _Cell

    rows, above = [], {}
    for tr in table._tbl.tr_lst:
        column, cells = tr.grid_before, []
        for tc in tr.tc_lst:
            if tc.vMerge == "continue":
                text = above.get(column, "")
            else:
                text = above[column] = _Cell(tc, table).text.strip()
            if text:
                cells.append(text)
            column += tc.grid_span
        if cells:
            rows.append(" | ".join(cells))
    return rows


def _docx_lines(path: Path, document, clock: _Clock) -> list[str]:
    from docx.table import Table

    if document.element.body is None:
        raise DataError(f"{path}: not a valid .docx (word/document.xml has no body)")
    lines = []
    for number, block in enumerate(document.iter_inner_content(), 1):
        clock.check(f"block {number}")
        if isinstance(block, Table):
            lines += _docx_rows(block)
        elif block.text.strip():
            lines.append(block.text.strip())
    return lines


def _read_docx(path: Path, raw: bytes, clock: _Clock) -> str:
    import docx
    from docx.exceptions import PythonDocxError
    from docx.opc.exceptions import OpcError
    from lxml.etree import LxmlError

    _check_unpacked_size(path, raw)
    try:
        lines = _docx_lines(path, docx.Document(io.BytesIO(raw)), clock)
    except DataError:
        raise
    except (
        OpcError,
        PythonDocxError,
        LxmlError,
        KeyError,
        ValueError,
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
    ) as err:
        # a member that does not inflate, broken or too deep XML, a missing part
        reason = _first_line(err).replace(", use XML_PARSE_HUGE option", "")
        raise DataError(f"{path}: not a valid .docx ({reason})") from None
    return _tidy("\n\n".join(lines))  # paragraphs and rows end sentences (see retrieve.split_sentences)


_BLOCKS = frozenset(
    {
        "p",
        "div",
        "li",
        "tr",
        "br",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "section",
        "article",
        "table",
        "blockquote",
        "pre",
        "dd",
        "dt",
        "title",
        "ul",
        "ol",
        "dl",
        "header",
        "footer",
        "main",
        "nav",
        "aside",
        "figure",
        "figcaption",
        "caption",
        "hr",
        "address",
        "details",
        "summary",
    }
)
_HIDDEN = frozenset({"script", "style", "noscript", "template", "svg", "iframe"})
_VOID = frozenset(
    {
        "area",
        "base",
        "basefont",
        "bgsound",
        "br",
        "col",
        "embed",
        "frame",
        "hr",
        "img",
        "input",
        "keygen",
        "link",
        "menuitem",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    }
)
# What a start tag closes when it is open on top, as HTML does for tags people leave
# unclosed (`<p>a<p>b`, `<li>`, `<td>`); every other block start closes an open `p`.
_CLOSES = {
    "li": ("li", "p"),
    "dt": ("dt", "dd", "p"),
    "dd": ("dt", "dd", "p"),
    "tr": ("td", "th", "tr"),
    "td": ("td", "th"),
    "th": ("td", "th"),
    "option": ("option",),
    "a": ("a",),
}
_CELL = "\x1f"  # marks a table cell's start in the text; each line's cells are joined by " | "


# Page furniture, left out like `_HIDDEN`: the navigation and complementary elements, a
# page's own header and footer (not one inside an article, main or section: that is the
# article's heading or byline, ARIA's rule for banner and contentinfo), an element whose
# ARIA role is one of `_FURNITURE_ROLES`, marked `hidden` or `aria-hidden`, or whose class
# or id has a `-`/`_`-separated piece in `_FURNITURE_WORDS` (`breadcrumb`, `site-nav`,
# `footer-links`, `skip-link`, `cookie-banner`).
_FURNITURE_TAGS = frozenset({"nav", "aside"})
_PAGE_ONLY = frozenset({"header", "footer"})
_CONTENT = frozenset({"article", "main", "section"})
_FURNITURE_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search", "menubar", "toolbar"})
_FURNITURE_WORDS = frozenset(
    {"nav", "navbar", "navigation", "breadcrumb", "breadcrumbs", "sidebar", "footer", "skip", "cookie", "cookies"}
)


def _is_furniture(tag: str, attrs: list[tuple[str, str | None]], in_content: bool) -> bool:
    """Whether an element is page furniture (see `_FURNITURE_TAGS` above)."""
    if tag in _FURNITURE_TAGS or (tag in _PAGE_ONLY and not in_content):
        return True
    values = dict(attrs)
    if "hidden" in values or (values.get("aria-hidden") or "").lower() == "true":
        return True
    if (values.get("role") or "").lower() in _FURNITURE_ROLES:
        return True
    names = f"{values.get('class') or ''} {values.get('id') or ''}".lower()
    return any(piece in _FURNITURE_WORDS for piece in re.split(r"[\s_-]+", names))


class _HtmlText(HTMLParser):
    """The text of an HTML page, streamed: each open element's (tag, hidden, in head,
    in content, in a table cell) on a stack that only counts depth and matches end tags."""

    def __init__(self, path: Path, clock: _Clock):
        super().__init__(convert_charrefs=True)
        self.path, self.clock = path, clock
        self.stack: list[tuple[str, bool, bool, bool, bool]] = []
        self.open: Counter = Counter()  # tags on the stack, so an end tag matches in O(1)
        self.parts: list[str] = []

    def _state(self) -> tuple[bool, bool, bool, bool]:
        return self.stack[-1][1:] if self.stack else (False, False, False, False)

    def _pop_through(self, tag: str) -> None:
        while self.stack:
            top = self.stack.pop()[0]
            self.open[top] -= 1
            if top == tag:
                return

    def _break(self) -> None:
        self.parts.append(" " if self._state()[3] else "\n")  # blocks inside a cell stay on the row's line

    def handle_starttag(self, tag, attrs):
        self.clock.check(f"line {self.getpos()[0]}")
        if self.open["head"] and (tag == "body" or (tag in _BLOCKS and tag != "title")):
            self._pop_through("head")  # the head ends where the body's content starts
        for closed in _CLOSES.get(tag, ("p",) if tag in _BLOCKS else ()):
            while self.stack and self.stack[-1][0] == closed:
                self._pop_through(closed)
        if tag in _BLOCKS:
            self._break()
        elif tag in ("td", "th"):
            self.parts.append(_CELL)
        if tag in _VOID:
            return
        hidden, head, content, cell = self._state()
        hidden = hidden or tag in _HIDDEN or _is_furniture(tag, attrs, content)
        cell = tag in ("td", "th") or (cell and tag != "table")
        self.stack.append((tag, hidden, head or tag == "head", content or tag in _CONTENT, cell))
        self.open[tag] += 1
        if len(self.stack) > MAX_HTML_DEPTH:
            raise DataError(
                f"{self.path}: HTML nested deeper than {MAX_HTML_DEPTH} elements (line "
                f"{self.getpos()[0]}; unclosed tags?); refused"
            )

    def handle_endtag(self, tag):
        if self.open[tag]:
            self._pop_through(tag)
        if tag in _BLOCKS:
            self._break()

    def handle_data(self, data):
        hidden, head, _, _ = self._state()
        if not hidden and not head:  # the head's title is the browser tab's, furniture like the rest
            self.parts.append(data.replace(_CELL, " "))

    def text(self) -> str:
        lines = []
        for line in "".join(self.parts).splitlines():
            cells = (" ".join(c.split()) for c in line.split(_CELL))
            lines.append(" | ".join(c for c in cells if c))
        return "\n\n".join(line for line in lines if line)  # blocks end sentences


def _read_html(path: Path, raw: bytes, clock: _Clock) -> str:
    from bs4.dammit import UnicodeDammit

    markup = UnicodeDammit(raw, is_html=True).unicode_markup
    if markup is None:
        raise DataError(f"{path}: not readable HTML (no text encoding fits its bytes)")
    parser = _HtmlText(path, clock)
    try:
        parser.feed(markup)
        parser.close()
    except AssertionError as err:  # html.parser's way of refusing a malformed `<![...[` section
        raise DataError(f"{path}: not readable HTML ({_first_line(err)})") from None
    return _tidy(parser.text())


def read_file(path: str | Path) -> str:
    """The text of one file, by its suffix (see `READERS`); DataError names the file."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"{path}: unknown document type {path.suffix or '(no suffix)'!r}; harness reads "
            f"{', '.join(READERS)} (or give data.documents a JSONL file)"
        )
    return reader(path, read_bytes_limited(path), _Clock(path))


def _tidy(text: str) -> str:
    """Collapse runs of spaces within lines and of blank lines; keep line breaks."""
    text = re.sub(r"[ \t\f\v\u00a0]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


def _entries(folder: Path) -> list[tuple[Path, DataError | None]]:
    """Every entry under `folder` that could be a document, in path order: files, links
    and anything else that is not a folder, links to folders (which are not followed),
    and the folders that could not be listed (with their error)."""
    found: list[tuple[Path, DataError | None]] = []

    def unlisted(err: OSError) -> None:
        found.append((Path(err.filename), DataError(f"{err.filename}: cannot list folder ({err.strerror})")))

    for top, dirs, files in os.walk(folder, onerror=unlisted):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [(Path(top, d), None) for d in dirs if Path(top, d).is_symlink()]
        found += [(Path(top, f), None) for f in files if not f.startswith(".")]
    return sorted(found, key=lambda entry: entry[0])


def _kind(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a link to nothing"
    return (
        "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )


def _document_path(entry: Path, root: Path) -> Path | None:
    """Where the folder entry `entry` is read from: its real path, inside `root` (the
    folder's real path), or None for a link to a folder inside (its files are read where
    they are). A link out of the folder, a FIFO, a device or a socket is a DataError."""
    try:
        real = entry.resolve()
    except (OSError, RuntimeError) as err:  # RuntimeError: a link loop (Python < 3.13)
        raise DataError(f"{entry}: cannot resolve the link ({_first_line(err)})") from None
    if not real.is_relative_to(root):
        raise DataError(f"{entry}: a link to {real}, outside the documents folder; refused (copy the file in instead)")
    if real.is_dir():
        return None
    if not real.is_file():
        raise DataError(f"{entry}: {_kind(real)}, not a document; refused")
    return real


def read_folder(
    folder: str | Path, *, skip_unreadable: bool = False, counts: dict | None = None
) -> tuple[list[Document], list[dict]]:
    """Every document file under `folder` as a Document (id: relative path without
    suffix), in path order. An unreadable file, a link out of the folder or anything that
    is not a regular file is an error, or with `skip_unreadable` left out and listed in
    the second return value as {"file", "reason"}. Empty files are left out silently, and
    so is a document that was only furniture (`drop_repeated_lines`, whose counts go into
    `counts` when given)."""
    folder = Path(folder)
    root = folder.resolve()
    docs, kinds, skipped, seen, total = [], [], [], {}, 0

    def unreadable(entry: Path, err: DataError) -> None:
        if not skip_unreadable:
            raise err
        log.warning("skipped: %s", err)
        skipped.append({"file": entry.relative_to(folder).as_posix(), "reason": str(err)})

    for entry, error in _entries(folder):
        try:
            if error is not None:
                raise error
            real = _document_path(entry, root)
        except DataError as err:
            unreadable(entry, err)
            continue
        if real is None:
            log.info("%s: a link to a folder inside the documents folder, not followed", entry)
            continue
        total += real.stat().st_size
        if total > MAX_FILE_BYTES:  # a runaway folder is an error, not hours of parsing
            raise DataError(
                f"{folder}: documents together are over the limit of {MAX_FILE_BYTES >> 20} MiB (at {entry})"
            )
        doc_id = entry.relative_to(folder).with_suffix("").as_posix()
        if doc_id in seen:
            raise DataError(f"{entry}: same document id {doc_id!r} as {seen[doc_id]}; rename one of them")
        seen[doc_id] = entry
        try:
            text = read_file(entry).strip()
        except DataError as err:
            unreadable(entry, err)
            continue
        if text:
            docs.append(Document(id=doc_id, text=text))
            kinds.append(_KIND_OF.get(entry.suffix.lower(), entry.suffix.lower()))
    docs, dropped = drop_repeated_lines(docs, kinds)
    if counts is not None:
        counts.update(dropped)
    return [d for d in docs if d.text], skipped


_KIND_OF = {".htm": ".html", ".txt": ".md"}  # suffixes that read alike share a group for drop_repeated_lines


def drop_repeated_lines(docs: list[Document], kinds: list[str]) -> tuple[list[Document], dict]:
    """`docs` without their furniture: a line (compared by `_line_key`) found in half the
    documents or more, at least two, of the folder or of the documents of the same kind
    (`kinds[i]`, a suffix: the 3 saved web pages of a folder of 12 share their
    navigation), is left out of every document; copies of one file count as one document. Returns the documents and the counts
    (`repeated_lines`: distinct lines left out, `repeated_line_copies`: every copy)."""
    distinct = dict.fromkeys((kind, d.text) for kind, d in zip(kinds, docs))  # a copy of a file counts once
    in_docs, by_kind, size = Counter(), Counter(), Counter(kind for kind, _ in distinct)
    for kind, text in distinct:
        doc_keys = {_line_key(line) for line in text.splitlines() if line.strip()}
        in_docs.update(doc_keys)
        by_kind.update((kind, key) for key in doc_keys)
    repeated = {key for key, n in in_docs.items() if n >= max(2, math.ceil(len(distinct) / 2))}
    repeated |= {key for (kind, key), n in by_kind.items() if n >= max(2, math.ceil(size[kind] / 2))}
    out, copies = [], 0
    for d in docs:
        lines = d.text.splitlines()
        kept = [line for line in lines if not line.strip() or _line_key(line) not in repeated]
        copies += len(lines) - len(kept)
        out.append(dataclasses.replace(d, text=_tidy("\n".join(kept))) if len(kept) < len(lines) else d)
    if repeated:
        log.info("documents: %d line(s) repeated across documents left out (%d copies)", len(repeated), copies)
    return out, {"repeated_lines": len(repeated), "repeated_line_copies": copies}


def read_documents(
    path: str | Path, *, skip_unreadable: bool = False, counts: dict | None = None
) -> tuple[list[Document], list[dict]]:
    """Documents from a folder of files (see harness/data/ingest.py for the types read) or from
    a JSONL file (`id`, `text`), and the files left out as unreadable (`skip_unreadable`;
    otherwise an unreadable file is an error). A folder's furniture counts go into `counts`
    (see `read_folder`); a JSONL file's text is taken as it is."""
    path = Path(path)
    if path.is_dir():
        docs, skipped = read_folder(path, skip_unreadable=skip_unreadable, counts=counts)
        if not docs:
            raise DataError(
                f"{path}: no non-empty documents found ({', '.join(READERS)})"
                + (f"; {len(skipped)} unreadable file(s) skipped" if skipped else "")
            )
        return docs, skipped
    if not path.exists():
        raise DataError(f"{path}: documents not found (expected a folder of documents or a JSONL file)")
    docs, seen = [], set()
    for lineno, row in read_jsonl(path):
        doc_id, text = check_id(row.get("id"), f"{path}:{lineno}"), row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{lineno}: 'text' must be a non-empty string")
        if str(doc_id) in seen:
            raise DataError(f"{path}:{lineno}: duplicate id {doc_id!r}")
        seen.add(str(doc_id))
        docs.append(Document(id=str(doc_id), text=text.strip()))
    if not docs:
        raise DataError(f"{path}: no documents (the file is empty)")
    return docs, []


def load_documents(path: str | Path, *, skip_unreadable: bool = False) -> list[Document]:
    """Documents from a folder or a JSONL file (see `read_documents`)."""
    return read_documents(path, skip_unreadable=skip_unreadable)[0]


def load_user_dataset(
    *, documents: str, questions: str, train_questions: str | None, skip_unreadable: bool = False
) -> Dataset:
    """A Dataset from the user's files; training text is the documents themselves. Its
    provenance lists the documents skipped as unreadable and the question set's manifest,
    when `harness questions` wrote one."""
    docs, skipped = read_documents(documents, skip_unreadable=skip_unreadable)
    manifest = None
    if manifest_path(questions).is_file():
        try:
            manifest = json.loads(manifest_path(questions).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(
                f"{manifest_path(questions)}: not a valid JSON manifest (delete it or rerun harness questions)"
            ) from None
    return Dataset(
        documents=tuple(docs),
        questions=tuple(load_questions(questions)),
        train_texts=tuple(d.text for d in docs),
        train_questions=tuple(load_questions(train_questions)) if train_questions else (),
        provenance={"skipped_documents": skipped, "question_set": manifest},
    )


READERS = {
    ".pdf": _read_pdf,
    ".docx": _read_docx,
    ".html": _read_html,
    ".htm": _read_html,
    ".md": _read_text,
    ".txt": _read_text,
}
