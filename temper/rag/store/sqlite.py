"""The embedded default store: one SQLite file, exact vector search in memory.

Why SQLite plus an exact scan, and not an approximate index (HNSW in usearch/hnswlib/FAISS, LanceDB):
- SQLite gives what an embedded store needs and a vector library doesn't: one file, transactions (a document's
  chunks are replaced atomically), concurrent readers beside a writer (WAL), deletions, and metadata filters in SQL.
- At the sizes an embedded store serves (up to a few hundred thousand chunks) an exact scan is fast enough: the
  embeddings of a collection sit in one contiguous float32 matrix and a query is one matrix-vector product
  (100k x 384 floats is 154 MB and about 5 ms on two cores; measured in docs/rag.md). Exact means recall 1.0 with
  no index parameters to tune, no index rebuild on deletion, and filtered searches that never come back short
  (the weak spot of filtered HNSW). Past that size, use PostgreSQL + pgvector (HNSW), the scale-out store.
The vectors are stored as float32 blobs beside their chunks; each process loads a collection's matrix on its first
search and reloads it when the collection's generation (bumped by every write) changes.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from temper.rag.store.base import (
    CHUNK_FIELDS,
    CollectionInfo,
    StoreError,
    VectorStore,
    Where,
    as_unit_rows,
    check_where,
    first_generation,
    matmul,
)
from temper.rag.types import Chunk, DocumentRecord, Hit

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY, dim INTEGER NOT NULL, embedder TEXT NOT NULL, settings TEXT NOT NULL DEFAULT '{}',
    generation INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE, source TEXT NOT NULL,
    content_hash TEXT NOT NULL, num_chunks INTEGER NOT NULL, title TEXT NOT NULL DEFAULT '',
    root TEXT NOT NULL DEFAULT '', ingested_at REAL NOT NULL, PRIMARY KEY (collection, source));
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL, collection TEXT NOT NULL, source TEXT NOT NULL,
    ordinal INTEGER NOT NULL, title TEXT NOT NULL, section TEXT NOT NULL, anchor TEXT NOT NULL, text TEXT NOT NULL,
    metadata TEXT NOT NULL, embedding BLOB NOT NULL,
    FOREIGN KEY (collection, source) REFERENCES documents(collection, source) ON DELETE CASCADE);
CREATE UNIQUE INDEX IF NOT EXISTS chunks_id ON chunks(collection, id);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(collection, source);
"""
_CHUNK_COLUMNS = "id, source, ordinal, title, section, anchor, text, metadata"


@dataclass
class _Matrix:
    """A collection's embeddings in rowid order, as of one generation."""

    generation: int
    rowids: np.ndarray  # (N,) int64, ascending
    vectors: np.ndarray  # (N, dim) float32, unit rows
    rows: dict[str, int]  # chunk id -> row


