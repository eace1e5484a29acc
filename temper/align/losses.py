"""The losses of every trainer, as pure functions of log-probabilities, rewards and values.

Each takes per-token or per-sequence tensors that the trainers compute from the model, and returns the loss
plus the statistics worth logging. Keeping them free of models makes them testable against hand-computed
values (tests/align/test_losses.py) and swappable: `DPO_LOSSES` maps a `loss_type` to its function.

Shapes: per-token tensors are (B, T) with a boolean or 0/1 `mask` marking completion tokens; per-sequence
tensors are (B,).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` where `mask` is set (over all elements, or along `dim`); 0 where nothing is set."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalize `x` to unit variance over the masked elements (and zero mean unless `shift_mean` is False)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if shift_mean else out + mean


# ---------------------------------------------------------------------------------------------- SFT
def sft_loss(logps: torch.Tensor, mask: torch.Tensor, normalizer: float | None = None) -> torch.Tensor:
    """Negative log-likelihood of the target tokens, only where `mask` is set (assistant tokens).

    Divided by the number of masked tokens, or by `normalizer` when given: the trainers pass the token count
    of the whole optimizer step, so gradient accumulation and data parallelism give the big-batch gradient.
    """
    total = -(logps * mask.to(logps.dtype)).sum()
    return total / (normalizer if normalizer is not None else mask.sum().clamp(min=1))


# ---------------------------------------------------------------------------------------------- reward model
def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor,
                       margin: torch.Tensor | float | None = None) -> torch.Tensor:
    """Per-pair -log sigmoid(r_chosen - r_rejected - margin) (Llama 2's margin variant when `margin` is set)."""
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)


# ---------------------------------------------------------------------------------------------- DPO
@dataclass
class PreferenceLogps:
    """Summed completion log-probs of the policy and the reference, with completion lengths."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor
    len_chosen: torch.Tensor
    len_rejected: torch.Tensor


def _log_ratio_margin(p: PreferenceLogps) -> torch.Tensor:
    """h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))."""
    return (p.policy_chosen - p.ref_chosen) - (p.policy_rejected - p.ref_rejected)


def dpo_sigmoid(p: PreferenceLogps, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023): -log sigmoid(beta h); with label smoothing, the conservative DPO mix."""
    h = _log_ratio_margin(p)
    return -F.logsigmoid(beta * h) * (1 - label_smoothing) - F.logsigmoid(-beta * h) * label_smoothing


