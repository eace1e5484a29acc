"""Retrieval-augmented generation: ingest documents, retrieve with dense + BM25, answer with checked citations.

    temper rag ingest /usr/share/doc/python3.11/html --collection pydocs
    temper rag ask "How do I pretty-print JSON?" --collection pydocs

Python API: `temper.rag.RAG` (see answer.py); stores in temper.rag.store (SQLite by default, PostgreSQL + pgvector).
"""