class SQLiteStore(VectorStore):
    """Collections in one SQLite file (WAL). Safe to share between threads; other processes may read and write
    the same file (SQLite's locking; a writer waits up to `timeout` seconds for another)."""

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the folder of the store {self.path}: {e}") from None
        self.timeout = timeout
        self._local = threading.local()
        self._matrices: dict[str, _Matrix] = {}
        self._lock = threading.Lock()
        con = self._con()
        with con:
            con.executescript(_SCHEMA)
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer temper (schema {version}); upgrade temper")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ---- connections: one per thread ----

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                      check_same_thread=True)
                con.execute("PRAGMA journal_mode=WAL")
            except sqlite3.Error as e:
                raise StoreError(f"cannot open the store {self.path}: {e}") from None
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA synchronous=NORMAL")
            con.isolation_level = ""  # transactions opened by `with con:` (DEFERRED)
            self._local.con = con
        return con

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # ---- collections ----

    def create_collection(self, name: str, dim: int, embedder: str, settings: dict[str, Any] | None = None,
                          exist_ok: bool = True) -> CollectionInfo:
        _check_name(name)
        if not isinstance(dim, int) or dim < 1:
            raise StoreError(f"dim must be a positive integer, got {dim!r}")
        con = self._con()
        with con:
            row = con.execute("SELECT dim, embedder FROM collections WHERE name = ?", (name,)).fetchone()
            if row is None:
                con.execute("INSERT INTO collections (name, dim, embedder, settings, generation) VALUES (?, ?, ?, ?, ?)",
                            (name, dim, embedder, json.dumps(settings or {}), first_generation()))
            elif not exist_ok:
                raise StoreError(f"collection {name!r} already exists in {self.path}")
            elif (row[0], row[1]) != (dim, embedder):
                raise StoreError(f"collection {name!r} holds {row[0]}-dim vectors of {row[1]!r}; asked for {dim}-dim "
                                 f"{embedder!r}: use another collection name or drop it first")
        return self.collection(name)

    def collection(self, name: str) -> CollectionInfo:
        con = self._con()
        row = con.execute("SELECT name, dim, embedder, settings FROM collections WHERE name = ?", (name,)).fetchone()
        if row is None:
            names = [r[0] for r in con.execute("SELECT name FROM collections ORDER BY name")]
            raise StoreError(f"no collection {name!r} in {self.path}; it has: {', '.join(names) or 'none'} "
                             f"(create one with `temper rag ingest PATH --collection {name}`)")
        docs, chunks = con.execute(
            "SELECT (SELECT count(*) FROM documents WHERE collection = ?), "
            "(SELECT count(*) FROM chunks WHERE collection = ?)", (name, name)).fetchone()
        return CollectionInfo(name=row[0], dim=row[1], embedder=row[2], num_documents=docs, num_chunks=chunks,
                              settings=json.loads(row[3]))

    def collections(self) -> list[CollectionInfo]:
        names = [r[0] for r in self._con().execute("SELECT name FROM collections ORDER BY name")]
        return [self.collection(n) for n in names]

    def drop_collection(self, name: str) -> None:
        self.collection(name)
        con = self._con()
        with con:
            con.execute("DELETE FROM chunks WHERE collection = ?", (name,))
            con.execute("DELETE FROM documents WHERE collection = ?", (name,))
            con.execute("DELETE FROM collections WHERE name = ?", (name,))
        with self._lock:
            self._matrices.pop(name, None)

    def generation(self, collection: str) -> int:
        row = self._con().execute("SELECT generation FROM collections WHERE name = ?", (collection,)).fetchone()
        if row is None:
            self.collection(collection)  # raises naming the existing collections
        return row[0]

    # ---- documents ----

    def documents(self, collection: str) -> dict[str, DocumentRecord]:
        self.collection(collection)
        rows = self._con().execute(
            "SELECT source, content_hash, num_chunks, title, root, ingested_at FROM documents WHERE collection = ?",
            (collection,))
        return {r[0]: DocumentRecord(*r) for r in rows}

    def replace_document(self, collection: str, doc: DocumentRecord, chunks: Sequence[Chunk],
                         vectors: np.ndarray) -> None:
        info = self.collection(collection)
        if len(chunks) == 0:
            vectors = np.zeros((0, info.dim), np.float32)
        else:
            vectors = as_unit_rows(vectors, info.dim)
        if len(vectors) != len(chunks):
            raise StoreError(f"{len(chunks)} chunks but {len(vectors)} vectors for {doc.source}")
        rows = []
        for chunk, vec in zip(chunks, vectors):
            if chunk.source != doc.source:
                raise StoreError(f"chunk of {chunk.source!r} given with document {doc.source!r}")
            cid = chunk.id or chunk.make_id(collection)
            rows.append((cid, collection, chunk.source, chunk.ordinal, chunk.title, chunk.section, chunk.anchor,
                         chunk.text, json.dumps(chunk.metadata), vec.astype(np.float32).tobytes()))
        con = self._con()
        try:
            with con:
                con.execute("BEGIN IMMEDIATE")
                con.execute("DELETE FROM chunks WHERE collection = ? AND source = ?", (collection, doc.source))
                con.execute(
                    "INSERT OR REPLACE INTO documents (collection, source, content_hash, num_chunks, title, root, "
                    "ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (collection, doc.source, doc.content_hash, len(chunks), doc.title, doc.root,
                     doc.ingested_at or time.time()))
                con.executemany("INSERT INTO chunks (id, collection, source, ordinal, title, section, anchor, text, "
                                "metadata, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                con.execute("UPDATE collections SET generation = generation + 1 WHERE name = ?", (collection,))
        except sqlite3.IntegrityError as e:
            raise StoreError(f"cannot store {doc.source}: {e} (two chunks with the same id?)") from None

    def delete_documents(self, collection: str, sources: Sequence[str]) -> int:
        self.collection(collection)
        con = self._con()
        with con:
            con.execute("BEGIN IMMEDIATE")
            n = 0
            for source in sources:
                con.execute("DELETE FROM chunks WHERE collection = ? AND source = ?", (collection, source))
                n += con.execute("DELETE FROM documents WHERE collection = ? AND source = ?",
                                 (collection, source)).rowcount
            if n:
                con.execute("UPDATE collections SET generation = generation + 1 WHERE name = ?", (collection,))
        return n

    # ---- reading ----

    def search(self, collection: str, vector: np.ndarray, k: int, where: Where | None = None) -> list[Hit]:
        check_where(where)
        if k < 1:
            raise StoreError(f"k must be at least 1, got {k}")
        matrix = self._matrix(collection)
        q = as_unit_rows(vector, matrix.vectors.shape[1])[0]
        if where:
            sql, params = _where_sql(where)
            wanted = np.fromiter((r[0] for r in self._con().execute(
                f"SELECT rowid FROM chunks WHERE collection = ? AND {sql}", (collection, *params))), np.int64)
            rows = np.searchsorted(matrix.rowids, wanted)
            rows = rows[(rows < len(matrix.rowids)) & (matrix.rowids[np.minimum(rows, len(matrix.rowids) - 1)]
                                                       == wanted)]
            scores = matmul(matrix.vectors[rows], q)
        else:
            rows = None
            scores = matmul(matrix.vectors, q)
        k = min(k, len(scores))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        rowids = matrix.rowids[top if rows is None else rows[top]]
        by_rowid = self._chunks_by_rowid(rowids.tolist())
        return [Hit(chunk=by_rowid[int(r)], score=float(scores[i]), dense_score=float(scores[i]), rank=n + 1)
                for n, (r, i) in enumerate(zip(rowids, top))]

    def get_chunks(self, collection: str, ids: Sequence[str]) -> list[Chunk]:
        found = {}
        con = self._con()
        for start in range(0, len(ids), 500):
            part = list(ids[start:start + 500])
            marks = ",".join("?" * len(part))
            for row in con.execute(f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE collection = ? AND id IN ({marks})",
                                   (collection, *part)):
                found[row[0]] = _chunk(row)
        return [found[i] for i in ids if i in found]

    def get_vectors(self, collection: str, ids: Sequence[str]) -> np.ndarray:
        matrix = self._matrix(collection)  # the search matrix already holds them
        return matrix.vectors[[matrix.rows[cid] for cid in ids]] if ids else matrix.vectors[:0].copy()

    def iter_chunks(self, collection: str, where: Where | None = None) -> Iterator[Chunk]:
        check_where(where)
        self.collection(collection)
        sql, params = _where_sql(where) if where else ("1", [])
        cur = self._con().execute(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE collection = ? AND {sql} ORDER BY rowid",
            (collection, *params))
        for row in cur:
            yield _chunk(row)

    # ---- the in-memory matrix ----

    def _matrix(self, collection: str) -> _Matrix:
        generation = self.generation(collection)
        with self._lock:
            cached = self._matrices.get(collection)
            if cached is not None and cached.generation == generation:
                return cached
        con = self._con()
        with con:  # one read transaction: the matrix and its generation agree
            generation = con.execute("SELECT generation FROM collections WHERE name = ?",
                                     (collection,)).fetchone()[0]
            dim = con.execute("SELECT dim FROM collections WHERE name = ?", (collection,)).fetchone()[0]
            rows = con.execute("SELECT rowid, id, embedding FROM chunks WHERE collection = ? ORDER BY rowid",
                               (collection,)).fetchall()
        rowids = np.fromiter((r[0] for r in rows), np.int64, count=len(rows))
        # writable (bytearray) so that torch can read it in place (base.matmul)
        vectors = np.frombuffer(bytearray(b"".join(r[2] for r in rows)), np.float32).reshape(len(rows), dim)
        matrix = _Matrix(generation, rowids, vectors, {r[1]: n for n, r in enumerate(rows)})
        with self._lock:
            self._matrices[collection] = matrix
        return matrix

    def _chunks_by_rowid(self, rowids: list[int]) -> dict[int, Chunk]:
        if not rowids:
            return {}
        marks = ",".join("?" * len(rowids))
        rows = self._con().execute(f"SELECT rowid, {_CHUNK_COLUMNS} FROM chunks WHERE rowid IN ({marks})", rowids)
        return {r[0]: _chunk(r[1:]) for r in rows}


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > 128 or not all(c.isalnum() or c in "-_." for c in name):
        raise StoreError(f"collection name {name!r}: use 1 to 128 letters, digits, '-', '_' or '.'")


def _chunk(row: Sequence[Any]) -> Chunk:
    cid, source, ordinal, title, section, anchor, text, metadata = row
    return Chunk(text=text, source=source, title=title, section=section, anchor=anchor, ordinal=ordinal,
                 metadata=json.loads(metadata), id=cid)


def _where_sql(where: Where) -> tuple[str, list[Any]]:
    """The filter as an SQL condition with the semantics of base.matches (JSON scalars compared by type)."""
    parts, params = [], []
    for key, cond in where.items():
        if key in CHUNK_FIELDS:
            value_sql, type_sql = key, "'text'"
        else:
            path = f'$."{key}"'
            value_sql, type_sql = f"json_extract(metadata, '{path}')", f"json_type(metadata, '{path}')"
        if isinstance(cond, dict):
            parts.append(f"({type_sql} = 'text' AND substr({value_sql}, 1, ?) = ?)")
            params += [len(cond["prefix"]), cond["prefix"]]
            continue
        alternatives = []
        for c in cond if isinstance(cond, list) else [cond]:
            if isinstance(c, bool):
                alternatives.append(f"{type_sql} = ?")
                params.append("true" if c else "false")
            elif isinstance(c, str):
                alternatives.append(f"({type_sql} = 'text' AND {value_sql} = ?)")
                params.append(c)
            else:
                alternatives.append(f"({type_sql} IN ('integer', 'real') AND {value_sql} = ?)")
                params.append(c)
        parts.append("(" + " OR ".join(alternatives) + ")")
    return " AND ".join(parts) or "1", params
