"""Files to stored chunks: walk, parse, chunk, embed, store; incremental by content hash.

    ingestor = Ingestor(store, embedder)
    report = ingestor.ingest(["/usr/share/doc/python3.11/html"], "pydocs")

Each path given is a *root*. A file under a root is parsed when its format is known (parse.detect_format); other
files are counted as skipped. Folders whose name starts with "." or "_" below a root are not entered (VCS folders;
Sphinx's _sources/_static/_images, which duplicate the pages). Re-ingesting a root:
- a file whose content hash (bytes + chunking settings + parser version) is unchanged is skipped;
- a changed file has its chunks replaced in one transaction;
- a file that was ingested under this root and is gone is deleted from the collection.
A file that cannot be read or parsed is an error: counted, listed in the report with its reason, never dropped
silently; the other files go on.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from temper.embeddings import Embedder
from temper.errors import TemperError
from temper.rag.chunk import chunk_document
from temper.rag.parse import ParseError, detect_format, parse_file, parse_text
from temper.rag.store.base import VectorStore
from temper.rag.types import Chunk, DocumentRecord, ParsedDocument

log = logging.getLogger(__name__)
PARSER_VERSION = 3  # bump when parsing or chunking changes what a file becomes: every file is then re-ingested


@dataclass
class IngestReport:
    collection: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    chunks: int = 0  # chunks written in this run
    bytes_read: int = 0
    skipped: list[str] = field(default_factory=list)  # files of unknown format
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0

    @property
    def files_parsed(self) -> int:
        return self.added + self.updated

    def summary(self) -> str:
        rate = (f"; {self.files_parsed / self.seconds:.1f} files/s, {self.chunks / self.seconds:.0f} chunks/s"
                if self.seconds > 0 and self.files_parsed else "")
        return (f"{self.collection}: {self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
                f"{self.deleted} deleted, {len(self.errors)} errors, {len(self.skipped)} skipped (unknown format); "
                f"{self.chunks} chunks in {self.seconds:.1f} s{rate}")

    def to_dict(self) -> dict:
        return {"collection": self.collection, "added": self.added, "updated": self.updated,
                "unchanged": self.unchanged, "deleted": self.deleted, "chunks": self.chunks,
                "errors": [{"path": p, "reason": r} for p, r in self.errors], "skipped": len(self.skipped),
                "seconds": round(self.seconds, 3)}


class IngestError(TemperError):
    """A root to ingest does not exist or is not readable."""


class Ingestor:
    """Parses, chunks and embeds documents into a collection of a store."""

    def __init__(self, store: VectorStore, embedder: Embedder | None = None, max_tokens: int = 200,
                 overlap_tokens: int = 40, batch_size: int = 64):
        self.store = store
        self.embedder = embedder or Embedder.load()
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.batch_size = batch_size
        self._tok = self.embedder.tokenizer
        self._settings = {"max_tokens": max_tokens, "overlap_tokens": overlap_tokens, "parser": PARSER_VERSION}

    def count_tokens(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def ensure_collection(self, collection: str) -> None:
        self.store.create_collection(collection, self.embedder.dim, self.embedder.name, self._settings)

    # ---- files ----

    def ingest(self, paths: Sequence[str | os.PathLike], collection: str, base_url: str | None = None,
               progress: bool = True) -> IngestReport:
        """Ingest files and folders (each one a root); see the module docstring for what is skipped and deleted."""
        roots = [Path(p).expanduser().resolve() for p in paths]
        for root in roots:
            if not root.exists():
                raise IngestError(f"{root} does not exist")
        self.ensure_collection(collection)
        report = IngestReport(collection)
        t0 = time.perf_counter()
        known = self.store.documents(collection)
        todo: list[tuple[Path, Path, str]] = []  # (root, file, content hash)
        seen: set[str] = set()
        for root in roots:
            for path in _walk(root, report):
                source = str(path)
                seen.add(source)
                try:
                    data = path.read_bytes()
                except OSError as e:
                    report.errors.append((source, f"cannot read: {e.strerror or e}"))
                    continue
                digest = self._hash(data)
                report.bytes_read += len(data)
                old = known.get(source)
                if old is not None and old.content_hash == digest:
                    report.unchanged += 1
                else:
                    todo.append((root, path, digest))
            gone = [s for s, d in known.items() if d.root == str(root) and s not in seen]
            if gone:
                report.deleted += self.store.delete_documents(collection, gone)
                log.info("%s: removed %d files no longer under %s", collection, len(gone), root)
        pending: list[tuple[DocumentRecord, list[Chunk]]] = []
        # a first ingestion of many files lets the store defer index upkeep (pgvector: HNSW built once at the end)
        bulk = self.store.bulk(collection) if not known and len(todo) > 20 else contextlib.nullcontext()
        with bulk, tqdm(total=len(todo), desc=f"ingesting into {collection}", unit="file",
                        disable=not progress) as bar:
            for root, path, digest in todo:
                try:
                    doc = parse_file(path)
                except ParseError as e:
                    report.errors.append((str(path), str(e)))
                    bar.update(1)
                    continue
                url = _url(base_url, root, path)
                chunks = self.chunk(doc, url=url, relpath=_relpath(root, path))
                record = DocumentRecord(source=str(path), content_hash=digest, num_chunks=len(chunks),
                                        title=doc.title, root=str(root))
                if str(path) in known:
                    report.updated += 1
                else:
                    report.added += 1
                pending.append((record, chunks))
                if sum(len(c) for _, c in pending) >= 4 * self.batch_size:
                    report.chunks += self._flush(collection, pending)
                bar.update(1)
            report.chunks += self._flush(collection, pending)
        report.seconds = time.perf_counter() - t0
        for path, reason in report.errors:
            log.warning("not ingested: %s: %s", path, reason)
        return report

    # ---- texts (Python API, tests, context-given evaluations) ----

    def ingest_texts(self, documents: dict[str, str], collection: str, format: str = "text",
                     metadata: dict | None = None) -> IngestReport:
        """Ingest in-memory documents {source: text}; unchanged ones (same hash) are skipped."""
        self.ensure_collection(collection)
        report = IngestReport(collection)
        t0 = time.perf_counter()
        known = self.store.documents(collection)
        pending = []
        for source, text in documents.items():
            digest = self._hash(text.encode())
            if source in known and known[source].content_hash == digest:
                report.unchanged += 1
                continue
            doc = parse_text(text, format, source)
            chunks = self.chunk(doc, extra=metadata)
            pending.append((DocumentRecord(source=source, content_hash=digest, num_chunks=len(chunks),
                                           title=doc.title), chunks))
            report.added += source not in known
            report.updated += source in known
        report.chunks += self._flush(collection, pending)
        report.seconds = time.perf_counter() - t0
        return report

    def chunk(self, doc: ParsedDocument, url: str | None = None, relpath: str | None = None,
              extra: dict | None = None) -> list[Chunk]:
        chunks = chunk_document(doc, self.count_tokens, self.max_tokens, self.overlap_tokens)
        for c in chunks:
            if url:
                c.metadata["url"] = url
            if relpath:
                c.metadata["path"] = relpath
            if extra:
                c.metadata.update(extra)
        return chunks

    def _flush(self, collection: str, pending: list[tuple[DocumentRecord, list[Chunk]]]) -> int:
        """Embed the pending documents' chunks in one sorted batch, then write each document atomically."""
        chunks = [c for _, cs in pending for c in cs]
        vectors = (self.embedder.embed([c.embed_text for c in chunks], batch_size=self.batch_size).cpu().numpy()
                   if chunks else np.zeros((0, self.embedder.dim), np.float32))
        at = 0
        for record, cs in pending:
            self.store.replace_document(collection, record, cs, vectors[at:at + len(cs)])
            at += len(cs)
        pending.clear()
        return len(chunks)

    def _hash(self, data: bytes) -> str:
        h = hashlib.blake2b(data, digest_size=16)
        h.update(json.dumps(self._settings, sort_keys=True).encode())
        return h.hexdigest()


def _walk(root: Path, report: IngestReport) -> Iterator[Path]:
    """Files under root in a stable order; unknown formats go to report.skipped."""
    if root.is_file():
        if detect_format(root) is None:
            report.errors.append((str(root), "unknown format (expected .md, .rst, .html, .txt or .pdf)"))
        else:
            yield root
        return
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: report.errors.append(
            (e.filename, f"cannot list: {e.strerror}"))):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or not path.is_file():
                continue
            if detect_format(path) is None:
                report.skipped.append(str(path))
            else:
                yield path


def _relpath(root: Path, path: Path) -> str:
    return path.name if root == path else path.relative_to(root).as_posix()


def _url(base_url: str | None, root: Path, path: Path) -> str | None:
    if not base_url:
        return None
    return base_url.rstrip("/") + "/" + _relpath(root, path)
