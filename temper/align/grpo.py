"""GRPO (Shao et al. 2024): sample a group of replies per prompt, score them, and push up the ones that beat
their group's mean. No critic: the group is the baseline.

Each optimizer step takes `batch_size * grad_accum * world_size` prompts; before the step the engine samples
`group_size` replies for each with the live weights, the reward function scores them, and the advantages are
the group-normalized rewards. One gradient step per rollout (`num_iterations` = 1 in TRL's terms), so the
probability ratio is 1 in value and the clip only matters for its gradient; the KL term (k3) keeps the policy
near the reference, which is the base model under the LoRA adapters (no copy) or a frozen copy otherwise.
"""
from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from temper.align.batching import Batch, collate, completion_rows, encode_prompt
from temper.align.lora import adapters_disabled, has_lora
from temper.align.losses import grpo_advantages, grpo_loss
from temper.align.policy import token_logps
from temper.align.rollout import Completion, RewardFn, generate, greedy_eval, load_reward
from temper.align.sft import pad_id
from temper.align.trainer import TrainConfig, Trainer
from temper.engine.sampling_params import SamplingParams
from temper.models import CausalLM
from temper.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class GRPOConfig(TrainConfig):
    """batch_size counts prompts per micro-batch; each brings group_size completions."""

    group_size: int = 4
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    beta: float = 0.04  # weight of the KL penalty to the reference (0: no reference pass at all)
    clip: float = 0.2
    scale_rewards: bool = True  # divide by the group's std (False: Dr. GRPO)
    aggregation: str = "sequence"  # "sequence" (the paper) or "token" (DAPO)
    reward: str = "verifiable"  # see temper.align.rollout.load_reward
    kv_cache_memory: int = 256 * 2**20  # bytes of KV cache for the rollout engine
    eval_max_prompts: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (the group is the baseline), got {self.group_size}")
        if self.aggregation not in ("sequence", "token"):
            raise ValueError(f"aggregation must be 'sequence' or 'token', got {self.aggregation!r}")


def prompt_messages(record: Any) -> list[dict[str, str]]:
    """The prompt of a `PromptRecord`, a {"prompt": ...} dict, a string or a message list."""
    if hasattr(record, "prompt_messages"):
        return list(record.prompt_messages)
    if isinstance(record, dict):
        record = record["prompt"]
    if isinstance(record, str):
        return [{"role": "user", "content": record}]
    return list(record)


def sample_seed(seed: int, step: int, item: int) -> int:
    """A sampling seed that depends only on (run seed, step, prompt): resumed runs sample the same replies."""
    return int.from_bytes(hashlib.blake2b(f"{seed}/{step}/{item}".encode(), digest_size=4).digest(), "little")


@dataclass
class Group:
    completions: list[Completion]
    rewards: list[float]
    advantages: torch.Tensor


@dataclass
class GRPOMicro:
    batch: Batch
    advantages: torch.Tensor  # (rows,)
    ref_logps: torch.Tensor | None
    rewards: list[float]
    ended: list[bool]


