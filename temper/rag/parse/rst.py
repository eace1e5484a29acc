"""reStructuredText: docutils' body elements and sections, and the Sphinx directives of the Python docs' sources.

Handled: sections (a style's level is the order of its first use) anchored by docutils' id or by the `.. _label:`
before them, which also anchors the next block; paragraphs, literal (`::`) and doctest blocks, bullet, enumerated
and definition lists, block quotes and footnotes (read as ordinary blocks), grid, simple, list and CSV tables.
Sphinx: code directives are code; object descriptions (`.. function::`, `.. class::`, ...) become their signature
anchored by the full dotted name Sphinx gives it (module from `.. module::`/`.. currentmodule::`, class from the
enclosing `.. class::`); notes, warnings and version notes prefix their first paragraph as Sphinx renders them.
Roles become their text (:func:`~json.dumps` reads "json.dumps", :pep:`8` reads "PEP 8").
Not handled: substitutions are not resolved (a definition is dropped, a reference keeps its name), nor includes
(`.. include::`, `.. literalinclude::` and `.. image::` are dropped like toctree and index); field lists, option
lists and line blocks read as plain paragraphs; comments are dropped.
"""
from __future__ import annotations

import csv
import re
import unicodedata

from temper.rag.parse.common import collapse, dedent, first_h1, indent_width, merge_list_items, stem
from temper.rag.types import Block, ParsedDocument

