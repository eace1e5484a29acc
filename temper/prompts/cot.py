"""Zero-shot chain of thought as Kojima et al. (2022, "Large Language Models are Zero-Shot Reasoners") do it.

Pass 1 (reasoning):  "Q: {question}\\nA: Let's think step by step."  -> the model writes its reasoning Z.
Pass 2 (answer):     pass 1's prompt + Z + " " + a task-specific trigger, e.g. "Therefore, the answer (arabic
                     numerals) is"  -> a short answer, which the task's parser reads (the first number or letter,
                     as Kojima's answer cleansing does for zero-shot CoT).

The runner batches each pass into one `LLM.generate` call. Both passes are greedy by default, as in the paper.
NOTE: Kojima et al. generate up to 128 reasoning tokens with no stop string; small models run on into a new
"Q:" of their own, so we stop there by default (`stop=()` restores the paper's setting).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from temper.engine.sampling_params import SamplingParams
from temper.prompts.answers import parse_choice, parse_number

REASONING_TRIGGER = "Let's think step by step."


@dataclass(frozen=True)
class CoTTask:
    """How a task's answer is asked for and read."""

    answer_trigger: str
    parse: Callable[[str], str | None]


def _parse_yes_no(text: str) -> str | None:
    words = [w.strip(".,!:;\"'()").lower() for w in text.split()]
    return next((w for w in words if w in ("yes", "no")), None)


# the triggers of Kojima et al.'s code (main.py, `direct_answer_trigger`)
TASKS = {
    "arithmetic": CoTTask("Therefore, the answer (arabic numerals) is", lambda t: parse_number(t, pick="first")),
    "multiple_choice": CoTTask("Therefore, among A through E, the answer is", lambda t: parse_choice(t, "ABCDE")),
    "yes_no": CoTTask("Therefore, the answer (Yes or No) is", _parse_yes_no),
}


def reasoning_prompt(question: str) -> str:
    """Pass 1: the question, then "A:" and the reasoning trigger."""
    return f"Q: {question}\nA: {REASONING_TRIGGER}"


def answer_prompt(question: str, reasoning: str, answer_trigger: str) -> str:
    """Pass 2: pass 1's prompt, the generated reasoning as it came, then the answer trigger."""
    return f"{reasoning_prompt(question)}{reasoning} {answer_trigger}"


@dataclass
class CoTResult:
    question: str
    reasoning_prompt: str
    reasoning: str
    answer_prompt: str
    answer_text: str
    answer: str | None
    num_prompt_tokens: int  # both passes
    num_generated_tokens: int  # both passes
    num_cached_tokens: int = 0  # prompt tokens of both passes served from the prefix cache
    finish_reasons: tuple[str | None, str | None] = field(default=(None, None))


def zero_shot_cot(llm, questions: Sequence[str], task: str | CoTTask = "arithmetic", max_reasoning_tokens: int = 128,
                  max_answer_tokens: int = 32, stop: tuple[str, ...] = ("\nQ:",),
                  params: SamplingParams | None = None) -> list[CoTResult]:
    """Run both passes for every question: all reasoning prompts in one engine call, then all answer prompts.

    Args:
        llm: a temper.engine.llm.LLM (anything with its `generate`).
        task: a key of TASKS or a CoTTask with its own trigger and parser.
        params: the sampling of pass 1 (default greedy); pass 2 is always greedy with `max_answer_tokens`.
    """
    if isinstance(task, str):
        if task not in TASKS:
            raise ValueError(f"unknown CoT task {task!r}; known: {sorted(TASKS)}")
        task = TASKS[task]
    first = params or SamplingParams(temperature=0.0, max_tokens=max_reasoning_tokens, stop=stop)
    prompts1 = [reasoning_prompt(q) for q in questions]
    outs1 = llm.generate(prompts1, first, use_tqdm=False)
    reasonings = [o.outputs[0].text for o in outs1]
    prompts2 = [answer_prompt(q, z, task.answer_trigger) for q, z in zip(questions, reasonings)]
    second = SamplingParams(temperature=0.0, max_tokens=max_answer_tokens, stop=stop)
    outs2 = llm.generate(prompts2, second, use_tqdm=False)
    results = []
    for q, p1, o1, p2, o2 in zip(questions, prompts1, outs1, prompts2, outs2):
        text = o2.outputs[0].text
        results.append(CoTResult(
            question=q, reasoning_prompt=p1, reasoning=o1.outputs[0].text, answer_prompt=p2, answer_text=text,
            answer=task.parse(text),
            num_prompt_tokens=len(o1.prompt_token_ids) + len(o2.prompt_token_ids),
            num_generated_tokens=o1.num_generated_tokens + o2.num_generated_tokens,
            num_cached_tokens=o1.num_cached_tokens + o2.num_cached_tokens,
            finish_reasons=(o1.outputs[0].finish_reason, o2.outputs[0].finish_reason)))
    return results
