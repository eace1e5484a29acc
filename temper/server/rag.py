"""RAG on the server: `POST /v1/rag/query` and the `rag` field of chat completions.

    {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "How do I pretty-print JSON?"}],
     "rag": {"collection": "pydocs", "top_k": 5}}

The last user message is the query. Its sources replace the conversation's last turn with the grounded prompt of
temper.rag.answer (sources in a delimited data block, cite as [n]); earlier turns are kept. The response is a normal
chat completion plus `sources` (and, when not streamed, `citations` and `invalid_citations`, which are removed
from the text); a streamed response sends the sources in its first chunk. When retrieval is weak the server answers
"The sources don't say." without running the model. With `--guard`, retrieved text goes through the guard's
documents stage first and flagged sources are dropped (and listed in `dropped_sources`).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any

from temper.rag.answer import (
    ABSTAIN_TEXT,
    Source,
    abstain_reason,
    build_messages,
    check_citations,
    says_abstain,
    sources_block,
)
from temper.rag.evaluate import DEFAULT_MIN_SCORE
from temper.rag.retrieve import Retriever
from temper.rag.store.base import StoreError, VectorStore
from temper.rag.types import Hit
from temper.server.errors import APIError
from temper.server.protocol import RAGOptions

log = logging.getLogger("temper.server")


@dataclass
class Retrieved:
    hits: list[Hit]
    sources: list[Source]
    dropped: list[str]  # chunk ids the guard dropped
    weak: str | None  # why the evidence is too weak (answer without the model), or None

    def payload(self) -> dict[str, Any]:
        return {"sources": [asdict(s) for s in self.sources], "dropped_sources": self.dropped,
                "abstain_reason": self.weak}


class RAGService:
    """The server's retriever over one store, sharing the backend's embedder and guard."""

    def __init__(self, store: VectorStore, embedder: Any, guard: Any = None, min_score: float = DEFAULT_MIN_SCORE):
        self.store = store
        self.retriever = Retriever(store, embedder)
        self.guard = guard
        self.min_score = min_score

    async def retrieve(self, opts: RAGOptions, query: str, request_id: str, lock: asyncio.Lock) -> Retrieved:
        if not query.strip():
            raise APIError(400, "rag needs a non-empty query (the last user message)", param="rag")
        try:
            async with lock:  # the embedder uses every core: one encoder batch at a time
                hits = await asyncio.to_thread(self.retriever.retrieve, query, opts.collection, opts.top_k,
                                               opts.filter, opts.mode, max(50, opts.top_k), opts.mmr)
        except StoreError as e:
            missing = str(e).startswith("no collection")
            raise APIError(404 if missing else 400, str(e), param="rag.collection" if missing else "rag",
                           code="collection_not_found" if missing else None) from None
        dropped: list[str] = []
        if self.guard is not None and hits:
            decision = await asyncio.to_thread(self.guard.check_documents, [h.chunk.text for h in hits], request_id)
            bad = set(decision.dropped)
            dropped = [hits[i].chunk.id for i in sorted(bad)]
            hits = [h for i, h in enumerate(hits) if i not in bad]
            if dropped:
                log.info("request %s: the guard dropped %d retrieved sources", request_id, len(dropped))
        _, sources = sources_block(hits)
        floor = self.min_score if opts.min_score is None else opts.min_score
        return Retrieved(hits, sources, dropped, abstain_reason(query, hits, floor))


def rag_options(value: RAGOptions | str) -> RAGOptions:
    return RAGOptions(collection=value) if isinstance(value, str) else value


def grounded_messages(messages: list[dict[str, Any]], hits: list[Hit]) -> list[dict[str, Any]]:
    """The conversation with its last user turn replaced by the sources block plus the question (answer.py's
    prompt); a system message of the client's follows temper's grounding rules."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last is None:
        raise APIError(400, "rag needs a user message to use as the query", param="messages")
    system = "\n\n".join(m["content"] for m in messages[:last] if m["role"] == "system") or None
    history = [m for m in messages[:last] if m["role"] != "system"]
    return [*build_messages(messages[last]["content"], hits, history, system), *messages[last + 1:]]


def last_user_text(messages: list[dict[str, Any]]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise APIError(400, "rag needs a user message to use as the query", param="messages")
    return users[-1]


def add_citations(body: dict[str, Any], retrieved: Retrieved) -> None:
    """Check the citations of each choice of a finished chat body; invalid markers are removed."""
    checks = []
    for choice in body["choices"]:
        text = choice["message"]["content"] or ""
        cleaned, valid, invalid = check_citations(text, len(retrieved.sources))
        choice["message"]["content"] = cleaned
        checks.append({"index": choice["index"], "citations": valid, "invalid_citations": invalid,
                       "abstained": says_abstain(cleaned)})
    body.update(retrieved.payload())
    body["citations"] = checks


def answer_body(request_id: str, model: str, query: str, retrieved: Retrieved, chat: dict[str, Any] | None
                ) -> dict[str, Any]:
    """The /v1/rag/query response, from a finished chat body (None: no generation or abstained early)."""
    out: dict[str, Any] = {"id": f"rag-{request_id}", "object": "rag.answer", "model": model, "query": query,
                           **retrieved.payload()}
    if chat is None:
        out.update(answer=ABSTAIN_TEXT if retrieved.weak else None, citations=[], invalid_citations=[],
                   abstained=bool(retrieved.weak), abstain_reason=retrieved.weak,
                   usage={"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        return out
    text = chat["choices"][0]["message"]["content"] or ""
    cleaned, valid, invalid = check_citations(text, len(retrieved.sources))
    abstained = says_abstain(cleaned)
    out.update(answer=cleaned, citations=valid, invalid_citations=invalid, abstained=abstained,
               abstain_reason="model" if abstained else None, finish_reason=chat["choices"][0]["finish_reason"],
               usage=chat["usage"])
    return out
