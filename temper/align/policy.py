"""What the trainers compute with the model: target-token log-probs, entropies, values and rewards.

Logits are computed only at target positions: Gemma 3's vocabulary has 262k entries, so its head costs more
than the rest of the model per token, and most tokens of a chat example are prompt.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from temper.align.batching import Batch
from temper.models import CausalLM


@dataclass
class TokenOutputs:
    logps: torch.Tensor  # (B, T-1), zero off target positions
    entropy: torch.Tensor | None  # (B, T-1) or None
    hidden: torch.Tensor  # (N, d) hidden states at the target positions (for a value head)


def target_hidden(model: CausalLM, batch: Batch) -> torch.Tensor:
    """Final hidden states at the positions that predict a target, (N, d) in row-major order."""
    h = model.hidden_states(batch.input_ids, batch.positions, ctx=batch.context(model.windows))
    return h[:, :-1][batch.target_mask]


def token_logps(model: CausalLM, batch: Batch, entropy: bool = False) -> TokenOutputs:
    """Log-probabilities of the target tokens under `model` (and the entropy of its distribution there)."""
    hs = target_hidden(model, batch)
    logits = model.logits(hs).float()
    targets = batch.targets[batch.target_mask]
    lp = -F.cross_entropy(logits, targets, reduction="none")
    zeros = torch.zeros(batch.target_mask.shape, dtype=lp.dtype, device=lp.device)
    ent = None
    if entropy:
        with torch.no_grad():
            logp_all = logits.log_softmax(-1)
            ent = zeros.masked_scatter(batch.target_mask, -(logp_all.exp() * logp_all).sum(-1))
    return TokenOutputs(zeros.masked_scatter(batch.target_mask, lp), ent, hs)


def sequence_logps(logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sums of target log-probs and the number of targets."""
    return (logps * mask).sum(-1), mask.sum(-1).to(logps.dtype)


class ValueHead(nn.Module):
    """A scalar head on hidden states: the critic of PPO, or the score of a reward model."""

    def __init__(self, hidden_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.score = nn.Linear(hidden_size, 1, device=device, dtype=dtype)
        nn.init.normal_(self.score.weight, std=1 / (hidden_size + 1))
        nn.init.zeros_(self.score.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.score(h).squeeze(-1).float()


def last_token_hidden(model: CausalLM, batch: Batch) -> torch.Tensor:
    """Hidden state of each row's last real token (B, d): what a reward model scores."""
    h = model.hidden_states(batch.input_ids, batch.positions, ctx=batch.context(model.windows))
    last = (batch.segments >= 0).sum(1) - 1
    return h[torch.arange(h.shape[0], device=h.device), last]
