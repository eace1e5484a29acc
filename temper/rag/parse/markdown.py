"""Markdown: CommonMark's block structure as documentation uses it, plus GitHub tables, read line by line.

Handled: ATX and setext headings anchored by GitHub's slug (repeated titles get -1, -2, as on GitHub), fenced and
indented code, bullet and ordered lists with nesting and lazy continuation, pipe tables, block quotes (their
contents are read as ordinary blocks), and a YAML front matter title. Inline markup becomes plain text: links and
images keep their text and alt text, emphasis and inline HTML tags are dropped, code spans are kept verbatim.
Not handled: HTML blocks (their tags are stripped like inline HTML and the text kept as paragraphs), footnotes (a
`[^1]: ...` definition is dropped like a link reference definition, the `[^1]` reference stays in the text), and
thematic breaks, which are dropped.
"""
from __future__ import annotations

import re

from temper.rag.parse.common import collapse, first_h1, indent_width, merge_list_items, stem
from temper.rag.types import Block, ParsedDocument

_MD_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_MD_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})")
_MD_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_MD_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_MD_LIST = re.compile(r"^( {0,3})([-*+]|\d{1,9}[.)])( +|$)")
_MD_QUOTE = re.compile(r"^ {0,3}> ?")
_MD_TABLE_DELIMITER = re.compile(r"^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_MD_LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]+\S")
_MD_INLINE = [  # (pattern, replacement), applied in order outside code spans
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # image: its alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # [text](url)
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # [text][ref]
    (re.compile(r"<((?:https?|mailto):[^>\s]+)>"), r"\1"),  # autolink
    (re.compile(r"</?[A-Za-z][^<>]*>"), ""),  # inline HTML tags
    (re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"), r"\1"),
    (re.compile(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)"), r"\1"),
    (re.compile(r"(?<![\w*\\])\*(?=[^\s*])(.+?)(?<=[^\s*\\])\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<![\w\\])_(?=[^\s_])(.+?)(?<=[^\s_\\])_(?!\w)"), r"\1"),
    (re.compile(r"~~(.+?)~~"), r"\1"),
    (re.compile(r"\\([!-/:-@\[-`{-~])"), r"\1"),  # backslash escapes
]
_MD_CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def _md_inline(text: str) -> str:
    """Markdown inline markup to plain text; code spans are kept verbatim (their `*` and `_` are code)."""
    for pattern, repl in _MD_INLINE[:3]:  # links first: their text may hold code spans
        text = pattern.sub(repl, text)
    parts: list[str] = []
    pos = 0
    for m in _MD_CODE_SPAN.finditer(text):
        parts.append(_md_plain(text[pos:m.start()]))
        parts.append(m.group(2).strip() or m.group(2))
        pos = m.end()
    parts.append(_md_plain(text[pos:]))
    return collapse("".join(parts))


def _md_plain(text: str) -> str:
    for pattern, repl in _MD_INLINE[3:]:
        text = pattern.sub(repl, text)
    return text


def github_slug(text: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation other than - and _ dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


class _MarkdownParser:
    """CommonMark's block structure, the parts documentation uses; GitHub tables; no HTML blocks or footnotes."""

    def __init__(self) -> None:
        self.used_slugs: set[str] = set()

    def unique_slug(self, text: str) -> str:
        slug = candidate = github_slug(text)
        n = 0
        while candidate and candidate in self.used_slugs:
            n += 1
            candidate = f"{slug}-{n}"
        self.used_slugs.add(candidate)
        return candidate

    def parse(self, lines: list[str]) -> list[Block]:
        blocks: list[Block] = []
        para: list[str] = []

        def flush() -> None:
            if para:
                blocks.append(Block("paragraph", _md_inline(" ".join(para))))
                para.clear()

        i, n = 0, len(lines)
        while i < n:
            line = lines[i]
            if not line.strip():
                flush()
                i += 1
            elif m := _MD_FENCE.match(line):
                flush()
                i = self._fence(lines, i, m, blocks)
            elif m := _MD_ATX.match(line):
                flush()
                title = _md_inline(m.group(2) or "")
                blocks.append(Block("heading", title, level=len(m.group(1)), anchor=self.unique_slug(title)))
                i += 1
            elif para and (m := _MD_SETEXT.match(line)):
                title = _md_inline(" ".join(para))
                para.clear()
                blocks.append(Block("heading", title, level=1 if m.group(1)[0] == "=" else 2,
                                    anchor=self.unique_slug(title)))
                i += 1
            elif _MD_RULE.match(line):
                flush()
                i += 1
            elif not para and indent_width(line) >= 4:
                j = i
                while j < n and (not lines[j].strip() or indent_width(lines[j]) >= 4):
                    j += 1
                blocks.append(Block("code", "\n".join(line[4:] for line in lines[i:j]).rstrip()))
                i = j
            elif _MD_QUOTE.match(line):
                flush()
                j = i
                while j < n and _MD_QUOTE.match(lines[j]):
                    j += 1
                blocks.extend(self.parse([_MD_QUOTE.sub("", quoted, count=1) for quoted in lines[i:j]]))
                i = j
            elif "|" in line and i + 1 < n and "|" in lines[i + 1] and _MD_TABLE_DELIMITER.match(lines[i + 1]):
                flush()
                i = self._table(lines, i, blocks)
            elif _MD_LIST.match(line):
                flush()
                i = self._list(lines, i, blocks)
            elif not para and _MD_LINK_DEFINITION.match(line):
                i += 1
            else:
                para.append(line.strip())
                i += 1
        flush()
        return blocks

    def _fence(self, lines: list[str], i: int, m: re.Match[str], blocks: list[Block]) -> int:
        indent, fence = len(m.group(1)), m.group(2)
        close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        body = [line[min(indent, indent_width(line)):] for line in lines[i + 1:j]]
        blocks.append(Block("code", "\n".join(body).strip("\n").rstrip()))
        return j + 1  # an unclosed fence runs to the end of the document

    def _table(self, lines: list[str], i: int, blocks: list[Block]) -> int:
        rows = [self._cells(lines[i])]
        j = i + 2
        while j < len(lines) and lines[j].strip() and "|" in lines[j]:
            rows.append(self._cells(lines[j]))
            j += 1
        blocks.append(Block("table", "\n".join(" | ".join(row) for row in rows)))
        return j

    @staticmethod
    def _cells(line: str) -> list[str]:
        line = line.strip()
        line = line.removeprefix("|")
        line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
        return [_md_inline(cell.replace("\\|", "|")) for cell in re.split(r"(?<!\\)\|", line)]

    def _list(self, lines: list[str], i: int, blocks: list[Block]) -> int:
        """Consume a list (items and their indented continuation); returns the index after it."""
        items: list[tuple[str, list[Block]]] = []
        n = len(lines)
        list_kind = self._list_kind(lines[i])
        while i < n and (m := _MD_LIST.match(lines[i])) and self._list_kind(lines[i]) == list_kind:
            marker = m.group(2)
            width = len(m.group(1)) + len(marker) + (len(m.group(3)) if 0 < len(m.group(3)) <= 4 else 1)
            body = [lines[i][width:]]
            i += 1
            while i < n:
                line = lines[i]
                if not line.strip():
                    j = i
                    while j < n and not lines[j].strip():
                        j += 1
                    if j < n and indent_width(lines[j]) >= width:
                        body.extend([""] * (j - i))
                        i = j
                        continue
                    break
                if indent_width(line) >= width:
                    body.append(line[width:])
                elif body[-1].strip() and not self._starts_block(line):  # lazy continuation of a paragraph
                    body.append(line.strip())
                else:
                    break
                i += 1
            label = f"{marker[:-1]}. " if marker[0].isdigit() else "- "
            items.append((label, self.parse(body)))
            if i < n and not lines[i].strip():  # the blank lines before the next item or after the list
                while i < n and not lines[i].strip():
                    i += 1
                if i < n and not _MD_LIST.match(lines[i]):
                    break
        blocks.extend(merge_list_items(items))
        return i

    @staticmethod
    def _list_kind(line: str) -> str:
        """The bullet character, or the delimiter of an ordered list's number: CommonMark starts a new list when it
        changes."""
        m = _MD_LIST.match(line)
        return m.group(2)[-1] if m else ""

    @staticmethod
    def _starts_block(line: str) -> bool:
        return bool(_MD_LIST.match(line) or _MD_FENCE.match(line) or _MD_ATX.match(line) or _MD_RULE.match(line)
                    or _MD_QUOTE.match(line))


def _front_matter(lines: list[str]) -> tuple[str, list[str]]:
    """Split YAML front matter off; returns (its title or "", the remaining lines)."""
    if not lines or lines[0].strip() != "---":
        return "", lines
    for j in range(1, len(lines)):
        if lines[j].strip() in ("---", "..."):
            title = ""
            for line in lines[1:j]:
                if m := re.match(r"^title:\s*(.+?)\s*$", line):
                    title = m.group(1).strip("'\"")
            return title, lines[j + 1:]
    return "", lines


def parse_markdown(text: str, source: str) -> ParsedDocument:
    title, lines = _front_matter(text.expandtabs(4).splitlines())
    blocks = _MarkdownParser().parse(lines)
    return ParsedDocument(source=source, title=title or first_h1(blocks) or stem(source), blocks=blocks,
                          format="markdown")
