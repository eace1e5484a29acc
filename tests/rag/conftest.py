"""Fixtures of the RAG tests: PostgreSQL + pgvector when a server runs (`eval "$(.ci/pgvector.sh)"` starts one).

pg_dsn (per test) and pg_module_dsn (per module) point at a fresh schema on it, dropped afterwards.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    dsn = os.environ.get("TEMPER_PG_DSN")
    if not dsn:
        pytest.skip("PostgreSQL with pgvector not running: run `eval $(.ci/pgvector.sh)` (.ci/run does it)")
    return dsn


@contextmanager
def fresh_schema(server_dsn: str) -> Iterator[str]:
    """A DSN whose search_path starts with a new schema (public follows: the vector type lives there)."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"temper_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(schema)))
    try:
        yield psycopg.conninfo.make_conninfo(server_dsn, options=f"-c search_path={schema},public")
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))


@pytest.fixture
def pg_dsn(pg_server_dsn: str) -> Iterator[str]:
    with fresh_schema(pg_server_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def pg_module_dsn(pg_server_dsn: str) -> Iterator[str]:
    with fresh_schema(pg_server_dsn) as dsn:
        yield dsn
