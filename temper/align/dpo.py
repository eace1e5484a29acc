"""Direct preference optimization and its variants (`DPO_LOSSES`: sigmoid, ipo, hinge, length_normalized).

The reference log-probs of every pair are computed once, before the first step, and cached in
OUTPUT_DIR/reference_logps.pt (keyed by a hash of the token ids, so a changed dataset recomputes them): the
reference model is never run again, and with LoRA it is the base under the adapters, so it costs no memory.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from temper.align.batching import Batch, Example, Row, collate, encode_completion, unpacked
from temper.align.lora import adapters_disabled, has_lora
from temper.align.losses import DPO_LOSSES, PreferenceLogps, dpo_rewards
from temper.align.policy import sequence_logps, token_logps
from temper.align.sft import pad_id
from temper.align.trainer import TrainConfig, Trainer
from temper.models import CausalLM
from temper.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class DPOConfig(TrainConfig):
    """batch_size counts preference pairs per micro-batch."""

    beta: float = 0.1
    loss_type: str = "sigmoid"  # one of DPO_LOSSES
    label_smoothing: float = 0.0  # sigmoid only: assumed share of flipped labels (conservative DPO)
    eval_batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type not in DPO_LOSSES:
            raise ValueError(f"loss_type must be one of {', '.join(DPO_LOSSES)}, got {self.loss_type!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")


@dataclass
class Pair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    margin: float = 0.0  # a record's `margin` extra key (reward models with the margin loss)

    def rows(self) -> list[Row]:
        p = self.prompt
        return unpacked([Example(p + self.chosen, [False] * len(p) + [True] * len(self.chosen)),
                         Example(p + self.rejected, [False] * len(p) + [True] * len(self.rejected))])


def preference_pairs(tokenizer: Tokenizer, records: Sequence[Any], max_len: int) -> tuple[list[Pair], int]:
    """Tokenized pairs; replies are cut to fit max_len with the prompt, and pairs whose prompt leaves fewer than 8
    tokens for a reply are dropped (the count is returned)."""
    pairs, dropped = [], 0
    for r in records:
        messages = r.prompt_messages if hasattr(r, "prompt_messages") else r["prompt"]
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        chosen, rejected = (r.chosen, r.rejected) if hasattr(r, "chosen") else (r["chosen"], r["rejected"])
        prompt, c = encode_completion(tokenizer, messages, chosen)
        _, rj = encode_completion(tokenizer, messages, rejected)
        room = max_len - len(prompt)
        if room < 8:
            dropped += 1
            continue
        extra = getattr(r, "extra", None) or (r if isinstance(r, dict) else {})
        pairs.append(Pair(prompt, c[:room], rj[:room], float(extra.get("margin", 0.0))))
    return pairs, dropped


def _pairs_hash(pairs: Sequence[Pair]) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(repr((p.prompt, p.chosen, p.rejected)).encode())
    return h.hexdigest()[:16]


@dataclass
class DPOMicro:
    batch: Batch  # rows: chosen, rejected, chosen, rejected, ...
    ref: torch.Tensor  # (pairs, 2) reference log-probs (chosen, rejected)


class DPOTrainer(Trainer):
    name = "dpo"

    def __init__(self, model: CausalLM, tokenizer: Tokenizer, config: DPOConfig, train_data: Sequence[Any],
                 eval_data: Sequence[Any] | None = None, ref_model: CausalLM | None = None):
        super().__init__(model, tokenizer, config)
        self.config: DPOConfig = config
        self.pad_id = pad_id(tokenizer)
        self.pairs, dropped = preference_pairs(tokenizer, train_data, config.max_len)
        self.eval_pairs, eval_dropped = preference_pairs(tokenizer, eval_data or [], config.max_len)
        if not self.pairs:
            raise ValueError("no preference pairs left to train on")
        log.info("DPO (%s, beta %g): %d pairs (%d dropped: prompt too long), %d eval pairs", config.loss_type,
                 config.beta, len(self.pairs), dropped + eval_dropped, len(self.eval_pairs))
        self.ref_model = ref_model
        self.ref = self.reference_logps(self.pairs, "train")
        self.eval_ref = self.reference_logps(self.eval_pairs, "eval") if self.eval_pairs else None

    def reference_logps(self, pairs: list[Pair], split: str) -> torch.Tensor:
        """(pairs, 2) summed reference log-probs, from the cache when it matches these pairs."""
        path = self.output_dir / f"reference_logps_{split}.pt"
        key = _pairs_hash(pairs)
        if path.exists():
            cached = torch.load(path, weights_only=True)
            if cached.get("key") == key:
                log.info("reference log-probs (%s) from %s", split, path)
                return cached["logps"]
        out = torch.empty(len(pairs), 2)
        self.model.eval()
        ctx = adapters_disabled(self.model) if has_lora(self.model) else contextlib.nullcontext()
        with torch.no_grad(), ctx, self._autocast():
            ref = self.ref_model or self.model  # full fine-tuning: the model before its first step
            for start in range(0, len(pairs), self.config.eval_batch_size):
                chunk = pairs[start: start + self.config.eval_batch_size]
                b = collate([row for p in chunk for row in p.rows()], self.pad_id).to(self.device)
                sums, _ = sequence_logps(token_logps(ref, b).logps, b.target_mask)
                out[start: start + len(chunk)] = sums.view(-1, 2).float().cpu()
        self.model.train()
        if self.dist.main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            torch.save({"key": key, "logps": out}, path)
        return out

    def num_items(self) -> int:
        return len(self.pairs)

    def micro_batch(self, items: list[int]) -> DPOMicro:
        rows = [row for i in items for row in self.pairs[i].rows()]
        return DPOMicro(collate(rows, self.pad_id).to(self.device), self.ref[items].to(self.device))

    def weight(self, micro: DPOMicro) -> float:
        return float(micro.ref.shape[0])

    def _logps(self, micro: DPOMicro) -> PreferenceLogps:
        sums, lengths = sequence_logps(token_logps(self.model, micro.batch).logps, micro.batch.target_mask)
        sums, lengths = sums.view(-1, 2), lengths.view(-1, 2)
        return PreferenceLogps(sums[:, 0], sums[:, 1], micro.ref[:, 0], micro.ref[:, 1], lengths[:, 0],
                               lengths[:, 1])

    def _stats(self, p: PreferenceLogps, losses: torch.Tensor) -> dict[str, float]:
        chosen, rejected = dpo_rewards(p, self.config.beta)
        return {"loss_sum": float(losses.detach().sum()), "accuracy_sum": float((chosen > rejected).float().sum()),
                "margin_sum": float((chosen - rejected).sum()), "reward_chosen_sum": float(chosen.sum()),
                "reward_rejected_sum": float(rejected.sum()),
                "logps_chosen_sum": float(p.policy_chosen.detach().sum())}

    def loss(self, micro: DPOMicro, normalizer: float) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        p = self._logps(micro)
        losses = DPO_LOSSES[c.loss_type](p, c.beta, c.label_smoothing)
        stats = self._stats(p, losses)
        stats["tokens"] = float((micro.batch.segments >= 0).sum())
        return losses.sum() / normalizer, stats

    def evaluate(self) -> dict[str, float]:
        """Loss, preference accuracy (implicit reward of chosen > rejected) and margin on the eval pairs."""
        if not self.eval_pairs:
            return {}
        c = self.config
        totals: dict[str, float] = {}
        for start in range(0, len(self.eval_pairs), c.eval_batch_size):
            idx = list(range(start, min(start + c.eval_batch_size, len(self.eval_pairs))))
            rows = [row for i in idx for row in self.eval_pairs[i].rows()]
            micro = DPOMicro(collate(rows, self.pad_id).to(self.device), self.eval_ref[idx].to(self.device))
            p = self._logps(micro)
            for k, v in self._stats(p, DPO_LOSSES[c.loss_type](p, c.beta, c.label_smoothing)).items():
                totals[k] = totals.get(k, 0.0) + v
        n = len(self.eval_pairs)
        return {f"eval_{k[:-4]}": v / n for k, v in totals.items()}


__all__ = ["DPOConfig", "DPOTrainer", "Pair", "preference_pairs"]
