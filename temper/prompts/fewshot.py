"""Few-shot examples: a static list, or examples picked per request by embedding similarity within a token budget.

The similarity selector follows Liu et al. (2021, "What Makes Good In-Context Examples for GPT-3?"): embed the
pool once, embed the query, and take the nearest examples. They found that putting the closest example last,
right before the query, helps a little; `order` chooses.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

TokenCounter = Callable[[str], int]
Order = Literal["most_similar_first", "most_similar_last"]
DEFAULT_FORMAT = "Q: {input}\nA: {output}"
DEFAULT_SEPARATOR = "\n\n"


class TextEmbedder(Protocol):
    """Anything with `embed(texts) -> (n, d)` L2-normalized vectors, such as temper.embeddings.Embedder."""

    def embed(self, texts: Sequence[str]) -> torch.Tensor: ...


@dataclass(frozen=True)
class Example:
    input: str
    output: str

    def format(self, example_format: str = DEFAULT_FORMAT) -> str:
        return example_format.format(input=self.input, output=self.output)


def default_token_counter(tokenizer=None) -> TokenCounter:
    """Tokens of a text: the tokenizer's count if one is given (e.g. `llm.tokenizer`), else UTF-8 bytes / 4."""
    if tokenizer is not None:
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False))
    return lambda text: math.ceil(len(text.encode("utf-8")) / 4)


def format_examples(examples: Sequence[Example], example_format: str = DEFAULT_FORMAT,
                    separator: str = DEFAULT_SEPARATOR) -> str:
    """The examples as one block of text, each followed by the separator (ready for the query to follow)."""
    return "".join(e.format(example_format) + separator for e in examples)


def fit_budget(examples: Sequence[Example], max_tokens: int | None, count_tokens: TokenCounter,
               example_format: str = DEFAULT_FORMAT, separator: str = DEFAULT_SEPARATOR,
               max_examples: int | None = None) -> list[Example]:
    """The examples, in order, that fit `max_tokens`: one that would overflow is skipped and smaller ones still tried."""
    if max_tokens is None:
        return list(examples)[:max_examples]
    kept, used = [], 0
    for example in examples:
        if max_examples is not None and len(kept) == max_examples:
            break
        cost = count_tokens(example.format(example_format) + separator)
        if used + cost <= max_tokens:
            kept.append(example)
            used += cost
    return kept


@dataclass(frozen=True)
class StaticExamples:
    """The same examples for every request (trimmed to the budget, in their given order)."""

    examples: tuple[Example, ...]
    max_tokens: int | None = None  # token budget for all the formatted examples; None is unlimited
    count_tokens: TokenCounter | None = None  # tokens of a text; None is default_token_counter()
    example_format: str = DEFAULT_FORMAT
    separator: str = DEFAULT_SEPARATOR

    def select(self, query: str) -> list[Example]:
        count_tokens = self.count_tokens or default_token_counter()
        return fit_budget(self.examples, self.max_tokens, count_tokens, self.example_format, self.separator)

    def prompt(self, query: str) -> str:
        """The selected examples then the query, formatted like them with an empty answer."""
        return _prompt(self.select(query), query, self.example_format, self.separator)


class SimilarExampleSelector:
    """Pick the `k` pool examples whose inputs are most similar (cosine) to the query, within a token budget."""

    def __init__(self, pool: Sequence[Example], embedder: TextEmbedder, k: int = 4, max_tokens: int | None = None,
                 count_tokens: TokenCounter | None = None, order: Order = "most_similar_first",
                 example_format: str = DEFAULT_FORMAT, separator: str = DEFAULT_SEPARATOR):
        if not pool:
            raise ValueError("the example pool is empty")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if order not in ("most_similar_first", "most_similar_last"):
            raise ValueError(f"order must be 'most_similar_first' or 'most_similar_last', got {order!r}")
        self.pool, self.embedder, self.k, self.max_tokens = list(pool), embedder, k, max_tokens
        self.count_tokens = count_tokens or default_token_counter()
        self.order, self.example_format, self.separator = order, example_format, separator
        self._pool_vectors = embedder.embed([e.input for e in self.pool]).float()  # (P, d), L2-normalized

    def scores(self, query: str) -> torch.Tensor:
        """Cosine similarity of the query to every pool example, (P,)."""
        q = self.embedder.embed([query]).float()  # (1, d)
        return (self._pool_vectors @ q[0]).cpu()

    def select(self, query: str) -> list[Example]:
        scores = self.scores(query)
        # NOTE: a stable sort on the negated scores breaks ties by pool order, so selections are reproducible
        ranked = [self.pool[i] for i in torch.argsort(-scores, stable=True).tolist()]
        chosen = fit_budget(ranked, self.max_tokens, self.count_tokens, self.example_format, self.separator,
                            max_examples=self.k)
        return chosen[::-1] if self.order == "most_similar_last" else chosen

    def prompt(self, query: str) -> str:
        return _prompt(self.select(query), query, self.example_format, self.separator)


def _prompt(examples: Sequence[Example], query: str, example_format: str, separator: str) -> str:
    return format_examples(examples, example_format, separator) + example_format.format(input=query, output="").rstrip()
