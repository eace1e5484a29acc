"""The structure-aware chunker on constructed documents (whitespace tokens), and on a real page with MiniLM's tokenizer."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from temper.rag.chunk import chunk_document
from temper.rag.parse import parse_file
from temper.rag.types import Block, ParsedDocument

PYDOCS = Path("/usr/share/doc/python3.11/html")


def count_words(text: str) -> int:
    return len(text.split())


def doc_of(*blocks: Block, format: str = "markdown") -> ParsedDocument:
    return ParsedDocument(source="/d/guide.md", title="Guide", blocks=list(blocks), format=format)


def para(text: str, anchor: str = "", page: int = 0) -> Block:
    return Block("paragraph", text, anchor=anchor, page=page)


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{k}" for k in range(n))


def sentence(prefix: str, n: int = 5) -> str:
    return words(prefix, n).capitalize() + "."


def texts(doc: ParsedDocument, max_tokens: int = 16, overlap_tokens: int = 0) -> list[str]:
    return [c.text for c in chunk_document(doc, count_words, max_tokens, overlap_tokens)]


@pytest.mark.parametrize("max_tokens, overlap_tokens, match", [
    (15, 0, "max_tokens=15"), (32, -1, "overlap_tokens=-1"), (32, 16, "overlap_tokens=16"), (33, 16, "overlap_tokens=16"),
])
def test_invalid_arguments(max_tokens: int, overlap_tokens: int, match: str):
    with pytest.raises(ValueError, match=match):
        chunk_document(doc_of(para("x")), count_words, max_tokens, overlap_tokens)


def test_sections_paths_anchors_and_fields():
    doc = doc_of(
        para("Preface text."),
        Block("heading", "Guide", level=1, anchor="guide"), para("Intro."),
        Block("heading", "Install", level=2, anchor="install"),
        Block("heading", "Empty", level=3, anchor="empty"),
        Block("heading", "Linux", level=3), para("apt install."), para("   "),
        Block("heading", "Use", level=2, anchor="use"), para("Run it."), para("Details.", anchor="use-details"),
        Block("heading", "Trailing heading without content", level=2, anchor="tail"))
    chunks = chunk_document(doc, count_words, max_tokens=16, overlap_tokens=0)
    assert [(c.ordinal, c.text, c.section, c.anchor) for c in chunks] == [
        (0, "Preface text.", "", ""),
        (1, "Intro.", "Guide", "guide"),
        (2, "apt install.", "Guide > Install > Linux", "install"),  # Linux has no anchor: the closest above
        (3, "Run it.\n\nDetails.", "Guide > Use", "use"),  # the anchor in effect where the chunk starts
    ]
    assert all(c.source == "/d/guide.md" and c.title == "Guide" and c.metadata == {"format": "markdown"}
               for c in chunks)


def test_a_continued_description_keeps_the_anchor_of_its_signature():
    """Sphinx anchors an object's signature (<dt id="json.dump">), not its description (<dd>): a chunk that continues
    the description cites the signature above it, not the section's heading."""
    doc = doc_of(Block("heading", "Basic Usage", level=2, anchor="basic-usage"), para(words("intro", 15) + "."),
                 para("json.dump(obj, fp)", anchor="json.dump"),
                 para(" ".join(sentence(f"d{k}w") for k in range(5))),  # 25 words: longer than a chunk
                 para("json.dumps(obj, *, skipkeys=False)", anchor="json.dumps"), para(sentence("e")),
                 Block("heading", "Encoders", level=2), para(sentence("f")))

    def starts_and_anchors(overlap_tokens: int) -> list[tuple[str, str]]:
        return [(c.text.split()[0], c.anchor) for c in chunk_document(doc, count_words, 16, overlap_tokens)]

    assert starts_and_anchors(overlap_tokens=0) == [
        ("intro0", "basic-usage"),  # nothing anchored above it in the section: the heading's
        ("json.dump(obj,", "json.dump"),
        ("D2w0", "json.dump"),  # the rest of the description: the signature above, not the heading
        ("json.dumps(obj,", "json.dumps"),
        ("F0", ""),  # an anchor above does not cross a heading, and this heading has none
    ]
    assert starts_and_anchors(overlap_tokens=5) == [
        ("intro0", "basic-usage"),
        ("json.dump(obj,", "json.dump"),
        ("D1w0", "json.dump"),  # opens with a repeated sentence of the description
        ("D3w0", "json.dump"),  # starts inside dump's description, though json.dumps' signature ends it
        ("json.dumps(obj,", "json.dumps"),  # the repeated signature is not in the chunk but above it
        ("F0", ""),
    ]


