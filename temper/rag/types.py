"""The records that flow through RAG: parsed blocks, chunks, documents, search hits."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Block:
    """One structural unit of a parsed document, in reading order.

    kind: "heading" (level 1..6), "paragraph", "code" (kept whole by the chunker when it fits), "list", "table".
    anchor: the URL fragment of a heading (HTML id, Markdown/reST slug); "" when none.
    """

    kind: str
    text: str
    level: int = 0
    anchor: str = ""
    page: int = 0  # 1-based PDF page the block starts on (0: not paged)


@dataclass
class ParsedDocument:
    """A file turned into blocks; title is the first level-1 heading, else the file name."""

    source: str  # the path as given to ingestion (absolute), or a URL
    title: str
    blocks: list[Block]
    format: str  # markdown | rst | html | text | pdf
    metadata: dict[str, Any] = field(default_factory=dict)  # e.g. {"pages": 12} for PDF


@dataclass
class Chunk:
    """A retrievable piece of a document with the metadata a citation needs."""

    text: str
    source: str
    title: str = ""
    section: str = ""  # heading path inside the document, "Title > Section > Subsection"
    anchor: str = ""  # URL fragment in effect where the chunk starts (signature or heading id; "" when none)
    ordinal: int = 0  # position of the chunk in its document
    metadata: dict[str, Any] = field(default_factory=dict)  # format, page (PDF), url, and caller-defined keys
    id: str = ""  # stable id: filled by make_id() from source, ordinal and text

    def make_id(self, collection: str) -> str:
        h = hashlib.blake2b(f"{collection}\0{self.source}\0{self.ordinal}\0{self.text}".encode(), digest_size=10)
        self.id = h.hexdigest()
        return self.id

    @property
    def embed_text(self) -> str:
        """What the embedder and BM25 read: the heading path, and the API entry the chunk belongs to, give it its
        context ("json — JSON encoder and decoder > Basic Usage > json.dumps\\n...")."""
        head = self.section or self.title
        symbol = self.metadata.get("symbol")
        if symbol:
            head = f"{head} > {symbol}" if head else str(symbol)
        return f"{head}\n{self.text}" if head else self.text

    @property
    def url(self) -> str:
        base = self.metadata.get("url") or self.source
        return f"{base}#{self.anchor}" if self.anchor else base


@dataclass
class DocumentRecord:
    """What a store remembers about an ingested file, for incremental re-ingestion."""

    source: str
    content_hash: str  # blake2b of the file's bytes (plus the chunking settings)
    num_chunks: int
    title: str = ""
    root: str = ""  # the ingestion root the file was found under (deleted files are removed per root)
    ingested_at: float = 0.0


@dataclass
class Hit:
    """A chunk returned by a search with its score (cosine similarity for dense, BM25 for lexical, the fused score for
    hybrid: convex combination in [0, 1], or RRF)."""

    chunk: Chunk
    score: float
    dense_score: float | None = None  # cosine similarity to the query, when known
    rank: int = 0
