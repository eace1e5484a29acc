"""`temper rag eval`: retrieval and answer quality on a QA set.

Retrieval (per answerable question, binary relevance): a chunk is relevant when it comes from the question's source
page and holds at least half of the evidence phrase's word trigrams (so evidence cut by a chunk boundary still
counts), or does the same for one of the question's judged passages (pooled relevance judgments, qaset.py).
recall@k: a relevant chunk in the top k; MRR@10; nDCG@k with the ideal ranking over every relevant chunk of the
pages involved. Each mode is also scored with the item's own evidence only (`strict`).

Answers: correct when the reply contains the reference answer or an accepted form (normalized); for unanswerable
questions, correct means abstaining. Faithfulness: share of the answer's sentences that the support judge
(support.py, validated in docs/rag.md) finds supported by the sources they cite; a sentence that cites nothing is
unsupported; "grounded" is the share supported by any retrieved source, cited or not. The baseline asks the same
model the same questions without sources.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temper.rag.qaset import PYTHON_DOCS_ROOT, QAItem, check_evidence, load_qa, words
from temper.rag.retrieve import Retriever
from temper.rag.store.base import VectorStore
from temper.rag.types import Chunk, Hit

# abstain below this best-source similarity: under every answerable question of the Python docs QA set (lowest
# 0.45) and above off-topic questions (0.20-0.26); docs/rag.md
DEFAULT_MIN_SCORE = 0.35


def trigrams(text: str) -> set[tuple[str, ...]]:
    w = words(text).split()
    return {tuple(w[i:i + 3]) for i in range(max(len(w) - 2, 1))} if w else set()


def relevant(chunk: Chunk, item: QAItem, strict: bool = False) -> bool:
    """Does chunk hold the item's evidence (or, unless strict, one of its judged passages) on the right page?"""
    passages = [(item.source, item.evidence)] if strict else [(item.source, item.evidence), *item.judged]
    text = None
    for source, evidence in passages:
        if not source or not _same_page(chunk, source):
            continue
        ev = trigrams(evidence or "")
        text = trigrams(chunk.embed_text) if text is None else text
        if ev and len(ev & text) >= 0.5 * len(ev):
            return True
    return False


def _same_page(chunk: Chunk, source: str) -> bool:
    path = chunk.metadata.get("path") or chunk.source
    return path == source or chunk.source.endswith("/" + source)


def retrieval_metrics(ranked: Sequence[Sequence[bool]], ideal: Sequence[int], ks: Sequence[int] = (1, 3, 5, 10)
                      ) -> dict[str, float]:
    """recall@k, MRR@10 and nDCG@k from per-question relevance lists (best first) and counts of relevant chunks."""
    n = len(ranked)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = sum(any(r[:k]) for r in ranked) / n
    out["mrr@10"] = sum(next((1 / (i + 1) for i, x in enumerate(r[:10]) if x), 0.0) for r in ranked) / n
    for k in ks:
        total = 0.0
        for r, m in zip(ranked, ideal):
            dcg = sum(1 / math.log2(i + 2) for i, x in enumerate(r[:k]) if x)
            idcg = sum(1 / math.log2(i + 2) for i in range(min(max(m, 1), k)))
            total += dcg / idcg
        out[f"ndcg@{k}"] = total / n
    return {key: round(v, 4) for key, v in out.items()}


def evaluate_retrieval(retriever: Retriever, collection: str, items: Sequence[QAItem], modes: Sequence[str],
                       k: int = 10, mmr_lambda: float | None = None, fusion: str = "convex") -> dict[str, Any]:
    store = retriever.store
    answerable = [it for it in items if it.answerable]
    ideal, ideal_strict = [], []
    for it in answerable:
        pages = dict.fromkeys([it.source, *(source for source, _ in it.judged)])
        page_chunks = [c for source in pages for c in store.iter_chunks(collection, {"path": source})]
        ideal.append(sum(relevant(c, it) for c in page_chunks))
        ideal_strict.append(sum(relevant(c, it, strict=True) for c in page_chunks))
    results: dict[str, Any] = {"questions": len(answerable),
                               "judged_passages": sum(len(it.judged) for it in answerable),
                               "questions_without_relevant_chunk": sum(m == 0 for m in ideal_strict)}
    for mode in modes if answerable else []:  # a set of unanswerable questions only has no retrieval metrics
        t0 = time.perf_counter()
        hits_per_item = [retriever.retrieve(it.question, collection, k=max(k, 10), mode=mode, mmr_lambda=mmr_lambda,
                                            fusion=fusion) for it in answerable]
        ms = (time.perf_counter() - t0) / max(len(answerable), 1) * 1000
        ranked = [[relevant(h.chunk, it) for h in hits] for it, hits in zip(answerable, hits_per_item)]
        strict = [[relevant(h.chunk, it, strict=True) for h in hits] for it, hits in zip(answerable, hits_per_item)]
        results[mode] = {**retrieval_metrics(ranked, ideal), "ms_per_query": round(ms, 1),
                         "strict": retrieval_metrics(strict, ideal_strict)}
    return results