_RST_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1+\s*$")
_RST_DIRECTIVE = re.compile(r"^\.\.\s+([\w:+-]+)::(?:\s+(.*))?$")
_RST_LABEL = re.compile(r"^\.\.\s+_([^_:`][^:`]*|`[^`]+`):\s*$")
_RST_FOOTNOTE = re.compile(r"^\.\.\s+\[([^\]]+)\](?:\s+(.*))?$")
_RST_OPTION = re.compile(r"^:[\w-][\w .-]*:(\s|$)")
_RST_BULLET = re.compile(r"^([-*+\u2022\u2023\u2043])(\s+|$)")
_RST_ENUMERATED = re.compile(r"^(?:(\d+|#|[a-zA-Z])[.)]|\((\d+|#|[a-zA-Z])\))(\s+|$)")
_RST_SIMPLE_TABLE = re.compile(r"^=+( +=+)+\s*$")
_RST_LITERAL = re.compile(r"``(.+?)``")
_RST_INLINE = [  # (pattern, replacement) applied in order outside ``literals``
    (re.compile(r":((?:[\w.+-]+:)*[\w.+-]+):`((?:[^`\\]|\\.)+)`"), lambda m: _rst_role_text(m.group(1), m.group(2))),
    (re.compile(r"`([^`<]*?)\s*<[^`>]+>`__?"), r"\1"),  # `text <url>`_
    (re.compile(r"`([^`]+)`__?"), r"\1"),  # `text`_
    (re.compile(r"\s?\[(?:#[\w-]*|\*|\d+|[A-Za-z][\w.-]*)\]_"), ""),  # footnote and citation references
    (re.compile(r"`([^`]+)`"), r"\1"),  # default role
    (re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"), r"\1"),
    (re.compile(r"(?<![\w*\\])\*(?=[^\s*])(.+?)(?<=[^\s\\])\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<![\w`|])\|(?=\S)([^|]+?)(?<=\S)\|(?:__?)?(?![\w|])"), r"\1"),  # substitution references
    (re.compile(r"(?<![\w\\])([A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?)__?(?=[\s.,;:!?)\]'\"]|$)"), r"\1"),  # name_
    (re.compile(r"\\ "), ""),
    (re.compile(r"\\(.)"), r"\1"),
]
_RST_CODE_DIRECTIVES = frozenset({"code-block", "code", "sourcecode", "doctest", "testcode", "testoutput",
                                  "productionlist", "parsed-literal", "math"})
_RST_SKIP_DIRECTIVES = frozenset({"toctree", "index", "highlight", "sectionauthor", "moduleauthor", "codeauthor",
                                  "program", "raw", "include", "literalinclude", "contents", "tabularcolumns",
                                  "testsetup", "testcleanup", "audit-event", "audit-event-table", "image", "meta",
                                  "sectnum", "default-role", "role", "default-domain", "opcode-table", "miscnews"})
_RST_PY_OBJECTS = {  # Python domain directive -> the prefix Sphinx renders before the name
    "function": "", "method": "", "attribute": "", "data": "", "property": "property ", "class": "class ",
    "exception": "exception ", "decorator": "@", "decoratormethod": "@", "classmethod": "classmethod ",
    "staticmethod": "static ", "abstractmethod": "abstractmethod ", "coroutinefunction": "coroutine ",
    "coroutinemethod": "coroutine ", "awaitablefunction": "awaitable ", "awaitablemethod": "awaitable ",
    "module-level": "", "type": "type "}
_RST_OTHER_OBJECTS = frozenset({"cmdoption", "option", "envvar", "describe", "object", "opcode", "pdbcommand",
                                "monitoring-event", "c:function", "c:macro", "c:type", "c:member", "c:var"})
_RST_LABELS = {  # admonition-like directives whose first paragraph we prefix, as Sphinx renders them
    "note": "Note", "warning": "Warning", "seealso": "See also", "tip": "Tip", "important": "Important",
    "caution": "Caution", "danger": "Danger", "attention": "Attention", "error": "Error", "hint": "Hint",
    "impl-detail": "CPython implementation detail", "versionadded": "New in version",
    "versionchanged": "Changed in version", "deprecated": "Deprecated since version",
    "deprecated-removed": "Deprecated since version"}
_RST_VERSION_DIRECTIVES = frozenset({"versionadded", "versionchanged", "deprecated", "deprecated-removed"})
_RST_ARG_IS_CONTENT = frozenset(_RST_LABELS.keys() - _RST_VERSION_DIRECTIVES
                                | {"centered", "rubric", "admonition", "topic", "sidebar", "table"})


def _rst_role_text(role: str, text: str) -> str:
    """`title <target>` -> title; a leading ~ or ! (Sphinx: shorten, do not link) is dropped; :rfc:`7159` -> RFC 7159."""
    if m := re.fullmatch(r"(.*?)\s*<[^<>]+>", text, re.DOTALL):
        text = m.group(1) or text
    if role in ("rfc", "pep") and text[:1].isdigit():
        return f"{role.upper()} {text}"
    return text.lstrip("~!")


def _rst_inline(text: str) -> str:
    """reST inline markup to plain text; ``literals`` are kept verbatim."""
    parts: list[str] = []
    pos = 0
    for m in _RST_LITERAL.finditer(text):
        parts.append(_rst_plain(text[pos:m.start()]))
        parts.append(m.group(1))
        pos = m.end()
    parts.append(_rst_plain(text[pos:]))
    return collapse("".join(parts))


def _rst_plain(text: str) -> str:
    for pattern, repl in _RST_INLINE:
        text = pattern.sub(repl, text)
    return text


def docutils_slug(text: str) -> str:
    """docutils' id for a section title (nodes.make_id): ASCII lowercase, non-alphanumeric runs to '-'."""
    text = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"^[-0-9]+|-+$", "", re.sub(r"[^a-z0-9]+", "-", text))


def _rst_block_end(lines: list[str], i: int) -> int:
    """The end of the indented body that follows line i (blank lines inside it included, trailing ones not)."""
    j = end = i + 1
    while j < len(lines) and (not lines[j].strip() or indent_width(lines[j]) > 0):
        if lines[j].strip():
            end = j + 1
        j += 1
    return end


