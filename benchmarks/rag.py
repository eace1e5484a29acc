"""RAG on the Python 3.11 docs: ingestion speed, index size, retrieval quality, abstention calibration, and query
latency of the embedded store and pgvector at 10k and 100k chunks.

    python benchmarks/rag.py --work /tmp/rag-bench                       # SQLite only
    eval $(.ci/pgvector.sh); python benchmarks/rag.py --work /tmp/rag-bench --pg "$TEMPER_PG_DSN"

1. Ingest /usr/share/doc/python3.11/html (530 pages) into a fresh SQLite store: pages/s, chunks/s, bytes.
2. Retrieval on the packaged QA set (temper/rag/data/python_docs_qa.jsonl with its judged passages,
   python_docs_qrels.jsonl): recall@k, MRR, nDCG for dense, BM25, hybrid (RRF) and hybrid + MMR, with judged and
   strict relevance.
3. Abstention threshold: the best source's cosine similarity separates answerable from unanswerable questions
   how well? The threshold is chosen on one half of the questions (by id hash) and scored on the other.
4. Latency: the ingested chunks and their vectors are replicated (sources renamed, vectors unchanged) into
   collections of 10k and 100k chunks in each store; 200 QA questions are timed for the store's vector search alone
   and for a whole hybrid retrieval (query embedding + BM25 + vector search + fusion), p50 and p99.
Prints tables, then one JSON line. Answers (correctness, faithfulness) are measured by `temper rag eval --answers`.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from temper.embeddings import Embedder
from temper.rag.evaluate import evaluate_retrieval
from temper.rag.ingest import Ingestor
from temper.rag.qaset import PYTHON_DOCS_ROOT, load_qa
from temper.rag.retrieve import Retriever
from temper.rag.store import open_store
from temper.rag.types import DocumentRecord


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(int(q * (len(xs) - 1) + 0.5), len(xs) - 1)]


def replicate(src, dst, collection: str, n: int, dim: int, embedder: str) -> float:
    """Copy the pydocs chunks (with their vectors) into `collection` until it holds n chunks; seconds taken."""
    if collection in {c.name for c in dst.collections()}:
        if dst.count(collection) == n:
            return 0.0
        dst.drop_collection(collection)
    dst.create_collection(collection, dim, embedder)
    docs = list(src.documents("pydocs").values())
    by_doc: dict[str, list] = {}
    for c in src.iter_chunks("pydocs"):
        by_doc.setdefault(c.source, []).append(c)
    vectors = {s: src.get_vectors("pydocs", [c.id for c in cs]) for s, cs in by_doc.items()}
    t0 = time.perf_counter()
    total, copy = 0, 0
    while total < n:
        for d in docs:
            source = f"{d.source}#copy{copy}"
            chunks = [dataclasses.replace(c, source=source, id="") for c in by_doc.get(d.source, [])[: n - total]]
            if not chunks:
                continue
            dst.replace_document(collection, DocumentRecord(source, d.content_hash, len(chunks), d.title, "replica"),
                                 chunks, vectors[d.source][:len(chunks)])
            total += len(chunks)
            if total >= n:
                break
        copy += 1
    return time.perf_counter() - t0


def latency(store, retriever: Retriever, collection: str, questions: list[str]) -> dict[str, float]:
    vecs = [retriever.embed_query(q) for q in questions]
    store.search(collection, vecs[0], 10)  # loads the matrix / warms the pool
    retriever.retrieve(questions[0], collection, k=5)  # builds or loads the BM25 index
    search, full = [], []
    for q, v in zip(questions, vecs):
        t = time.perf_counter()
        store.search(collection, v, 50)
        search.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        retriever.retrieve(q, collection, k=5)
        full.append((time.perf_counter() - t) * 1000)
    return {"search_p50_ms": round(pct(search, 0.5), 2), "search_p99_ms": round(pct(search, 0.99), 2),
            "hybrid_p50_ms": round(pct(full, 0.5), 2), "hybrid_p99_ms": round(pct(full, 0.99), 2)}


def calibrate(retriever: Retriever, items) -> dict:
    best = {}
    for it in items:
        hits = retriever.retrieve(it.question, "pydocs", k=5)
        best[it.id] = max((h.dense_score or 0) for h in hits)
    half = {it.id: hashlib.blake2b(it.id.encode(), digest_size=1).digest()[0] % 2 for it in items}

    def score(th: float, part: int) -> tuple[float, float, float]:
        rows = [it for it in items if half[it.id] == part]
        ans = [best[it.id] >= th for it in rows if it.answerable]
        una = [best[it.id] < th for it in rows if not it.answerable]
        return (sum(ans) / len(ans) + sum(una) / len(una)) / 2, sum(ans) / len(ans), sum(una) / len(una)

    grid = np.round(np.arange(0.10, 0.70, 0.01), 2)
    th = float(max(grid, key=lambda t: score(t, 0)[0]))
    bal, kept, abstained = score(th, 1)
    return {"threshold": th, "test_balanced_accuracy": round(bal, 4), "test_answerable_kept": round(kept, 4),
            "test_unanswerable_abstained": round(abstained, 4),
            "best_score_answerable_median": round(float(np.median([best[i.id] for i in items if i.answerable])), 4),
            "best_score_unanswerable_median": round(float(np.median([best[i.id] for i in items
                                                                     if not i.answerable])), 4)}


def embed_speed(store, embedder: Embedder, n: int = 512) -> dict:
    """Chunks per second of our encoder and of transformers' BertModel (the anchor) on the same chunk texts."""
    import torch

    texts = [c.embed_text for _, c in zip(range(n), store.iter_chunks("pydocs"))]
    embedder.embed(texts[:64])
    t = time.perf_counter()
    ours = embedder.embed(texts)
    out = {"chunks": len(texts), "temper_chunks_per_s": round(len(texts) / (time.perf_counter() - t), 1)}
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        return out
    from temper.embeddings import packaged_model_path

    path = packaged_model_path()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    t = time.perf_counter()
    vecs = []
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # the same length-sorted batching as ours
    with torch.inference_mode():
        for start in range(0, len(order), 64):
            batch = tok([texts[i] for i in order[start:start + 64]], padding=True, truncation=True, max_length=256,
                        return_tensors="pt")
            h = model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).float()
            vecs.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    ref = torch.empty_like(ours)
    ref[torch.tensor(order)] = torch.cat(vecs)
    out["transformers_chunks_per_s"] = round(len(texts) / (time.perf_counter() - t), 1)
    out["max_abs_diff"] = float((ref - ours).abs().max())
    return out


