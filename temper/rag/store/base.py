"""The store interface: collections of chunks with their embeddings, documents for incremental ingestion.

Two implementations pass the same test suite (tests/rag/test_stores.py):
- `SQLiteStore` (sqlite.py), the embedded default: one file, no server;
- `PgVectorStore` (pgvector.py): PostgreSQL + pgvector with an HNSW index, for several processes and large sets.

Filters (`where`) are a dict of field -> condition, all of which must hold:
    {"source": "/docs/json.html"}                  equality
    {"format": ["html", "rst"]}                    one of
    {"source": {"prefix": "/usr/share/doc/"}}      string prefix
Fields: source, title, section, anchor, and any key of a chunk's metadata (compared as JSON scalars).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from temper.errors import TemperError
from temper.rag.types import Chunk, DocumentRecord, Hit

CHUNK_FIELDS = ("source", "title", "section", "anchor")  # filterable columns; other keys live in metadata


class StoreError(TemperError):
    """A store cannot be opened or used (missing collection, wrong dimension, bad filter, unreachable server)."""


@dataclass
class CollectionInfo:
    name: str
    dim: int
    embedder: str  # the embedding model's name: queries must use the same one
    num_documents: int = 0
    num_chunks: int = 0
    settings: dict[str, Any] | None = None  # chunking settings used at ingestion (max_tokens, overlap)


Where = dict[str, Any]


def check_where(where: Where | None) -> None:
    """Raise StoreError for a malformed filter (both stores accept exactly the same language)."""
    if where is None:
        return
    if not isinstance(where, dict):
        raise StoreError(f"a filter must be a dict of field -> condition, got {type(where).__name__}")
    for key, cond in where.items():
        if not isinstance(key, str) or not key or not key.replace("_", "").replace("-", "").isalnum():
            raise StoreError(f"filter field {key!r}: use letters, digits, '_' or '-'")
        if isinstance(cond, dict):
            if set(cond) != {"prefix"} or not isinstance(cond["prefix"], str):
                raise StoreError(f"filter on {key!r}: the only operator is {{'prefix': str}}, got {cond!r}")
        elif isinstance(cond, list):
            if not cond or not all(isinstance(v, (str, int, float, bool)) for v in cond):
                raise StoreError(f"filter on {key!r}: a list must hold at least one str/int/float/bool")
        elif not isinstance(cond, (str, int, float, bool)):
            raise StoreError(f"filter on {key!r}: a value must be str/int/float/bool, a list of them, or "
                             f"{{'prefix': str}}; got {type(cond).__name__}")


def matches(chunk: Chunk, where: Where | None) -> bool:
    """The reference semantics of a filter, in Python (stores translate it to SQL; tests compare the two)."""
    for key, cond in (where or {}).items():
        value = getattr(chunk, key) if key in CHUNK_FIELDS else chunk.metadata.get(key)
        if isinstance(cond, dict):
            if not (isinstance(value, str) and value.startswith(cond["prefix"])):
                return False
        elif isinstance(cond, list):
            if not any(_same(value, c) for c in cond):
                return False
        elif not _same(value, cond):
            return False
    return True


def _same(value: Any, cond: Any) -> bool:
    """JSON scalar equality: True is not 1 and "1" is not 1 (1 and 1.0 are equal numbers)."""
    if value is None or isinstance(value, bool) != isinstance(cond, bool):
        return False
    if isinstance(value, str) != isinstance(cond, str):
        return False
    return value == cond


class VectorStore(ABC):
    """Chunks with unit-norm float32 embeddings, grouped in collections. Thread-safe for concurrent readers."""

    @abstractmethod
    def create_collection(self, name: str, dim: int, embedder: str, settings: dict[str, Any] | None = None,
                          exist_ok: bool = True) -> CollectionInfo:
        """Create a collection (or return it when it exists with the same dim and embedder; StoreError otherwise)."""

    @abstractmethod
    def collection(self, name: str) -> CollectionInfo:
        """The collection's info with its counts; StoreError naming the existing ones when it does not exist."""

    @abstractmethod
    def collections(self) -> list[CollectionInfo]: ...

    @abstractmethod
    def drop_collection(self, name: str) -> None: ...

    @abstractmethod
    def documents(self, collection: str) -> dict[str, DocumentRecord]:
        """Every ingested document of the collection, by source."""

    @abstractmethod
    def replace_document(self, collection: str, doc: DocumentRecord, chunks: Sequence[Chunk],
                         vectors: np.ndarray) -> None:
        """Atomically replace a document's chunks (insert when new). vectors: (len(chunks), dim) float32.

        Chunks without an id get one (Chunk.make_id). Readers see the old or the new version, never a mix.
        """

    @abstractmethod
    def delete_documents(self, collection: str, sources: Sequence[str]) -> int:
        """Delete documents and their chunks; returns how many documents existed."""

    @abstractmethod
    def search(self, collection: str, vector: np.ndarray, k: int, where: Where | None = None) -> list[Hit]:
        """The k chunks most similar (cosine = dot product of unit vectors) to vector that pass the filter,
        best first, with Hit.score = Hit.dense_score = the similarity."""

    @abstractmethod
    def get_chunks(self, collection: str, ids: Sequence[str]) -> list[Chunk]:
        """Chunks by id, in the order of ids (unknown ids are skipped)."""

    @abstractmethod
    def get_vectors(self, collection: str, ids: Sequence[str]) -> np.ndarray:
        """Embeddings (len(ids), dim) float32 of chunks by id, in that order (KeyError for an unknown id)."""

    @abstractmethod
    def iter_chunks(self, collection: str, where: Where | None = None) -> Iterator[Chunk]:
        """Every chunk of the collection (passing the filter), in insertion order."""

    @abstractmethod
    def generation(self, collection: str) -> int:
        """A number that changes whenever the collection's chunks change (caches such as BM25 key on it)."""

    @contextmanager
    def bulk(self, collection: str) -> Iterator[None]:
        """A block of many writes; a store may defer index maintenance to its end (pgvector rebuilds HNSW once)."""
        yield

    def count(self, collection: str) -> int:
        return self.collection(collection).num_chunks

    def close(self) -> None:
        """Release connections and files."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for the vector math of retrieval, computed by torch, not numpy: numpy's OpenBLAS keeps its own threads
    spinning after a large product, and they fight torch's threads in the query embedding that comes next (on two
    cores: embedding a query 12 -> 24-30 ms; hybrid retrieval on 18.5k chunks 58 -> 18 ms p50 once every product
    went through torch). One thread pool for both avoids it."""
    import torch

    a = np.ascontiguousarray(a, dtype=np.float32)
    return (torch.from_numpy(a) @ torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))).numpy()


def first_generation() -> int:
    """A new collection's first generation: microseconds since the epoch, so that a collection dropped and made
    again under the same name never repeats a generation that caches (BM25 indexes, vector matrices) remember."""
    return time.time_ns() // 1000


def as_unit_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """float32 (N, dim), each row L2-normalized; StoreError for a wrong shape or a zero/NaN row."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != dim:
        raise StoreError(f"vectors must have shape (N, {dim}), got {tuple(v.shape)}")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise StoreError("vectors must be finite and non-zero")
    return v / norms