def test_blocks_are_packed_greedily_and_joined_by_blank_lines():
    blocks = [para(words(f"p{k}w", 6)) for k in range(5)]
    assert texts(doc_of(*blocks)) == [f"{blocks[0].text}\n\n{blocks[1].text}", f"{blocks[2].text}\n\n{blocks[3].text}",
                                      blocks[4].text]


def test_long_paragraph_splits_at_sentences_and_fills_the_current_chunk():
    sentences = [sentence(f"s{k}w") for k in range(7)]
    doc = doc_of(para(words("lead", 5)), para(" ".join(sentences)))
    assert texts(doc) == [f"{words('lead', 5)}\n\n{sentences[0]} {sentences[1]}", " ".join(sentences[2:5]),
                          " ".join(sentences[5:])]


def test_sentence_longer_than_the_budget_splits_at_words_without_overlap():
    text = words("w", 40)
    for overlap in (0, 7):
        chunks = texts(doc_of(para(text)), overlap_tokens=overlap)
        assert [count_words(c) for c in chunks] == [16, 16, 8]
        assert " ".join(chunks) == text  # never a partial sentence as overlap: none at all here


def test_a_counter_that_pads_is_refused():
    with pytest.raises(ValueError, match="counter is broken"):
        chunk_document(doc_of(para("some text")), lambda text: 128, max_tokens=48, overlap_tokens=0)


def test_word_longer_than_the_budget_splits_at_characters():
    def count_chars(text: str) -> int:
        return len(text)
    doc = doc_of(para("x" * 50))
    chunks = chunk_document(doc, count_chars, max_tokens=16, overlap_tokens=0)
    assert [c.text for c in chunks] == ["x" * 16, "x" * 16, "x" * 16, "x" * 2]
    doc = doc_of(para("ab " + "x" * 40 + " cd"))
    chunks = chunk_document(doc, count_chars, max_tokens=16, overlap_tokens=0)
    assert [c.text for c in chunks] == ["ab", "x" * 16, "x" * 16, "x" * 8 + " cd"]


def test_code_is_kept_whole_when_it_fits_and_split_at_lines_when_not():
    small = "def f(a, b):\n    return a +\\\n        b * 2"  # 9 words
    lines = [f"    line{k} a b c" for k in range(10)]  # 4 words each
    doc = doc_of(para(words("intro", 10)), Block("code", small), Block("code", "\n".join(lines)))
    chunks = texts(doc, overlap_tokens=0)
    assert chunks[:2] == [words("intro", 10), f"{small}\n\n{lines[0]}"]  # small: moved whole, not split to fit
    assert chunks[2:] == ["\n".join(lines[1:5]), "\n".join(lines[5:9]), lines[9]]  # big: at lines


def test_table_splits_at_rows():
    rows = [f"r{k} | v{k}" for k in range(10)]  # 3 words a row
    chunks = texts(doc_of(Block("table", "\n".join(rows))))
    assert chunks == ["\n".join(rows[0:5]), "\n".join(rows[5:10])]


