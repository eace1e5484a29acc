"""RAG QA over the Python documentation (temper's QA set, docs/rag.md): retrieval, correct answers, abstention.

Questions: the answerable ones whose source page is in the collection (up to `questions`), and `unanswerable`
questions whose answer is in no page. For each: retrieve the top `k` sources, answer from them with citations
(or abstain), and score
- recall@k: a retrieved source holds the question's evidence phrase or one of its judged passages
  (temper.rag.evaluate.relevant);
- rag_correct: the answer states the reference answer (temper.rag.evaluate.is_correct), not abstaining;
- bare_correct: the same model without retrieval (local models only: an endpoint's chat would go through RAG
  only when asked, so it is measured too, as the plain chat completion);
- unanswerable_abstained / answerable_abstained: "the sources don't say" when it should / should not.

A local model uses the store at `store` (default: the store `temper rag ingest` writes); an endpoint answers
through its own `POST /v1/rag/query` (its guard and store, as served).
"""
from __future__ import annotations

from typing import Any

from temper.eval.suites import SuiteSkipped, rate

DEFAULTS = {"collection": "pydocs", "store": None, "questions": 40, "unanswerable": 20, "k": 5, "max_tokens": 128,
            "samples": 4}


def _items(o: dict[str, Any], sources: set[str] | None):
    from temper.rag.qaset import load_qa

    items = load_qa()

    def in_collection(src: str | None) -> bool:
        return sources is None or any(s == src or s.endswith("/" + src) for s in sources) if src else False

    answerable = [it for it in items if it.answerable and in_collection(it.source)][: o["questions"]]
    unanswerable = [it for it in items if not it.answerable][: o["unanswerable"]]
    if not answerable:
        raise SuiteSkipped(f"no QA question has its source page in collection {o['collection']!r}: ingest the Python "
                           "docs (temper rag ingest /usr/share/doc/python3.11/html --collection pydocs)")
    return answerable + unanswerable


def run(target, options: dict[str, Any]) -> dict[str, Any]:
    from temper.rag.evaluate import _chunk_of, is_correct, relevant

    o = {**DEFAULTS, **options}
    if target.kind == "model":
        rows = _local(target, o)
    else:
        rows = _endpoint(target, o)
    ans = [r for r in rows if r["item"].answerable]
    una = [r for r in rows if not r["item"].answerable]
    for r in ans:
        it = r["item"]
        r["relevant"] = any(relevant(_chunk_of(s), it) for s in r["sources"][: o["k"]])
        r["correct"] = not r["abstained"] and is_correct(r["answer"], it)
        r["bare_ok"] = r["bare"] is not None and is_correct(r["bare"], it)
    metrics = {
        f"recall_at_{o['k']}": rate([r["relevant"] for r in ans], f"retrieval recall@{o['k']}", True),
        "rag_correct": rate([r["correct"] for r in ans], "correct with RAG", True),
        "bare_correct": rate([r["bare_ok"] for r in ans], "correct without RAG", True),
        "unanswerable_abstained": rate([r["abstained"] for r in una], "abstains when the docs don't say", True),
        "answerable_abstained": rate([r["abstained"] for r in ans], "abstains when the docs do say", False),
        "with_citation": rate([bool(r["citations"]) for r in ans if not r["abstained"]], "answers citing a source",
                              True),
    }
    details = {"collection": o["collection"], "k": o["k"], "answerable": len(ans), "unanswerable": len(una),
               "max_tokens": o["max_tokens"], "qa_set": "temper/rag/data/python_docs_qa.jsonl"}
    samples = [{"question": r["item"].question, "answer": r["answer"], "reference": r["item"].answer,
                "citations": r["citations"], "abstained": r["abstained"]}
               for r in (ans[: o["samples"]] + una[: max(1, o["samples"] // 2)])]
    return {"metrics": metrics, "details": details, "samples": samples}


def _local(target, o: dict[str, Any]) -> list[dict[str, Any]]:
    from temper.rag.answer import RAG, llm_generator
    from temper.rag.evaluate import DEFAULT_MIN_SCORE
    from temper.rag.retrieve import Retriever
    from temper.rag.store import open_store
    from temper.rag.store.base import StoreError

    store = open_store(o["store"])
    try:
        try:
            sources = set(store.documents(o["collection"]))
        except StoreError as e:
            raise SuiteSkipped(f"collection {o['collection']!r} is not in the store {o['store'] or '(default)'}: {e}; "
                               "ingest it first with temper rag ingest") from e
        items = _items(o, sources)
        generate = llm_generator(target.llm, max_tokens=o["max_tokens"], progress=True)
        rag = RAG(Retriever(store), generate, o["collection"], k=o["k"], min_score=DEFAULT_MIN_SCORE)
        answers = rag.ask_many([it.question for it in items])
        bare = generate([[{"role": "user", "content": it.question}] for it in items if it.answerable])
    finally:
        store.close()
    bare_iter = iter(bare)
    return [{"item": it, "answer": a.answer, "abstained": a.abstained, "citations": a.citations,
             "sources": a.sources, "bare": next(bare_iter)[0] if it.answerable else None}
            for it, a in zip(items, answers)]


class _Src:
    def __init__(self, d: dict):
        self.text, self.source, self.title = d.get("text", ""), d.get("source", ""), d.get("title", "")
        self.section, self.path = d.get("section", ""), d.get("path", "")


def _endpoint(target, o: dict[str, Any]) -> list[dict[str, Any]]:
    collection = o.get("collection") or target.rag_collection
    items = _items(o, None if o.get("all_questions") else _endpoint_sources(o))
    bodies = [{"query": it.question, "collection": collection, "top_k": o["k"], "model": target.model,
               "max_tokens": o["max_tokens"]} for it in items]
    out = target.post_many("/rag/query", bodies, progress=True)
    bare = target.chat([[{"role": "user", "content": it.question}] for it in items if it.answerable],
                       o["max_tokens"], frequency_penalty=0.5)
    bare_iter = iter(bare)
    return [{"item": it, "answer": r.get("answer") or "", "abstained": bool(r.get("abstained")),
             "citations": r.get("citations") or [], "sources": [_Src(s) for s in r.get("sources") or []],
             "bare": next(bare_iter).text if it.answerable else None} for it, r in zip(items, out)]


def _endpoint_sources(o: dict[str, Any]) -> set[str] | None:
    """The collection's pages, read from the same store when it is given (the served store); else all questions."""
    if not o.get("store"):
        return None
    from temper.rag.store import open_store

    store = open_store(o["store"])
    try:
        return set(store.documents(o["collection"]))
    finally:
        store.close()

