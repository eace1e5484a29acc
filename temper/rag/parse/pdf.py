"""PDF: each page's text through pypdf (an optional dependency), as paragraphs tagged with their page.

A PDF's text layer has no structure to recover: no headings (so no sections or anchors: citations give the page),
no code or tables, and paragraphs are guessed from blank lines or, when the extractor gives none, from lines that end
a sentence. Scanned pages without a text layer give no text (no OCR). An encrypted file is read only when its
password is empty. The title is the document's metadata title, else a short first line, else the file name.
"""
from __future__ import annotations

import re
from pathlib import Path

from temper.rag.parse.common import ParseError, collapse
from temper.rag.types import Block, ParsedDocument

_SENTENCE_END = re.compile(r"[.!?:][\"')\]\u201d\u2019]*$")


def parse_pdf(path: Path) -> ParsedDocument:
    """Each page's text via pypdf, as paragraphs tagged with their 1-based page."""
    try:
        import pypdf
        from pypdf.errors import PyPdfError
    except ImportError:
        raise ParseError(f"{path}: reading PDF needs pypdf: pip install pypdf") from None
    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError(f"{path} is encrypted with a password; decrypt it (e.g. qpdf --decrypt) and ingest again")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except OSError as e:
        raise ParseError(f"cannot read {path}: {e.strerror or e}; check that it exists and is readable") from None
    except (PyPdfError, ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as e:
        # NOTE: pypdf reports damaged files with all of these, not only its own PdfReadError
        raise ParseError(f"{path} is not a readable PDF ({type(e).__name__}: {e}); "
                         f"check the file or re-export it") from None
    if not pages:
        raise ParseError(f"{path} has no pages; check the file or re-export it")
    blocks = [Block("paragraph", p, page=k) for k, text in enumerate(pages, start=1) for p in _pdf_paragraphs(text)]
    first_line = next((line.strip() for line in pages[0].splitlines() if line.strip()), "")
    title = collapse(str(meta_title)) or (first_line if 0 < len(first_line) <= 80 else "") or path.stem
    return ParsedDocument(source=str(path), title=title, blocks=blocks, format="pdf", metadata={"pages": len(pages)})


def _pdf_paragraphs(text: str) -> list[str]:
    """Split a page's text on blank lines, else (extractors often give none) after lines that end a sentence."""
    lines = [line.strip() for line in text.splitlines()]
    has_blank_lines = any(not line for line in lines) and any(lines)
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        if line:
            current.append(line)
        if current and (not line if has_blank_lines else _SENTENCE_END.search(line)):
            paragraphs.append(collapse(" ".join(current)))
            current = []
    if current:
        paragraphs.append(collapse(" ".join(current)))
    return paragraphs