def test_overlap_repeats_whole_trailing_sentences_of_the_same_section():
    a = f"{sentence('a')} {sentence('b')}"
    b = f"{sentence('c')} {sentence('d')}"
    c = f"{sentence('e')} {sentence('f')}"
    doc = doc_of(Block("heading", "H", level=1, anchor="h"), para(a), para(b, anchor="b-anchor"),
                 para(c, anchor="c-anchor"), Block("heading", "Next", level=2, anchor="next"), para(sentence("g")))
    chunks = chunk_document(doc, count_words, max_tokens=20, overlap_tokens=8)
    assert [c.text for c in chunks] == [f"{a}\n\n{b}", f"{sentence('d')}\n\n{c}", sentence("g")]
    # the anchor where each chunk's own text starts (a repeated sentence does not count); no overlap crosses a heading
    assert [c.anchor for c in chunks] == ["h", "c-anchor", "next"]
    for chunk in chunks:
        assert count_words(chunk.text) <= 20


def test_overlap_continues_a_split_paragraph_and_respects_its_budget():
    sentences = [sentence(f"s{k}w", 4) for k in range(8)]  # 4 words each
    chunks = texts(doc_of(para(" ".join(sentences))), max_tokens=16, overlap_tokens=7)
    assert chunks == [" ".join(sentences[0:4]), " ".join(sentences[3:7]), " ".join(sentences[6:8])]


def test_overlap_is_never_the_whole_previous_chunk_nor_breaks_the_budget():
    short = "Short one here."
    long = " ".join(sentence(f"x{k}w") for k in range(3))  # 15 words
    assert texts(doc_of(para(short), para(long)), overlap_tokens=7) == [short, long]
    two = f"{sentence('a')} {sentence('b')}"
    fourteen = words("Y", 13) + "."
    assert texts(doc_of(para(two), para(fourteen)), overlap_tokens=7) == [two, fourteen]  # 5 + 14 > 16: dropped


def test_code_and_tables_kept_whole_are_not_repeated_as_overlap():
    code = "x = 1\ny = 2"
    doc = doc_of(para(sentence("a")), Block("code", code), para(words("b", 12) + "."))
    assert texts(doc, overlap_tokens=7) == [f"{sentence('a')}\n\n{code}", words("b", 12) + "."]


def test_pages_come_from_the_first_own_block():
    doc = doc_of(para(words("a", 10) + ".", page=1), para(words("b", 10) + ".", page=2),
                 para(words("c", 4) + ".", page=2), format="pdf")
    chunks = chunk_document(doc, count_words, max_tokens=16, overlap_tokens=0)
    assert [(c.text.split()[0], c.metadata) for c in chunks] == [
        ("a0", {"format": "pdf", "page": 1}), ("b0", {"format": "pdf", "page": 2})]


@pytest.mark.skipif(not (PYDOCS / "library/json.html").is_file(), reason=f"no Python 3.11 HTML docs at {PYDOCS}")
@pytest.mark.parametrize("max_tokens, overlap_tokens", [(200, 40), (48, 12)])
def test_real_page_with_the_minilm_tokenizer(max_tokens: int, overlap_tokens: int):
    from tokenizers import Tokenizer

    from temper.embeddings import packaged_model_path
    from temper.errors import PackageMissingError
    try:
        folder = packaged_model_path()
    except PackageMissingError as e:
        pytest.skip(str(e))
    # NOTE: the Embedder's tokenizer truncates at 256 tokens; without truncation an over-long chunk cannot hide
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # tokenizer.json pads to 128

    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    doc = parse_file(PYDOCS / "library/json.html")
    chunks = chunk_document(doc, count_tokens, max_tokens, overlap_tokens)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert all(c.text.strip() and count_tokens(c.text) <= max_tokens for c in chunks)
    assert "json.dumps" in {c.anchor for c in chunks}
    assert not any(b.text.startswith(a.text) for a, b in itertools.pairwise(chunks))  # overlap is never a whole chunk
    sections = {c.section for c in chunks}
    assert "json — JSON encoder and decoder > Standard Compliance and Interoperability > Character Encodings" in sections
    for block in doc.blocks:  # code that fits is never cut
        if block.kind == "code" and count_tokens(block.text) <= max_tokens:
            assert any(block.text in c.text for c in chunks), block.text[:60]
