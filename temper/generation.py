"""Single-sequence generation over a contiguous KV cache: the reference loop until the engine takes over."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from temper.errors import ContextLengthExceededError
from temper.models import CausalLM


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens and when to stop."""

    max_tokens: int = 256  # most new tokens to generate
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of tokens whose probability reaches top_p
    top_k: int = 0  # keep the k most likely tokens; 0 keeps all
    seed: int | None = None  # fixes the sampling for reproducible output
    stop: tuple[str, ...] = ()  # strings that end generation (not included in the output)
    ignore_eos: bool = False  # keep going past end-of-sequence tokens (benchmarks)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


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


@dataclass
class GenerationStats:
    """Timings of one generation: time to first token and decode speed."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0
    finish_reason: str = ""
    token_times: list[float] = field(default_factory=list, repr=False)

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second after the first token (the decode phase)."""
        n = self.completion_tokens - 1
        return n / (self.total_s - self.ttft_s) if n > 0 and self.total_s > self.ttft_s else 0.0


@torch.inference_mode()
def generate_ids(model: CausalLM, prompt_ids: list[int], params: SamplingParams, eos_ids: frozenset[int],
                 stats: GenerationStats | None = None) -> Iterator[int]:
    """Yield new token ids until an end-of-sequence token or `max_tokens` (stop strings are the caller's)."""
    context = model.config.max_position_embeddings
    if not prompt_ids:
        raise ValueError("the prompt is empty")
    if len(prompt_ids) + params.max_tokens > context:
        raise ContextLengthExceededError(
            f"the prompt has {len(prompt_ids)} tokens and max_tokens is {params.max_tokens}, but the model's "
            f"context is {context} tokens; shorten the prompt or lower max_tokens to "
            f"{max(context - len(prompt_ids), 0)}")
    stats = stats if stats is not None else GenerationStats()
    stats.prompt_tokens = len(prompt_ids)
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(params.seed)
    device = model.device
    cache = model.new_cache(1, len(prompt_ids) + params.max_tokens)
    ids = torch.tensor([prompt_ids], device=device)
    positions = torch.arange(len(prompt_ids), device=device)[None]
    start = time.perf_counter()
    stats.finish_reason = "length"
    for step in range(params.max_tokens):
        logits = model(ids, positions, cache, last_only=True)[:, -1]
        token = sample(logits, params, generator)
        token_id = int(token)
        now = time.perf_counter() - start
        if step == 0:
            stats.ttft_s = now
        stats.total_s = now
        stats.completion_tokens += 1
        if token_id in eos_ids and not params.ignore_eos:
            stats.finish_reason = "stop"
            return
        yield token_id
        ids = token[None]
        positions = positions[:, -1:] + 1


def stream_text(model: CausalLM, tokenizer, prompt_ids: list[int], params: SamplingParams,
                stats: GenerationStats | None = None) -> Iterator[str]:
    """Yield text deltas (never broken UTF-8); a stop string ends the stream and is not emitted."""
    stats = stats if stats is not None else GenerationStats()
    decoder = tokenizer.incremental_decoder(prompt_ids, skip_special_tokens=True)
    pending = ""  # text held back because it could be the start of a stop string
    hold = max((len(s) for s in params.stop), default=1) - 1
    for token_id in generate_ids(model, prompt_ids, params, tokenizer.eos_token_ids, stats):
        pending += decoder.add(token_id)
        cut = min((i for s in params.stop if (i := pending.find(s)) >= 0), default=-1)
        if cut >= 0:
            stats.finish_reason = "stop"
            if cut:
                yield pending[:cut]
            return
        if len(pending) > hold:
            yield pending[: len(pending) - hold]
            pending = pending[len(pending) - hold:]
    pending += decoder.flush()
    if pending:
        yield pending
