"""What the format readers share: the error they raise, and small text helpers (collapsing whitespace, dedenting
indented bodies, turning list items into list blocks, titles from headings or file names).
"""
from __future__ import annotations

from pathlib import Path

from temper.errors import TemperError
from temper.rag.types import Block


class ParseError(TemperError):
    """A file cannot be read or is not what its name says (binary, corrupt, encrypted)."""


def stem(source: str) -> str:
    """The file name without its extension (and without `.rst.txt`): the title of last resort."""
    name = source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    if name.lower().endswith(".rst.txt"):
        return name[:-len(".rst.txt")]
    return Path(name).stem or name


def collapse(text: str) -> str:
    """Every run of whitespace, newlines included, to one space; none at the ends."""
    return " ".join(text.split())


def first_h1(blocks: list[Block]) -> str:
    """The text of the first level-1 heading, "" when there is none."""
    return next((b.text for b in blocks if b.kind == "heading" and b.level == 1), "")


def merge_list_items(items: list[tuple[str, list[Block]]]) -> list[Block]:
    """List items (marker, the blocks parsed from the item's body) to "list" blocks, one item per line.

    Nested lists are indented by two spaces; a code block or table inside an item ends the list block so that it
    stays a block of its own (the list resumes in a new block after it).
    """
    out: list[Block] = []
    lines: list[str] = []
    for marker, blocks in items:
        is_first = True
        for b in blocks:
            if b.kind in ("paragraph", "heading"):
                if is_first or not lines:
                    lines.append(marker + b.text)
                else:
                    lines[-1] += " " + b.text
            elif b.kind == "list":
                if is_first:
                    lines.append(marker.rstrip())
                lines.extend("  " + line for line in b.text.split("\n"))
            else:
                if lines:
                    out.append(Block("list", "\n".join(lines)))
                    lines = []
                out.append(b)
            is_first = False
    if lines:
        out.append(Block("list", "\n".join(lines)))
    return out


def indent_width(line: str) -> int:
    """The number of leading spaces (tabs are expanded before parsing)."""
    return len(line) - len(line.lstrip(" "))


def dedent(lines: list[str]) -> list[str]:
    """Remove the common indentation of the non-blank lines and the blank lines at both ends."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    margin = min((indent_width(line) for line in lines if line.strip()), default=0)
    return [line[margin:].rstrip() for line in lines]
