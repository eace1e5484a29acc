"""The support judge: sentence splitting, citation markers, hard tokens, the labelled set and its test-half accuracy."""
from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator

import pytest
import torch

from temper import embeddings
from temper.rag import support
from temper.rag.support import SupportJudge, citations, split_of, split_sentences, strip_citations

# measured with the shipped constants on the test half: accuracy 0.805, F1 of "supported" 0.805 (256 items)
MIN_TEST_ACCURACY = 0.78
MIN_TEST_F1 = 0.78

SPLITS = [
    ("Use json.dumps() to serialize, e.g. a dict [1]. Python 3.11 added tomllib [2].",
     ["Use json.dumps() to serialize, e.g. a dict [1].", "Python 3.11 added tomllib [2]."]),
    ("It returns a str, i.e. text.[1][3] Next one.", ["It returns a str, i.e. text.[1][3]", "Next one."]),
    ("Call os.path.join() first. Then open() it.", ["Call os.path.join() first.", "Then open() it."]),
    ("The value is 3.5 ms. Version 3.11.4 fixed it.", ["The value is 3.5 ms.", "Version 3.11.4 fixed it."]),
    ("Markers after the stop stay. [2] The next sentence starts here.",
     ["Markers after the stop stay. [2]", "The next sentence starts here."]),
    ("Run `x = 1. Y = 2` once. Done!", ["Run `x = 1. Y = 2` once.", "Done!"]),
    ("Steps:\n- install it [1]\n- run it\n1. first. Second.",
     ["Steps:", "install it [1]", "run it", "first.", "Second."]),
    ("Is it lazy? Yes [1, 2]. It is.", ["Is it lazy?", "Yes [1, 2].", "It is."]),
    ("Lists, dicts, etc. are mutable. Mr. Smith agrees.", ["Lists, dicts, etc. are mutable.", "Mr. Smith agrees."]),
    ("Compare approx. five values vs. the rest.", ["Compare approx. five values vs. the rest."]),
    ("He said \"stop.\" Then he left.", ["He said \"stop.\"", "Then he left."]),
    ("Example:\n```\nx = 1. y\n```\nDone.", ["Example:", "```\nx = 1. y\n```", "Done."]),
    ("", []),
    ("  \n\n ", []),
]


@pytest.mark.parametrize("text, expected", SPLITS)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


CITATIONS = [
    ("JSON is text [1].", [1]),
    ("Both say so [1, 2].", [1, 2]),
    ("Chained markers [1][3] count.", [1, 3]),
    ("It is fast[2].", [2]),
    ("Again [2] and again [2], then [1].", [2, 1]),
    ("sys.argv[1] is the first argument [3].", [3]),
    ("a[0] and heap[0] are indexing.", []),
    ("Code `x[2]` is not a citation.", []),
    ("f()[1] and x_1[2] index.", []),
    ("The weights [10, 5, 30, 5] are a list.", []),
    ("A [0] is not a source number.", []),
    ("No markers here.", []),
]


@pytest.mark.parametrize("sentence, expected", CITATIONS)
def test_citations(sentence, expected):
    assert citations(sentence) == expected


@pytest.mark.parametrize("sentence, expected", [
    ("JSON is text [1].", "JSON is text."),
    ("It is fast[2][3], really [1, 4].", "It is fast, really."),
    ("Use sys.argv[1] [2].", "Use sys.argv[1]."),
    ("`a[1]` b [2]", "`a[1]` b"),
])
def test_strip_citations(sentence, expected):
    assert strip_citations(sentence) == expected


@pytest.mark.parametrize("claim, expected", [
    ("The default mode of Path.touch() is 0o644.", ["path.touch", "0o644"]),
    ("It needs 32,768 bytes and three threads.", ["32768", "3"]),
    ("Use stdout=PIPE, not stderr=DEVNULL, with 'w+b'.", ["pipe", "devnull", "w+b"]),
    ("Port it to PostgreSQL or Oracle with getLogger(__name__).", ["postgresql", "oracle", "getlogger", "__name__"]),
    ("Python handles it; one can skip it.", []),
])
def test_hard_tokens(claim, expected):
    assert support.hard_tokens(claim) == expected


def test_weights_match_features():
    assert len(support.WEIGHTS) == len(support.FEATURES) == len(support.SupportFeatures.__dataclass_fields__)
    assert 0.0 < support.THRESHOLD < 1.0


# ---- the labelled set ----

@pytest.fixture(scope="module")
def pairs() -> list[support.SupportPair]:
    return support.load_pairs()


def test_labelled_set_shape(pairs):
    assert len(pairs) >= 240
    assert len({p.id for p in pairs}) == len(pairs)
    assert len({p.source for p in pairs}) >= 40
    kinds = collections.Counter(p.kind for p in pairs)
    assert all((p.kind in ("paraphrase", "extract")) == p.is_supported for p in pairs)
    assert {p.label for p in pairs} == {"supported", "unsupported"}
    unsupported = sum(not p.is_supported for p in pairs)
    altered_or_negated = sum(kinds[k] for k in ("negated", "wrong_number", "wrong_name", "wrong_value", "swapped"))
    assert unsupported >= 0.4 * len(pairs) and altered_or_negated >= unsupported / 2
    for p in pairs:
        assert 50 <= len(p.passage.split()) <= 200, p.id