def dpo_ipo(p: PreferenceLogps, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """IPO (Azar et al. 2023): (h - 1/(2 beta))^2, a squared loss that does not push h to infinity.

    h uses log-probs averaged over each completion's tokens, as TRL does, so beta means the same for short
    and long completions."""
    h = (p.policy_chosen - p.ref_chosen) / p.len_chosen - (p.policy_rejected - p.ref_rejected) / p.len_rejected
    return (h - 1 / (2 * beta)) ** 2


def dpo_hinge(p: PreferenceLogps, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """SLiC-style hinge: max(0, 1 - beta h)."""
    return torch.relu(1 - beta * _log_ratio_margin(p))


def dpo_length_normalized(p: PreferenceLogps, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO on per-token log-ratios: -log sigmoid(beta (r_w / |y_w| - r_l / |y_l|)); removes the pull toward
    longer replies that summed log-ratios have (as in R-DPO/SimPO's normalization, with a reference)."""
    h = (p.policy_chosen - p.ref_chosen) / p.len_chosen - (p.policy_rejected - p.ref_rejected) / p.len_rejected
    return -F.logsigmoid(beta * h)


DPO_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "sigmoid": dpo_sigmoid,
    "ipo": dpo_ipo,
    "hinge": dpo_hinge,
    "length_normalized": dpo_length_normalized,
}


def dpo_rewards(p: PreferenceLogps, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The implicit rewards beta * log(pi / ref) of the chosen and rejected completions (for logging)."""
    return beta * (p.policy_chosen - p.ref_chosen).detach(), beta * (p.policy_rejected - p.ref_rejected).detach()


# ---------------------------------------------------------------------------------------------- PPO
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over completion tokens (B, T); returns (advantages, returns).

    delta_t = r_t + gamma V_{t+1} - V_t and A_t = delta_t + gamma lam A_{t+1}, with V and A zero past the
    last masked token of each row. Returns are A + V, the value targets."""
    mask = mask.to(values.dtype)
    values = values * mask
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, adv + values


def ppo_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    clip: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate, -min(ratio A, clip(ratio, 1-eps, 1+eps) A), averaged over masked tokens.

    Returns the loss and the clip fraction and approximate KL(old || new) for logging."""
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask).item()
        approx_kl = masked_mean(0.5 * (logps - old_logps) ** 2, mask).item()
    return loss, {"clipfrac": clipfrac, "approx_kl": approx_kl}


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float | None = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2) over masked tokens (unclipped when `clip` is None)."""
    loss = (values - returns) ** 2
    frac = 0.0
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        clipped_loss = (clipped - returns) ** 2
        with torch.no_grad():
            frac = masked_mean((clipped_loss > loss).float(), mask).item()
        loss = torch.maximum(loss, clipped_loss)
    return 0.5 * masked_mean(loss, mask), {"vf_clipfrac": frac}


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from sampled tokens: k1 = log pi - log ref (unbiased, can be
    negative), k3 = exp(ref - pi) - (ref - pi) - 1 (Schulman's, unbiased and >= 0; what GRPO uses)."""
    if kind == "k1":
        return logps - ref_logps
    if kind == "k3":
        d = ref_logps - logps
        return torch.exp(d) - d - 1
    raise ValueError(f"unknown KL estimator {kind!r}; use 'k1' or 'k3'")


def shaped_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                   kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token RLHF rewards: -kl_coef * KL_t on every completion token, plus the sequence score on the last.

    Returns (rewards (B, T), per-token KL (B, T))."""
    kl = kl_penalty(logps, ref_logps, "k1") * mask
    rewards = -kl_coef * kl
    last = mask.long().cumsum(1).argmax(1)  # index of each row's last masked token
    rewards[torch.arange(len(scores)), last] += scores
    return rewards, kl


class AdaptiveKLController:
    """Ziegler et al. (2019): nudge the KL coefficient so the measured KL tracks `target`.

    coef <- coef * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon)."""

    def __init__(self, init_kl_coef: float, target: float | None, horizon: int = 10000):
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        if self.target is not None:
            error = min(max(current_kl / self.target - 1, -0.2), 0.2)
            self.value *= 1 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]


# ---------------------------------------------------------------------------------------------- GRPO
def grpo_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages (Shao et al. 2024): each completion's reward minus its group's mean,
    divided by the group's standard deviation when `scale` (Dr. GRPO drops that division).

    `rewards` (N * G,) lists the G completions of each prompt together."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    adv = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (grouped.std(dim=1, keepdim=True) + eps)
    return adv.reshape(-1)


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2, beta: float = 0.04,
              aggregation: str = "sequence", normalizer: float | None = None
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO's per-token clipped objective with a k3 KL penalty to the reference.

    loss_t = -min(ratio_t A, clip(ratio_t) A) + beta * KL3_t, with one advantage A per sequence. Aggregated as
    in the paper (`sequence`: mean over each completion's tokens, then over completions) or DAPO's `token`
    (mean over all tokens of the batch, so long completions weigh more). With `normalizer`, the sum of the
    per-sequence (or per-token) terms is divided by it instead: the count over the whole optimizer step."""
    adv = advantages[:, None]
    ratio = torch.exp(logps - old_logps)
    per_token = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
    kl = torch.zeros_like(logps) if ref_logps is None else kl_penalty(logps, ref_logps, "k3")
    if beta:
        per_token = per_token + beta * kl
    if aggregation == "sequence":
        per_seq = masked_mean(per_token, mask, dim=1)
        loss = per_seq.mean() if normalizer is None else per_seq.sum() / normalizer
    elif aggregation == "token":
        m = mask.to(per_token.dtype)
        loss = (per_token * m).sum() / (m.sum().clamp(min=1) if normalizer is None else normalizer)
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}; use 'sequence' or 'token'")
    with torch.no_grad():
        clipped = ((ratio < 1 - clip) & (adv < 0)) | ((ratio > 1 + clip) & (adv > 0))
        stats = {"clipfrac": masked_mean(clipped.float(), mask).item(), "kl": masked_mean(kl, mask).item()}
    return loss, stats


def cosine_schedule(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier: linear warmup over `warmup` steps, then cosine decay to `min_ratio`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
