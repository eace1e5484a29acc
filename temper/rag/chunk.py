"""ParsedDocument to Chunks: one section at a time, packed to a token budget, with a few sentences of overlap.

Structure decides the boundaries: every heading starts a chunk (so a chunk never mixes two sections and its heading
path is exact), code stays whole when it fits, and only blocks larger than the budget are cut: prose at sentences,
then words; code, lists and tables at lines (rows). Tokens are counted on the text we will embed, with the
embedder's own tokenizer, so a chunk is never silently truncated by the model.

Overlap repeats the last whole sentences (or lines) of a chunk at the start of the next one of the same section,
which keeps a statement and its qualification retrievable together when a boundary falls between them.

A chunk's anchor, the URL fragment its citation links to, is the one in effect where the chunk's own text starts
(overlap repeated from the previous chunk does not count): that block's anchor, else the last anchor above it in
the same section, so that the second chunk of a Sphinx description still points at its signature
(`<dt id="json.dump">`); else the anchor of the closest heading that has one; else "". A chunk that ends with the
next signature still links to the description it starts in.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from temper.rag.types import Block, Chunk, ParsedDocument

_ABBREVIATIONS = frozenset({"e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "no.", "mr.", "mrs.", "dr.", "st."})
_SENTENCE_END = re.compile(r"[.!?][\"')\]\u201d\u2019]*(\s+)(?=\S)")


@dataclass(slots=True)
class _Piece:
    """A unit the packer places: a whole block, or a sentence, line, word or slice of one too big for a chunk."""

    text: str
    block: int  # index of its block in the section: pieces of one block join with sep, blocks with a blank line
    sep: str  # what goes before it after a piece of the same block ("" for the first)
    kind: str  # the block's kind: prose splits into sentences, the rest into lines
    anchor: str
    page: int
    can_overlap: bool = True  # False for parts of a sentence or line, and for code and tables kept whole
    is_overlap: bool = False  # repeated from the previous chunk


def chunk_document(doc: ParsedDocument, count_tokens: Callable[[str], int], max_tokens: int = 200,
                   overlap_tokens: int = 40) -> list[Chunk]:
    """Split a document into chunks of at most max_tokens tokens (counted by count_tokens on the chunk text).

    Args:
        count_tokens: the embedder's token count of a text, without special tokens
            (`len(tokenizer.encode(text, add_special_tokens=False).ids)`).
        max_tokens: the budget of a chunk's text; the heading path the embedder also reads is not counted.
        overlap_tokens: at most this many tokens of whole trailing sentences of a chunk open the next chunk of the
            same section; 0 disables overlap.
    Returns:
        The chunks in reading order, ordinal 0..n-1; sections with no content under their heading give none. A
        chunk's anchor is the one in effect where its own text starts (see the module docstring).
    """
    if max_tokens < 16:
        raise ValueError(f"max_tokens={max_tokens}: must be at least 16")
    if not 0 <= overlap_tokens < max_tokens // 2:
        raise ValueError(f"overlap_tokens={overlap_tokens}: must be in [0, max_tokens // 2 = {max_tokens // 2})")
    packer = _Packer(doc, count_tokens, max_tokens, overlap_tokens)
    path: list[Block] = []  # the headings above the current block, outermost first
    section: list[Block] = []
    for block in doc.blocks:
        if block.kind != "heading":
            section.append(block)
            continue
        packer.pack_section(path, section)
        section = []
        while path and path[-1].level >= block.level:
            path.pop()
        path.append(block)
    packer.pack_section(path, section)
    return packer.chunks


class _Packer:
    """Greedy packing of a section's pieces into chunks; owns the list of chunks so that ordinals run on."""

    def __init__(self, doc: ParsedDocument, count_tokens: Callable[[str], int], max_tokens: int,
                 overlap_tokens: int):
        self.doc = doc
        self.count = count_tokens
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.chunks: list[Chunk] = []

    def pack_section(self, path: list[Block], blocks: list[Block]) -> None:
        anchors_above = [""]  # anchors_above[k]: the anchor of the last block before block k that has one
        for block in blocks:
            anchors_above.append(block.anchor or anchors_above[-1])
        current: list[_Piece] = []
        for index, block in enumerate(blocks):
            if not block.text.strip():
                continue
            for piece in self._pieces(block, index):
                if current and self.count(_join([*current, piece])) > self.max_tokens:
                    if any(not p.is_overlap for p in current):
                        self._emit(current, path, anchors_above)
                        current = self._overlap(current)
                    while current and self.count(_join([*current, piece])) > self.max_tokens:
                        current.pop(0)  # only overlap is left: keep the sentences nearest the new text
                current.append(piece)
        if any(not p.is_overlap for p in current):
            self._emit(current, path, anchors_above)

    def _pieces(self, block: Block, index: int) -> list[_Piece]:
        """The block whole if it fits in a chunk, else its sentences or lines, words, characters."""
        levels = [_sentences, _words] if block.kind == "paragraph" else [_lines, _sentences, _words]
        parts = self._fit(block.text, levels, "", is_fragment=False)
        is_whole = len(parts) == 1
        return [_Piece(text, index, sep, block.kind, block.anchor, block.page,
                       can_overlap=not is_fragment and not (is_whole and block.kind in ("code", "table")))
                for sep, text, is_fragment in parts]

    def _fit(self, text: str, levels: list[Callable[[str], list[tuple[str, str]]]], sep: str,
             is_fragment: bool) -> list[tuple[str, str, bool]]:
        """(sep, text, is_fragment) parts of text that each fit in max_tokens, split as coarsely as possible.

        A fragment is less than a sentence or line: a word, or a slice of a word too long for a chunk.
        """
        if self.count(text) <= self.max_tokens:
            return [(sep, text, is_fragment)]
        if not levels:
            return [(sep if k == 0 else "", part, True) for k, part in enumerate(self._split_chars(text))]
        split, finer = levels[0], levels[1:]
        parts = split(text)
        if len(parts) == 1:
            return self._fit(text, finer, sep, is_fragment)
        out: list[tuple[str, str, bool]] = []
        for k, (part_sep, part) in enumerate(parts):
            out.extend(self._fit(part, finer, sep if k == 0 else part_sep, is_fragment or split is _words))
        return out

    def _split_chars(self, text: str) -> list[str]:
        """A word too long for a chunk (a hash, a data URL) in the longest prefixes that fit."""
        out: list[str] = []
        while text:
            lo, hi = 1, len(text)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.count(text[:mid]) <= self.max_tokens:
                    lo = mid
                else:
                    hi = mid - 1
            if lo == 1 and self.count(text[:1]) > self.max_tokens:
                raise ValueError(f"count_tokens({text[:1]!r}) = {self.count(text[:1])} > max_tokens={self.max_tokens}: "
                                 f"the counter is broken (a tokenizer that pads, or counts special tokens?)")
            out.append(text[:lo])
            text = text[lo:]
        return out

    def _overlap(self, pieces: list[_Piece]) -> list[_Piece]:
        """The trailing whole sentences (list items, lines of a split code block) of a chunk within overlap_tokens.

        Parts of a sentence are never repeated, nor the end of a code block or table that fitted whole: the next
        chunk would start in the middle of it.
        """
        if self.overlap_tokens == 0:
            return []
        units: list[_Piece] = []
        for p in pieces:
            if not p.can_overlap:
                units.append(p)
                continue
            parts = _sentences(p.text) if p.kind == "paragraph" else _lines(p.text)
            units.extend(replace(p, text=text, sep=p.sep if k == 0 else sep) for k, (sep, text) in enumerate(parts))
        chosen: list[_Piece] = []
        for unit in reversed(units):
            if not unit.can_overlap or self.count(_join([unit, *chosen])) > self.overlap_tokens:
                break
            chosen.insert(0, unit)
        # NOTE: this may be the whole chunk, but never survives as such: the chunk was emitted because it and the next
        # piece exceed max_tokens, so pack_section drops overlap from the front until that piece fits
        while chosen and not chosen[0].text.strip():
            chosen.pop(0)
        return [replace(u, is_overlap=True) for u in chosen]

    def _emit(self, pieces: list[_Piece], path: list[Block], anchors_above: list[str]) -> None:
        text = _join(pieces).strip("\n")
        if not text.strip():
            return
        own = [p for p in pieces if not p.is_overlap]
        anchor = (own[0].anchor or anchors_above[own[0].block]
                  or next((h.anchor for h in reversed(path) if h.anchor), ""))
        metadata: dict[str, object] = {"format": self.doc.format}
        symbol = own[0].anchor or anchors_above[own[0].block]
        if symbol:  # the anchor of a content block (a Sphinx API entry such as json.dumps), not a heading's
            metadata["symbol"] = symbol
        if own and own[0].page > 0:
            metadata["page"] = own[0].page
        self.chunks.append(Chunk(text=text, source=self.doc.source, title=self.doc.title,
                                 section=" > ".join(h.text for h in path), anchor=anchor,
                                 ordinal=len(self.chunks), metadata=metadata))


def _join(pieces: list[_Piece]) -> str:
    parts: list[str] = []
    for k, p in enumerate(pieces):
        if k:
            parts.append(p.sep if pieces[k - 1].block == p.block else "\n\n")
        parts.append(p.text)
    return "".join(parts)


def _words(text: str) -> list[tuple[str, str]]:
    return [(" ", word) for word in text.split()]


def _lines(text: str) -> list[tuple[str, str]]:
    return [("\n", line) for line in text.split("\n")]


def _sentences(text: str) -> list[tuple[str, str]]:
    """Split prose after . ! ? (and closing quotes) followed by whitespace, except after common abbreviations."""
    out: list[tuple[str, str]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        last_word = text[start:m.start() + 1].rsplit(None, 1)[-1].lower()
        if last_word in _ABBREVIATIONS:
            continue
        out.append((" ", text[start:m.start(1)]))
        start = m.end(1)
    out.append((" ", text[start:]))
    return [(sep, s) for sep, s in out if s.strip()]
