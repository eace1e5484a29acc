"""From records to tensors: chat-template tokenization with assistant-only loss masks, packing, collation.

A conversation is rendered turn by turn through the tokenizer's chat template, so that the tokens of each
assistant reply (including its end-of-turn marker, which teaches the model to stop) are known exactly; every
other token (system, user, role headers) is context only. Several short examples can be packed into one row:
positions restart at 0 for each example and attention never crosses an example boundary (`segments`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from temper.models.attention import DenseContext, attention_mask
from temper.tokenizer import Tokenizer

Messages = list[dict[str, str]]


class TemplateError(ValueError):
    """The chat template renders a conversation in a way we cannot split into turns."""


@dataclass
class Example:
    """Token ids and, per token, whether the model is trained to predict it (an assistant token)."""

    ids: list[int]
    loss_mask: list[bool]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_targets(self) -> int:
        return sum(self.loss_mask[1:])


def _render(tokenizer: Tokenizer, messages: Messages, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt)


def encode_chat(tokenizer: Tokenizer, messages: Messages) -> Example:
    """Tokenize a conversation; only assistant replies (and their end-of-turn markers) are targets.

    Each segment is tokenized on its own, the way generation sees it: the prompt as rendered with the
    generation prompt, the reply as the rest of the rendered turn."""
    ids: list[int] = []
    mask: list[bool] = []
    done = ""  # text rendered so far
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], True)
        through = _render(tokenizer, messages[: i + 1], False)
        if not prompt.startswith(done) or not through.startswith(prompt):
            raise TemplateError("the chat template does not render conversations prefix by prefix; "
                                "cannot tell assistant tokens apart")
        context = tokenizer.encode(prompt[len(done):], add_special_tokens=False)
        reply = tokenizer.encode(through[len(prompt):], add_special_tokens=False)
        ids += context + reply
        mask += [False] * len(context) + [True] * len(reply)
        done = through
    if not any(mask):
        raise TemplateError("the conversation has no assistant message to train on")
    return Example(ids, mask)


def encode_prompt(tokenizer: Tokenizer, messages: Messages) -> list[int]:
    """Token ids of a prompt, ending with the assistant's turn header (what generation starts from)."""
    return tokenizer.encode(_render(tokenizer, messages, True), add_special_tokens=False)


def encode_completion(tokenizer: Tokenizer, messages: Messages, completion: str) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids): the reply as the chat template closes it, end-of-turn marker included."""
    prompt = _render(tokenizer, messages, True)
    through = _render(tokenizer, [*messages, {"role": "assistant", "content": completion}], False)
    if not through.startswith(prompt):
        raise TemplateError("the chat template does not render the reply after the generation prompt")
    return (tokenizer.encode(prompt, add_special_tokens=False),
            tokenizer.encode(through[len(prompt):], add_special_tokens=False))


def truncate(example: Example, max_len: int) -> Example | None:
    """Keep the first `max_len` tokens; None when no target is left."""
    if len(example) <= max_len:
        return example
    cut = Example(example.ids[:max_len], example.loss_mask[:max_len])
    return cut if cut.num_targets else None


@dataclass
class Row:
    """One training row: examples packed back to back."""

    ids: list[int] = field(default_factory=list)
    loss_mask: list[bool] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)

    def add(self, example: Example) -> None:
        seg = (self.segments[-1] + 1) if self.segments else 0
        self.ids += example.ids
        self.loss_mask += example.loss_mask
        self.positions += range(len(example))
        self.segments += [seg] * len(example)

    def __len__(self) -> int:
        return len(self.ids)


def pack(examples: Sequence[Example], max_len: int) -> list[Row]:
    """First-fit packing in the given order: each example goes into the first row with room for it.

    Examples longer than `max_len` must be truncated first."""
    rows: list[Row] = []
    for ex in examples:
        if len(ex) > max_len:
            raise ValueError(f"an example of {len(ex)} tokens does not fit max_len={max_len}; truncate it first")
        for row in rows:
            if len(row) + len(ex) <= max_len:
                row.add(ex)
                break
        else:
            rows.append(Row())
            rows[-1].add(ex)
    return rows


def unpacked(examples: Sequence[Example]) -> list[Row]:
    """One example per row."""
    rows = []
    for ex in examples:
        rows.append(Row())
        rows[-1].add(ex)
    return rows


@dataclass
class Batch:
    """Right-padded rows. `targets[:, t]` is the token predicted at position t; `target_mask` marks the
    assistant targets within one example (never across a packing boundary or into padding)."""

    input_ids: torch.Tensor  # (B, T)
    positions: torch.Tensor  # (B, T)
    segments: torch.Tensor  # (B, T), -1 on padding
    targets: torch.Tensor  # (B, T - 1)
    target_mask: torch.Tensor  # (B, T - 1) bool

    @property
    def num_targets(self) -> int:
        return int(self.target_mask.sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device) for t in (self.input_ids, self.positions, self.segments, self.targets,
                                              self.target_mask)))

    def context(self, windows: set[int | None]) -> DenseContext:
        """Attention masks: causal by index, within a segment, sliding windows by position."""
        B, T = self.input_ids.shape
        idx = torch.arange(T, device=self.input_ids.device).expand(B, T)
        same = self.segments[:, None, :, None] == self.segments[:, None, None, :]
        masks = {}
        for w in windows:
            causal = attention_mask(idx, idx, None)  # (B, 1, T, T), k index <= q index
            if w is not None:
                q, k = self.positions[:, None, :, None], self.positions[:, None, None, :]
                causal = causal & (q - k < w)
            masks[w] = causal & same
        return DenseContext(self.positions, None, T, masks)


def collate(rows: Sequence[Row], pad_id: int, pad_to: int | None = None) -> Batch:
    """Pad rows to the longest (or `pad_to`) and build the shifted targets."""
    T = max(pad_to or 0, max(len(r) for r in rows))
    B = len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    seg = torch.full((B, T), -1, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r)
        ids[i, :n] = torch.tensor(r.ids)
        pos[i, :n] = torch.tensor(r.positions)
        seg[i, :n] = torch.tensor(r.segments)
        mask[i, :n] = torch.tensor(r.loss_mask)
    target_mask = mask[:, 1:] & (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] >= 0)
    return Batch(ids, pos, seg, ids[:, 1:].clone(), target_mask)


def completion_rows(prompt_ids: Sequence[int], completions: Sequence[Sequence[int]]) -> list[Row]:
    """Rows of prompt + completion, with the completion tokens as targets (DPO, PPO, GRPO)."""
    return unpacked([Example(list(prompt_ids) + list(c), [False] * len(prompt_ids) + [True] * len(c))
                     for c in completions])

