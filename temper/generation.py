"""The plain forward loop: one sequence over a contiguous KV cache, temperature/top-k/top-p sampling.

The engine is how temper generates; this loop is the reference its tests compare against, token for token.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from temper.engine.sampling_params import SamplingParams
from temper.errors import ContextLengthExceededError
from temper.models import CausalLM


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V) under temperature, top-k and top-p."""
    if params.temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens before it already reach top_p (the most likely one always stays)
        drop = probs.cumsum(dim=-1) - probs >= params.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.inference_mode()
def generate_ids(model: CausalLM, prompt_ids: list[int], params: SamplingParams,
                 eos_ids: frozenset[int]) -> Iterator[int]:
    """Yield new token ids until an end-of-sequence token or `max_tokens` (stop strings are the caller's)."""
    context = model.config.max_position_embeddings
    if not prompt_ids:
        raise ValueError("the prompt is empty")
    if len(prompt_ids) + params.max_tokens > context:
        raise ContextLengthExceededError(
            f"the prompt has {len(prompt_ids)} tokens and max_tokens is {params.max_tokens}, but the model's "
            f"context is {context} tokens; shorten the prompt or lower max_tokens to "
            f"{max(context - len(prompt_ids), 0)}")
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(params.seed)
    device = model.device
    cache = model.new_cache(1, len(prompt_ids) + params.max_tokens)
    ids = torch.tensor([prompt_ids], device=device)
    positions = torch.arange(len(prompt_ids), device=device)[None]
    for _ in range(params.max_tokens):
        logits = model(ids, positions, cache, last_only=True)[:, -1]
        token = sample(logits, params, generator)
        token_id = int(token)
        if token_id in eos_ids and not params.ignore_eos:
            return
        yield token_id
        ids = token[None]
        positions = positions[:, -1:] + 1

