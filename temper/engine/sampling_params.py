"""Per-request sampling settings, validated where they are made."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


GREEDY_BELOW = 1e-5  # temperatures in (0, GREEDY_BELOW) are taken as 0 (greedy), as vLLM does


@dataclass(frozen=True)
class StructuredOutput:
    """A constraint on the output: exactly one of a JSON schema, any JSON object, or a regex."""

    json_schema: dict[str, Any] | str | None = None
    json_object: bool = False
    regex: str | None = None

    def __post_init__(self) -> None:
        if sum([self.json_schema is not None, self.json_object, self.regex is not None]) != 1:
            raise ValueError("structured output takes exactly one of json_schema, json_object or regex")


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens, when to stop, and what to return. Defaults follow OpenAI's and vLLM's."""

    n: int = 1  # completions returned per prompt
    best_of: int | None = None  # completions sampled per prompt, the n with the highest mean logprob returned
    max_tokens: int = 256  # most new tokens per completion
    min_tokens: int = 0  # end-of-sequence and stop token ids are blocked until this many tokens exist
    temperature: float = 1.0  # 0 is greedy
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches top_p
    top_k: int = 0  # keep the k most likely tokens; 0 keeps all
    min_p: float = 0.0  # drop tokens less likely than min_p times the most likely one
    repetition_penalty: float = 1.0  # >1 discourages tokens already in the prompt or output (CTRL-style)
    presence_penalty: float = 0.0  # subtracted once from the logit of every token already generated
    frequency_penalty: float = 0.0  # subtracted per occurrence of a token already generated
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit
    seed: int | None = None  # the same seed gives the same output, whatever else is in the batch
    stop: tuple[str, ...] = ()  # strings that end the completion; trimmed from the output
    stop_token_ids: tuple[int, ...] = ()  # token ids that end the completion (besides end-of-sequence)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False  # keep going past end-of-sequence tokens (benchmarks)
    logprobs: int | None = None  # return the sampled token's logprob and this many top logprobs per token
    prompt_logprobs: int | None = None  # the same for the prompt tokens
    skip_special_tokens: bool = True  # leave special tokens out of the text
    structured: StructuredOutput | None = None  # grammar-constrained decoding

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        if 0.0 < self.temperature < GREEDY_BELOW:  # dividing logits by it would overflow: it means greedy
            object.__setattr__(self, "temperature", 0.0)
        checks = [
            (self.n >= 1, f"n must be >= 1, got {self.n}"),
            (self.best_of is None or self.best_of >= self.n, f"best_of must be >= n ({self.n}), got {self.best_of}"),
            (self.max_tokens >= 1, f"max_tokens must be >= 1, got {self.max_tokens}"),
            (0 <= self.min_tokens <= self.max_tokens,
             f"min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens}"),
            (0.0 <= self.temperature <= 2.0, f"temperature must be in [0, 2], got {self.temperature}"),
            (0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}"),
            (0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p}"),
            (0.01 <= self.repetition_penalty <= 2.0,
             f"repetition_penalty must be in [0.01, 2], got {self.repetition_penalty}"),
            (-2.0 <= self.presence_penalty <= 2.0, f"presence_penalty must be in [-2, 2], got {self.presence_penalty}"),
            (-2.0 <= self.frequency_penalty <= 2.0,
             f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}"),
            (all(-100.0 <= b <= 100.0 for b in self.logit_bias.values()), "logit_bias values must be in [-100, 100]"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, f"logprobs must be in [0, 20], got {self.logprobs}"),
            (self.prompt_logprobs is None or 0 <= self.prompt_logprobs <= 20,
             f"prompt_logprobs must be in [0, 20], got {self.prompt_logprobs}"),
            (all(s for s in self.stop), "stop strings must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def num_samples(self) -> int:
        """Sequences sampled for the request: best_of if set, else n."""
        return self.best_of or self.n
