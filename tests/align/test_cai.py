"""Constitutional AI building blocks: the constitution file, exact prompts, option probabilities, preferences."""
from __future__ import annotations

import math
import random

import pytest

from temper.align.cai import (
    ANSWER_PREFIX,
    CAIConfig,
    Constitution,
    ConstitutionError,
    agreement,
    ai_preferences,
    build_sft_set,
    clean_reply,
    comparison_messages,
    config_from_recipe,
    critique_messages,
    judge_preferences,
    option_probabilities,
    revision_messages,
)
from temper.safety.redteam.harness import Judgement

TINY = Constitution.from_dict({
    "principles": [{"name": "p1", "critique": "Critique it.", "revision": "Revise it.", "comparison": "Which?"},
                   {"name": "p2", "critique": "Find harm.", "revision": "Remove harm.", "comparison": "Safer?"}],
    "examples": [{"request": "R", "response": "S", "critique": "C", "revision": "V"}],
})


def test_default_constitution_loads():
    c = Constitution.load()
    assert len(c.principles) >= 4 and len(c.examples) >= 2
    assert len({p.name for p in c.principles}) == len(c.principles)
    assert all(p.critique and p.revision and p.comparison for p in c.principles)


@pytest.mark.parametrize("raw,message", [
    ({}, "non-empty `principles:`"),
    ({"principles": [{"name": "x", "critique": "c", "revision": "r"}]}, "lacks ['comparison']"),
    ({"principles": [{"name": "x", "critique": "c", "revision": "r", "comparison": "q", "tone": "z"}]},
     "unknown keys ['tone']"),
    ({"principles": [{"name": "x", "critique": "c", "revision": "r", "comparison": "q"}] * 2}, "unique"),
    ({"principles": [{"name": "x", "critique": "c", "revision": "r", "comparison": "q"}], "rules": []},
     "unknown keys ['rules']"),
])
def test_bad_constitutions_are_explained(raw, message):
    with pytest.raises(ConstitutionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Constitution.from_dict(raw)


def test_critique_and_revision_prompts_are_exact():
    p = TINY.principles[1]
    assert critique_messages(TINY, p, "How do I pick a lock?", "Use a pin.") == [
        {"role": "user", "content": "R"}, {"role": "assistant", "content": "S"},
        {"role": "user", "content": "Find harm."}, {"role": "assistant", "content": "C"},
        {"role": "user", "content": "Thank you. Next conversation."}, {"role": "assistant", "content": "Understood."},
        {"role": "user", "content": "How do I pick a lock?"}, {"role": "assistant", "content": "Use a pin."},
        {"role": "user", "content": "Find harm."}]
    assert revision_messages(TINY, p, "Q", "A", "It helps burglars.") == [
        {"role": "user", "content": "R"}, {"role": "assistant", "content": "S"},
        {"role": "user", "content": "Find harm."}, {"role": "assistant", "content": "C"},
        {"role": "user", "content": "Remove harm."}, {"role": "assistant", "content": "V"},
        {"role": "user", "content": "Thank you. Next conversation."}, {"role": "assistant", "content": "Understood."},
        {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"},
        {"role": "user", "content": "Find harm."}, {"role": "assistant", "content": "It helps burglars."},
        {"role": "user", "content": "Remove harm."}]
    assert comparison_messages(p, "Q", "one", "two") == [{"role": "user", "content":
        "Consider this request to an AI assistant:\n\nQ\n\nSafer?\n\n(A) one\n\n(B) two\n\nAnswer with A or B."}]
    assert ANSWER_PREFIX.endswith("(")


def test_principles_are_drawn_by_seed():
    draws = [TINY.draw(random.Random(7)).name for _ in range(3)]
    assert len(set(draws)) == 1  # one seed, one draw
    rng_a, rng_b = random.Random(11), random.Random(11)
    assert [TINY.draw(rng_a).name for _ in range(20)] == [TINY.draw(rng_b).name for _ in range(20)]
    assert {TINY.draw(rng_a).name for _ in range(50)} == {"p1", "p2"}


def test_option_probabilities_from_a_fake_logprob_table():
    table = [(" A", math.log(0.6)), ("B", math.log(0.2)), ("C", math.log(0.1)), ("A)", math.log(0.05)),
             (" the", math.log(0.04)), (" B", float("-inf"))]
    probs = option_probabilities(table)
    assert probs["A"] == pytest.approx(0.65 / 0.85) and probs["B"] == pytest.approx(0.2 / 0.85)
    assert option_probabilities([("C", -0.1), (" yes", -2.0)]) is None


class FixedFeedback:
    """A feedback model with a fixed first-token table per comparison (order AB, then BA)."""

    def __init__(self, tables):
        self.tables = tables
        self.seen = []

    def first_token_top(self, conversations):
        self.seen += conversations
        return self.tables[: len(conversations)]


def test_ai_preferences_average_both_orders():
    # AB order: P(A) = 0.8 -> a wins with 0.8; BA order: P(B) = 0.6 -> a (shown second) wins with 0.6
    tables = [[("A", math.log(0.8)), ("B", math.log(0.2))], [("B", math.log(0.6)), ("A", math.log(0.4))],
              [("hmm", -0.1)], [("A", math.log(0.9)), ("B", math.log(0.1))]]
    feedback = FixedFeedback(tables)
    prefs = ai_preferences(feedback, TINY, [("q1", "a1", "b1"), ("q2", "a2", "b2")], random.Random(0))
    assert prefs[0]["p_a"] == pytest.approx(0.7) and prefs[0]["answered"] == 2
    assert prefs[1]["p_a"] == pytest.approx(0.1) and prefs[1]["answered"] == 1  # only the BA order answered
    assert "(A) a1" in feedback.seen[0][0]["content"] and "(A) b1" in feedback.seen[1][0]["content"]


class TableJudge:
    def __init__(self, verdicts):
        self.verdicts = verdicts

    def judge(self, pairs):
        return [self.verdicts[reply] for _, reply in pairs]


def test_judge_preferences_and_agreement():
    v = {"refuse": Judgement(True, False, 0.9, 0.1), "comply": Judgement(False, True, 0.1, 0.9),
         "mild": Judgement(False, True, 0.1, 0.6), "answer": Judgement(False, False, 0.1, 0.1)}
    items = [("h1", "refuse", "comply"), ("h2", "comply", "mild"), ("h3", "refuse", "refuse2"),
             ("b1", "refuse", "answer")]
    v["refuse2"] = v["refuse"]
    prefs = judge_preferences(TableJudge(v), items, [True, True, True, False])
    assert [p["p_a"] for p in prefs] == [1.0, 0.0, 0.5, 0.0]
    model = [{"p_a": 0.9, "answered": 2}, {"p_a": 0.8, "answered": 2}, {"p_a": 0.5, "answered": 0},
             {"p_a": 0.3, "answered": 1}]
    stats = agreement(model, prefs)
    assert stats["decided"] == 3 and stats["agreement"] == pytest.approx(2 / 3)
    assert stats["answered_share"] == pytest.approx(5 / 8)


def test_sft_set_filters_and_mixes():
    v = {"I can't help with that.": Judgement(True, False, 0.9, 0.1), "Here is how: ...": Judgement(False, True, 0, 1),
         "Paris is the capital.": Judgement(False, False, 0, 0), "Sure, aspirin is ...": Judgement(False, False, 0, 0),
         "I cannot answer.": Judgement(True, False, 1, 0)}
    records = [{"prompt": "bomb?", "initial": "Here is how: ...", "final": "I can't help with that."},
               {"prompt": "poison?", "initial": "Here is how: ...", "final": "Here is how: ..."}]
    helpful = [{"prompt": "capital?", "reply": "Paris is the capital.", "edgy": False},
               {"prompt": "overdose?", "reply": "Sure, aspirin is ...", "edgy": True},
               {"prompt": "weather?", "reply": "I cannot answer.", "edgy": False}]
    rows, stats = build_sft_set(records, helpful, TableJudge(v), CAIConfig(helpful_ratio=1.0), random.Random(0))
    assert stats["revisions_kept"] == 1 and stats["helpful_available"] == 2 and stats["helpful_used"] == 1
    assert stats["initial_harmful_compliance"] == 1.0 and stats["revision_refused"] == 0.5
    sources = sorted(r["source"] for r in rows)
    assert sources == ["edgy", "revision"]  # edgy prompts come first in the helpful share; refusals never
    assert all(r["messages"][-1]["content"] not in ("Here is how: ...", "I cannot answer.") for r in rows)


def test_clean_reply_and_config_errors():
    assert clean_reply(' Revision: "I won\'t help with that." ') == "I won't help with that."
    with pytest.raises(ValueError, match="unknown recipe keys for cai: \\['roundz'\\]"):
        config_from_recipe({"roundz": 2})
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        CAIConfig(rounds=0)


def test_examples_are_chosen_by_similarity_closest_last(embedder):
    from temper.align.cai import select_examples

    c = Constitution.load()
    picks = select_examples(c, ["How can I build an explosive device in my garage?",
                                "Help me track down where my former girlfriend lives now"], 2, embedder)
    assert [len(p) for p in picks] == [2, 2]
    assert "bomb" in picks[0][-1].request and "ex lives" in picks[1][-1].request
    assert select_examples(c, ["anything"], 0) == [()]


def test_degenerate_replies():
    from temper.align.cai import degenerate

    assert degenerate("")
    assert degenerate("that is a message that is a message that is a message that is a message")
    assert not degenerate("I can't help with making a weapon: it could hurt people. I can suggest a safe hobby.")
