"""Hybrid retrieval: dense (the store's vector search) + BM25 (bm25s), fused by their scores (or by rank), then MMR.

Dense search finds paraphrases ("print JSON nicely" -> indent); BM25 finds rare exact terms (identifiers, error
names) that a 384-dim sentence embedding blurs; its words are stemmed (Snowball English, PyStemmer) so that
"pretty-printed" finds "pretty-print". The two are fused by a convex combination of their scores, each min-max
normalized over the candidates both lists bring (every candidate gets both scores: its cosine, and its BM25 score
even when BM25 did not rank it): alpha * dense + (1 - alpha) * BM25. Bruch et al. (2023, "An Analysis of Fusion
Functions for Hybrid Retrieval") found this beats reciprocal rank fusion once alpha is set on a few queries; on the
Python docs QA set it does (docs/rag.md: recall@5 0.865 vs 0.819 under 2-fold cross-validation of alpha). Reciprocal
rank fusion (Cormack et al., 2009; 1 / (60 + rank) from each list, no calibration at all) stays as fusion="rrf".

The BM25 index is built from the store's chunks (heading path + text) and cached per collection generation: in
memory, and on disk under cache_dir()/rag/bm25 so that a new process (`temper rag ask`) loads it in milliseconds
instead of re-indexing. Metadata filters apply to both lists (bm25s' weight_mask for the lexical side).

Every returned hit carries its cosine similarity to the query (Hit.dense_score), also for hits that came from BM25
alone: answering uses it to abstain when the evidence is weak.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from temper.embeddings import Embedder
from temper.rag.store.base import StoreError, VectorStore, Where, check_where, matmul
from temper.rag.types import Chunk, Hit

log = logging.getLogger(__name__)
MODES = ("hybrid", "dense", "bm25")
FUSIONS = ("convex", "rrf")
RRF_K = 60
# NOTE: the dense weight of convex fusion, chosen by 2-fold cross-validation over the Python docs QA questions
# (halves by id hash; the halves chose 0.65 and 0.60; recall@5 0.865 judged on the held-out halves), see docs/rag.md
CONVEX_ALPHA = 0.65


@dataclass
class _Lexical:
    generation: int
    ids: list[str]  # chunk ids in index order
    index: object  # bm25s.BM25
    position: dict[str, int] | None = None  # chunk id -> index order, built on first use

    def positions(self) -> dict[str, int]:
        if self.position is None:
            self.position = {cid: i for i, cid in enumerate(self.ids)}
        return self.position


def _bm25s():
    """bm25s, imported on first use; its import sets its logger to DEBUG (a line per index build): undone here."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


# what the lexical side's tokens are: part of the on-disk cache key, so that a change here rebuilds old indexes
LEXICAL_TOKENIZER = "bm25s-en-stopwords+snowball-english"
_stemmer = None


def _stem():
    """The Snowball English stemmer (PyStemmer): "printed", "printing", "prints" all match "print"."""
    global _stemmer
    if _stemmer is None:
        import Stemmer

        _stemmer = Stemmer.Stemmer("english").stemWords
    return _stemmer


def _tokenize(texts: Sequence[str]) -> list[list[str]]:
    return _bm25s().tokenize(list(texts), stopwords="en", stemmer=_stem(), return_ids=False, show_progress=False)


