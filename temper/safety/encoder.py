"""Texts to MiniLM window embeddings, shared by every learned check of a request.

MiniLM reads at most 256 tokens and a single instruction hidden in a long document barely moves the mean of a
256-token window, so texts are cut into overlapping windows of `window_tokens` (default 128, overlap a quarter)
and each window is embedded; checks score every window and keep the worst. A short message is one window.

The guard asks several heads about the same text (harm, attack), so embeddings are cached per text (LRU).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from tokenizers import Tokenizer

from temper.embeddings import Embedder


class TextEncoder:
    """Window embeddings (num_windows, dim) of texts, L2-normalized, with an LRU cache keyed by text."""

    def __init__(self, embedder: Embedder | None = None, window_tokens: int = 128, max_windows: int = 64,
                 cache_size: int = 2048):
        if not 16 <= window_tokens <= 254:
            raise ValueError(f"window_tokens must be in [16, 254], got {window_tokens}")
        if max_windows < 1:
            raise ValueError(f"max_windows must be at least 1, got {max_windows}")
        self.embedder = embedder or Embedder.load()
        self.window_tokens = window_tokens
        self.max_windows = max_windows  # longer texts keep their first and last windows (documented cost bound)
        self.cache_size = cache_size
        self.dim = self.embedder.dim
        # a copy of the tokenizer without truncation: windows need every token of the text
        self._tokenizer = Tokenizer.from_str(self.embedder.tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._cls = self.embedder.tokenizer.token_to_id("[CLS]")
        self._sep = self.embedder.tokenizer.token_to_id("[SEP]")
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def window_ids(self, text: str) -> list[list[int]]:
        """[CLS] w [SEP] id lists covering the text with overlapping windows (one for an empty text)."""
        low = text.lower() if self.embedder.config.do_lower_case else text
        ids = self._tokenizer.encode(low, add_special_tokens=False).ids
        W, stride = self.window_tokens, self.window_tokens - self.window_tokens // 4
        starts = list(range(0, max(len(ids) - W, 0) + 1, stride))
        if starts[-1] + W < len(ids):
            starts.append(len(ids) - W)
        if len(starts) > self.max_windows:
            half = self.max_windows // 2
            starts = starts[:half] + starts[-(self.max_windows - half):]
        return [[self._cls, *ids[s:s + W], self._sep] for s in starts]

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> list[torch.Tensor]:
        """One (num_windows, dim) tensor per text; all missing windows are embedded in one sorted batch."""
        found = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            windows = [self.window_ids(t) for t in missing]
            vecs = self.embedder.embed_ids([w for ws in windows for w in ws], batch_size=batch_size, normalize=True)
            at = 0
            for text, ws in zip(missing, windows):
                found[text] = vecs[at:at + len(ws)]
                at += len(ws)
        for text, v in found.items():
            self._put(text, v)
        return [found[t] for t in texts]

    def clear_cache(self) -> None:
        """Forget every cached embedding (benchmarks time a message as new to the guard)."""
        self._cache.clear()

    def _put(self, text: str, vecs: torch.Tensor) -> None:
        self._cache[text] = vecs
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
