"""Reward models: the policy's backbone with a scalar head on the last token, trained on preference pairs with
the Bradley-Terry loss (optionally with a per-pair margin, as Llama 2 did).

A trained reward model is a folder: the backbone (LoRA merged) as a normal model folder plus
`reward_head/head.safetensors` (a subfolder: the loader reads every top-level .safetensors as model weights). `RewardModel.load(folder)` reads it back, and
`reward_fn(tokenizer)` turns it into the reward function PPO and GRPO take (`reward: reward-model:FOLDER`).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from temper.align.batching import Batch, collate, encode_completion
from temper.align.dpo import Pair, preference_pairs
from temper.align.losses import bradley_terry_loss
from temper.align.policy import ValueHead, last_token_hidden
from temper.align.rollout import Completion
from temper.align.sft import pad_id
from temper.align.trainer import TrainConfig, Trainer
from temper.models import CausalLM
from temper.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class RewardModel(nn.Module):
    """score(prompt + reply) = w . h_last + b."""

    def __init__(self, backbone: CausalLM, head: ValueHead | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head or ValueHead(backbone.config.hidden_size, backbone.device, backbone.dtype)
        self.tokenizer: Tokenizer | None = None

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.head(last_token_hidden(self.backbone, batch))

    def save(self, folder: str | Path, tokenizer: Tokenizer | None) -> Path:
        from safetensors.torch import save_file

        from temper.align.lora import has_lora, merge_lora
        from temper.models.loader import save_pretrained

        if has_lora(self.backbone):
            merge_lora(self.backbone)
        folder = save_pretrained(self.backbone, tokenizer, folder, source="temper align rm")
        (folder / "reward_head").mkdir(exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()},
                  folder / "reward_head" / "head.safetensors")
        (folder / "reward_head" / "reward.json").write_text(
            json.dumps({"head": "linear on the last token's final hidden state", "trainer": "temper align rm"}))
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> RewardModel:
        from safetensors.torch import load_file

        from temper.models.loader import load

        folder = Path(folder)
        if not (folder / "reward_head" / "head.safetensors").exists():
            raise FileNotFoundError(f"{folder} is not a reward model folder (no reward_head/head.safetensors); "
                                    "train one with `temper align rm`")
        loaded = load(folder, device=device)
        rm = cls(loaded.model)
        rm.head.load_state_dict(load_file(folder / "reward_head" / "head.safetensors", device=str(device)))
        rm.tokenizer = loaded.tokenizer
        return rm.eval()

    @torch.no_grad()
    def score(self, tokenizer: Tokenizer, messages: list[dict[str, str]], replies: Sequence[str]) -> list[float]:
        rows = []
        for reply in replies:
            prompt, completion = encode_completion(tokenizer, messages, reply)
            rows += Pair(prompt, completion, completion).rows()[:1]
        return self(collate(rows, pad_id(tokenizer)).to(self.backbone.device)).tolist()

    def reward_fn(self, tokenizer: Tokenizer):
        def reward(record: Any, completions: Sequence[Completion]) -> list[float]:
            messages = record.prompt_messages if hasattr(record, "prompt_messages") else record["prompt"]
            if isinstance(messages, str):
                messages = [{"role": "user", "content": messages}]
            return self.score(tokenizer, messages, [c.text for c in completions])
        return reward


@dataclass
class RewardConfig(TrainConfig):
    """batch_size counts preference pairs per micro-batch."""

    margin: bool = False  # subtract each record's `margin` (from its extra keys) inside the sigmoid
    eval_batch_size: int = 8


class RewardTrainer(Trainer):
    name = "rm"

    def __init__(self, model: CausalLM, tokenizer: Tokenizer, config: RewardConfig, train_data: Sequence[Any],
                 eval_data: Sequence[Any] | None = None):
        super().__init__(model, tokenizer, config)
        self.config: RewardConfig = config
        self.reward_model = RewardModel(self.model).to(self.device)
        self.pad_id = pad_id(tokenizer)
        self.pairs, dropped = preference_pairs(tokenizer, train_data, config.max_len)
        self.eval_pairs, _ = preference_pairs(tokenizer, eval_data or [], config.max_len)
        if not self.pairs:
            raise ValueError("no preference pairs left to train on")
        log.info("reward model: %d pairs (%d dropped), %d eval pairs", len(self.pairs), dropped, len(self.eval_pairs))

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "head": self.reward_model.head}

    def num_items(self) -> int:
        return len(self.pairs)

    def micro_batch(self, items: list[int]) -> tuple[Batch, torch.Tensor]:
        rows = [row for i in items for row in self.pairs[i].rows()]
        return collate(rows, self.pad_id).to(self.device), torch.tensor([self.pairs[i].margin for i in items])

    def weight(self, micro: tuple[Batch, torch.Tensor]) -> float:
        return float(len(micro[1]))

    def loss(self, micro: tuple[Batch, torch.Tensor], normalizer: float) -> tuple[torch.Tensor, dict[str, float]]:
        batch, margins = micro
        scores = self.reward_model(batch).view(-1, 2)
        losses = bradley_terry_loss(scores[:, 0], scores[:, 1], margins.to(scores) if self.config.margin else None)
        return losses.sum() / normalizer, {
            "loss_sum": float(losses.detach().sum()),
            "accuracy_sum": float((scores[:, 0] > scores[:, 1]).float().sum()),
            "margin_sum": float((scores[:, 0] - scores[:, 1]).detach().sum()),
            "tokens": float((batch.segments >= 0).sum())}

    def evaluate(self) -> dict[str, float]:
        """Held-out pair accuracy (chosen scored above rejected) and mean Bradley-Terry loss."""
        if not self.eval_pairs:
            return {}
        correct, loss = 0.0, 0.0
        for start in range(0, len(self.eval_pairs), self.config.eval_batch_size):
            chunk = self.eval_pairs[start: start + self.config.eval_batch_size]
            b = collate([row for p in chunk for row in p.rows()], self.pad_id).to(self.device)
            s = self.reward_model(b).view(-1, 2)
            correct += float((s[:, 0] > s[:, 1]).sum())
            loss += float(bradley_terry_loss(s[:, 0], s[:, 1]).sum())
        n = len(self.eval_pairs)
        return {"eval_accuracy": correct / n, "eval_loss": loss / n}

    def save_model(self, folder: Path) -> Path:
        self.model.eval()
        return self.reward_model.save(folder, self.tokenizer)