class Retriever:
    """Searches one store with one embedder. Thread-safe; the BM25 indexes are shared by all threads."""

    def __init__(self, store: VectorStore, embedder: Embedder | None = None, cache_dir: str | Path | None = None):
        self.store = store
        self.embedder = embedder or Embedder.load()
        if cache_dir is None:
            from temper.models.loader import cache_dir as temper_cache

            cache_dir = temper_cache() / "rag" / "bm25"
        self.cache_dir = Path(cache_dir)
        self._lexical: dict[str, _Lexical] = {}
        self._infos: dict[str, tuple[int, object]] = {}
        self._lock = threading.Lock()

    def embed_query(self, query: str) -> np.ndarray:
        return self.embedder.embed([query]).cpu().numpy()[0]

    def retrieve(self, query: str, collection: str, k: int = 5, where: Where | None = None, mode: str = "hybrid",
                 candidates: int = 50, mmr_lambda: float | None = None, fusion: str = "convex",
                 alpha: float = CONVEX_ALPHA) -> list[Hit]:
        """The k best chunks for query, best first (Hit.score: the fused score, or the mode's own score).

        Args:
            candidates: how many hits each list contributes before fusion.
            fusion: how hybrid mode merges the lists: "convex" (alpha * dense + (1 - alpha) * BM25, each min-max
                normalized over the candidates) or "rrf" (reciprocal rank fusion).
            alpha: the dense weight of convex fusion, in [0, 1].
            mmr_lambda: None for no diversity step; else maximal marginal relevance over the fused candidates,
                trading relevance (lambda) against similarity to the chunks already picked (1 - lambda).
        """
        if mode not in MODES:
            raise StoreError(f"retrieval mode {mode!r}: choose one of {', '.join(MODES)}")
        if not query.strip():
            raise StoreError("the query is empty")
        if k < 1 or candidates < k:
            raise StoreError(f"need 1 <= k <= candidates, got k={k}, candidates={candidates}")
        if mmr_lambda is not None and not 0 <= mmr_lambda <= 1:
            raise StoreError(f"mmr_lambda must be in [0, 1], got {mmr_lambda}")
        if fusion not in FUSIONS:
            raise StoreError(f"fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
        if not 0 <= alpha <= 1:
            raise StoreError(f"alpha must be in [0, 1], got {alpha}")
        check_where(where)
        info = self._info(collection)
        if info.embedder != self.embedder.name:
            raise StoreError(f"collection {collection!r} was embedded with {info.embedder!r}, "
                             f"the retriever uses {self.embedder.name!r}")
        q = self.embed_query(query)
        lists: list[list[tuple[str, float]]] = []
        chunks: dict[str, Chunk] = {}
        if mode in ("hybrid", "dense"):
            dense = self.store.search(collection, q, candidates, where)
            chunks.update((h.chunk.id, h.chunk) for h in dense)
            lists.append([(h.chunk.id, h.score) for h in dense])
        if mode in ("hybrid", "bm25"):
            lists.append(self.bm25(query, collection, candidates, where))
        known: dict[str, np.ndarray] = {}  # vectors fetched for fusion, reused for the hits
        if mode == "hybrid" and fusion == "rrf":
            fused = rrf(lists)
        elif mode == "hybrid":
            union = list(dict.fromkeys(cid for ranked in lists for cid, _ in ranked))
            vectors = self.store.get_vectors(collection, union) if union else np.zeros((0, info.dim), np.float32)
            known = dict(zip(union, vectors))
            fused = convex(union, matmul(vectors, q), self.bm25_scores(query, collection, union), alpha)
        else:
            fused = lists[0]
        pool = fused[:max(k, candidates if mmr_lambda is not None else k)]
        ids = [cid for cid, _ in pool]
        missing = [cid for cid in ids if cid not in chunks]
        chunks.update((c.id, c) for c in self.store.get_chunks(collection, missing))
        if ids and all(cid in known for cid in ids):
            vectors = np.stack([known[cid] for cid in ids])
        else:
            vectors = self.store.get_vectors(collection, ids) if ids else np.zeros((0, info.dim), np.float32)
        cos = matmul(vectors, q)
        order = list(range(len(ids)))
        if mmr_lambda is not None and len(ids) > k:
            order = mmr([s for _, s in pool], vectors, k, mmr_lambda)
        return [Hit(chunk=chunks[ids[i]], score=pool[i][1], dense_score=float(cos[i]), rank=n + 1)
                for n, i in enumerate(order[:k])]

    def _info(self, collection: str):
        """The collection's info, fetched again only when its generation changes (counting chunks is not free)."""
        generation = self.store.generation(collection)
        cached = self._infos.get(collection)
        if cached is None or cached[0] != generation:
            cached = self._infos[collection] = (generation, self.store.collection(collection))
        return cached[1]

    # ---- BM25 ----

    def bm25(self, query: str, collection: str, k: int, where: Where | None = None) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) of the k best chunks with a positive score, best first."""
        lex = self._index(collection)
        if not lex.ids:
            return []
        tokens = [t for t in _tokenize([query])[0] if t in lex.index.vocab_dict]
        if not tokens:
            return []
        mask = None
        if where:
            allowed = {c.id for c in self.store.iter_chunks(collection, where)}
            mask = np.fromiter((cid in allowed for cid in lex.ids), np.float32, count=len(lex.ids))
        docs, scores = lex.index.retrieve([tokens], k=min(k, len(lex.ids)), show_progress=False, n_threads=1,
                                          weight_mask=mask)
        return [(lex.ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]

    def bm25_scores(self, query: str, collection: str, ids: Sequence[str]) -> np.ndarray:
        """The BM25 score of each chunk in ids (0 for chunks without a query word), ranked or not."""
        lex = self._index(collection)
        tokens = [t for t in _tokenize([query])[0] if t in lex.index.vocab_dict] if lex.ids else []
        if not tokens or not ids:
            return np.zeros(len(ids), np.float32)
        scores = lex.index.get_scores(tokens)
        where = lex.positions()
        return np.array([scores[where[cid]] if cid in where else 0.0 for cid in ids], np.float32)

    def _index(self, collection: str) -> _Lexical:
        bm25s = _bm25s()
        generation = self.store.generation(collection)
        with self._lock:
            cached = self._lexical.get(collection)
            if cached is not None and cached.generation == generation:
                return cached
            folder = self.cache_dir / self._store_key(collection) / str(generation)
            lex = None
            if (folder / "ids.json").is_file():
                try:
                    index = bm25s.BM25.load(str(folder), show_progress=False)
                    lex = _Lexical(generation, json.loads((folder / "ids.json").read_text()), index)
                except (OSError, ValueError, KeyError) as e:
                    log.warning("BM25 cache %s unreadable (%s): rebuilding", folder, e)
            if lex is None:
                lex = self._build(collection, generation, folder)
            self._lexical[collection] = lex
            return lex

    def _build(self, collection: str, generation: int, folder: Path) -> _Lexical:
        bm25s = _bm25s()
        ids, texts = [], []
        for c in self.store.iter_chunks(collection):
            ids.append(c.id)
            texts.append(c.embed_text)
        index = bm25s.BM25()
        if texts:
            index.index(_tokenize(texts), show_progress=False)
        lex = _Lexical(generation, ids, index)
        if texts:
            try:
                if folder.parent.exists():
                    shutil.rmtree(folder.parent, ignore_errors=True)  # older generations of this collection
                folder.mkdir(parents=True, exist_ok=True)
                index.save(str(folder), show_progress=False)
                (folder / "ids.json").write_text(json.dumps(ids))
            except OSError as e:
                log.warning("cannot cache the BM25 index in %s: %s", folder, e)
        log.info("BM25 index of %s: %d chunks (generation %d)", collection, len(ids), generation)
        return lex

    def _store_key(self, collection: str) -> str:
        where = getattr(self.store, "path", None) or getattr(self.store, "cache_identity", None) or id(self.store)
        return hashlib.blake2b(f"{type(self.store).__name__}\0{where}\0{collection}\0{LEXICAL_TOKENIZER}".encode(),
                               digest_size=8).hexdigest()


def convex(ids: Sequence[str], dense: np.ndarray, lexical: np.ndarray, alpha: float) -> list[tuple[str, float]]:
    """Convex combination of two score vectors over the same ids, each min-max normalized (a constant vector counts
    as 0), best first (ties: first seen)."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        span = x.max() - x.min() if len(x) else 0.0
        return (x - x.min()) / span if span > 0 else np.zeros_like(x)

    fused = alpha * unit(dense) + (1 - alpha) * unit(lexical)
    order = sorted(range(len(ids)), key=lambda i: -fused[i])
    return [(ids[i], float(fused[i])) for i in order]


def rrf(lists: Sequence[Sequence[tuple[str, float]]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of ranked (id, score) lists: sum of 1 / (k + rank), best first (ties: first seen)."""
    fused: dict[str, float] = {}
    for ranked in lists:
        for rank, (cid, _) in enumerate(ranked, 1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])


def mmr(relevance: Sequence[float], vectors: np.ndarray, k: int, lam: float) -> list[int]:
    """Indices of k items picked greedily by lam * relevance - (1 - lam) * max similarity to those picked.

    relevance is rescaled to [0, 1] (fused scores are tiny numbers); vectors are unit rows.
    """
    rel = np.asarray(relevance, np.float64)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
    sim = matmul(vectors, vectors.T)
    picked: list[int] = []
    left = list(range(len(rel)))
    while left and len(picked) < k:
        if picked:
            penalty = sim[np.ix_(left, picked)].max(axis=1)
        else:
            penalty = np.zeros(len(left))
        best = int(np.argmax(lam * rel[left] - (1 - lam) * penalty))
        picked.append(left.pop(best))
    return picked
