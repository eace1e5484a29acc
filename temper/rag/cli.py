"""`temper rag {ingest,ask,search,list,remove,eval}`: retrieval-augmented generation from the command line."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from temper.errors import TemperError


def add_parser(sub: argparse._SubParsersAction, add_model_args) -> argparse.ArgumentParser:
    p = sub.add_parser("rag", help="ingest documents, ask questions answered from them with citations, evaluate",
                       description="Retrieval-augmented generation. The store is a SQLite file by default "
                                   "($TEMPER_RAG_STORE or the temper cache), or PostgreSQL + pgvector with "
                                   "--store postgresql://USER@HOST:PORT/DB.")
    rs = p.add_subparsers(dest="rag_command", required=True)

    def store_arg(q: argparse.ArgumentParser, collection: bool = True) -> None:
        q.add_argument("--store", default=None, help="SQLite file or postgresql:// URL (default: $TEMPER_RAG_STORE "
                                                     "or ~/.cache/temper/rag/store.db)")
        if collection:
            q.add_argument("-c", "--collection", required=True, help="the collection's name")

    def fusion_arg(q: argparse.ArgumentParser) -> None:
        q.add_argument("--fusion", choices=("convex", "rrf"), default="convex",
                       help="how hybrid mode merges dense and BM25: a weighted sum of normalized scores (default) "
                            "or reciprocal rank fusion")

    def retrieval_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("-k", "--top-k", type=int, default=5, help="sources to retrieve (default 5)")
        q.add_argument("--mode", choices=("hybrid", "dense", "bm25"), default="hybrid")
        fusion_arg(q)
        q.add_argument("--mmr", type=float, default=None, metavar="LAMBDA",
                       help="diversify with maximal marginal relevance (e.g. 0.7); default off")
        q.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                       help="keep chunks whose field (source, title, section, anchor, path, format, page, ...) "
                            "equals VALUE; KEY^=VALUE for a prefix (repeatable)")

    q = rs.add_parser("ingest", help="parse, chunk and embed files (Markdown, reST, HTML, text, PDF); incremental")
    q.add_argument("paths", nargs="+", help="files or folders (each a root: files gone from it are removed)")
    store_arg(q)
    q.add_argument("--base-url", default=None, help="URL of the root, for links in citations "
                                                    "(e.g. https://docs.python.org/3.11/)")
    q.add_argument("--max-tokens", type=int, default=200, help="chunk size in embedding tokens (default 200)")
    q.add_argument("--overlap", type=int, default=40, help="tokens repeated between chunks of a section")
    q.add_argument("--json", action="store_true", help="print the report as JSON")

    q = rs.add_parser("ask", help="answer a question from a collection, citing its sources")
    q.add_argument("question")
    store_arg(q)
    retrieval_args(q)
    add_model_args(q)
    q.add_argument("--min-score", type=float, default=None,
                   help="abstain without asking the model when the best source's similarity is below this "
                        "(default: the calibrated value in docs/rag.md)")
    q.add_argument("--max-tokens", type=int, default=256)
    q.add_argument("--guard", default=None, metavar="POLICY",
                   help="scan retrieved text with the guard's injection check ('default' or a YAML policy)")
    q.add_argument("--json", action="store_true")

    q = rs.add_parser("search", help="show the chunks a query retrieves (no model)")
    q.add_argument("query")
    store_arg(q)
    retrieval_args(q)
    q.add_argument("--json", action="store_true")

    q = rs.add_parser("list", help="collections in the store with their counts")
    store_arg(q, collection=False)

    q = rs.add_parser("remove", help="remove documents (--source) or a whole collection")
    store_arg(q)
    q.add_argument("--source", action="append", default=[], help="a document's path as ingested (repeatable); "
                                                                  "without it the collection is dropped")

    q = rs.add_parser("eval", help="retrieval (recall@k, MRR, nDCG) and answer metrics on a QA set")
    store_arg(q)
    add_model_args(q)
    q.add_argument("--qa", default=None, help="QA jsonl (default: the packaged Python 3.11 docs set)")
    q.add_argument("--qrels", default=None, help="judged relevant passages for the QA set, jsonl of id, source, "
                                                 "evidence (default: the packaged ones with the packaged set)")
    q.add_argument("--root", default=None, help="the folder QA sources are relative to "
                                                "(default: /usr/share/doc/python3.11/html)")
    q.add_argument("-k", "--top-k", type=int, default=5)
    q.add_argument("--modes", default="dense,bm25,hybrid", help="retrieval modes to compare")
    fusion_arg(q)
    q.add_argument("--answers", action="store_true", help="also generate answers: correctness, faithfulness, "
                                                         "abstention (with and without RAG)")
    q.add_argument("--unsolvable", type=int, default=0, metavar="N",
                   help="also measure abstention on N items of evals' unsolvable_questions")
    q.add_argument("--limit", type=int, default=None, help="only the first N questions")
    q.add_argument("--min-score", type=float, default=None)
    q.add_argument("--max-tokens", type=int, default=128)
    q.add_argument("-o", "--output", default=None, help="write the results as JSON")
    return p


def parse_filters(items: list[str]) -> dict | None:
    where: dict = {}
    for item in items:
        if "^=" in item:
            key, value = item.split("^=", 1)
            where[key] = {"prefix": value}
        elif "=" in item:
            key, value = item.split("=", 1)
            where[key] = _scalar(value)
        else:
            raise TemperError(f"--filter {item!r}: write KEY=VALUE (equality) or KEY^=VALUE (prefix)")
    return where or None


def _scalar(value: str):
    if value in ("true", "false"):
        return value == "true"
    try:
        return int(value)
    except ValueError:
        return value


def run(args: argparse.Namespace) -> int:
    from temper.rag.store import open_store

    store = open_store(args.store)
    cmd = args.rag_command
    if cmd == "list":
        for info in store.collections():
            print(f"{info.name}\t{info.num_documents} documents\t{info.num_chunks} chunks\t{info.embedder}")
        return 0
    if cmd == "remove":
        if args.source:
            n = store.delete_documents(args.collection, args.source)
            print(f"removed {n} of {len(args.source)} documents from {args.collection}")
        else:
            store.drop_collection(args.collection)
            print(f"dropped collection {args.collection}")
        return 0
    from temper.embeddings import Embedder

    embedder = Embedder.load()
    if cmd == "ingest":
        from temper.rag.ingest import Ingestor

        ingestor = Ingestor(store, embedder, max_tokens=args.max_tokens, overlap_tokens=args.overlap)
        report = ingestor.ingest(args.paths, args.collection, base_url=args.base_url, progress=sys.stderr.isatty())
        if args.json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            print(report.summary())
            for path, reason in report.errors:
                print(f"  error: {path}: {reason}", file=sys.stderr)
        return 1 if report.errors and not report.files_parsed and not report.unchanged else 0
    from temper.rag.retrieve import Retriever

    retriever = Retriever(store, embedder)
    where = parse_filters(getattr(args, "filter", []))
    if cmd == "search":
        hits = retriever.retrieve(args.query, args.collection, k=args.top_k, where=where, mode=args.mode,
                                  mmr_lambda=args.mmr, fusion=args.fusion)
        if args.json:
            print(json.dumps([{"rank": h.rank, "score": h.score, "similarity": h.dense_score,
                               **asdict(h.chunk)} for h in hits], indent=2))
        for h in hits if not args.json else []:
            c = h.chunk
            print(f"[{h.rank}] {h.dense_score:.3f} {c.section or c.title}  ({c.url})")
            print("    " + c.text[:300].replace("\n", " ") + ("..." if len(c.text) > 300 else ""))
        return 0
    if cmd == "ask":
        return _ask(args, retriever, where)
    from temper.rag import evaluate

    return evaluate.run_cli(args, store, retriever)


def _ask(args: argparse.Namespace, retriever, where) -> int:
    from temper.commands import load_model
    from temper.engine.llm import LLM
    from temper.rag.answer import RAG, llm_generator
    from temper.rag.evaluate import DEFAULT_MIN_SCORE

    llm = LLM.from_loaded(load_model(args), args.model)
    guard = None
    if args.guard:
        from temper.safety.guard import Guard

        guard = Guard.from_policy(args.guard)
    rag = RAG(retriever, llm_generator(llm, max_tokens=args.max_tokens), args.collection, k=args.top_k,
              min_score=DEFAULT_MIN_SCORE if args.min_score is None else args.min_score, mode=args.mode,
              mmr_lambda=args.mmr, guard=guard, fusion=args.fusion)
    answer = rag.ask(args.question, where=where)
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2))
        return 0
    print(answer.answer)
    print()
    cited = set(answer.citations)
    for s in answer.sources:
        mark = "*" if s.index in cited else " "
        print(f"{mark}[{s.index}] {s.section or s.title} ({s.url})  similarity {s.similarity}")
    if answer.abstained:
        print(f"(abstained: {answer.abstain_reason})", file=sys.stderr)
    if answer.invalid_citations:
        print(f"(removed citations of missing sources: {answer.invalid_citations})", file=sys.stderr)
    if answer.dropped_sources:
        print(f"(the guard dropped {len(answer.dropped_sources)} sources as prompt injection)", file=sys.stderr)
    return 0
