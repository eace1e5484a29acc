"""The semantic cache's pair verifier: a MiniLM cross-encoder trained on the project's question pairs."""
from __future__ import annotations

import pytest

from temper.gateway.config import GatewayConfigError, load_config
from temper.gateway.semantic import CANDIDATE_SIMILARITY, DEFAULT_THRESHOLD
from temper.gateway.verifier import PairVerifier, VerifierMissing, default_path, training_pairs

PAIR = ("How do I reverse a list in Python?", "how can i reverse a python list")


def test_training_pairs_ship_with_the_package():
    rows = training_pairs()
    assert len(rows) == 1863 and {r["split"] for r in rows} == {"dev", "heldout", "fresh", "fresh2"}
    assert sum(r["equivalent"] for r in rows) == 699
    assert default_path().name.startswith("pair-verifier-v")  # keyed by data and settings


def test_scores_are_symmetric_probabilities_and_survive_save_and_load(tiny_verifier):
    model, folder = tiny_verifier
    a, b = PAIR
    p_ab, p_ba, p_other = model.score([(a, b), (b, a), (a, "What is the capital of France?")])
    assert 0.0 < p_ab < 1.0 and 0.0 < p_other < 1.0
    assert p_ab == pytest.approx(p_ba, abs=1e-6)  # both orders are averaged
    loaded = PairVerifier.load(folder)
    assert loaded.score([(a, b), (a, "What is the capital of France?")]) == pytest.approx([p_ab, p_other], abs=1e-5)
    assert PairVerifier.load_or_train(folder).score([(a, b)]) == pytest.approx([p_ab], abs=1e-5)  # no retraining
    # one batch of several pairs scores each as alone (padding does not leak)
    assert model.score([(a, b)]) == pytest.approx([p_ab], abs=1e-5)


def test_swapped_questions_exchange_two_nouns_and_spare_symmetric_ones():
    import random

    from temper.gateway.verifier import swap_negatives, swapped
    rng = random.Random(0)
    text = "What is the effect of stress on sleep?"
    swaps = {swapped(text, rng) for _ in range(40)}  # two of effect / stress / sleep exchanged
    assert swaps == {"What is the stress of effect on sleep?", "What is the sleep of stress on effect?",
                     "What is the effect of sleep on stress?"}
    assert swapped("Is every square a rectangle?", rng) == "Is every rectangle a square?"
    assert swapped("What is the difference between TCP and UDP?", rng) is None  # symmetric: the same question
    assert swapped("How are you?", rng) is None
    rows = [{"a": "How does the Moon's gravity affect Earth?", "b": "x", "equivalent": True}] * 10
    negatives = swap_negatives(rows, 1.0, 0)
    assert negatives and all(not n["equivalent"] and n["kind"] == "swap" for n in negatives)
    assert {n["b"] for n in negatives} == {"How does the Earth's gravity affect Moon?"}


def test_missing_verifier_is_reported(tmp_path):
    with pytest.raises(VerifierMissing, match="no trained pair verifier"):
        PairVerifier.load(tmp_path / "nothing")


def test_config_picks_the_similarity_threshold_by_mode():
    base = {"backends": [{"name": "a", "url": "http://127.0.0.1:1/v1", "model": "m"}]}
    checked = load_config({**base, "cache": {"semantic": {"enabled": True}}}).cache.semantic
    assert checked.verifier == "pair-classifier" and checked.similarity_threshold == CANDIDATE_SIMILARITY
    plain = load_config({**base, "cache": {"semantic": {"enabled": True, "verifier": "none"}}}).cache.semantic
    assert plain.similarity_threshold == DEFAULT_THRESHOLD
    own = load_config({**base, "cache": {"semantic": {"verifier": "pair-classifier", "threshold": 0.8}}})
    assert own.cache.semantic.similarity_threshold == 0.8
    with pytest.raises(GatewayConfigError, match="verifier"):
        load_config({**base, "cache": {"semantic": {"verifier": "bert"}}})


@pytest.mark.slow
def test_the_trained_verifier_reads_what_the_embedding_misses():
    """The real verifier (trained once, ~8 min on 2 cores, then cached) on pairs from its training data: the
    relations embeddings cannot see. In-sample: this checks the training, benchmarks/semantic_verifier.py the
    generalization."""
    model = PairVerifier.load_or_train()
    rows = training_pairs()
    probs = model.score([(r["a"], r["b"]) for r in rows])
    right = sum((p >= 0.5) == r["equivalent"] for p, r in zip(probs, rows))
    assert right / len(rows) > 0.95


def test_check_says_whether_the_verifier_is_trained(tiny_verifier, tmp_path, capsys):
    import yaml

    from temper.cli import main
    for folder, expected in ((tiny_verifier[1], "pair verifier trained"), (tmp_path / "none", "not trained yet")):
        config = {"backends": [{"name": "a", "url": "http://127.0.0.1:9/v1", "model": "m"}],
                  "cache": {"semantic": {"enabled": True, "verifier_path": str(folder)}}}
        (tmp_path / "gw.yaml").write_text(yaml.safe_dump(config))
        assert main(["gateway", "check", "--config", str(tmp_path / "gw.yaml")]) == 1  # the back end is down
        assert expected in capsys.readouterr().out
