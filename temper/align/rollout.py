"""Rollouts for PPO and GRPO: the engine generates with the live policy weights, and rewards score the replies.

The engine is built around the policy module itself (no copy, no weight sync): projections stay unfused so the
optimizer keeps seeing the same parameter tensors, and a fresh engine per rollout keeps its prefix cache from
serving keys computed with older weights. The G samples of a prompt share its prefill through prefix caching
and copy-on-write forks (`SamplingParams.n`).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from temper.engine.config import EngineConfig
from temper.engine.llm_engine import LLMEngine
from temper.engine.sampling_params import SamplingParams
from temper.models import CausalLM
from temper.tokenizer import Tokenizer


@dataclass
class Completion:
    """One sampled reply."""

    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (ended its turn) or "length" (ran out of tokens)

    @property
    def ended_turn(self) -> bool:
        return self.finish_reason == "stop"


class RewardFn(Protocol):
    """Scores the completions of one prompt record (a `PromptRecord`, its `extra` keys included)."""

    def __call__(self, record: Any, completions: Sequence[Completion]) -> list[float]: ...


@torch.no_grad()
def generate(model: CausalLM, tokenizer: Tokenizer, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams],
             kv_cache_memory: int = 256 * 2**20, max_model_len: int | None = None) -> list[list[Completion]]:
    """Sample `params[i].n` completions for each prompt with the engine, on the model's current weights."""
    was_training = model.training
    engine = LLMEngine(model, tokenizer, EngineConfig(kv_cache_memory=kv_cache_memory, fuse_projections=False,
                                                      max_model_len=max_model_len, max_num_seqs=256))
    try:
        ids = [engine.add_request(list(p), sp) for p, sp in zip(prompts, params)]
        done = {}
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished:
                    done[out.request_id] = out
    finally:
        model.train(was_training)
    return [[Completion(list(c.token_ids), c.text, c.finish_reason or "length") for c in done[i].outputs]
            for i in ids]


def greedy_eval(model: CausalLM, tokenizer: Tokenizer, records: Sequence[Any], prompt_ids: Sequence[Sequence[int]],
                reward_fn: RewardFn, max_new_tokens: int, kv_cache_memory: int, max_model_len: int | None
                ) -> dict[str, float]:
    """Greedy replies to held-out prompt records: mean reward and the share that end their turn (PPO and GRPO)."""
    if not records:
        return {}
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    outs = generate(model, tokenizer, prompt_ids, [params] * len(prompt_ids), kv_cache_memory, max_model_len)
    rewards = [reward_fn(r, o)[0] for r, o in zip(records, outs)]
    return {"eval_reward": sum(rewards) / len(rewards),
            "eval_ended_turn": sum(o[0].ended_turn for o in outs) / len(outs)}


def load_reward(spec: str | Callable, tokenizer: Tokenizer | None = None, device: str | torch.device = "cpu") -> RewardFn:
    """A reward function from a recipe's `reward` setting.

    - "verifiable": the verifiable-instruction checkers (`temper.align.verifiable`), for prompt records that
      carry their instruction ids and parameters, plus a bonus for ending the turn.
    - "reward-model:FOLDER": a reward model trained by `temper align rm`.
    - "package.module:function": any importable callable with the `RewardFn` signature (imported, never eval'd).
    """
    if callable(spec):
        return spec
    if spec == "verifiable":
        from temper.align.rewards import VerifiableReward

        return VerifiableReward()
    if spec.startswith("reward-model:"):
        from temper.align.reward import RewardModel

        rm = RewardModel.load(spec.split(":", 1)[1], device=device)
        return rm.reward_fn(tokenizer or rm.tokenizer)
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"reward {spec!r} is not 'verifiable', 'reward-model:FOLDER' or 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"reward {spec!r}: cannot import {name} from {module}: {e}") from e
    if not callable(fn):
        raise ValueError(f"reward {spec!r} is not callable")
    return fn
