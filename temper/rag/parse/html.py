"""HTML, through the standard library's html.parser: the content of a page, without its navigation.

Handled: the content root (role="main", else <main>, <article>, <body>) with navigation, headers and footers,
sidebars, scripts and forms left out, Sphinx's sidebar, header links and tables of contents among them; headings
<h1>..<h6> anchored by their id or that of their enclosing section; <pre> as code; nested <ul>/<ol> as list blocks;
tables row by row; Sphinx object signatures (`<dt id="json.dumps">`) anchored by their id; admonition titles
prefixed to their first paragraph; implied end tags (<li>, <p>, <td>, ...). The title is <title> without a
"— ... documentation" suffix, else the first <h1>, else the file name.
Not handled: text that scripts render, CSS (hidden elements are read), ids on inline elements (<span id>, <a name>)
as anchors, images, and tables nested in a table, whose text joins the enclosing cell.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

from temper.rag.parse.common import collapse, first_h1, stem
from temper.rag.types import Block, ParsedDocument

_HTML_SKIP_TAGS = frozenset({"script", "style", "nav", "header", "footer", "aside", "form", "noscript", "template",
                             "svg", "button", "select", "iframe", "head"})
_HTML_SKIP_CLASSES = ("sphinxsidebar", "related", "footer", "headerlink", "toctree-wrapper")
_HTML_ROOTS = ("role=main", "main", "article", "body")  # content root, in order of preference
_HTML_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                        "track", "wbr"})
_HTML_HEADINGS = {f"h{k}": k for k in range(1, 7)}
_HTML_BLOCKS = frozenset({"p", "div", "li", "dd", "dt", "dl", "blockquote", "section", "article", "main", "ul", "ol",
                          "table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption", "pre", "figure",
                          "figcaption", "body", "address", "details", "summary", "fieldset", "hr",
                          *_HTML_HEADINGS})
_HTML_IMPLIED_END = {  # start tag -> (open tags it closes, tags that bound the search)
    "li": ({"li"}, {"ul", "ol"}), "dt": ({"dt", "dd"}, {"dl"}), "dd": ({"dt", "dd"}, {"dl"}),
    "tr": ({"tr", "td", "th"}, {"table", "thead", "tbody", "tfoot"}), "td": ({"td", "th"}, {"tr", "table"}),
    "th": ({"td", "th"}, {"tr", "table"}), "thead": ({"thead", "tbody"}, {"table"}),
    "tbody": ({"thead", "tbody"}, {"table"})}


@dataclass(slots=True)
class _Element:
    tag: str
    id: str
    classes: str
    root: str  # the content-root kind this element is ("role=main", "main", "article", "body") or ""
    is_skip: bool  # starts a skipped region (navigation, sidebar, script, ...)


class _HTMLBlocks(HTMLParser):
    """Collects blocks with the content roots that enclose each; the caller keeps those of the best root."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[_Element] = []
        self.num_skip = 0  # open elements that started a skipped region
        self.blocks: list[tuple[Block, set[str]]] = []
        self.roots_seen: set[str] = set()
        self.title_parts: list[str] | None = None
        self.title = ""
        self.inline: list[str] = []  # text of the block being read
        self.code: list[str] | None = None  # inside <pre>
        self.heading: tuple[int, str] | None = None  # (level, anchor) inside <h1>..<h6>
        self.prefix = ""  # an admonition's title, prepended to its first paragraph
        self.list_lines: list[str] = []
        self.list_counters: list[int | None] = []  # per open list: next number of an <ol>, None for <ul>
        self.table_rows: list[str] | None = None
        self.table_anchor = ""
        self.table_depth = 0
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    # -- tree bookkeeping --

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_VOID:
            if tag == "br" and not self.num_skip:
                (self.code if self.code is not None else self.inline).append("\n" if self.code is not None else " ")
            elif tag == "hr" and not self.num_skip:
                self._flush()
            return
        self._close_implied(tag)
        attr = {k: v or "" for k, v in attrs}
        classes = attr.get("class", "")
        is_skip = not self.num_skip and (tag in _HTML_SKIP_TAGS or any(c in classes for c in _HTML_SKIP_CLASSES))
        if is_skip and tag == "aside" and "footnote" in classes:
            is_skip = False  # docutils renders footnotes as <aside>: content, unlike a sidebar
        elif is_skip and tag == "header" and any(el.root in ("role=main", "main", "article") for el in self.stack):
            is_skip = False  # an article's own header holds its title; the page header is navigation
        root = "role=main" if attr.get("role") == "main" else tag if tag in ("main", "article", "body") else ""
        self.stack.append(_Element(tag, attr.get("id", ""), classes, root, is_skip))
        if tag == "title" and not self.title:
            self.title_parts = []
        if is_skip:
            self.num_skip += 1
        if self.num_skip:
            return
        if root:
            self.roots_seen.add(root)
        if tag in _HTML_BLOCKS:
            self._flush()
        self._start(tag, attr)

    def handle_endtag(self, tag: str) -> None:
        for k in range(len(self.stack) - 1, -1, -1):
            if self.stack[k].tag == tag:
                while len(self.stack) > k:
                    self._end(self.stack.pop())
                return

    def handle_data(self, data: str) -> None:
        if self.title_parts is not None:
            self.title_parts.append(data)
        if self.num_skip:
            return
        (self.code if self.code is not None else self.inline).append(data)

    def close(self) -> None:
        super().close()
        while self.stack:
            self._end(self.stack.pop())

    def _close_implied(self, tag: str) -> None:
        """Close what HTML closes implicitly: <li> before the next <li>, an open <p> before a block."""
        if tag in _HTML_IMPLIED_END:
            closes, bounds = _HTML_IMPLIED_END[tag]
        elif tag in _HTML_BLOCKS:
            closes, bounds = {"p"}, _HTML_BLOCKS - {"p"}
        else:
            return
        for k in range(len(self.stack) - 1, -1, -1):
            el = self.stack[k]
            if el.tag in closes:
                while len(self.stack) > k:
                    self._end(self.stack.pop())
                return
            if el.tag in bounds:
                return

    # -- blocks --

    def _start(self, tag: str, attr: dict[str, str]) -> None:
        if tag in _HTML_HEADINGS:
            anchor = attr.get("id") or next((el.id for el in reversed(self.stack[:-1]) if el.id and (
                el.tag == "section" or (el.tag == "div" and "section" in el.classes.split()))), "")
            self.heading = (_HTML_HEADINGS[tag], anchor)
        elif tag == "pre":
            self._emit_list()
            self.code = []
        elif tag in ("ul", "ol"):
            self.list_counters.append(1 if tag == "ol" else None)
        elif tag == "li" and self.list_counters:
            depth = len(self.list_counters)
            number = self.list_counters[-1]
            marker = "- " if number is None else f"{number}. "
            if number is not None:
                self.list_counters[-1] = number + 1
            self.list_lines.append("  " * (depth - 1) + marker)
        elif tag == "table":
            self.table_depth += 1
            if self.table_depth == 1:
                self._emit_list()
                self.table_rows, self.table_anchor = [], attr.get("id", "")
        elif tag == "tr" and self.table_depth == 1:
            self.row = []
        elif tag in ("td", "th") and self.table_depth == 1:
            self.cell = []

    def _end(self, el: _Element) -> None:
        if el.tag == "title" and self.title_parts is not None:
            self.title = collapse("".join(self.title_parts))
            self.title_parts = None
        if el.is_skip:
            self.num_skip -= 1
            return
        if self.num_skip:
            return
        if el.tag == "p" and "admonition-title" in el.classes:
            self.prefix = collapse("".join(self.inline))
            self.inline.clear()
            return
        if el.tag in _HTML_BLOCKS:
            self._flush(anchor=el.id if el.tag == "dt" else "")
        if el.tag in _HTML_HEADINGS:
            self.heading = None
        elif el.tag == "pre" and self.code is not None:
            code = "".join(self.code).strip("\n").rstrip()
            self.code = None
            if self.cell is not None:
                self.cell.append(collapse(code))
            elif code:
                self._emit(Block("code", code))
        elif el.tag in ("ul", "ol") and self.list_counters:
            self.list_counters.pop()
            if not self.list_counters:
                self._emit_list()
        elif el.tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(" ".join(self.cell))
            self.cell = None
        elif el.tag == "tr" and self.row is not None and self.table_rows is not None:
            if any(self.row):
                self.table_rows.append(" | ".join(self.row))
            self.row = None
        elif el.tag == "table":
            self.table_depth -= 1
            if self.table_depth == 0 and self.table_rows is not None:
                if self.table_rows:
                    self._emit(Block("table", "\n".join(self.table_rows), anchor=self.table_anchor))
                self.table_rows = None

    def _flush(self, anchor: str = "") -> None:
        """The inline text read so far ends: route it to a cell, heading, list item or paragraph."""
        text = collapse("".join(self.inline))
        self.inline.clear()
        if not text:
            return
        if self.cell is not None:
            self.cell.append(text)
        elif self.heading is not None:
            level, heading_anchor = self.heading
            self._emit(Block("heading", text, level=level, anchor=heading_anchor))
        elif self.list_counters:
            if self.list_lines and not self.list_lines[-1].endswith(" "):
                self.list_lines[-1] += " " + text
            elif self.list_lines:
                self.list_lines[-1] += text
            else:
                self.list_lines.append("  " * (len(self.list_counters) - 1) + "- " + text)
        else:
            if self.prefix:
                text, self.prefix = f"{self.prefix}: {text}", ""
            self._emit(Block("paragraph", text, anchor=anchor))

    def _emit_list(self) -> None:
        lines = [line for line in self.list_lines if line.strip() not in ("-", "") and not re.fullmatch(
            r"\s*\d+\.\s*", line)]
        self.list_lines = []
        if lines:
            self._emit(Block("list", "\n".join(lines)))

    def _emit(self, block: Block) -> None:
        if self.prefix:  # an admonition title with no paragraph after it
            prefix, self.prefix = self.prefix, ""
            self._emit(Block("paragraph", prefix))
        self.blocks.append((block, {el.root for el in self.stack if el.root}))


def _html_title(title: str) -> str:
    """<title> without the site suffix ("json — JSON encoder and decoder — Python 3.11.4 documentation")."""
    for sep in (" — ", " | "):
        head, found, tail = title.rpartition(sep)
        if found and head and "documentation" in tail.lower():
            return head.strip()
    return title


def parse_html(text: str, source: str) -> ParsedDocument:
    parser = _HTMLBlocks()
    parser.feed(text)
    parser.close()
    root = next((r for r in _HTML_ROOTS if r in parser.roots_seen), None)
    blocks = [b for b, roots in parser.blocks if root is None or root in roots]
    title = _html_title(parser.title) or first_h1(blocks) or stem(source)
    return ParsedDocument(source=source, title=title, blocks=blocks, format="html")
