"""Tests for temper.align.verifiable: checkers, prompt building, split, scoring and I/O (fast, no model)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from temper.align.verifiable import (
    BASE_TASKS,
    HELDOUT_TYPES,
    INSTRUCTIONS,
    TRAIN_TYPES,
    Prompt,
    build_prompts,
    check_prompt,
    follows,
    loose_follows,
    read_prompts,
    reward,
    score,
    split_prompts,
    write_jsonl,
)

# type id -> (params, passing reply, failing reply)
EXAMPLES: dict[str, tuple[dict[str, Any], str, str]] = {
    "length:max_words": ({"n": 5}, "  The sky is blue.  ", "The sky is blue because of scattering."),
    "length:min_words": ({"n": 5}, "Light scatters off tiny air molecules.", "Light scatters."),
    "length:max_sentences": ({"n": 2}, "It is tall. It shines at night!", "It is tall. It shines. It is old."),
    "length:exact_sentences": ({"n": 3}, "One here. Two there!\nThree now?", "One here. Two there."),
    "length:max_chars": ({"n": 20}, "  Short and sweet.\n", "This reply is definitely longer than twenty."),
    "length:one_word": ({}, " **Paris.** ", "Paris, France."),
    "format:bullets": ({"n": 3}, "Tips:\n* Water it\n- Give light\n  * Do not overwater",
                       "* One\n* Two\n**Bold** line"),
    "format:numbered_list": ({"n": 2}, "1. Boil water.\n2) Add tea.", "1. Boil water.\n2. Add tea.\n3. Wait."),
    "format:paragraphs": ({"n": 2}, "First part.\n\nSecond part.", "First part.\n\nSecond.\n***\nThird."),
    "format:sections": ({"n": 2}, "## Section 1\nBees fly.\n**SECTION 2**: They make honey.",
                        "Section 1\nBees fly.\nSection 3\nHoney."),
    "format:json": ({}, '```json\n{"answer": "blue"}\n```', "The answer is {\"answer\": \"blue\"}"),
    "format:title": ({}, "<<The Lighthouse>>\nIt stands tall.", "<The Lighthouse>\nIt stands tall."),
    "format:highlights": ({"n": 2}, "* item with *one* and **two**", "* item one\n* item two"),
    "format:placeholders": ({"n": 2}, "Dear [name], see you at [place].", "Dear [name], see you there []."),
    "keywords:include": ({"keywords": ["river", "sun"]}, "The River shines in the sun.",
                         "The rivers shine in the sun."),
    "keywords:forbidden": ({"forbidden": ["very"]}, "Every day is everyday fun.", "It is Very fun."),
    "keywords:frequency": ({"word": "light", "n": 2}, "Light, more light!", "Light and lights."),
    "keywords:letter_frequency": ({"letter": "b", "n": 3}, "Big bold Bee.", "Big bee."),
    "case:lowercase": ({}, "all quiet here, 42 times.", "all quiet here, Mostly."),
    "case:uppercase": ({}, "ALL QUIET HERE, 42 TIMES!", "ALL QUIET HERE, mostly."),
    "case:capital_words": ({"n": 2}, "This is VERY, VERY good.", "I think A day is VERY good."),
    "startend:start_word": ({"word": "Well"}, '  **"Well**, it depends.', "Oh well, it depends."),
    "startend:end_phrase": ({"phrase": "That is all."}, "Tea is nice.\nThat is all.  \n", "That is all. Tea is nice."),
    "startend:quotation": ({}, ' "The sky is blue." \n', '"The sky" is blue.'),
    "startend:end_question": ({}, "Ready for a walk?  ", "Ready? Let's walk."),
    "startend:end_exclamation": ({}, "What a day!\n", "What a day! Truly."),
    "detect:postscript": ({"marker": "P.S."}, "Happy birthday!\n\nP.S. Cake is ready.", "P.S. Happy birthday!"),
    "punct:no_comma": ({}, "Sleep helps you rest and grow.", "Sleep helps you rest, grow."),
    "content:numbers": ({"n": 2}, "Use 2 cups, or 1,000 grams.", "Use two cups of 1,000 grams."),
    "combo:repeat_prompt": ({"prompt_to_repeat": "Explain why the sky is blue."},
                            "Explain why the  sky is blue.\nBecause of scattering.",
                            "Sure! Explain why the sky is blue. Because of scattering."),
    "combo:two_responses": ({}, "It is blue.\n******\nIt looks blue.", "It is blue.\n*******\nIt looks blue."),
}


def test_examples_cover_every_type() -> None:
    assert set(EXAMPLES) == set(INSTRUCTIONS)
    assert len(INSTRUCTIONS) >= 28


@pytest.mark.parametrize("type_id", sorted(EXAMPLES))
def test_checker_pass_and_fail(type_id: str) -> None:
    params, good, bad = EXAMPLES[type_id]
    inst = INSTRUCTIONS[type_id]
    assert inst.check(good, **params) is True
    assert inst.check(bad, **params) is False
    assert inst.doc, "every checker documents what counts"


@pytest.mark.parametrize("type_id", sorted(INSTRUCTIONS))
def test_sampler_deterministic_and_text_mentions_params(type_id: str) -> None:
    inst = INSTRUCTIONS[type_id]
    task = BASE_TASKS[0]
    assert inst.sample(random.Random(3), task) == inst.sample(random.Random(3), task)
    for seed in range(10):
        params = inst.sample(random.Random(seed), task)
        text = " ".join([task, inst.describe(params, random.Random(seed))])
        for value in params.values():
            for v in value if isinstance(value, list) else [value]:
                assert str(v) in text, (type_id, v, text)


def test_empty_reply_fails_everything() -> None:
    for type_id, (params, _, _) in EXAMPLES.items():
        assert not INSTRUCTIONS[type_id].check("  \n", **params), type_id


def test_json_checker() -> None:
    check = INSTRUCTIONS["format:json"].check
    assert check('{"a": [1, 2]}')
    assert check('  ```json\n[1, 2, 3]\n```  ')
    assert check('```\n{"a": 1}\n```')
    assert not check("Here is some prose about the sky.")
    assert not check('"just a string"')
    assert not check('```json\n{"a": 1}\n```\nHope this helps!')


def test_build_prompts_deterministic_and_sized() -> None:
    a, b = build_prompts(seed=0), build_prompts(seed=0)
    assert a == b
    assert build_prompts(seed=1) != a
    assert len(a) >= 330
    assert len({p.key for p in a}) == len(a)
    counts: dict[str, int] = {}
    for p in a:
        if len(p.instruction_ids) == 1:
            counts[p.instruction_ids[0]] = counts.get(p.instruction_ids[0], 0) + 1
    assert counts == {t: 12 for t in INSTRUCTIONS}
    assert any(len(p.instruction_ids) == 2 for p in a)


def test_prompt_text_mentions_params() -> None:
    for p in build_prompts(seed=0):
        assert p.text.startswith(p.task)
        assert len(p.instruction_ids) == len(p.params)
        for params in p.params:
            for value in params.values():
                for v in value if isinstance(value, list) else [value]:
                    assert str(v) in p.text, (p.key, v)


def test_combined_prompts_compatible() -> None:
    forbidden_pairs = [{"case:lowercase", "case:uppercase"}, {"format:json", "format:bullets"},
                       {"format:bullets", "format:paragraphs"}, {"startend:end_phrase", "startend:end_question"}]
    for p in build_prompts(seed=0):
        ids = set(p.instruction_ids)
        if len(ids) == 2:
            a, b = (INSTRUCTIONS[i] for i in p.instruction_ids)
            assert a.compatible(b)
            assert ids not in forbidden_pairs


def test_split_disjoint_by_type() -> None:
    assert 8 <= len(HELDOUT_TYPES) <= 10
    assert HELDOUT_TYPES <= set(INSTRUCTIONS)
    assert not (HELDOUT_TYPES & TRAIN_TYPES)
    assert HELDOUT_TYPES | TRAIN_TYPES == set(INSTRUCTIONS)
    prompts = build_prompts(seed=0)
    train, heldout = split_prompts(prompts)
    assert len(train) + len(heldout) == len(prompts)
    assert all(i in TRAIN_TYPES for p in train for i in p.instruction_ids)
    assert all(i in HELDOUT_TYPES for p in heldout for i in p.instruction_ids)
    assert {i for p in heldout for i in p.instruction_ids} == HELDOUT_TYPES
    mixed = Prompt("x", "t", ["case:lowercase", "case:uppercase"], [{}, {}], "t")
    with pytest.raises(ValueError):
        split_prompts([mixed])


def test_loose_differs_from_strict() -> None:
    p = Prompt("k", "Describe a dog.", ["format:json"], [{}], "Describe a dog. Respond only with JSON.")
    reply = 'Sure! Here it is:\n{"dog": "friendly"}'
    assert not follows(p, reply)
    assert loose_follows(p, reply)
    lower = Prompt("l", "Describe a dog.", ["case:lowercase"], [{}], "Describe a dog. No capitals.")
    assert not follows(lower, "Sure! Here it is:\na friendly dog.")
    assert loose_follows(lower, "Sure! Here it is:\na friendly dog.")
    assert not loose_follows(lower, "Sure! Here it is:\nA friendly dog.\nThe End")
    bullets = Prompt("b", "t", ["format:bullets"], [{"n": 2}], "t")
    assert loose_follows(bullets, "* one\n* two") and follows(bullets, "* one\n* two")


def test_reward_is_fraction() -> None:
    p = Prompt("r", "t", ["case:lowercase", "punct:no_comma"], [{}, {}], "t")
    assert check_prompt(p, "a quiet day, indeed") == [True, False]
    assert reward(p, "a quiet day, indeed") == 0.5
    assert reward(p, "a quiet day") == 1.0
    assert reward(p, "A quiet day, indeed") == 0.0


def test_score() -> None:
    p1 = Prompt("1", "t", ["case:lowercase"], [{}], "t")
    p2 = Prompt("2", "t", ["format:json"], [{}], "t")
    p3 = Prompt("3", "t", ["case:lowercase", "punct:no_comma"], [{}, {}], "t")
    s = score([p1, p2, p3], ["all lowercase", 'Here:\n{"a": 1}', "low, but comma"])
    assert s["n_prompts"] == 3 and s["n_instructions"] == 4
    assert s["prompt_strict"] == pytest.approx(1 / 3)
    assert s["prompt_loose"] == pytest.approx(2 / 3)
    assert s["instruction_strict"] == pytest.approx(2 / 4)
    assert s["per_type"]["case:lowercase"] == {"n": 2, "strict": 1.0, "loose": 1.0}
    assert s["per_type"]["format:json"]["strict"] == 0.0 and s["per_type"]["format:json"]["loose"] == 1.0
    with pytest.raises(ValueError):
        score([p1], [])


def test_jsonl_round_trip(tmp_path) -> None:
    prompts = build_prompts(seed=2, per_type=2)
    path = tmp_path / "sub" / "prompts.jsonl"
    write_jsonl(prompts, path)
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(prompts)
    assert read_prompts(path) == prompts
