"""Reward functions built on the verifiable-instruction checkers (temper.align.verifiable).

A prompt record for them carries the instruction ids and parameters in `extra`, so the reward never has to parse
the prompt text. The reward of a reply is the share of its instructions it follows, plus `end_bonus` when it ends
its turn (a base model's habit is to ramble on into invented Q/A pairs; ending properly is half the lesson).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temper.align import verifiable as V
from temper.align.data import PromptRecord
from temper.align.rollout import Completion


def prompt_record(prompt: V.Prompt) -> PromptRecord:
    """A verifiable prompt as a prompt record (the user message is its text)."""
    return PromptRecord([{"role": "user", "content": prompt.text}],
                        {"key": prompt.key, "task": prompt.task, "instruction_ids": list(prompt.instruction_ids),
                         "params": [dict(p) for p in prompt.params]})


def verifiable_prompt(record: Any) -> V.Prompt:
    """The verifiable prompt behind a record (a `PromptRecord` from `prompt_record`, or its dict form)."""
    extra = record.extra if hasattr(record, "extra") else record
    messages = record.prompt_messages if hasattr(record, "prompt_messages") else record.get("prompt")
    try:
        text = messages[-1]["content"] if isinstance(messages, list) else str(messages)
        return V.Prompt(extra["key"], extra["task"], list(extra["instruction_ids"]), list(extra["params"]), text)
    except (KeyError, TypeError) as e:
        raise ValueError(f"reward 'verifiable' needs prompt records with key, task, instruction_ids and params "
                         f"(from the verifiable source); this one lacks {e}") from None


class VerifiableReward:
    """Share of instructions followed (strict) plus `end_bonus` if the reply ended its turn."""

    def __init__(self, end_bonus: float = 0.5):
        self.end_bonus = end_bonus

    def __call__(self, record: Any, completions: Sequence[Completion]) -> list[float]:
        prompt = verifiable_prompt(record)
        return [V.reward(prompt, c.text) + (self.end_bonus if c.ended_turn else 0.0) for c in completions]
