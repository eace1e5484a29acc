"""PostgreSQL + pgvector: collections shared by several processes, searched through an HNSW index.

    store = PgVectorStore("postgresql://user@host:5432/db")   # a test server: eval "$(.ci/pgvector.sh)"

Tables (created by MIGRATIONS, applied once per database schema):
    temper_rag_collections (name, id, dim, embedder, settings, generation)
    temper_rag_documents   (collection, source, content_hash, num_chunks, title, root, ingested_at)
    temper_rag_chunks_<id> one per collection: (seq, id, source, ordinal, title, section, anchor, text, metadata,
                           embedding vector(dim)) with an HNSW index (vector_cosine_ops) on embedding

NOTE: one chunks table per collection rather than one table with an untyped `vector` column. HNSW needs a fixed
dimension, so a shared table would need a partial expression index per collection,
`((embedding::vector(384))) WHERE collection = 'docs'`, which the planner uses only when a query repeats the cast
and the predicate with the collection name as a literal: a bound parameter (a generic plan) cannot prove the
partial predicate, so names would be formatted into SQL. Per-collection tables give a typed column, a plain index
that serves `ORDER BY embedding <=> $1 LIMIT $2` with bound parameters, statistics of their own (the planner picks
the index or an exact scan for that collection's size), and DROP TABLE for drop_collection instead of a mass DELETE
that leaves an HNSW graph full of dead tuples. The table name comes from the collection's integer id, never from
its name. A document's chunks are deleted explicitly, in the transaction that deletes or replaces the document.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from temper.rag.store.base import (
    CHUNK_FIELDS,
    CollectionInfo,
    StoreError,
    VectorStore,
    Where,
    as_unit_rows,
    check_where,
    first_generation,
)
from temper.rag.types import Chunk, DocumentRecord, Hit

MAX_HNSW_DIM = 2000  # pgvector indexes `vector` columns of at most 2,000 dimensions
MAX_EF_SEARCH = 1000  # pgvector's upper bound of hnsw.ef_search
MIGRATION_LOCK = 7_365_726_177  # pg_advisory_lock key: one process at a time applies migrations
CONNECT_TIMEOUT_S = 10  # unless the DSN sets connect_timeout (libpq waits forever by default)

MIGRATIONS = [
    # 1: the catalog; the chunks tables are made per collection by create_collection (see the module docstring)
    """
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE temper_rag_collections (
        name text PRIMARY KEY,
        id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        dim int NOT NULL CHECK (dim > 0),
        embedder text NOT NULL,
        settings jsonb NOT NULL,
        generation bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE temper_rag_documents (
        collection text NOT NULL REFERENCES temper_rag_collections (name) ON DELETE CASCADE,
        source text NOT NULL,
        content_hash text NOT NULL,
        num_chunks int NOT NULL,
        title text NOT NULL,
        root text NOT NULL,
        ingested_at timestamptz NOT NULL,
        PRIMARY KEY (collection, source)
    );
    """,
]

CHUNKS_DDL = """
CREATE TABLE {table} (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    id text PRIMARY KEY,
    source text NOT NULL,
    ordinal int NOT NULL,
    title text NOT NULL,
    section text NOT NULL,
    anchor text NOT NULL,
    text text NOT NULL,
    metadata jsonb NOT NULL,
    embedding vector({dim}) NOT NULL
);
CREATE INDEX {seq_index} ON {table} (seq);
CREATE INDEX {source_index} ON {table} (source);
"""
HNSW_DDL = """
CREATE INDEX IF NOT EXISTS {hnsw_index} ON {table} USING hnsw (embedding vector_cosine_ops)
WITH (m = {m}, ef_construction = {ef_construction})
"""
BULK_MAINTENANCE_WORK_MEM = "1GB"  # bulk_ingest's index build: a graph that fits in memory builds several times faster
CHUNK_COLUMNS = ("id", "source", "ordinal", "title", "section", "anchor", "text", "metadata")
COPY_TYPES = ["text", "text", "int4", "text", "text", "text", "text", "jsonb", "vector"]  # CHUNK_COLUMNS, embedding
INFO_SQL = """
SELECT c.name, c.dim, c.embedder, c.settings, count(d.source), coalesce(sum(d.num_chunks), 0)
FROM temper_rag_collections c LEFT JOIN temper_rag_documents d ON d.collection = c.name
{where} GROUP BY c.name ORDER BY c.name
"""


class PgVectorStore(VectorStore):
    """A VectorStore on PostgreSQL + pgvector; thread-safe (a connection pool) and safe for several processes.

    Args:
        dsn: a libpq connection string or URL, e.g. "postgresql://user@127.0.0.1:5432/db".
        min_size, max_size: the connection pool's bounds (concurrent operations beyond max_size wait).
        hnsw_m, hnsw_ef_construction: the HNSW graph's degree and build-time beam, for collections created here.
        ef_search: the search-time beam (raised to k when k is larger); recall grows with it, speed drops.
    """

    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 8, hnsw_m: int = 16,
                 hnsw_ef_construction: int = 64, ef_search: int = 100):
        if not 2 <= hnsw_m <= 100:
            raise ValueError(f"hnsw_m must be in [2, 100], got {hnsw_m}")
        if not 2 * hnsw_m <= hnsw_ef_construction <= 1000:
            raise ValueError(f"hnsw_ef_construction must be in [2 * hnsw_m, 1000], got {hnsw_ef_construction}")
        if not 1 <= ef_search <= MAX_EF_SEARCH:
            raise ValueError(f"ef_search must be in [1, {MAX_EF_SEARCH}], got {ef_search}")
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(f"need 0 <= min_size <= max_size and max_size >= 1, got {min_size}, {max_size}")
        self.hnsw_m, self.hnsw_ef_construction, self.ef_search = hnsw_m, hnsw_ef_construction, ef_search
        params = _parse_dsn(dsn)
        host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST", "localhost")
        port = params.get("port") or os.environ.get("PGPORT", "5432")
        self.server = f"{host}:{port}"  # names the server in messages (never the password)
        # what the retriever keys its on-disk BM25 cache by: the database and the schema search path, no password
        self.cache_identity = f"{self.server}/{params.get('dbname', '')}?{params.get('options', '')}"
        # NOTE: no server-side prepared statements: after 5 runs PostgreSQL may switch to a generic plan, which
        # does not see k or the filter's values and can pick an exact scan where the HNSW index is right
        kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
        with self._errors():
            with psycopg.connect(dsn, **kwargs) as conn:  # before the pool: register_vector needs the extension
                migrate(conn, self.server)
            self._pool = ConnectionPool(dsn, min_size=min_size, max_size=max_size, kwargs=kwargs,
                                        configure=register_vector, open=False, name=f"temper-rag {self.server}")
            try:
                self._pool.open(wait=min_size > 0, timeout=CONNECT_TIMEOUT_S)
            except PoolTimeout:
                self._pool.close()  # its workers would keep trying to connect
                raise

    # --- collections

    def create_collection(self, name: str, dim: int, embedder: str, settings: dict[str, Any] | None = None,
                          exist_ok: bool = True) -> CollectionInfo:
        if not isinstance(name, str) or not 1 <= len(name) <= 128 or not all(c.isalnum() or c in "-_." for c in name):
            raise StoreError(f"collection name {name!r}: use 1 to 128 letters, digits, '-', '_' or '.'")
        if not isinstance(embedder, str):
            raise StoreError(f"collection {name!r}: embedder must be the model's name, got {embedder!r}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= MAX_HNSW_DIM:
            raise StoreError(f"collection {name!r}: dim must be an int in [1, {MAX_HNSW_DIM}] (pgvector's HNSW "
                             f"limit), got {dim!r}")
        dim = int(dim)
        with self._connection() as conn:
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO temper_rag_collections (name, dim, embedder, settings, generation) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING id",
                    [name, dim, embedder, Jsonb(settings or {}), first_generation()]).fetchone()
                if row is not None:
                    table = ChunksTable(row[0], dim)
                    conn.execute(table.ddl())
                    conn.execute(table.hnsw_ddl(self.hnsw_m, self.hnsw_ef_construction))
            info = _collection_info(conn, name)
        if row is None:
            if not exist_ok:
                raise StoreError(f"collection {name!r} already exists")
            if (info.dim, info.embedder) != (dim, embedder):
                raise StoreError(f"collection {name!r} exists with dim {info.dim} and embedder {info.embedder!r}, "
                                 f"not dim {dim} and embedder {embedder!r}: use another name or drop it first")
        return info

    def collection(self, name: str) -> CollectionInfo:
        with self._connection() as conn:
            return _collection_info(conn, name)

    def collections(self) -> list[CollectionInfo]:
        with self._connection() as conn:
            rows = conn.execute(sql.SQL(INFO_SQL).format(where=sql.SQL(""))).fetchall()
        return [_info_from_row(row) for row in rows]

    def drop_collection(self, name: str) -> None:
        with self._connection() as conn, conn.transaction():
            table = _lookup(conn, name, lock=True)
            conn.execute(sql.SQL("DROP TABLE {}").format(table.name))
            conn.execute("DELETE FROM temper_rag_collections WHERE name = %s", [name])  # documents cascade

    def generation(self, collection: str) -> int:
        with self._connection() as conn:
            row = conn.execute("SELECT generation FROM temper_rag_collections WHERE name = %s",
                               [collection]).fetchone()
            if row is None:
                raise _missing(conn, collection)
        return int(row[0])

    # --- documents

    def documents(self, collection: str) -> dict[str, DocumentRecord]:
        with self._connection() as conn:
            _lookup(conn, collection)
            rows = conn.execute(
                "SELECT source, content_hash, num_chunks, title, root, extract(epoch FROM ingested_at)::float8 "
                "FROM temper_rag_documents WHERE collection = %s ORDER BY source", [collection]).fetchall()
        return {r[0]: DocumentRecord(source=r[0], content_hash=r[1], num_chunks=r[2], title=r[3], root=r[4],
                                     ingested_at=r[5]) for r in rows}

    def replace_document(self, collection: str, doc: DocumentRecord, chunks: Sequence[Chunk],
                         vectors: np.ndarray) -> None:
        with self._connection() as conn:
            dim = _lookup(conn, collection).dim
            rows = _chunk_rows(collection, doc, chunks, vectors, dim)
            with conn.transaction():
                table = _lookup(conn, collection, lock=True)  # one writer per collection at a time
                if table.dim != dim:
                    raise StoreError(f"collection {collection!r} was re-created with dim {table.dim} meanwhile")
                conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s").format(table.name), [doc.source])
                columns = sql.SQL(", ").join(map(sql.Identifier, (*CHUNK_COLUMNS, "embedding")))
                copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table.name, columns)
                with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                    copy.set_types(COPY_TYPES)
                    for row in rows:
                        copy.write_row(row)
                conn.execute(
                    "INSERT INTO temper_rag_documents (collection, source, content_hash, num_chunks, title, "
                    "root, ingested_at) VALUES (%s, %s, %s, %s, %s, %s, to_timestamp(%s)) "
                    "ON CONFLICT (collection, source) DO UPDATE SET content_hash = excluded.content_hash, "
                    "num_chunks = excluded.num_chunks, title = excluded.title, root = excluded.root, "
                    "ingested_at = excluded.ingested_at",
                    [collection, doc.source, doc.content_hash, len(rows), doc.title, doc.root,
                     doc.ingested_at or time.time()])
                _bump_generation(conn, collection)

    def delete_documents(self, collection: str, sources: Sequence[str]) -> int:
        sources = list(sources)
        with self._connection() as conn, conn.transaction():
            table = _lookup(conn, collection, lock=True)
            if not sources:
                return 0
            num_documents = conn.execute(
                "DELETE FROM temper_rag_documents WHERE collection = %s AND source = ANY(%s)",
                [collection, sources]).rowcount
            num_chunks = conn.execute(sql.SQL("DELETE FROM {} WHERE source = ANY(%s)").format(table.name),
                                      [sources]).rowcount
            if num_documents or num_chunks:
                _bump_generation(conn, collection)
        return num_documents

    # --- chunks

    def search(self, collection: str, vector: np.ndarray, k: int, where: Where | None = None) -> list[Hit]:
        with self._connection() as conn, conn.transaction():
            query, params = self._search_query(conn, collection, vector, k, where)
            self._set_search_options(conn, k)
            rows = conn.execute(query, params).fetchall()
        return [Hit(chunk=_chunk_from_row(row), score=1.0 - row[-1], dense_score=1.0 - row[-1], rank=n + 1)
                for n, row in enumerate(rows)]

    def explain(self, collection: str, vector: np.ndarray, k: int, where: Where | None = None) -> str:
        """The query plan of search(...) (e.g. to check that the HNSW index serves it)."""
        with self._connection() as conn, conn.transaction():
            query, params = self._search_query(conn, collection, vector, k, where)
            self._set_search_options(conn, k)
            rows = conn.execute(sql.SQL("EXPLAIN ") + query, params).fetchall()
        return "\n".join(row[0] for row in rows)

    def get_chunks(self, collection: str, ids: Sequence[str]) -> list[Chunk]:
        ids = list(ids)
        with self._connection() as conn:
            table = _lookup(conn, collection)
            rows = conn.execute(sql.SQL("SELECT {} FROM {} WHERE id = ANY(%s)").format(_chunk_columns(), table.name),
                                [ids]).fetchall()
        by_id = {row[0]: _chunk_from_row(row) for row in rows}
        return [by_id[i] for i in ids if i in by_id]

    def get_vectors(self, collection: str, ids: Sequence[str]) -> np.ndarray:
        ids = list(ids)
        with self._connection() as conn:
            table = _lookup(conn, collection)
            with conn.cursor(binary=True) as cur:
                rows = cur.execute(sql.SQL("SELECT id, embedding FROM {} WHERE id = ANY(%s)").format(table.name),
                                   [ids]).fetchall()
        by_id = {i: v.to_numpy() for i, v in rows}
        out = np.empty((len(ids), table.dim), dtype=np.float32)
        for row, i in enumerate(ids):
            if i not in by_id:
                raise KeyError(f"no chunk {i!r} in collection {collection!r}")
            out[row] = by_id[i]
        return out

    def iter_chunks(self, collection: str, where: Where | None = None) -> Iterator[Chunk]:
        """Streams through a server-side cursor, holding one pooled connection until the iteration ends."""
        condition, params = where_sql(where)
        with self._connection() as conn, conn.transaction():
            table = _lookup(conn, collection)
            with conn.cursor(name="temper_rag_iter_chunks") as cur:
                cur.itersize = 2000
                cur.execute(sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY seq").format(_chunk_columns(), table.name,
                                                                                         condition), params)
                for row in cur:
                    yield _chunk_from_row(row)

    @contextmanager
    def bulk_ingest(self, collection: str) -> Iterator[None]:
        """Write many documents faster: drops the collection's HNSW index and builds it once at the end, several
        times faster than maintaining it chunk by chunk. Meanwhile searches of the collection are exact scans.

            with store.bulk_ingest("docs"):
                for doc, chunks, vectors in batches:
                    store.replace_document("docs", doc, chunks, vectors)
        """
        with self._connection() as conn:
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(_lookup(conn, collection).hnsw_index))
        try:
            yield
        finally:
            with self._connection() as conn, conn.transaction():
                conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", [BULK_MAINTENANCE_WORK_MEM])
                conn.execute(_lookup(conn, collection).hnsw_ddl(self.hnsw_m, self.hnsw_ef_construction))

    def relation_bytes(self, collection: str) -> int:
        """Bytes on disk of the collection's chunks table with its indexes (HNSW included) and TOAST."""
        with self._connection() as conn:
            table = _lookup(conn, collection)
            return int(conn.execute("SELECT pg_total_relation_size(%s::regclass)",
                                    [table.name.as_string(conn)]).fetchone()[0])

    def bulk(self, collection: str):
        return self.bulk_ingest(collection)

    def close(self) -> None:
        self._pool.close()

    # --- internals

    @staticmethod
    def _search_query(conn: psycopg.Connection, collection: str, vector: np.ndarray, k: int,
                      where: Where | None) -> tuple[sql.Composed, list[Any]]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise StoreError(f"k must be a positive int, got {k!r}")
        condition, params = where_sql(where)
        table = _lookup(conn, collection)
        query = as_unit_rows(vector, table.dim)[0]
        # relaxed_order: the index may return neighbours slightly out of order; the outer ORDER BY re-sorts the k
        return sql.SQL(
            "WITH hits AS MATERIALIZED (SELECT {columns}, embedding <=> %s AS distance FROM {table} WHERE {where} "
            "ORDER BY distance LIMIT %s) SELECT * FROM hits ORDER BY distance"
        ).format(columns=_chunk_columns(), table=table.name, where=condition), [query, *params, int(k)]

    def _set_search_options(self, conn: psycopg.Connection, k: int) -> None:
        # iterative scans keep walking the graph while filters or dead tuples leave fewer than k rows (pgvector 0.8)
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true), "
                     "set_config('hnsw.iterative_scan', 'relaxed_order', true)",
                     [str(min(max(self.ef_search, k), MAX_EF_SEARCH))])

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        with self._errors(), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """PostgreSQL errors as StoreError; an unreachable server names host:port (never the password)."""
        try:
            yield
        except PoolTimeout as e:
            raise StoreError(f"no connection to PostgreSQL at {self.server} in time ({e}); is it running? "
                             f"For tests: eval \"$(.ci/pgvector.sh)\"") from e
        except psycopg.OperationalError as e:
            if e.sqlstate is None or e.sqlstate.startswith(("08", "57P")):
                raise StoreError(f"cannot reach PostgreSQL at {self.server}: {_first_line(e)}. Is it running? For "
                                 f"tests start one with pgvector: eval \"$(.ci/pgvector.sh)\"") from e
            raise StoreError(f"PostgreSQL at {self.server}: {_first_line(e)}") from e
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL at {self.server}: {_first_line(e)}") from e