class GRPOTrainer(Trainer):
    name = "grpo"

    def __init__(self, model: CausalLM, tokenizer: Tokenizer, config: GRPOConfig, prompts: Sequence[Any],
                 reward_fn: RewardFn | None = None, eval_prompts: Sequence[Any] | None = None,
                 ref_model: CausalLM | None = None):
        super().__init__(model, tokenizer, config)
        self.config: GRPOConfig = config
        self.records = list(prompts)
        self.prompt_ids = [encode_prompt(tokenizer, prompt_messages(r)) for r in self.records]
        self.eval_records = list(eval_prompts or [])[: config.eval_max_prompts]
        self.reward_fn = reward_fn or load_reward(config.reward, tokenizer, self.device)
        self.pad_id = pad_id(tokenizer)
        self.ref_model = None
        if config.beta and not has_lora(self.model):
            self.ref_model = (ref_model or copy.deepcopy(self.model)).to(self.device).eval().requires_grad_(False)
        self.groups: dict[int, Group] = {}

    def num_items(self) -> int:
        return len(self.records)

    def sampling(self, step: int, item: int) -> SamplingParams:
        c = self.config
        return SamplingParams(n=c.group_size, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k,
                              max_tokens=c.max_new_tokens, seed=sample_seed(c.seed, step, item))

    def before_step(self, step: int, items: list[int]) -> None:
        mine = [i for chunk in self.rank_micro_batches(items) for i in chunk]
        outs = generate(self.model, self.tokenizer, [self.prompt_ids[i] for i in mine],
                        [self.sampling(step, i) for i in mine], self.config.kv_cache_memory,
                        self.config.max_len)
        self.groups = {}
        for item, comps in zip(mine, outs):
            rewards = [float(r) for r in self.reward_fn(self.records[item], comps)]
            if len(rewards) != len(comps):
                raise ValueError(f"the reward function returned {len(rewards)} scores for {len(comps)} completions")
            adv = grpo_advantages(torch.tensor(rewards), self.config.group_size, self.config.scale_rewards)
            self.groups[item] = Group(comps, rewards, adv)

    def reference_logps(self, batch: Batch) -> torch.Tensor | None:
        if not self.config.beta:
            return None
        with torch.no_grad(), self._autocast():
            if self.ref_model is not None:
                return token_logps(self.ref_model, batch).logps
            with adapters_disabled(self.model):
                return token_logps(self.model, batch).logps

    def micro_batch(self, items: list[int]) -> GRPOMicro:
        rows, adv, rewards, ended = [], [], [], []
        for i in items:
            g = self.groups[i]
            rows += completion_rows(self.prompt_ids[i], [c.token_ids for c in g.completions])
            adv.append(g.advantages)
            rewards += g.rewards
            ended += [c.ended_turn for c in g.completions]
        batch = collate(rows, self.pad_id).to(self.device)
        return GRPOMicro(batch, torch.cat(adv).to(self.device), self.reference_logps(batch), rewards, ended)

    def weight(self, micro: GRPOMicro) -> float:
        if self.config.aggregation == "token":
            return float(micro.batch.num_targets)
        return float(len(micro.rewards))

    def loss(self, micro: GRPOMicro, normalizer: float) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        out = token_logps(self.model, micro.batch)
        mask = micro.batch.target_mask
        loss, stats = grpo_loss(out.logps, out.logps.detach(), micro.ref_logps, micro.advantages, mask, c.clip,
                                c.beta, c.aggregation, normalizer)
        n = len(micro.rewards)
        per = float(micro.batch.num_targets) if c.aggregation == "token" else n
        lengths = mask.sum(1).float()
        return loss, {"loss_sum": float(loss.detach()) * normalizer, "kl_sum": stats["kl"] * per,
                      "clipfrac_sum": stats["clipfrac"] * per, "completions": float(n),
                      "reward_total": float(sum(micro.rewards)), "ended_total": float(sum(micro.ended)),
                      "length_total": float(lengths.sum()), "tokens": float((micro.batch.segments >= 0).sum())}

    def summarize(self, totals: dict[str, float], normalizer: float) -> dict[str, float]:
        out = super().summarize({k: v for k, v in totals.items() if not k.endswith("_total")}, normalizer)
        n = max(totals.get("completions", 1.0), 1.0)
        out["reward"] = totals["reward_total"] / n
        out["ended_turn"] = totals["ended_total"] / n
        out["completion_len"] = totals["length_total"] / n
        return out

    def evaluate(self) -> dict[str, float]:
        """Greedy replies to the eval prompts: mean reward and the share that end their turn."""
        ids = [encode_prompt(self.tokenizer, prompt_messages(r)) for r in self.eval_records]
        return greedy_eval(self.model, self.tokenizer, self.eval_records, ids, self.reward_fn,
                           self.config.max_new_tokens, self.config.kv_cache_memory, self.config.max_len)
