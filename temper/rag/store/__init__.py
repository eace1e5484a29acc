"""Stores of chunks and embeddings: `open_store("path.db")` (SQLite, the default) or
`open_store("postgresql://...")` (PostgreSQL + pgvector)."""
from __future__ import annotations

import os
from pathlib import Path

from temper.rag.store.base import CollectionInfo, StoreError, VectorStore

__all__ = ["CollectionInfo", "StoreError", "VectorStore", "default_store_uri", "open_store"]


def default_store_uri() -> str:
    """$TEMPER_RAG_STORE, else a SQLite file in temper's cache folder."""
    from temper.models.loader import cache_dir

    return os.environ.get("TEMPER_RAG_STORE") or str(cache_dir() / "rag" / "store.db")


def open_store(uri: str | os.PathLike | None = None) -> VectorStore:
    """A store from a path (SQLite) or a postgresql:// URL (pgvector); None: default_store_uri()."""
    uri = str(uri) if uri is not None else default_store_uri()
    if uri.startswith(("postgresql://", "postgres://")):
        from temper.rag.store.pgvector import PgVectorStore

        return PgVectorStore(uri)
    from temper.rag.store.sqlite import SQLiteStore

    return SQLiteStore(Path(uri))