# ---- answers ----

def normalize(text: str) -> str:
    t = text.lower().replace("`", "").replace("“", '"').replace("”", '"').replace("’", "'")
    return re.sub(r"\s+", " ", t).strip()


def is_correct(reply: str, item: QAItem) -> bool:
    r = normalize(reply)
    forms = [item.answer or "", *item.accept]
    for f in forms:
        f = normalize(f)
        if f and (f in r or f.removesuffix("()") in r and len(f.removesuffix("()")) >= 3):
            return True
    return False


def faithfulness(answer: str, sources: Sequence[str], judge: Any) -> tuple[int, int, int]:
    """(sentences supported by the sources they cite, sentences supported by any retrieved source, sentences).

    The first is faithfulness proper; the second says whether the answer stays within the sources at all, which
    matters for models that rarely write citations."""
    from temper.rag.support import citations, split_sentences

    cited_ok = grounded = total = 0
    for sentence in split_sentences(answer):
        if not re.search(r"\w", re.sub(r"\[[\d,\s]+\]", "", sentence)):
            continue
        total += 1
        cited = [sources[n - 1] for n in citations(sentence) if 1 <= n <= len(sources)]
        if cited and judge.supported(sentence, cited):
            cited_ok += 1
            grounded += 1
        elif sources and judge.supported(sentence, list(sources)):
            grounded += 1
    return cited_ok, grounded, total


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    if n == 0:
        return [0.0, 0.0]
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, c - h), 4), round(min(1.0, c + h), 4)]


def evaluate_answers(rag: Any, llm_generate: Any, items: Sequence[QAItem], judge: Any = None) -> dict[str, Any]:
    """With RAG (rag.ask_many) and without (the bare model), on answerable and unanswerable questions."""
    from temper.rag.answer import says_abstain

    t0 = time.perf_counter()
    answers = rag.ask_many([it.question for it in items])
    rag_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bare = llm_generate([[{"role": "user", "content": it.question}] for it in items])
    bare_s = time.perf_counter() - t0
    rows = []
    for it, a, (b_text, _, _) in zip(items, answers, bare):
        row = {"id": it.id, "answerable": it.answerable, "question": it.question, "reference": it.answer,
               "rag_answer": a.answer, "rag_abstained": a.abstained, "abstain_reason": a.abstain_reason,
               "citations": a.citations, "invalid_citations": a.invalid_citations,
               "sources": [s.url for s in a.sources], "bare_answer": b_text, "bare_abstained": says_abstain(b_text)}
        if it.answerable:
            row["rag_correct"] = not a.abstained and is_correct(a.answer, it)
            row["bare_correct"] = is_correct(b_text, it)
            row["retrieved_relevant"] = any(relevant(_chunk_of(s), it) for s in a.sources)
            if judge is not None and not a.abstained:
                row["supported"], row["grounded"], row["sentences"] = faithfulness(
                    a.answer, [s.text for s in a.sources], judge)
        rows.append(row)
    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]

    def rate(rs: list[dict], key: str) -> dict:
        k = sum(bool(r.get(key)) for r in rs)
        return {"rate": round(k / len(rs), 4) if rs else None, "n": len(rs), "ci95": wilson(k, len(rs))}

    sentences = sum(r.get("sentences", 0) for r in ans)
    summary = {
        "answerable": {"rag_correct": rate(ans, "rag_correct"), "bare_correct": rate(ans, "bare_correct"),
                       "rag_abstained": rate(ans, "rag_abstained"), "bare_abstained": rate(ans, "bare_abstained"),
                       "retrieved_relevant": rate(ans, "retrieved_relevant"),
                       "with_citation": rate([r for r in ans if not r["rag_abstained"]], "citations"),
                       "faithfulness": round(sum(r.get("supported", 0) for r in ans) / sentences, 4)
                       if sentences else None,
                       "grounded": round(sum(r.get("grounded", 0) for r in ans) / sentences, 4) if sentences else None,
                       "sentences_judged": sentences},
        "unanswerable": {"rag_abstained": rate(una, "rag_abstained"), "bare_abstained": rate(una, "bare_abstained")},
        "seconds": {"rag": round(rag_s, 1), "bare": round(bare_s, 1)},
    }
    return {"summary": summary, "rows": rows}


def _chunk_of(source: Any) -> Chunk:
    return Chunk(text=source.text, source=source.source, title=source.title, section=source.section,
                 metadata={"path": source.path})


