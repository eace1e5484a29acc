"""Compare prompting strategies on a data set of (question, numeric answer): accuracy, tokens and time per question.

Each strategy is a function (llm, questions, max_tokens) -> predictions that batches its questions into as few
engine calls as it can; the registry `STRATEGIES` is what `temper prompts eval --strategies` chooses from.
"""
from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from temper.engine.sampling_params import SamplingParams
from temper.prompts.answers import parse_number
from temper.prompts.cot import reasoning_prompt, zero_shot_cot
from temper.prompts.self_consistency import self_consistency
from temper.stats import wilson_interval

DIRECT_TRIGGER = "The answer (arabic numerals) is"


@dataclass(frozen=True)
class Item:
    question: str
    answer: str  # canonical number (answers.canonical_number)
    solution: str = ""  # a worked solution, when the data has one (GSM8K's, without its <<calculator>> notes)


@dataclass(frozen=True)
class Prediction:
    answer: str | None
    num_prompt_tokens: int
    num_generated_tokens: int


@dataclass(frozen=True)
class StrategyReport:
    strategy: str
    num_items: int
    accuracy: float
    ci_low: float  # Wilson 95% interval
    ci_high: float
    prompt_tokens_per_item: float
    generated_tokens_per_item: float
    seconds_per_item: float


def direct(llm, questions: Sequence[str], max_tokens: int) -> list[Prediction]:
    """The question and an answer trigger, greedy, no reasoning: the baseline the other strategies must beat."""
    params = SamplingParams(temperature=0.0, max_tokens=min(max_tokens, 16), stop=("\n",))
    outs = llm.generate([f"Q: {q}\nA: {DIRECT_TRIGGER}" for q in questions], params, use_tqdm=False)
    return [Prediction(parse_number(o.outputs[0].text, pick="first"), len(o.prompt_token_ids), o.num_generated_tokens)
            for o in outs]


def cot(llm, questions: Sequence[str], max_tokens: int) -> list[Prediction]:
    results = zero_shot_cot(llm, questions, max_reasoning_tokens=max_tokens)
    return [Prediction(r.answer, r.num_prompt_tokens, r.num_generated_tokens) for r in results]


def self_consistent(llm, questions: Sequence[str], max_tokens: int, n: int) -> list[Prediction]:
    results = self_consistency(llm, [reasoning_prompt(q) for q in questions], n=n, max_tokens=max_tokens)
    return [Prediction(r.answer, r.num_prompt_tokens, r.num_generated_tokens) for r in results]


def fewshot_prompt(shots: Sequence[Item], question: str, reasoning: bool) -> str:
    """Worked examples as Wei et al.'s few-shot chain of thought writes them ("Q: ... A: <steps> The answer is N."),
    or their answers only, then the question; the examples are the same for every question (one cached prefix)."""
    blocks = [f"Q: {s.question}\nA: {s.solution + ' ' if reasoning and s.solution else ''}The answer is {s.answer}.\n\n"
              for s in shots]
    return "".join(blocks) + f"Q: {question}\nA:" + ("" if reasoning else " The answer is")


def fewshot(llm, questions: Sequence[str], max_tokens: int, shots: Sequence[Item] = (),
            reasoning: bool = False) -> list[Prediction]:
    """Few-shot (answers only) or few-shot chain of thought, greedy; the answer is the number after "The answer
    is" when the reply says it, else its last number."""
    if not shots:
        raise ValueError("few-shot strategies need examples: `temper prompts eval --shots K` takes the data's first K")
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens if reasoning else min(max_tokens, 16),
                            stop=("\nQ:", "\n\n") if reasoning else ("\n",))
    outs = llm.generate([fewshot_prompt(shots, q, reasoning) for q in questions], params, use_tqdm=False)
    preds = []
    for o in outs:
        text = o.outputs[0].text
        _, said, tail = text.partition("The answer is")
        answer = parse_number(tail, pick="first") if said else parse_number(text, pick="first" if not reasoning
                                                                            else "last")
        preds.append(Prediction(answer, len(o.prompt_token_ids), o.num_generated_tokens))
    return preds


STRATEGIES: dict[str, Callable[..., list[Prediction]]] = {
    "direct": direct, "fewshot": fewshot, "cot": cot, "fewshot-cot": partial(fewshot, reasoning=True),
    "sc5": partial(self_consistent, n=5), "sc10": partial(self_consistent, n=10)}
FEWSHOT = frozenset({"fewshot", "fewshot-cot"})


def load_items(path: str | os.PathLike, limit: int | None = None) -> list[Item]:
    """JSONL rows with `question` and `answer` (a number, or a GSM8K solution ending in "#### N")."""
    items = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        if "question" not in row or "answer" not in row:
            raise ValueError(f"{path}:{i + 1}: a row needs `question` and `answer`")
        answer = parse_number(str(row["answer"]))
        if answer is None:
            raise ValueError(f"{path}:{i + 1}: no number in the answer {row['answer']!r}")
        solution = str(row["answer"]).split("####")[0] if "####" in str(row["answer"]) else ""
        solution = " ".join(re.sub(r"<<[^>]*>>", "", solution).split())
        items.append(Item(row["question"], answer, solution))
        if limit is not None and len(items) == limit:
            break
    return items


def evaluate(llm, items: Sequence[Item], strategies: Sequence[str], max_tokens: int = 256,
             shots: Sequence[Item] = ()) -> list[StrategyReport]:
    """Run each strategy over all items and score exact match of the canonical number (`shots`: the examples of
    the few-shot strategies, never among `items`)."""
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; known: {sorted(STRATEGIES)}")
    questions, n = [it.question for it in items], len(items)
    reports = []
    for name in strategies:
        start = time.perf_counter()
        extra = {"shots": shots} if name in FEWSHOT else {}
        predictions = STRATEGIES[name](llm, questions, max_tokens, **extra)
        seconds = time.perf_counter() - start
        correct = sum(p.answer == it.answer for p, it in zip(predictions, items))
        low, high = wilson_interval(correct, n)
        reports.append(StrategyReport(
            name, n, correct / n if n else 0.0, low, high, sum(p.num_prompt_tokens for p in predictions) / max(n, 1),
            sum(p.num_generated_tokens for p in predictions) / max(n, 1), seconds / max(n, 1)))
    return reports


def format_table(reports: Sequence[StrategyReport], price_per_hour: float = 0.0) -> str:
    """A Markdown table; with `price_per_hour` (USD of the machine), also the cost of a question at the measured
    time (self-hosted: the machine is paid by the hour, so a question costs its seconds)."""
    cost = price_per_hour > 0
    head = "| strategy | n | accuracy | 95% CI | prompt tok/q | generated tok/q | s/q |" + (" USD/1k q |" if cost else "")
    lines = [head, "|---" * (8 if cost else 7) + "|"]
    for r in reports:
        line = (f"| {r.strategy} | {r.num_items} | {r.accuracy:.1%} | [{r.ci_low:.1%}, {r.ci_high:.1%}] | "
                f"{r.prompt_tokens_per_item:.0f} | {r.generated_tokens_per_item:.0f} | {r.seconds_per_item:.2f} |")
        if cost:
            line += f" {r.seconds_per_item * price_per_hour / 3600 * 1000:.4f} |"
        lines.append(line)
    return "\n".join(lines)