def test_load_pairs_names_the_bad_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    good = {"id": "a", "source": "s", "claim": "c", "passage": "p", "label": "supported", "kind": "extract"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"id": "b", "claim": "c"}) + "\n")
    with pytest.raises(support.SupportSetError, match="pairs.jsonl:2"):
        support.load_pairs(path)


def test_split_keeps_pages_apart(pairs):
    halves = collections.defaultdict(set)
    for p in pairs:
        halves[p.source].add(split_of(p))
    assert all(len(h) == 1 for h in halves.values())
    counts = collections.Counter(split_of(p) for p in pairs)
    assert counts["train"] >= 100 and counts["test"] >= 100


# ---- the judge, with the packaged embedder ----

@pytest.fixture(scope="module")
def judge() -> Iterator[SupportJudge]:
    pytest.importorskip(embeddings.PACKAGE_MODULE)
    # NOTE: one intra-op thread: on a shared 2-core machine two spinning threads make these small batches up to 8x
    # slower (0.9 s instead of 0.11 s per claim)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield SupportJudge()
    torch.set_num_threads(threads)


PASSAGE = ("queue.Queue(maxsize=0): Constructor for a FIFO (first-in, first-out) queue. maxsize is an integer that "
           "sets the upperbound limit on the number of items that can be placed in the queue. Insertion will block "
           "once this size has been reached, until queue items are consumed. If maxsize is less than or equal to zero, "
           "the queue size is infinite.")


@pytest.mark.parametrize("claim, expected", [
    ("queue.Queue is a first-in, first-out queue [1].", True),
    ("Once the queue holds maxsize items, putting another one blocks until items are consumed [2].", True),
    ("With a maxsize of zero or less the queue is unbounded.", True),
    ("The default maxsize of queue.Queue is 100 [1].", False),  # wrong number
    ("queue.Queue raises queue.Full instead of blocking when it is full.", False),  # wrong behaviour and name
    ("Insertion into a full queue does not block.", False),  # negated
    ("The json module encodes Python objects as JSON text [1].", False),  # off topic
])
def test_judge_clear_cases(judge, claim, expected):
    score = judge.score(claim, [PASSAGE])
    assert 0.0 <= score <= 1.0
    assert judge.supported(claim, [PASSAGE]) is expected, f"score {score:.3f}"


def test_score_many_matches_score_and_handles_empty(judge):
    claims = ["queue.Queue is a FIFO queue.", "The default maxsize is 100."]
    many = judge.score_many([(c, [PASSAGE]) for c in claims] + [("[1]", [PASSAGE]), ("A claim.", [])])
    assert many[:2] == pytest.approx([judge.score(c, [PASSAGE]) for c in claims], abs=1e-5)
    assert many[2] < judge.threshold and many[3] < judge.threshold  # nothing to judge, nothing cited


def test_window_cache_is_bounded_and_changes_nothing(judge, monkeypatch):
    claim = "A full queue blocks insertion."
    before = judge.score(claim, [PASSAGE])
    assert judge._window_vectors and judge.score(claim, [PASSAGE]) == pytest.approx(before, abs=1e-6)
    monkeypatch.setattr(support, "MAX_CACHED_WINDOWS", 2)
    judge.score(claim, ["One sentence. Another one. A third one."])
    assert list(judge._window_vectors) == ["One sentence. Another one.", "Another one. A third one."]  # newest two
    # a cached window evicted by the new windows of the same call is still scored (was a KeyError)
    expected = judge.score(claim, ["Another one. A third one. Fourth here. Fifth here."])
    assert judge.score(claim, ["Another one. A third one. Fourth here. Fifth here."]) == pytest.approx(expected)


def test_test_half_accuracy(judge, pairs):
    """Recompute the test-half numbers with the shipped weights; a regression of the features falls below the floor."""
    test = [p for p in pairs if split_of(p) == "test"]
    start = time.perf_counter()
    scores = judge.score_many([(p.claim, [p.passage]) for p in test])
    elapsed = time.perf_counter() - start
    predicted = [s >= judge.threshold for s in scores]
    truth = [p.is_supported for p in test]
    accuracy = sum(a == b for a, b in zip(predicted, truth)) / len(test)
    tp = sum(a and b for a, b in zip(predicted, truth))
    precision, recall = tp / sum(predicted), tp / sum(truth)
    f1 = 2 * precision * recall / (precision + recall)
    print(f"test half: {len(test)} items, accuracy {accuracy:.3f}, P {precision:.3f} R {recall:.3f} F1 {f1:.3f}, "
          f"{1000 * elapsed / len(test):.1f} ms/claim batched")
    assert accuracy >= MIN_TEST_ACCURACY and f1 >= MIN_TEST_F1
