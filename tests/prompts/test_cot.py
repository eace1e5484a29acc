"""Zero-shot CoT: the two passes' prompts are Kojima et al.'s, each pass is one batched engine call."""
from __future__ import annotations

import pytest

from temper.prompts.cot import TASKS, CoTTask, answer_prompt, reasoning_prompt, zero_shot_cot

QUESTIONS = [
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
     "How many clips did Natalia sell altogether in April and May?"),
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
]


def test_prompt_builders():
    assert reasoning_prompt("What is 2+3?") == "Q: What is 2+3?\nA: Let's think step by step."
    assert answer_prompt("What is 2+3?", " 2 plus 3 is 5.", TASKS["arithmetic"].answer_trigger) == (
        "Q: What is 2+3?\nA: Let's think step by step. 2 plus 3 is 5. Therefore, the answer (arabic numerals) is")
    assert TASKS["multiple_choice"].answer_trigger == "Therefore, among A through E, the answer is"
    assert TASKS["arithmetic"].parse(" 5.\n\nQ: 7 more") == "5"
    assert TASKS["yes_no"].parse(" Yes, because") == "yes"


class Recorder:
    """Wraps the engine and records each generate call's prompts."""

    def __init__(self, llm):
        self.llm, self.calls = llm, []

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((list(prompts), params))
        return self.llm.generate(prompts, params, use_tqdm=use_tqdm)


def test_two_passes_on_gsm8k_questions(llm):
    recorder = Recorder(llm)
    results = zero_shot_cot(recorder, QUESTIONS, max_reasoning_tokens=32, max_answer_tokens=8)
    assert len(recorder.calls) == 2  # all reasoning prompts in one call, then all answer prompts
    (prompts1, params1), (prompts2, params2) = recorder.calls
    assert prompts1 == [f"Q: {q}\nA: Let's think step by step." for q in QUESTIONS]
    assert params1.is_greedy and params1.max_tokens == 32 and params2.is_greedy and params2.max_tokens == 8
    for result, p1, p2 in zip(results, prompts1, prompts2):
        assert result.reasoning_prompt == p1 and result.answer_prompt == p2
        assert result.reasoning  # the model wrote something
        assert p2 == f"{p1}{result.reasoning} Therefore, the answer (arabic numerals) is"
        assert result.answer == TASKS["arithmetic"].parse(result.answer_text)
        assert result.num_generated_tokens > 0 and result.num_prompt_tokens > len(llm.encode(p1))


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown CoT task 'math'"):
        zero_shot_cot(None, ["q"], task="math")
    assert CoTTask("The answer is", str.strip).parse(" x ") == "x"
