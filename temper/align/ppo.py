"""PPO for RLHF (Ziegler et al. 2019; Ouyang et al. 2022): a policy, a value head, a frozen reference.

Each step: the engine samples replies to `batch_size * grad_accum * world_size` prompts with the live weights;
the reward (a reward model or any callable) scores each reply; every completion token is charged
`kl_coef * (log pi - log ref)`, the score is added on the last token, and GAE turns these into advantages
(whitened) and value targets. Then `ppo_epochs` optimizer steps over the rollout minimize the clipped policy
loss plus `vf_coef` times the clipped value loss. The KL coefficient adapts toward `target_kl`.

The value head sits on the policy's own final hidden states (one trunk, as TRL's PPO did), so the critic costs
one linear layer; the reference is the base under the LoRA adapters (no copy) or a frozen copy otherwise.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from temper.align.batching import Batch, collate, completion_rows, encode_prompt
from temper.align.grpo import prompt_messages, sample_seed
from temper.align.lora import adapters_disabled, has_lora
from temper.align.losses import (
    AdaptiveKLController,
    gae,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    shaped_rewards,
    value_loss,
)
from temper.align.policy import ValueHead, token_logps
from temper.align.rollout import RewardFn, generate, greedy_eval, load_reward
from temper.align.sft import pad_id
from temper.align.trainer import TrainConfig, Trainer
from temper.engine.sampling_params import SamplingParams
from temper.models import CausalLM
from temper.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class PPOConfig(TrainConfig):
    """batch_size counts prompts per micro-batch; each brings samples_per_prompt replies."""

    samples_per_prompt: int = 2
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    ppo_epochs: int = 2  # optimizer steps over each rollout
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    vf_clip: float | None = 0.2
    vf_coef: float = 0.1
    init_kl_coef: float = 0.05
    target_kl: float | None = 6.0  # None: a fixed coefficient
    kl_horizon: int = 10000
    whiten_advantages: bool = True
    reward: str = "verifiable"  # see temper.align.rollout.load_reward
    kv_cache_memory: int = 256 * 2**20
    eval_max_prompts: int = 64


@dataclass
class PPOMicro:
    batch: Batch
    old_logps: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    scores: list[float]
    ended: list[bool]
    kl: torch.Tensor  # per-token k1 KL to the reference


class PPOTrainer(Trainer):
    name = "ppo"

    def __init__(self, model: CausalLM, tokenizer: Tokenizer, config: PPOConfig, prompts: Sequence[Any],
                 reward_fn: RewardFn | None = None, eval_prompts: Sequence[Any] | None = None,
                 ref_model: CausalLM | None = None):
        super().__init__(model, tokenizer, config)
        self.config: PPOConfig = config
        self.records = list(prompts)
        self.prompt_ids = [encode_prompt(tokenizer, prompt_messages(r)) for r in self.records]
        self.eval_records = list(eval_prompts or [])[: config.eval_max_prompts]
        self.reward_fn = reward_fn or load_reward(config.reward, tokenizer, self.device)
        self.value_head = ValueHead(model.config.hidden_size, self.device, model.dtype)
        self.pad_id = pad_id(tokenizer)
        self.ref_model = None
        if not has_lora(self.model):
            self.ref_model = (ref_model or copy.deepcopy(self.model)).to(self.device).eval().requires_grad_(False)
        self.kl_ctl = AdaptiveKLController(config.init_kl_coef, config.target_kl, config.kl_horizon)
        self._micros: list[PPOMicro] = []

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "value_head": self.value_head}

    def extra_state(self) -> dict[str, Any]:
        return {"kl_ctl": self.kl_ctl.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.kl_ctl.load_state_dict(state["kl_ctl"])

    def num_items(self) -> int:
        return len(self.records)

    def _values(self, out, batch: Batch) -> torch.Tensor:
        v = self.value_head(out.hidden)
        return torch.zeros(batch.target_mask.shape, dtype=v.dtype, device=v.device).masked_scatter(batch.target_mask, v)

    def _reference(self, batch: Batch) -> torch.Tensor:
        if self.ref_model is not None:
            return token_logps(self.ref_model, batch).logps
        with adapters_disabled(self.model):
            return token_logps(self.model, batch).logps

    def before_step(self, step: int, items: list[int]) -> None:
        """Sample, score, and compute old log-probs, values, KL-shaped rewards and GAE for this rank's prompts."""
        c = self.config
        chunks = self.rank_micro_batches(items)
        mine = [i for chunk in chunks for i in chunk]
        params = [SamplingParams(n=c.samples_per_prompt, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k,
                                 max_tokens=c.max_new_tokens, seed=sample_seed(c.seed, step, i)) for i in mine]
        outs = dict(zip(mine, generate(self.model, self.tokenizer, [self.prompt_ids[i] for i in mine], params,
                                       c.kv_cache_memory, c.max_len)))
        self.model.eval()
        micros = []
        with torch.no_grad(), self._autocast():
            for chunk in chunks:
                rows, scores, ended = [], [], []
                for i in chunk:
                    comps = outs[i]
                    rows += completion_rows(self.prompt_ids[i], [x.token_ids for x in comps])
                    scores += [float(s) for s in self.reward_fn(self.records[i], comps)]
                    ended += [x.ended_turn for x in comps]
                batch = collate(rows, self.pad_id).to(self.device)
                out = token_logps(self.model, batch)
                values = self._values(out, batch)
                ref = self._reference(batch)
                mask = batch.target_mask
                rewards, kl = shaped_rewards(torch.tensor(scores, device=self.device), out.logps, ref, mask,
                                             self.kl_ctl.value)
                adv, ret = gae(rewards, values, mask, c.gamma, c.lam)
                micros.append(PPOMicro(batch, out.logps, values, adv, ret, scores, ended, kl))
        if c.whiten_advantages:  # over every token of this rank's rollout
            width = max(m.advantages.shape[1] for m in micros)
            pad = [torch.nn.functional.pad(m.advantages, (0, width - m.advantages.shape[1])) for m in micros]
            masks = [torch.nn.functional.pad(m.batch.target_mask, (0, width - m.advantages.shape[1])) for m in micros]
            white = masked_whiten(torch.cat(pad), torch.cat(masks))
            start = 0
            for m in micros:
                n = m.advantages.shape[0]
                m.advantages = white[start: start + n, : m.advantages.shape[1]] * m.batch.target_mask
                start += n
        self.model.train()
        self._micros = micros

    def train_step(self, step: int, wrapped: nn.Module) -> dict[str, float]:
        items = self.step_items(step)
        self.before_step(step, items)
        metrics: dict[str, float] = {}
        for _ in range(self.config.ppo_epochs):
            metrics = self.optimize(step, self._micros, wrapped)
        n = sum(len(m.scores) for m in self._micros)
        tokens = sum(float(m.batch.target_mask.sum()) for m in self._micros)
        kl = sum(float((m.kl).sum()) for m in self._micros)
        totals = self._all_reduce([sum(sum(m.scores) for m in self._micros), n, tokens, kl,
                                   sum(sum(m.ended) for m in self._micros)])
        metrics.update(reward=totals[0] / totals[1], completion_len=totals[2] / totals[1],
                       kl=totals[3] / totals[1], ended_turn=totals[4] / totals[1], kl_coef=self.kl_ctl.value)
        self.kl_ctl.update(metrics["kl"], int(totals[1]))
        return metrics

    def weight(self, micro: PPOMicro) -> float:
        return float(micro.batch.target_mask.sum())

    def loss(self, micro: PPOMicro, normalizer: float) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        mask = micro.batch.target_mask
        out = token_logps(self.model, micro.batch, entropy=True)
        values = self._values(out, micro.batch)
        pg, pg_stats = ppo_policy_loss(out.logps, micro.old_logps, micro.advantages, mask, c.clip)
        vf, vf_stats = value_loss(values, micro.old_values, micro.returns, mask, c.vf_clip)
        share = float(mask.sum()) / normalizer  # token-weighted mean over the whole step
        loss = (pg + c.vf_coef * vf) * share
        return loss, {"loss_sum": float(loss.detach()) * normalizer, "policy_loss_sum": float(pg.detach()) * share
                      * normalizer, "value_loss_sum": float(vf.detach()) * share * normalizer,
                      "entropy_sum": float(masked_mean(out.entropy, mask)) * share * normalizer,
                      "clipfrac_sum": pg_stats["clipfrac"] * share * normalizer,
                      "approx_kl_sum": pg_stats["approx_kl"] * share * normalizer,
                      "vf_clipfrac_sum": vf_stats["vf_clipfrac"] * share * normalizer,
                      "tokens": float((micro.batch.segments >= 0).sum())}

    def evaluate(self) -> dict[str, float]:
        """Greedy replies to the eval prompts: mean reward and the share that end their turn."""
        ids = [encode_prompt(self.tokenizer, prompt_messages(r)) for r in self.eval_records]
        return greedy_eval(self.model, self.tokenizer, self.eval_records, ids, self.reward_fn,
                           self.config.max_new_tokens, self.config.kv_cache_memory, self.config.max_len)