def migrate(conn: psycopg.Connection, server: str) -> None:
    """Apply the pending MIGRATIONS in order, each in one transaction, under an advisory lock (two processes
    opening a store at once must not both apply one). conn must be in autocommit mode."""
    conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS temper_rag_migrations "
                     "(version int PRIMARY KEY, applied_at timestamptz NOT NULL)")
        applied = {v for (v,) in conn.execute("SELECT version FROM temper_rag_migrations")}
        for version, ddl in enumerate(MIGRATIONS, start=1):
            if version in applied:
                continue
            if version == 1:
                _require_pgvector(conn, server)
            with conn.transaction():
                conn.execute(ddl)
                conn.execute("INSERT INTO temper_rag_migrations (version, applied_at) VALUES (%s, now())",
                             [version])
    finally:
        if not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])


def _require_pgvector(conn: psycopg.Connection, server: str) -> None:
    row = conn.execute("SELECT installed_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    if row is None:
        raise StoreError(f"pgvector is not installed on the PostgreSQL server at {server}: install it there "
                         f"(Debian/Ubuntu: apt install postgresql-<major>-pgvector; otherwise "
                         f"https://github.com/pgvector/pgvector#installation), or for tests run a local server "
                         f"that has it: eval \"$(.ci/pgvector.sh)\"")
    if row[0] is None:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege as e:
            raise StoreError(f"the vector extension is not enabled in this database at {server} and this user may "
                             f"not enable it: ask a superuser to run CREATE EXTENSION vector ({_first_line(e)})") from e


def where_sql(where: Where | None) -> tuple[sql.Composable, list[Any]]:
    """A filter as a SQL condition on a chunks table and its bound parameters, with base.matches' semantics."""
    check_where(where)
    conditions: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[Any] = []
    for key, cond in (where or {}).items():
        if key in CHUNK_FIELDS:
            condition, values = _column_condition(sql.Identifier(key), cond)
        else:
            condition, values = _metadata_condition(key, cond)
        conditions.append(condition)
        params += values
    return sql.SQL(" AND ").join(conditions), params


def _column_condition(column: sql.Identifier, cond: Any) -> tuple[sql.Composable, list[Any]]:
    """A text column (never NULL): only string conditions can match it."""
    if isinstance(cond, dict):
        return sql.SQL("starts_with({}, %s)").format(column), [cond["prefix"]]
    strings = [v for v in (cond if isinstance(cond, list) else [cond]) if isinstance(v, str)]
    if not strings:
        return sql.SQL("FALSE"), []
    return sql.SQL("{} = ANY(%s)").format(column), [strings]


def _metadata_condition(key: str, cond: Any) -> tuple[sql.Composable, list[Any]]:
    """A metadata key, compared as JSON scalars like matches(): jsonb equality tells true from 1 and "1" from 1,
    and 1 equals 1.0 (numeric); a missing key is NULL and matches nothing. (->> would compare text: "true" = true.)"""
    if isinstance(cond, dict):
        return (sql.SQL("(jsonb_typeof(metadata -> %s) = 'string' AND starts_with(metadata ->> %s, %s))"),
                [key, key, cond["prefix"]])
    if isinstance(cond, list):
        return sql.SQL("(metadata -> %s) = ANY(%s)"), [key, [Jsonb(v) for v in cond]]
    return sql.SQL("(metadata -> %s) = %s"), [key, Jsonb(cond)]


def _chunk_rows(collection: str, doc: DocumentRecord, chunks: Sequence[Chunk], vectors: np.ndarray,
                dim: int) -> list[tuple[Any, ...]]:
    """COPY rows (CHUNK_COLUMNS, embedding) of a document's chunks, validated; fills missing chunk ids."""
    if chunks:
        unit = as_unit_rows(vectors, dim)
    elif np.asarray(vectors).size == 0:
        unit = np.empty((0, dim), dtype=np.float32)
    else:
        raise StoreError(f"0 chunks but vectors of shape {np.asarray(vectors).shape}")
    if len(unit) != len(chunks):
        raise StoreError(f"{len(chunks)} chunks but {len(unit)} vectors")
    rows = []
    for chunk, vector in zip(chunks, unit, strict=True):
        if chunk.source != doc.source:
            raise StoreError(f"a chunk of {chunk.source!r} passed with document {doc.source!r}")
        rows.append((chunk.id or chunk.make_id(collection), chunk.source, chunk.ordinal, chunk.title, chunk.section,
                     chunk.anchor, chunk.text, Jsonb(chunk.metadata), vector))
    return rows


@dataclass(frozen=True, slots=True)
class ChunksTable:
    """A collection's chunks table, temper_rag_chunks_<collection id>, and its embeddings' dimension.

    NOTE: DDL takes no bound parameters: its identifiers are made from the integer id and its literals are ints.
    """

    collection_id: int
    dim: int

    @property
    def name(self) -> sql.Identifier:
        return sql.Identifier(f"temper_rag_chunks_{self.collection_id}")

    @property
    def hnsw_index(self) -> sql.Identifier:
        return sql.Identifier(f"temper_rag_chunks_{self.collection_id}_hnsw")

    def ddl(self) -> sql.Composed:
        prefix = f"temper_rag_chunks_{self.collection_id}"
        return sql.SQL(CHUNKS_DDL).format(table=self.name, dim=sql.Literal(self.dim),
                                          seq_index=sql.Identifier(f"{prefix}_seq"),
                                          source_index=sql.Identifier(f"{prefix}_source"))

    def hnsw_ddl(self, m: int, ef_construction: int) -> sql.Composed:
        return sql.SQL(HNSW_DDL).format(hnsw_index=self.hnsw_index, table=self.name, m=sql.Literal(m),
                                        ef_construction=sql.Literal(ef_construction))


def _lookup(conn: psycopg.Connection, name: str, lock: bool = False) -> ChunksTable:
    """The collection's chunks table; lock: hold the collection's row until the transaction ends (writers queue)."""
    row = conn.execute("SELECT id, dim FROM temper_rag_collections WHERE name = %s" + (" FOR UPDATE" if lock else ""),
                       [name]).fetchone()
    if row is None:
        raise _missing(conn, name)
    return ChunksTable(int(row[0]), int(row[1]))


def _collection_info(conn: psycopg.Connection, name: str) -> CollectionInfo:
    row = conn.execute(sql.SQL(INFO_SQL).format(where=sql.SQL("WHERE c.name = %s")), [name]).fetchone()
    if row is None:
        raise _missing(conn, name)
    return _info_from_row(row)


def _missing(conn: psycopg.Connection, name: str) -> StoreError:
    names = [n for (n,) in conn.execute("SELECT name FROM temper_rag_collections ORDER BY name")]
    return StoreError(f"no collection {name!r}; existing: {', '.join(map(repr, names)) or 'none'} (create one with "
                      f"`temper rag ingest PATH --collection {name}`)")


def _bump_generation(conn: psycopg.Connection, name: str) -> None:
    conn.execute("UPDATE temper_rag_collections SET generation = generation + 1 WHERE name = %s", [name])


def _info_from_row(row: tuple[Any, ...]) -> CollectionInfo:
    name, dim, embedder, settings, num_documents, num_chunks = row
    return CollectionInfo(name=name, dim=dim, embedder=embedder, num_documents=int(num_documents),
                          num_chunks=int(num_chunks), settings=settings)


def _chunk_columns() -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, CHUNK_COLUMNS))


def _chunk_from_row(row: tuple[Any, ...]) -> Chunk:
    chunk_id, source, ordinal, title, section, anchor, text, metadata = row[:len(CHUNK_COLUMNS)]
    return Chunk(text=text, source=source, title=title, section=section, anchor=anchor, ordinal=ordinal,
                 metadata=metadata, id=chunk_id)


def _parse_dsn(dsn: str) -> dict[str, Any]:
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # NOTE: libpq's message quotes the DSN, which may hold a password
        raise StoreError("invalid PostgreSQL DSN: expected 'postgresql://user@host:port/dbname' or "
                         "'host=... port=... dbname=...'") from None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
