"""Plain text: paragraphs separated by blank lines, and indented runs as code.

Nothing else is inferred: an underlined line is not a heading and a line that starts with "-" is not a list item,
so a plain-text document has no sections and its chunks no anchors. The title is the file name's stem.
"""
from __future__ import annotations

from temper.rag.parse.common import collapse, dedent, indent_width, stem
from temper.rag.types import Block, ParsedDocument


def parse_plain(text: str, source: str) -> ParsedDocument:
    """Paragraphs split on blank lines; a run of indented lines (after a blank line) is code."""
    lines = text.expandtabs(4).splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
        elif indent_width(lines[i]) > 0:
            j = i
            while j < len(lines) and (not lines[j].strip() or indent_width(lines[j]) > 0):
                j += 1
            blocks.append(Block("code", "\n".join(dedent(lines[i:j]))))
            i = j
        else:
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            blocks.append(Block("paragraph", collapse(" ".join(lines[i:j]))))
            i = j
    return ParsedDocument(source=source, title=stem(source), blocks=blocks, format="text")
