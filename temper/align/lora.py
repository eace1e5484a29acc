"""Low-rank adapters (LoRA, Hu et al. 2021) on temper's linear layers, in house.

Why not `peft`: it would pull transformers and accelerate into the runtime, and its conveniences (save, merge,
disable) assume a transformers PreTrainedModel. The part we need is small: wrap `nn.Linear` layers, train A and
B only, switch the adapters off to get the reference model without a copy (DPO, PPO and GRPO use that), and merge
them into plain weights that the engine serves and `save_pretrained` writes.

W x + (alpha / r) B A x, with A (r, in) Kaiming-uniform and B (out, r) zero: training starts at the base model.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraConfig:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS  # names of the linear layers to adapt (last name component)
    # embedding rows to train as well (and the tied head's, which share them): the turn markers of a chat
    # template that a base model barely saw. Frozen, a base model's <end_of_turn> row cannot become likely
    # (measured on Gemma-3-270M: log p = -31 after a finished reply; LoRA alone reached only -9.4).
    trainable_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.scaling = r, alpha / r
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=dev, dtype=dt))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initializes its weight (and peft)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.enabled = True

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (code that reads `.weight` for shapes or dtypes keeps working)."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if not self.enabled:
            return y
        return y + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling

    def delta(self) -> torch.Tensor:
        """The weight update (alpha / r) B A."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def merged(self) -> nn.Linear:
        """A plain linear layer with the update folded into its weight."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.delta().to(self.base.weight.dtype))
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


class TrainableRows(nn.Module):
    """Trainable deltas for a few rows of a frozen embedding matrix; the embedding and a tied head share them."""

    def __init__(self, weight: torch.Tensor, ids: list[int]):
        super().__init__()
        self.register_buffer("ids", torch.tensor(sorted(set(ids)), dtype=torch.long, device=weight.device))
        self.delta = nn.Parameter(torch.zeros(len(self.ids), weight.shape[1], device=weight.device, dtype=weight.dtype))


class EmbeddingWithRows(nn.Module):
    """nn.Embedding lookup plus the trainable rows' deltas."""

    def __init__(self, base: nn.Embedding, rows: TrainableRows):
        super().__init__()
        self.base, self.rows = base, rows

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        match = (ids[..., None] == self.rows.ids).to(self.rows.delta.dtype)  # (..., k) one-hot over trained rows
        return self.base(ids) + match @ self.rows.delta


class HeadWithRows(nn.Module):
    """A (tied) output head plus the trainable rows' deltas on their logits."""

    def __init__(self, base: nn.Linear, rows: TrainableRows):
        super().__init__()
        self.base, self.rows = base, rows

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.base(h).index_add(-1, self.rows.ids, F.linear(h, self.rows.delta))


def add_trainable_rows(model: nn.Module, ids: list[int]) -> None:
    """Train the embedding rows `ids` (and the same rows of the output head, tied or not) of a causal LM."""
    embed = model.model.embed_tokens
    rows = TrainableRows(embed.weight, ids)
    model.model.embed_tokens = EmbeddingWithRows(embed, rows)
    head = model.lm_head
    if head.weight is embed.weight:
        model.lm_head = HeadWithRows(head, rows)
    else:
        model.lm_head = HeadWithRows(head, TrainableRows(head.weight, ids))


def merge_rows(model: nn.Module) -> None:
    """Fold the trained rows into the embedding (and head) and put the plain modules back."""
    embed, head = model.model.embed_tokens, model.lm_head
    if not isinstance(embed, EmbeddingWithRows):
        return
    with torch.no_grad():
        embed.base.weight.index_add_(0, embed.rows.ids, embed.rows.delta.to(embed.base.weight.dtype))
        if head.rows is not embed.rows:
            head.base.weight.index_add_(0, head.rows.ids, head.rows.delta.to(head.base.weight.dtype))
    model.model.embed_tokens, model.lm_head = embed.base, head.base


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def apply_lora(model: nn.Module, config: LoraConfig) -> list[str]:
    """Wrap every `nn.Linear` whose name ends in one of `config.targets`; freeze every other parameter.

    Returns the wrapped layer names. Raises if nothing matched (a typo in `targets` would otherwise train
    nothing)."""
    for p in model.parameters():
        p.requires_grad_(False)
    names = [name for name, m in model.named_modules()
             if type(m) is nn.Linear and name.rpartition(".")[2] in config.targets]
    if not names:
        raise ValueError(f"no nn.Linear layer is named any of {list(config.targets)}; "
                         "check `lora.targets` against the model's layer names")
    for name in names:
        _replace(model, name, LoRALinear(model.get_submodule(name), config.r, config.alpha, config.dropout))
    return names


def token_ids(tokenizer, tokens: tuple[str, ...]) -> list[int]:
    """Ids of `tokens`; an unknown token is an error (a typo would otherwise train nothing)."""
    ids = [tokenizer.token_to_id(t) for t in tokens]
    missing = [t for t, i in zip(tokens, ids) if i is None]
    if missing:
        raise ValueError(f"lora.trainable_tokens: {missing} are not in the vocabulary")
    return ids


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, (LoRALinear, EmbeddingWithRows)) for m in model.modules())


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run the base model (the reference of DPO, PPO and GRPO) without copying it: adapters off inside."""
    layers = [m for _, m in lora_layers(model)]
    rows = [m for m in model.modules() if isinstance(m, (EmbeddingWithRows, HeadWithRows))]
    saved = [r.rows.delta.data for r in rows]
    before = [m.enabled for m in layers]
    for m in layers:
        m.enabled = False
    for r in rows:
        r.rows.delta.data = torch.zeros_like(r.rows.delta)
    try:
        yield
    finally:
        for m, e in zip(layers, before):
            m.enabled = e
        for r, d in zip(rows, saved):
            r.rows.delta.data = d


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base weight and put plain `nn.Linear` layers back; returns how many."""
    layers = lora_layers(model)
    for name, m in layers:
        _replace(model, name, m.merged())
    merge_rows(model)
    return len(layers)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def freeze_except(model: nn.Module, patterns: Sequence[str] | None) -> None:
    """Full fine-tuning: train every parameter, or those whose name contains one of `patterns`... unless the
    pattern starts with '!', which freezes matches (e.g. '!embed_tokens' keeps the tied embedding frozen)."""
    if not patterns:
        return
    keep = [p for p in patterns if not p.startswith("!")]
    drop = [p[1:] for p in patterns if p.startswith("!")]
    for name, p in model.named_parameters():
        train = (not keep or any(k in name for k in keep)) and not any(d in name for d in drop)
        p.requires_grad_(train)
