"""Self-consistency (Wang et al., 2022): sample several reasoning paths, extract each answer, take the majority.

All n paths of a question are one engine request (`SamplingParams(n=n)`): the prompt is prefilled once and the
paths share its KV blocks, instead of n requests that each prefill it (or hit the prefix cache). The agreement
ratio, majority count / n, is a confidence signal: a cascade can escalate a question its small model is unsure of.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from temper.engine.sampling_params import SamplingParams
from temper.prompts.answers import parse_number


@dataclass(frozen=True)
class Vote:
    answer: str | None  # the majority answer; None when no path gave a parsable answer
    count: int  # paths that gave it
    num_paths: int  # all paths, unparsable ones included
    tied: tuple[str, ...]  # every answer with the top count, in order of first occurrence (1 entry: no tie)

    @property
    def agreement(self) -> float:
        """Majority count / number of paths: unparsable paths count against the confidence."""
        return self.count / self.num_paths if self.num_paths else 0.0

    @property
    def is_tie(self) -> bool:
        return len(self.tied) > 1


def majority_vote(answers: Sequence[str | None]) -> Vote:
    """The most common non-None answer; a tie goes to the answer that occurred first, and is reported."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return Vote(None, 0, len(answers), ())
    top = max(counts.values())
    # NOTE: Counter keeps insertion order, i.e. the order of first occurrence, which makes the tie-break deterministic
    tied = tuple(a for a, c in counts.items() if c == top)
    return Vote(tied[0], top, len(answers), tied)


@dataclass
class SelfConsistencyResult:
    answer: str | None
    agreement: float  # majority count / n
    answers: list[str | None]  # per path, in sampling order
    texts: list[str]  # the reasoning paths
    tied: tuple[str, ...]  # answers sharing the top count; more than one means the tie-break decided
    num_prompt_tokens: int  # the prompt's tokens, prefilled once for all paths
    num_generated_tokens: int  # over all paths
    num_cached_tokens: int  # prompt tokens served from the prefix cache


def self_consistency(llm, prompts: Sequence[str] | str, n: int = 5, temperature: float = 0.7, top_k: int = 40,
                     seed: int | None = 0, max_tokens: int = 256, stop: tuple[str, ...] = ("\nQ:",),
                     parse: Callable[[str], str | None] = parse_number) -> list[SelfConsistencyResult]:
    """Sample n paths per prompt (one engine request each, all in one `generate` call) and majority-vote them.

    Args:
        prompts: reasoning prompts, e.g. `cot.reasoning_prompt(q)` or a few-shot CoT prompt; one string is one prompt.
        temperature, top_k: Wang et al. sample with T = 0.5-0.7 and top-k 40.
        seed: makes the paths reproducible (each path draws from its own generator seeded by (seed, index)).
        parse: reads an answer from a path; the default takes its last number.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    params = SamplingParams(n=n, temperature=temperature, top_k=top_k, seed=seed, max_tokens=max_tokens, stop=stop)
    results = []
    for out in llm.generate(list(prompts), params, use_tqdm=False):
        texts = [c.text for c in out.outputs]
        answers = [parse(t) for t in texts]
        vote = majority_vote(answers)
        results.append(SelfConsistencyResult(
            answer=vote.answer, agreement=vote.agreement, answers=answers, texts=texts, tied=vote.tied,
            num_prompt_tokens=len(out.prompt_token_ids), num_generated_tokens=out.num_generated_tokens,
            num_cached_tokens=out.num_cached_tokens))
    return results
