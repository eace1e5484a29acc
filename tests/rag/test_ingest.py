"""Ingestion from files: every format, incremental re-ingest, errors listed; hybrid retrieval on the result."""
from __future__ import annotations

import os

import pytest

from temper.rag.ingest import IngestError, Ingestor
from temper.rag.retrieve import Retriever
from temper.rag.store.base import StoreError
from temper.rag.store.sqlite import SQLiteStore

DOCS = {
    "guide.md": "# Zorblax guide\n\nThe Zorblax 3000 listens on port 7431 by default.\n\n## Backups\n\n"
                "Run `zorblax backup --full` every night.\n\n```bash\nzorblax backup --full --to /srv\n```\n",
    "api.rst": "Zorblax API\n===========\n\nAuthentication\n--------------\n\nEvery call needs the header "
               "``X-Zorblax-Token``.\n\nRate limits\n-----------\n\nClients may send 120 requests per minute.\n",
    "faq.html": "<html><head><title>FAQ</title></head><body><main><h1 id='faq'>FAQ</h1>"
                "<h2 id='licence'>Licence</h2><p>Zorblax is released under the Mozilla Public License 2.0.</p>"
                "</main></body></html>",
    "notes.txt": "Release notes\n\nVersion 2.4 removed the legacy XML exporter.\n",
}


@pytest.fixture(scope="module")
def ingestor(embedder, tmp_path_factory):
    store = SQLiteStore(tmp_path_factory.mktemp("store") / "rag.db")
    return Ingestor(store, embedder, max_tokens=64, overlap_tokens=8)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "_build").mkdir()
    for name, text in DOCS.items():
        (root / name).write_text(text)
    (root / "sub" / "more.md").write_text("# More\n\nThe Zorblax mascot is a purple otter.\n")
    (root / "_build" / "copy.md").write_text("# Copy\n\nbuild output, never ingested\n")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n")
    return root


def test_ingest_every_format_then_incrementally(ingestor, corpus):
    store = ingestor.store
    r = ingestor.ingest([corpus], "zx", progress=False)
    assert (r.added, r.updated, r.unchanged, r.deleted, r.errors) == (5, 0, 0, 0, [])
    assert r.skipped == [str(corpus / "logo.png")]
    docs = store.documents("zx")
    assert sorted(os.path.relpath(s, corpus) for s in docs) == ["api.rst", "faq.html", "guide.md", "notes.txt",
                                                                 "sub/more.md"]
    chunks = list(store.iter_chunks("zx"))
    assert {c.metadata["format"] for c in chunks} == {"markdown", "rst", "html", "text"}
    assert all(ingestor.count_tokens(c.text) <= 64 for c in chunks)
    faq = next(c for c in chunks if "Mozilla" in c.text)
    assert faq.anchor == "licence" and faq.metadata["path"] == "faq.html" and "Licence" in faq.section
    code = next(c for c in chunks if "zorblax backup --full --to /srv" in c.text)
    assert code.section.endswith("Backups")

    r = ingestor.ingest([corpus], "zx", progress=False)  # nothing changed
    assert (r.added, r.updated, r.unchanged, r.deleted, r.chunks) == (0, 0, 5, 0, 0)

    (corpus / "notes.txt").write_text("Release notes\n\nVersion 2.5 brought back the XML exporter.\n")
    (corpus / "sub" / "more.md").unlink()
    (corpus / "new.md").write_text("# New\n\nZorblax Cloud opens in March.\n")
    generation = store.generation("zx")
    r = ingestor.ingest([corpus], "zx", progress=False)
    assert (r.added, r.updated, r.unchanged, r.deleted) == (1, 1, 3, 1)
    assert store.generation("zx") > generation
    texts = " ".join(c.text for c in store.iter_chunks("zx"))
    assert "2.5 brought back" in texts and "2.4 removed" not in texts and "otter" not in texts


def test_unreadable_files_are_listed_and_the_rest_goes_on(ingestor, tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "good.md").write_text("# Good\n\nFine text.\n")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf at all")
    (root / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)
    r = ingestor.ingest([root], "mixed", progress=False)
    assert r.added == 1
    assert sorted(os.path.basename(p) for p, _ in r.errors) == ["binary.txt", "broken.pdf"]
    assert all(reason for _, reason in r.errors)
    assert "2 errors" in r.summary()
    with pytest.raises(IngestError, match="does not exist"):
        ingestor.ingest([root / "nope"], "mixed", progress=False)


def test_hybrid_retrieval_on_the_ingested_docs(ingestor, corpus, tmp_path):
    ingestor.ingest([corpus], "zx2", progress=False)
    retriever = Retriever(ingestor.store, ingestor.embedder, cache_dir=tmp_path / "bm25")
    for mode in ("hybrid", "dense", "bm25"):
        hits = retriever.retrieve("What port does Zorblax listen on?", "zx2", k=2, mode=mode)
        assert "7431" in hits[0].chunk.text, mode
        assert all(h.dense_score is not None for h in hits)
    # an exact identifier: BM25 finds it
    assert "X-Zorblax-Token" in retriever.retrieve("X-Zorblax-Token", "zx2", k=1, mode="bm25")[0].chunk.text
    # both fusions; BM25 scores also for chunks BM25 did not rank (convex fusion needs them)
    for fusion in ("convex", "rrf"):
        hits = retriever.retrieve("What port does Zorblax listen on?", "zx2", k=2, fusion=fusion)
        assert "7431" in hits[0].chunk.text, fusion
    ranked = dict(retriever.bm25("otter mascot", "zx2", 50))
    every = [c.id for c in ingestor.store.iter_chunks("zx2")]
    scores = retriever.bm25_scores("otter mascot", "zx2", every)
    assert {cid: s for cid, s in zip(every, scores.tolist()) if s > 0} == pytest.approx(ranked)
    with pytest.raises(StoreError, match="fusion"):
        retriever.retrieve("x", "zx2", fusion="sum")
    with pytest.raises(StoreError, match="alpha"):
        retriever.retrieve("x", "zx2", alpha=1.5)
    # words are stemmed on both sides: "mascots" finds "mascot", "otters" finds "otter"
    assert "otter" in retriever.retrieve("mascots otters", "zx2", k=1, mode="bm25")[0].chunk.text
    assert retriever.bm25("mascots otters", "zx2", 3) == retriever.bm25("mascot otter", "zx2", 3)
    # filters apply to both sides of the fusion
    hits = retriever.retrieve("Zorblax", "zx2", k=5, where={"path": "faq.html"})
    assert hits and all(h.chunk.metadata["path"] == "faq.html" for h in hits)
    # the BM25 index is cached on disk per generation: a new retriever loads it
    again = Retriever(ingestor.store, ingestor.embedder, cache_dir=tmp_path / "bm25")
    assert again.bm25("otter mascot", "zx2", 3) == retriever.bm25("otter mascot", "zx2", 3)
    with pytest.raises(StoreError, match="mode"):
        retriever.retrieve("x", "zx2", mode="fancy")
    with pytest.raises(StoreError, match="no collection 'nope'"):
        retriever.retrieve("x", "nope")


def test_texts_from_python(ingestor):
    r = ingestor.ingest_texts({"a": "Alpha text.", "b": "Beta text."}, "texts", metadata={"team": "core"})
    assert (r.added, r.chunks) == (2, 2)
    assert ingestor.ingest_texts({"a": "Alpha text."}, "texts").unchanged == 1
    assert {c.metadata["team"] for c in ingestor.store.iter_chunks("texts")} == {"core"}
