"""Supervised fine-tuning (instruction tuning): next-token loss on the assistant replies only."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from temper.align.batching import Batch, Row, collate, encode_chat, pack, truncate, unpacked
from temper.align.losses import sft_loss
from temper.align.policy import token_logps
from temper.align.trainer import TrainConfig, Trainer, chunks
from temper.models import CausalLM
from temper.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def messages_of(record: Any) -> list[dict[str, str]]:
    """The chat messages of a record: a `ChatRecord`, a {"messages": [...]} dict or a list of messages."""
    if hasattr(record, "messages"):
        return list(record.messages)
    if isinstance(record, dict) and "messages" in record:
        return list(record["messages"])
    if isinstance(record, list):
        return record
    raise TypeError(f"not a chat record: {type(record).__name__}")


def pad_id(tokenizer: Tokenizer) -> int:
    for name in ("pad_token", "eos_token"):
        tok = tokenizer.special_tokens.get(name)
        if tok is not None and tokenizer.token_to_id(tok) is not None:
            return tokenizer.token_to_id(tok)
    return 0


def chat_rows(tokenizer: Tokenizer, records: Sequence[Any], max_len: int, packing: bool) -> tuple[list[Row], int]:
    """Tokenized rows (packed or one example each) and how many examples were dropped as too long."""
    examples, dropped = [], 0
    for record in records:
        ex = truncate(encode_chat(tokenizer, messages_of(record)), max_len)
        if ex is None:
            dropped += 1
        else:
            examples.append(ex)
    return (pack(examples, max_len) if packing else unpacked(examples)), dropped


@dataclass
class SFTConfig(TrainConfig):
    packing: bool = True  # several short examples per row, attention kept within each
    eval_batch_size: int = 8


class SFTTrainer(Trainer):
    name = "sft"

    def __init__(self, model: CausalLM, tokenizer: Tokenizer, config: SFTConfig, train_data: Sequence[Any],
                 eval_data: Sequence[Any] | None = None):
        super().__init__(model, tokenizer, config)
        self.pad_id = pad_id(tokenizer)
        self.rows, dropped = chat_rows(tokenizer, train_data, config.max_len, config.packing)
        if not self.rows:
            raise ValueError("no training examples left (every one had no assistant reply within max_len)")
        self.eval_rows, eval_dropped = chat_rows(tokenizer, eval_data or [], config.max_len, False)
        n_targets = sum(sum(r.loss_mask) for r in self.rows)
        log.info("SFT: %d examples in %d rows of <= %d tokens (%d assistant tokens); %d too long to keep "
                 "a reply, dropped; %d eval examples", len(train_data) - dropped, len(self.rows), config.max_len,
                 n_targets, dropped + eval_dropped, len(self.eval_rows))
        self.dropped = dropped

    def num_items(self) -> int:
        return len(self.rows)

    def micro_batch(self, items: list[int]) -> Batch:
        return collate([self.rows[i] for i in items], self.pad_id).to(self.device)

    def weight(self, micro: Batch) -> float:
        return float(micro.num_targets)

    def loss(self, micro: Batch, normalizer: float) -> tuple[torch.Tensor, dict[str, float]]:
        out = token_logps(self.model, micro)
        loss = sft_loss(out.logps, micro.target_mask, normalizer)
        return loss, {"loss_sum": float(loss.detach()) * normalizer, "tokens": float((micro.segments >= 0).sum()),
                      "targets": float(micro.num_targets)}

    def evaluate(self) -> dict[str, float]:
        """Mean NLL per assistant token over the eval examples (this process's share, then summed)."""
        if not self.eval_rows:
            return {}
        mine = self.eval_rows[self.dist.rank:: self.dist.world_size]
        nll, n = 0.0, 0.0
        for rows in chunks(mine, self.config.eval_batch_size):
            b = collate(rows, self.pad_id).to(self.device)
            out = token_logps(self.model, b)
            nll -= float(out.logps.sum())
            n += b.num_targets
        nll, n = self._all_reduce([nll, n])
        return {"eval_loss": nll / max(n, 1)}