def guard_false_positives(retriever: Retriever, items) -> dict:
    """How many retrieved (clean) Python-docs chunks the default guard's documents stage would drop."""
    from temper.safety.guard import Guard

    guard = Guard.from_policy("default")
    seen, dropped, examples = set(), 0, []
    for it in items:
        for h in retriever.retrieve(it.question, "pydocs", k=5):
            if h.chunk.id in seen:
                continue
            seen.add(h.chunk.id)
            if guard.check_documents([h.chunk.text]).dropped:
                dropped += 1
                examples.append(h.chunk.text[:120])
    return {"chunks": len(seen), "dropped": dropped, "rate": round(dropped / max(len(seen), 1), 4),
            "examples": examples[:5]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/rag-bench", help="folder for the stores and caches")
    ap.add_argument("--pg", default=None, help="postgresql:// DSN to also measure pgvector")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--guard", action="store_true", help="also measure the guard's documents stage on the chunks")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    embedder = Embedder.load()
    db = work / "pydocs.db"
    store = open_store(db)
    ingestor = Ingestor(store, embedder)
    report = ingestor.ingest([PYTHON_DOCS_ROOT], "pydocs", base_url="https://docs.python.org/3.11/")
    print(report.summary())
    info = store.collection("pydocs")
    out: dict = {"commit": commit, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                 "ingest": {**report.to_dict(), "documents": info.num_documents, "chunks_total": info.num_chunks,
                            "store_bytes": db.stat().st_size + sum(p.stat().st_size for p in work.glob("pydocs.db-*"))}}
    if report.files_parsed:
        out["ingest"]["pages_per_s"] = round(report.files_parsed / report.seconds, 2)
        out["ingest"]["chunks_per_s"] = round(report.chunks / report.seconds, 1)

    items = load_qa()
    retriever = Retriever(store, embedder, cache_dir=work / "bm25")
    ret = evaluate_retrieval(retriever, "pydocs", items, ["dense", "bm25", "hybrid"], k=10)
    ret["hybrid+mmr0.7"] = evaluate_retrieval(retriever, "pydocs", items, ["hybrid"], k=10, mmr_lambda=0.7)["hybrid"]
    out["retrieval"] = ret
    print(f"\nretrieval on {ret['questions']} answerable questions ({ret['judged_passages']} judged passages; "
          f"'strict': each question's own evidence phrase only)")
    cols = ["recall@1", "recall@3", "recall@5", "recall@10", "mrr@10", "ndcg@5"]
    print(f"{'mode':24}" + "".join(f"{c:>11}" for c in [*cols, "ms/query"]))
    for m in ("dense", "bm25", "hybrid", "hybrid+mmr0.7"):
        print(f"{m:24}" + "".join(f"{ret[m][c]:>11}" for c in [*cols, "ms_per_query"]))
        print(f"{m + ' strict':24}" + "".join(f"{ret[m]['strict'][c]:>11}" for c in cols))

    out["abstention"] = calibrate(retriever, items)
    print("\nabstention by best-source similarity:", json.dumps(out["abstention"]))

    out["embedding"] = embed_speed(store, embedder)
    print(f"\nembedding {out['embedding']['chunks']} chunks: temper {out['embedding']['temper_chunks_per_s']} chunks/s, "
          f"transformers {out['embedding'].get('transformers_chunks_per_s')} chunks/s")
    if args.guard:
        out["guard_documents"] = guard_false_positives(retriever, items)
        print("guard documents stage on retrieved Python-docs chunks:", json.dumps(out["guard_documents"]))

    questions = [it.question for it in items][: args.queries]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    stores = {"sqlite": open_store(work / "scale.db")}
    if args.pg:
        stores["pgvector"] = open_store(args.pg)
    out["latency"] = {}
    print(f"\n{'store':10}{'chunks':>9}{'load s':>9}{'size MB':>9}{'search p50':>12}{'search p99':>12}"
          f"{'hybrid p50':>12}{'hybrid p99':>12}")
    for name, dst in stores.items():
        for n in sizes:
            coll = f"scale{n}"
            seconds = replicate(store, dst, coll, n, info.dim, info.embedder)
            r = Retriever(dst, embedder, cache_dir=work / "bm25")
            lat = latency(dst, r, coll, questions)
            if name == "sqlite":
                size = (work / "scale.db").stat().st_size / 2**20  # every collection of the file
            else:
                size = dst.relation_bytes(coll) / 2**20
            lat.update(load_seconds=round(seconds, 1), size_mb=None if size is None else round(size, 1))
            out["latency"][f"{name}@{n}"] = lat
            print(f"{name:10}{n:>9}{seconds:>9.1f}{(size or 0):>9.1f}{lat['search_p50_ms']:>12}"
                  f"{lat['search_p99_ms']:>12}{lat['hybrid_p50_ms']:>12}{lat['hybrid_p99_ms']:>12}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