def unsolvable_items(limit: int | None = None) -> list[dict]:
    """evals' unsolvable_questions: {question, context, answerable} (half unanswerable from their context)."""
    import importlib.util

    spec = importlib.util.find_spec("evals")
    if spec is None or not spec.submodule_search_locations:
        from temper.errors import PackageMissingError

        raise PackageMissingError("the unsolvable_questions set ships in the evals package: "
                                  "pip install --no-deps evals==3.0.1.post1")
    path = Path(next(iter(spec.submodule_search_locations))) / "registry/data/unsolvable_questions/samples.jsonl"
    out = []
    for line in path.read_text().splitlines():
        raw = json.loads(line)
        user = raw["input"][-1]["content"]
        m = re.match(r"\s*Question:\s*(.*?)\s*\n\s*Context:\s*(.*)", user, re.DOTALL)
        if not m:
            continue
        out.append({"question": m.group(1), "context": m.group(2), "answerable": raw["ideal"] == "Solveable"})
    return out[:limit] if limit else out


def evaluate_unsolvable(llm_generate: Any, items: Sequence[dict]) -> dict[str, Any]:
    """Abstention when the given context (one source) doesn't answer the question."""
    from temper.rag.answer import build_messages, finish

    hits = [[Hit(chunk=Chunk(text=it["context"], source="context", id="context"), score=1.0)] for it in items]
    replies = llm_generate([build_messages(it["question"], h) for it, h in zip(items, hits)])
    una = [finish(it["question"], r[0], h).abstained for it, r, h in zip(items, replies, hits) if not it["answerable"]]
    ans = [finish(it["question"], r[0], h).abstained for it, r, h in zip(items, replies, hits) if it["answerable"]]
    return {"unanswerable_abstained": {"rate": round(sum(una) / len(una), 4) if una else None, "n": len(una),
                                       "ci95": wilson(sum(una), len(una))},
            "answerable_abstained": {"rate": round(sum(ans) / len(ans), 4) if ans else None, "n": len(ans),
                                     "ci95": wilson(sum(ans), len(ans))}}


def run_cli(args: argparse.Namespace, store: VectorStore, retriever: Retriever) -> int:
    items = load_qa(args.qa, args.qrels)
    if args.limit:
        items = items[:args.limit]
    root = Path(args.root) if args.root else PYTHON_DOCS_ROOT
    problems = check_evidence(items, root) if root.is_dir() else []
    if problems:
        print(f"warning: {len(problems)} QA items don't match the corpus, e.g. {problems[0]}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: dict[str, Any] = {"collection": args.collection, "qa": args.qa or "python_docs_qa.jsonl",
                               "qrels": args.qrels or (None if args.qa else "python_docs_qrels.jsonl"),
                               "k": args.top_k, "retrieval": evaluate_retrieval(retriever, args.collection, items,
                                                                                 modes, k=args.top_k,
                                                                                 fusion=args.fusion)}
    _print_retrieval(results["retrieval"], modes)
    if args.answers or args.unsolvable:
        from temper.commands import load_model
        from temper.engine.llm import LLM
        from temper.rag.answer import RAG, llm_generator

        llm = LLM.from_loaded(load_model(args), args.model)
        generate = llm_generator(llm, max_tokens=args.max_tokens, progress=True)
        min_score = DEFAULT_MIN_SCORE if args.min_score is None else args.min_score
        if args.answers:
            from temper.rag.support import SupportJudge

            rag = RAG(retriever, generate, args.collection, k=args.top_k, min_score=min_score)
            out = evaluate_answers(rag, generate, items, SupportJudge(retriever.embedder))
            results["answers"] = out["summary"]
            results["answer_rows"] = out["rows"]
            print(json.dumps(out["summary"], indent=2))
        if args.unsolvable:
            results["unsolvable"] = evaluate_unsolvable(generate, unsolvable_items(args.unsolvable))
            print(json.dumps(results["unsolvable"], indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
        print(f"results written to {args.output}")
    return 0


def _print_retrieval(r: dict, modes: Sequence[str]) -> None:
    cols = ["recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@5"]
    print(f"retrieval on {r['questions']} answerable questions, {r['judged_passages']} judged passages "
          f"({r['questions_without_relevant_chunk']} questions have no chunk holding their own evidence)")
    print(f"{'mode':16}" + "".join(f"{c:>10}" for c in [*cols, "ms/query"]))
    for m in modes if r["questions"] else []:
        print(f"{m:16}" + "".join(f"{r[m][c]:>10}" for c in cols) + f"{r[m]['ms_per_query']:>10}")
        print(f"{'  strict':16}" + "".join(f"{r[m]['strict'][c]:>10}" for c in cols))