class _RstParser:
    """reST's body elements and sections, plus the Sphinx directives of the Python docs' sources."""

    def __init__(self) -> None:
        self.styles: list[tuple[str, bool]] = []  # (adornment char, has overline) in order of first use = level - 1
        self.module = ""  # set by .. module:: / .. currentmodule::
        self.pending_anchor = ""  # a `.. _label:` waiting for the block it labels

    def add(self, blocks: list[Block], block: Block) -> None:
        if self.pending_anchor and not block.anchor:
            block.anchor = self.pending_anchor
        self.pending_anchor = ""
        blocks.append(block)

    def parse(self, lines: list[str], cls: str = "") -> list[Block]:
        """Blocks of lines at indentation 0; cls is the enclosing class (`.. class::` body) for qualified names."""
        blocks: list[Block] = []
        i, n = 0, len(lines)
        while i < n:
            line = lines[i]
            stripped = line.strip()
            if not stripped:
                i += 1
            elif indent_width(line) > 0:  # block quote
                end = _rst_block_end(lines, i - 1)
                blocks.extend(self.parse(dedent(lines[i:end]), cls))
                i = end
            elif line.startswith("..") and (len(stripped) == 2 or line[2] in " \t"):
                i = self._explicit(lines, i, cls, blocks)
            elif (i + 2 < n and _RST_ADORNMENT.match(line) and lines[i + 1].strip()
                  and _RST_ADORNMENT.match(lines[i + 2]) and lines[i + 2].strip()[0] == stripped[0]):
                self._heading(lines[i + 1].strip(), (stripped[0], True), blocks)
                i += 3
            elif (i + 1 < n and not _RST_ADORNMENT.match(line) and (m := _RST_ADORNMENT.match(lines[i + 1]))
                  and len(lines[i + 1].strip()) >= min(4, len(stripped))):
                self._heading(stripped, (m.group(1), False), blocks)
                i += 2
            elif _RST_ADORNMENT.match(line) and len(stripped) >= 4 and _RST_SIMPLE_TABLE.match(line) is None:
                i += 1  # transition
            elif stripped.startswith(("+-", "+=")):
                i = self._grid_table(lines, i, blocks)
            elif _RST_SIMPLE_TABLE.match(line):
                i = self._simple_table(lines, i, blocks)
            elif _RST_BULLET.match(line) or _RST_ENUMERATED.match(line):
                i = self._list(lines, i, cls, blocks)
            elif stripped.startswith(">>>"):
                j = i
                while j < n and lines[j].strip():
                    j += 1
                self.add(blocks, Block("code", "\n".join(lines[i:j]).rstrip()))
                i = j
            else:
                i = self._paragraph(lines, i, cls, blocks)
        return blocks

    def _heading(self, text: str, style: tuple[str, bool], blocks: list[Block]) -> None:
        if style not in self.styles:
            self.styles.append(style)
        title = _rst_inline(text)
        anchor = self.pending_anchor or docutils_slug(title)
        self.pending_anchor = ""
        blocks.append(Block("heading", title, level=min(self.styles.index(style) + 1, 6), anchor=anchor))

    def _paragraph(self, lines: list[str], i: int, cls: str, blocks: list[Block]) -> int:
        n = len(lines)
        if i + 1 < n and lines[i + 1].strip() and indent_width(lines[i + 1]) > 0:  # definition list item
            end = _rst_block_end(lines, i)
            self.add(blocks, Block("paragraph", _rst_inline(lines[i])))
            blocks.extend(self.parse(dedent(lines[i + 1:end]), cls))
            return end
        j = i
        while j < n and lines[j].strip() and indent_width(lines[j]) == 0:
            j += 1
        text = " ".join(line.strip() for line in lines[i:j])
        is_literal = text.endswith("::")
        if is_literal:
            text = text[:-2].rstrip() if text == "::" or text[-3].isspace() else text[:-1]
        if text:
            self.add(blocks, Block("paragraph", _rst_inline(text)))
        if is_literal:
            k = j
            while k < n and not lines[k].strip():
                k += 1
            if k < n and indent_width(lines[k]) > 0:
                end = _rst_block_end(lines, k - 1)
                self.add(blocks, Block("code", "\n".join(dedent(lines[k:end]))))
                return end
        return j

    def _list(self, lines: list[str], i: int, cls: str, blocks: list[Block]) -> int:
        items: list[tuple[str, list[Block]]] = []
        n = len(lines)
        list_kind = _rst_list_kind(lines[i])
        while i < n and _rst_list_kind(lines[i]) == list_kind:
            m = _RST_BULLET.match(lines[i]) or _RST_ENUMERATED.match(lines[i])
            assert m is not None
            end = _rst_block_end(lines, i)
            first = lines[i][m.end():]
            if first.strip():  # the item's text starts on the marker line and sets the body's indentation
                body = [first] + [line[m.end():] if indent_width(line) >= m.end() else line.strip()
                                  for line in lines[i + 1:end]]
            else:
                body = lines[i + 1:end]
            number = (m.group(1) or m.group(2)) if m.re is _RST_ENUMERATED else None
            if number is None:
                label = "- "
            else:
                label = f"{number}. " if number.isdigit() else f"{len(items) + 1}. "
            items.append((label, self.parse(dedent(body), cls)))
            i = end
            while i < n and not lines[i].strip():
                i += 1
        blocks.extend(merge_list_items(items))
        return i

    def _grid_table(self, lines: list[str], i: int, blocks: list[Block]) -> int:
        rows: list[list[list[str]]] = []
        current: list[list[str]] | None = None
        j = i
        while j < len(lines) and lines[j].strip().startswith(("+", "|")):
            row_line = lines[j].strip()
            if row_line.startswith("+"):
                if current is not None:
                    rows.append(current)
                current = None
            else:
                cells = [cell.strip() for cell in row_line.strip("|").split("|")]
                current = current or [[] for _ in cells]
                for k, cell in enumerate(cells[:len(current)]):
                    if cell:
                        current[k].append(cell)
            j += 1
        text = "\n".join(" | ".join(_rst_inline(" ".join(cell)) for cell in row) for row in rows)
        self.add(blocks, Block("table", text))
        return j

    def _simple_table(self, lines: list[str], i: int, blocks: list[Block]) -> int:
        starts = [m.start() for m in re.finditer(r"=+", lines[i])]
        rows: list[list[str]] = []
        j = i + 1
        while j < len(lines):
            line = lines[j]
            j += 1
            if _RST_SIMPLE_TABLE.match(line):
                if j >= len(lines) or not lines[j].strip():
                    break
                continue
            if not line.strip() or re.fullmatch(r"[-\s]+", line):
                continue
            bounds = starts[1:] + [len(line)]
            cells = [line[s:e].strip() for s, e in zip(starts, bounds)]
            if rows and not cells[0]:  # continuation of the previous row
                rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
            else:
                rows.append(cells)
        self.add(blocks, Block("table", "\n".join(" | ".join(_rst_inline(c) for c in row) for row in rows)))
        return j

    def _explicit(self, lines: list[str], i: int, cls: str, blocks: list[Block]) -> int:
        """`.. ` markup: targets, footnotes, directives; anything else is a comment."""
        line = lines[i].rstrip()
        end = _rst_block_end(lines, i)
        if m := _RST_LABEL.match(line):
            self.pending_anchor = self.pending_anchor or m.group(1).strip("`").strip()
        elif m := _RST_FOOTNOTE.match(line):
            body = [m.group(2) or ""] + dedent(lines[i + 1:end])
            blocks.extend(self.parse(dedent(body), cls))
        elif m := _RST_DIRECTIVE.match(line):
            blocks.extend(self._directive(m.group(1), (m.group(2) or "").strip(), lines[i + 1:end], cls))
        return end

    def _directive(self, name: str, arg: str, body: list[str], cls: str) -> list[Block]:
        """Blocks of a directive. body: its indented lines as they are; the lines before the first blank line are
        the rest of the arguments and the options (or, for directives without arguments, the start of the content).
        """
        name = name.removeprefix("py:")
        head_end = next((k for k, line in enumerate(body) if not line.strip()), len(body))
        head, rest = body[:head_end], body[head_end:]
        options_at = next((k for k, line in enumerate(head) if _RST_OPTION.match(line.strip())), len(head))
        content = [line for line in head if not _RST_OPTION.match(line.strip())] + rest
        if name in _RST_SKIP_DIRECTIVES:
            return []
        if name in ("module", "currentmodule"):
            self.module = "" if arg == "None" else arg
            return []
        if name in _RST_CODE_DIRECTIVES:
            code = dedent(content)
            out: list[Block] = []
            if code:
                self.add(out, Block("code", "\n".join(code)))
            return out
        if name in _RST_PY_OBJECTS or name in _RST_OTHER_OBJECTS:
            # NOTE: Sphinx makes no target for a :noindex: description (it is documented elsewhere): no anchor
            is_indexed = not any(line.split(":")[1:2] in (["noindex"], ["no-index"]) for line in head[options_at:])
            return self._object(name, [arg] + [line.strip() for line in head[:options_at]], rest, cls, is_indexed)
        if name in ("list-table", "csv-table"):
            csv_lines = [line.strip() for line in rest if line.strip()]
            rows = _list_table_rows(dedent(rest)) if name == "list-table" else list(csv.reader(csv_lines))
            out = []
            if arg:
                self.add(out, Block("paragraph", _rst_inline(arg)))
            if rows:
                self.add(out, Block("table", "\n".join(" | ".join(_rst_inline(c) for c in row) for row in rows)))
            return out
        label = _RST_LABELS.get(name)
        if name in _RST_VERSION_DIRECTIVES:
            version, _, explanation = arg.partition(" ")
            label = f"{label} {version}"
            if name == "deprecated-removed":
                removed, _, explanation = explanation.partition(" ")
                label += f", removed in version {removed}"
            content = [explanation] + content
        elif arg and name in _RST_ARG_IS_CONTENT:
            content = [arg] + content
        inner = self.parse(dedent(content), cls)
        if label and inner and inner[0].kind == "paragraph":
            inner[0].text = f"{label}: {inner[0].text}"
        elif label and name in _RST_VERSION_DIRECTIVES:
            inner.insert(0, Block("paragraph", f"{label}."))
        return inner

    def _object(self, name: str, signature_lines: list[str], body: list[str], cls: str,
                is_indexed: bool) -> list[Block]:
        """An object description (`.. function:: dumps(obj, ...)`): its signature, anchored by its full name."""
        signatures: list[str] = []
        pending = ""
        for line in signature_lines:
            line = line.strip()
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            signatures.append(collapse(pending + line))
            pending = ""
        signatures = [s for s in signatures if s]
        out: list[Block] = []
        inner_cls = cls
        if name in _RST_PY_OBJECTS and signatures and (m := re.match(r"[\w.]+", signatures[0])):
            short = m.group(0)
            qualname = short if not cls or short.startswith(cls + ".") else f"{cls}.{short}"
            if self.module and not qualname.startswith(self.module + "."):
                full = f"{self.module}.{qualname}"
            else:
                full = qualname
            prefix = _RST_PY_OBJECTS[name]
            text = "\n".join(prefix + full + sig[len(short):] if sig.startswith(short) else prefix + sig
                             for sig in signatures)
            self.pending_anchor = ""
            out.append(Block("paragraph", text, anchor=full if is_indexed else ""))
            if name in ("class", "exception"):
                inner_cls = qualname
        elif signatures:
            self.add(out, Block("paragraph", "\n".join(signatures)))
        out.extend(self.parse(dedent(body), inner_cls))
        return out


def _rst_list_kind(line: str) -> str:
    """The bullet character, "enumerated", or "" for a line that starts no list item; a change ends a list."""
    if m := _RST_BULLET.match(line):
        return m.group(1)
    return "enumerated" if _RST_ENUMERATED.match(line) else ""


def _list_table_rows(lines: list[str]) -> list[list[str]]:
    """The rows of a `.. list-table::` body: a bullet list of rows whose items are bullet lists of cells."""
    rows: list[list[str]] = []
    for line in lines:
        if m := re.match(r"^[*+-]\s+[*+-]\s+(.*)$", line):
            rows.append([m.group(1)])
        elif (m := re.match(r"^\s+[*+-]\s+(.*)$", line)) and rows:
            rows[-1].append(m.group(1))
        elif line.strip() and rows:
            rows[-1][-1] += " " + line.strip()
    return rows


def parse_rst(text: str, source: str) -> ParsedDocument:
    blocks = _RstParser().parse(text.expandtabs(8).splitlines())
    return ParsedDocument(source=source, title=first_h1(blocks) or stem(source), blocks=blocks, format="rst")
