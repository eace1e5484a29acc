"""Document parsers: exact blocks on small samples of each format, and the real Python docs when installed."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from temper.rag.parse import ParseError, detect_format, docutils_slug, github_slug, parse_file, parse_text
from temper.rag.types import Block

PYDOCS = Path("/usr/share/doc/python3.11/html")
needs_pydocs = pytest.mark.skipif(not (PYDOCS / "library/json.html").is_file(),
                                  reason=f"the Python 3.11 HTML docs are not installed at {PYDOCS} (apt python3.11-doc)")
COMPACT_ENCODING = """>>> import json
>>> json.dumps([1, 2, 3, {'4': 5, '6': 7}], separators=(',', ':'))
'[1,2,3,{"4":5,"6":7}]'"""


def blocks_of(text: str, fmt: str) -> list[Block]:
    return parse_text(text, fmt, f"/docs/sample.{fmt}").blocks


# ---- format detection and errors ----

@pytest.mark.parametrize("name, fmt", [
    ("a.rst", "rst"), ("json.rst.txt", "rst"), ("A.MD", "markdown"), ("a.markdown", "markdown"), ("a.html", "html"),
    ("a.htm", "html"), ("a.txt", "text"), ("a.text", "text"), ("a.pdf", "pdf"), ("a.docx", None), ("Makefile", None),
])
def test_detect_format(name: str, fmt: str | None):
    assert detect_format(Path("/x") / name) == fmt


def test_binary_file_raises_naming_it(tmp_path: Path):
    path = tmp_path / "image.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(ParseError, match="image.txt.*binary"):
        parse_file(path)


def test_missing_and_unknown_files_raise(tmp_path: Path):
    with pytest.raises(ParseError, match="nothere.md"):
        parse_file(tmp_path / "nothere.md")
    (tmp_path / "a.docx").write_text("x")
    with pytest.raises(ParseError, match="a.docx"):
        parse_file(tmp_path / "a.docx")
    with pytest.raises(ValueError, match="format 'docx'"):
        parse_text("x", "docx", "a.docx")


def test_invalid_utf8_is_replaced_not_refused(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_bytes("caf\u00e9 ol\u00e9 \u2014 fine.\n".encode("latin-1", errors="replace"))
    doc = parse_file(path)
    assert doc.blocks == [Block("paragraph", "caf\ufffd ol\ufffd ? fine.")]
    assert (doc.title, doc.format, doc.source) == ("notes", "text", str(path))


# ---- Markdown ----

MARKDOWN = """---
title: "Front Title"
tags: [a, b]
---

# Getting *Started*

