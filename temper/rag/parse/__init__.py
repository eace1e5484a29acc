"""Files to ParsedDocument: Markdown, reStructuredText, HTML, plain text and PDF, read into structural blocks.

The chunker needs structure, not just text: headings start chunks and give citations their section path and URL
anchor, code is kept whole, tables split at rows. So every format is read into the same small vocabulary of blocks
(heading, paragraph, code, list, table), one module per format: markdown, rst, html, text (plain) and pdf; common
holds what they share. The Markdown and reST readers are our own line-based parsers and HTML uses the standard
library's html.parser: docutils and markdown-it would be new dependencies for what is, at the level of detail
retrieval needs, a few hundred lines. PDF has no structure to recover; pypdf gives each page's text.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from temper.rag.parse.common import ParseError
from temper.rag.parse.html import parse_html
from temper.rag.parse.markdown import github_slug, parse_markdown
from temper.rag.parse.pdf import parse_pdf
from temper.rag.parse.rst import docutils_slug, parse_rst
from temper.rag.parse.text import parse_plain
from temper.rag.types import ParsedDocument

__all__ = ["ParseError", "detect_format", "docutils_slug", "github_slug", "parse_file", "parse_text"]

_SUFFIX_FORMATS = {".rst": "rst", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html",
                   ".txt": "text", ".text": "text", ".pdf": "pdf"}
_TEXT_PARSERS: dict[str, Callable[[str, str], ParsedDocument]] = {
    "markdown": parse_markdown, "rst": parse_rst, "html": parse_html, "text": parse_plain}


def detect_format(path: str | Path) -> str | None:
    """The format a file's name implies ("rst", "markdown", "html", "text", "pdf"), None for anything else.

    Sphinx copies reST sources to `_sources/*.rst.txt`; those are reST, not plain text.
    """
    name = Path(path).name.lower()
    if name.endswith(".rst.txt"):
        return "rst"
    return _SUFFIX_FORMATS.get(Path(name).suffix)


def parse_file(path: Path, format: str | None = None) -> ParsedDocument:
    """Read a file into blocks; format None means detect_format(path).

    Raises:
        ParseError: unreadable, binary, corrupt or encrypted, or a name whose format we do not read.
    """
    path = Path(path)
    fmt = format or detect_format(path)
    if fmt is None:
        raise ParseError(f"{path}: not a document type we read (formats: .md, .rst, .html, .txt, .pdf); "
                         f"pass format= to read it anyway")
    if fmt == "pdf":
        return parse_pdf(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ParseError(f"cannot read {path}: {e.strerror or e}; check that it exists and is readable") from None
    return parse_text(_decode(data, path), fmt, str(path))


def parse_text(text: str, format: str, source: str) -> ParsedDocument:
    """Parse the text of a Markdown, reST, HTML or plain-text document; source names it in the result."""
    parser = _TEXT_PARSERS.get(format)
    if parser is None:
        raise ValueError(f"format {format!r}: expected one of {sorted(_TEXT_PARSERS)} (PDF needs parse_file)")
    return parser(text, source)


def _decode(data: bytes, path: Path) -> str:
    """UTF-8 with replacement, except that binary files are refused rather than indexed as mojibake."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    text = data.decode("utf-8-sig", errors="replace")
    head = text[:4096]
    if "\x00" in text or head.count("\ufffd") > 0.3 * len(head):  # Latin-1 prose has a few percent
        raise ParseError(f"{path} looks binary (NUL bytes or mostly invalid UTF-8), not a text document; "
                         f"remove it from the folder or convert it to text")
    return text