Intro with **bold**, `snake_case*`, a [link](http://x.y) and ![alt text](a.png).
Second line_of the same paragraph.

Setext Heading
--------------

```python
def f():
    return 1
```

~~~
tilde fence
~~~

    indented code
      keeps its indent

- one
- two
  continued
  - nested

Then:

1. first
2. second

| Name | Value |
|------|------:|
| a    | `1`   |

> quoted *text*
> more

***

## Getting Started!
### Getting Started
"""


def test_markdown_blocks():
    doc = parse_text(MARKDOWN, "markdown", "/docs/guide.md")
    assert doc.title == "Front Title"
    assert doc.blocks == [
        Block("heading", "Getting Started", level=1, anchor="getting-started"),
        Block("paragraph", "Intro with bold, snake_case*, a link and alt text. Second line_of the same paragraph."),
        Block("heading", "Setext Heading", level=2, anchor="setext-heading"),
        Block("code", "def f():\n    return 1"),
        Block("code", "tilde fence"),
        Block("code", "indented code\n  keeps its indent"),
        Block("list", "- one\n- two continued\n  - nested"),
        Block("paragraph", "Then:"),
        Block("list", "1. first\n2. second"),
        Block("table", "Name | Value\na | 1"),
        Block("paragraph", "quoted text more"),
        Block("heading", "Getting Started!", level=2, anchor="getting-started-1"),
        Block("heading", "Getting Started", level=3, anchor="getting-started-2"),
    ]


def test_markdown_fence_keeps_blank_lines_and_markup_inside():
    text = "Intro\n\n```\n# not a heading\n\n- not a list\n    indented\n```\nAfter *it*\n"
    assert blocks_of(text, "markdown") == [
        Block("paragraph", "Intro"), Block("code", "# not a heading\n\n- not a list\n    indented"),
        Block("paragraph", "After it")]


def test_markdown_code_in_list_item_is_its_own_block():
    text = "- step one\n\n  ```sh\n  make\n  ```\n- step two\n"
    assert blocks_of(text, "markdown") == [
        Block("list", "- step one"), Block("code", "make"), Block("list", "- step two")]


def test_markdown_title_falls_back_to_h1_then_stem():
    assert parse_text("Text\n\n# Main\n", "markdown", "/d/x.md").title == "Main"
    assert parse_text("## Only h2\n", "markdown", "/d/notes.md").title == "notes"


def test_slugs():
    assert github_slug("What's new in 3.11?") == "whats-new-in-311"
    assert github_slug("snake_case & co-op") == "snake_case--co-op"
    assert docutils_slug("json --- JSON encoder and decoder") == "json-json-encoder-and-decoder"
    assert docutils_slug("4.2. for Statements") == "for-statements"


# ---- reStructuredText ----

RST = """.. _intro-label:

=======
 Title
=======

Some *emphasis*, **strong**, ``literal_*`` and :func:`os.path.join`, :class:`Foo <pkg.Foo>`,
:meth:`~pkg.Foo.bar`, `Python <https://python.org>`_, :rfc:`7159` and name_ [#f1]_.

.. comment that vanishes
   still comment

Section One
-----------

Example::

    x = 1
      y = 2

Expanded form ::

    z = 3

::

    bare literal

.. code-block:: python
   :linenos:

   def f():
       return 1

>>> 1 + 1
2

.. note::
   Keep this text.

.. versionadded:: 3.2

.. module:: pkg

.. function:: run(a, \\
              b=1)

   Run it.

.. class:: Foo(x)

   .. method:: bar()

      Bar it.

   .. method:: baz()
      :noindex:

      Baz it.

Sub
~~~

- item one
  continues
- item two

  - nested

#. auto
#. numbered

.. toctree::
   other

.. index:: foo

.. sectionauthor:: Somebody

+------+-----+
| A    | B   |
+======+=====+
| 1    | two |
|      | ln  |
+------+-----+

=====  =====
Col    Other
=====  =====
x      y
=====  =====

Another One
-----------

term
   Its definition.
"""


def test_rst_blocks():
    doc = parse_text(RST, "rst", "/docs/guide.rst")
    assert doc.title == "Title"
    assert doc.blocks == [
        Block("heading", "Title", level=1, anchor="intro-label"),
        Block("paragraph", "Some emphasis, strong, literal_* and os.path.join, Foo, pkg.Foo.bar, Python, RFC 7159 "
                           "and name."),
        Block("heading", "Section One", level=2, anchor="section-one"),
        Block("paragraph", "Example:"),
        Block("code", "x = 1\n  y = 2"),
        Block("paragraph", "Expanded form"),
        Block("code", "z = 3"),
        Block("code", "bare literal"),
        Block("code", "def f():\n    return 1"),
        Block("code", ">>> 1 + 1\n2"),
        Block("paragraph", "Note: Keep this text."),
        Block("paragraph", "New in version 3.2."),
        Block("paragraph", "pkg.run(a, b=1)", anchor="pkg.run"),
        Block("paragraph", "Run it."),
        Block("paragraph", "class pkg.Foo(x)", anchor="pkg.Foo"),
        Block("paragraph", "pkg.Foo.bar()", anchor="pkg.Foo.bar"),
        Block("paragraph", "Bar it."),
        Block("paragraph", "pkg.Foo.baz()"),  # :noindex: makes no target
        Block("paragraph", "Baz it."),
        Block("heading", "Sub", level=3, anchor="sub"),
        Block("list", "- item one continues\n- item two\n  - nested"),
        Block("list", "1. auto\n2. numbered"),
        Block("table", "A | B\n1 | two ln"),
        Block("table", "Col | Other\nx | y"),
        Block("heading", "Another One", level=2, anchor="another-one"),
        Block("paragraph", "term"),
        Block("paragraph", "Its definition."),
    ]


def test_rst_levels_follow_first_appearance_of_each_style():
    text = "A\n***\n\nB\n###\n\nC\n***\n\nD\n###\n\nE\n===\n\n=====\n F\n=====\n"
    assert [(b.text, b.level) for b in blocks_of(text, "rst")] == [
        ("A", 1), ("B", 2), ("C", 1), ("D", 2), ("E", 3), ("F", 4)]  # an overline makes a style of its own


def test_rst_label_anchors_the_next_block_across_skipped_directives():
    text = ".. _cli:\n.. program:: tool\n\nCommand line\n============\n\n.. _tbl:\n\n+---+\n| x |\n+---+\n"
    assert blocks_of(text, "rst") == [Block("heading", "Command line", level=1, anchor="cli"),
                                      Block("table", "x", anchor="tbl")]


def test_rst_directive_tables_and_version_notes():
    text = """.. list-table:: Sizes
   :header-rows: 1

   * - Name
     - Bytes
   * - ``int``
     - 28

.. csv-table::

   "a, b", c

.. deprecated-removed:: 3.8 3.10
   Use *other* instead.
"""
    assert blocks_of(text, "rst") == [
        Block("paragraph", "Sizes"), Block("table", "Name | Bytes\nint | 28"), Block("table", "a, b | c"),
        Block("paragraph", "Deprecated since version 3.8, removed in version 3.10: Use other instead.")]


# ---- HTML ----

HTML = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Page &#8212; Demo 1.0 documentation</title>
<script>var x = "<p>not text</p>";</script><style>p {color: red}</style></head>
<body>
<div class="related" role="navigation"><a>Previous topic</a></div>
<nav>Navigation text</nav>
<div class="body" role="main">
<section id="intro">
<h1>Intro<a class="headerlink" href="#intro">\u00b6</a></h1>
<p>Hello &amp; welcome
   to  <em>the</em> docs.</p>
<pre>def f():
    return 1 &lt; 2</pre>
<ul><li><p>one</p></li><li>two<ul><li>nested</li></ul></li></ul>
<ol><li>first</li><li>second</li></ol>
<table class="docutils" id="t"><thead><tr><th>A</th><th>B</th></tr></thead>
<tbody><tr><td><p>1</p></td><td>2 &gt; 1</td></tr></tbody></table>
<dl><dt id="mod.func">mod.func(<em>a</em>, <em>b</em>)<a class="headerlink" href="#mod.func">\u00b6</a></dt>
<dd><p>Does it.</p></dd></dl>
<form><input name="q"><p>Search form</p></form>
<section id="details"><h2 id="explicit">Details</h2>
<div class="toctree-wrapper compound"><ul><li>toc entry</li></ul></div>
<div class="section" id="old-style"><h3>Deeper</h3>
<div class="admonition note"><p class="admonition-title">Note</p><p>Careful.</p></div>
<p>Unclosed paragraph<div>Div text</div>
</div></section></section>
</div>
<div class="sphinxsidebar"><h3>Next topic</h3></div>
<footer>Copyright</footer>
</body></html>"""


def test_html_blocks():
    doc = parse_text(HTML, "html", "/docs/page.html")
    assert doc.title == "Page"
    assert doc.blocks == [
        Block("heading", "Intro", level=1, anchor="intro"),
        Block("paragraph", "Hello & welcome to the docs."),
        Block("code", "def f():\n    return 1 < 2"),
        Block("list", "- one\n- two\n  - nested"),
        Block("list", "1. first\n2. second"),
        Block("table", "A | B\n1 | 2 > 1", anchor="t"),
        Block("paragraph", "mod.func(a, b)", anchor="mod.func"),
        Block("paragraph", "Does it."),
        Block("heading", "Details", level=2, anchor="explicit"),
        Block("heading", "Deeper", level=3, anchor="old-style"),
        Block("paragraph", "Note: Careful."),
        Block("paragraph", "Unclosed paragraph"),
        Block("paragraph", "Div text"),
    ]


@pytest.mark.parametrize("page, expected", [
    ("<body><p>out</p><article><p>art</p></article><main><p>main</p></main></body>", ["main"]),
    ("<body><p>out</p><article><header><h1>T</h1></header><p>art</p></article></body>", ["T", "art"]),
    ("<body><header>Site</header><p>body text</p></body>", ["body text"]),
    ("<p>a fragment</p><p>two</p>", ["a fragment", "two"]),
])
def test_html_content_root(page: str, expected: list[str]):
    assert [b.text for b in blocks_of(page, "html")] == expected


def test_html_title_fallbacks():
    assert parse_text("<title>Plain Title</title><h1>H</h1>", "html", "/d/a.html").title == "Plain Title"
    assert parse_text("<title>A | Site documentation</title>", "html", "/d/a.html").title == "A"
    assert parse_text("<h2>x</h2><h1>First <b>H1</b></h1>", "html", "/d/a.html").title == "First H1"
    assert parse_text("<p>x</p>", "html", "/d/page.html").title == "page"


# ---- plain text ----

def test_plain_text():
    text = "First paragraph\nwraps here.\n\n    code line\n\n      more code\n\nLast one.\n"
    doc = parse_text(text, "text", "/d/readme.txt")
    assert doc.title == "readme"
    assert doc.blocks == [Block("paragraph", "First paragraph wraps here."),
                          Block("code", "code line\n\n  more code"), Block("paragraph", "Last one.")]


# ---- PDF ----

def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A minimal valid PDF: one Helvetica text line per entry, each page its own content stream."""
    objects: dict[int, bytes] = {1: b"<< /Type /Catalog /Pages 2 0 R >>",
                                 3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"}
    kids = []
    for k, lines in enumerate(pages):
        page_id, content_id = 4 + 2 * k, 5 + 2 * k
        shown = " T* ".join("(" + line.replace("(", r"\(").replace(")", r"\)") + ") Tj" for line in lines)
        stream = f"BT /F1 12 Tf 14 TL 72 720 Td {shown} ET".encode()
        objects[page_id] = (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R "
                            f">> >> /Contents {content_id} 0 R >>").encode()
        objects[content_id] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
        kids.append(f"{page_id} 0 R")
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode()
    info = ""
    if title:
        objects[len(objects) + 1] = f"<< /Title ({title}) >>".encode()
        info = f" /Info {len(objects)} 0 R"
    out = io.BytesIO(b"%PDF-1.4\n")
    out.seek(0, io.SEEK_END)
    offsets = {}
    for number in sorted(objects):
        offsets[number] = out.tell()
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, objects[number]))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % offsets[number] for number in sorted(objects)))
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


PDF_PAGES = [["A Small Report", "The first page has one paragraph.", "It spans two lines (here)."],
             ["Page two starts here.", "Another sentence", "ends on this line.", "Last words"]]


def test_pdf_pages_and_paragraphs(tmp_path: Path):
    pytest.importorskip("pypdf")
    path = tmp_path / "report.pdf"
    path.write_bytes(make_pdf(PDF_PAGES, title="Hand Made"))
    doc = parse_file(path)
    assert (doc.title, doc.format, doc.metadata) == ("Hand Made", "pdf", {"pages": 2})
    assert doc.blocks == [
        Block("paragraph", "A Small Report The first page has one paragraph.", page=1),
        Block("paragraph", "It spans two lines (here).", page=1),
        Block("paragraph", "Page two starts here.", page=2),
        Block("paragraph", "Another sentence ends on this line.", page=2),
        Block("paragraph", "Last words", page=2),
    ]


def test_pdf_title_without_metadata_is_the_first_short_line(tmp_path: Path):
    pytest.importorskip("pypdf")
    path = tmp_path / "report.pdf"
    path.write_bytes(make_pdf(PDF_PAGES))
    assert parse_file(path).title == "A Small Report"


def test_pdf_corrupt_and_encrypted_raise(tmp_path: Path):
    pypdf = pytest.importorskip("pypdf")
    data = make_pdf(PDF_PAGES)
    (tmp_path / "cut.pdf").write_bytes(data[:300])
    with pytest.raises(ParseError, match="cut.pdf"):
        parse_file(tmp_path / "cut.pdf")
    (tmp_path / "fake.pdf").write_bytes(b"this is not a PDF at all")
    with pytest.raises(ParseError, match="fake.pdf"):
        parse_file(tmp_path / "fake.pdf")
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt("secret", algorithm="RC4-128")
    with open(tmp_path / "locked.pdf", "wb") as f:
        writer.write(f)
    with pytest.raises(ParseError, match="locked.pdf is encrypted"):
        parse_file(tmp_path / "locked.pdf")


# ---- the real Python documentation ----

@needs_pydocs
def test_python_docs_json_html():
    doc = parse_file(PYDOCS / "library/json.html")
    assert doc.title == "json — JSON encoder and decoder"
    assert doc.blocks[0] == Block("heading", "json — JSON encoder and decoder", level=1, anchor="module-json")
    assert Block("heading", "Basic Usage", level=2, anchor="basic-usage") in doc.blocks
    dumps = next(b for b in doc.blocks if b.anchor == "json.dumps")
    assert dumps.text.startswith("json.dumps(obj, *, skipkeys=False, ensure_ascii=True,")
    assert COMPACT_ENCODING in [b.text for b in doc.blocks if b.kind == "code"]
    table = next(b for b in doc.blocks if b.kind == "table")
    assert table.anchor == "json-to-py-table" and "object | dict" in table.text.split("\n")
    text = "\n".join(b.text for b in doc.blocks)
    for chrome in ("Previous topic", "Next topic", "Table of Contents", "This Page", "¶", "Navigation"):
        assert chrome not in text


@needs_pydocs
def test_python_docs_controlflow_html():
    doc = parse_file(PYDOCS / "tutorial/controlflow.html")
    assert doc.title == "4. More Control Flow Tools"
    assert doc.blocks[0] == Block("heading", "4. More Control Flow Tools", level=1, anchor="more-control-flow-tools")
    headings = [(b.text, b.level) for b in doc.blocks if b.kind == "heading"]
    assert ("4.8.3.1. Positional-or-Keyword Arguments", 4) in headings
    fib = next(b.text for b in doc.blocks if b.kind == "code" and b.text.startswith(">>> def fib(n):"))
    assert "\n...     a, b = 0, 1\n...     while a < n:\n" in fib
    assert not any("Previous topic" in b.text or "Table of Contents" in b.text for b in doc.blocks)


@needs_pydocs
def test_python_docs_json_rst_source():
    doc = parse_file(PYDOCS / "_sources/library/json.rst.txt")
    assert doc.format == "rst" and doc.title == "json --- JSON encoder and decoder"
    assert doc.blocks[0] == Block("heading", doc.title, level=1, anchor="json-json-encoder-and-decoder")
    headings = {b.text: (b.level, b.anchor) for b in doc.blocks if b.kind == "heading"}
    assert headings["Basic Usage"] == (2, "basic-usage")
    assert headings["Command Line Interface"] == (2, "json-commandline")
    assert headings["Character Encodings"] == (3, "character-encodings")
    anchors = {b.anchor: b.text for b in doc.blocks if b.anchor}
    assert anchors["json.dumps"].startswith("json.dumps(obj, *, skipkeys=False, ensure_ascii=True, check_circular")
    assert anchors["json.JSONDecoder.decode"] == "json.JSONDecoder.decode(s)"
    assert anchors["json.JSONDecodeError"] == "exception json.JSONDecodeError(msg, doc, pos)"
    assert COMPACT_ENCODING in [b.text for b in doc.blocks if b.kind == "code"]
    assert "object | dict" in anchors["json-to-py-table"].split("\n")
    text = "\n".join(b.text for b in doc.blocks)
    for markup in (":mod:`", ":class:`", "``", "moduleauthor", "Bob Ippolito", "synopsis", "\n.. "):
        assert markup not in text
