"""Request bodies of the OpenAI-compatible API, validated by pydantic (the OpenAPI schema comes from these).

Fields follow OpenAI's API reference; temper's extras (`top_k`, `min_p`, `repetition_penalty`, `min_tokens`,
`ignore_eos`, `stop_token_ids`, `skip_special_tokens`, `include_stop_str_in_output`) follow vLLM's names.
Unknown fields are ignored (clients send vendor fields) and logged once per name.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 16  # completions per request (n, best_of): each one is a sequence in the batch
MAX_STOP = 16
MAX_INT = 2**31 - 1  # bounds every count, so nothing overflows a C long further down
TokenIds = list[Annotated[int, Field(ge=0, le=MAX_INT)]]


def _nonempty(v, name: str):
    """A prompt or input: not an empty list, and no empty token-id list inside one."""
    if isinstance(v, list) and not v:
        raise ValueError(f"{name} must not be an empty list")
    if isinstance(v, list) and any(isinstance(p, list) and not p for p in v):
        raise ValueError(f"a token-id {name} must not be empty")
    return v


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Request):
    include_usage: bool = False


class JsonSchemaFormat(_Request):
    name: str = Field(default="response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format of type json_schema needs json_schema.schema")
        return self


class _Sampling(_Request):
    """Fields shared by completions and chat completions."""

    model: str | None = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, le=MAX_INT)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, ge=0.01, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = None
    stop_token_ids: TokenIds | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    response_format: ResponseFormat | None = None
    min_tokens: int = Field(default=0, ge=0, le=MAX_INT)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @field_validator("logit_bias")
    @classmethod
    def _check_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key in v or {}:
            if not key.lstrip("-").isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
        return v


class CompletionRequest(_Sampling):
    prompt: str | list[str] | TokenIds | list[TokenIds]
    max_tokens: int | None = Field(default=16, ge=0, le=MAX_INT)  # 0 only with echo: score the prompt
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    best_of: int | None = Field(default=None, ge=1, le=MAX_N)
    suffix: str | None = None

    _check_prompt = field_validator("prompt")(classmethod(lambda cls, v: _nonempty(v, "prompt")))

    @model_validator(mode="after")
    def _check(self) -> CompletionRequest:
        if self.suffix:
            raise ValueError("suffix is not supported")
        if self.best_of is not None and self.best_of < self.n:
            raise ValueError(f"best_of ({self.best_of}) must be >= n ({self.n})")
        if self.stream and self.best_of is not None and self.best_of > self.n:
            raise ValueError("best_of > n cannot be streamed")
        return self


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class RAGOptions(_Request):
    """Retrieval for a request: which collection, how many sources, which filter (see temper/rag/store/base.py)."""

    collection: str = Field(min_length=1, max_length=128)
    top_k: int = Field(default=5, ge=1, le=50)
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    filter: dict[str, Any] | None = None
    mmr: float | None = Field(default=None, ge=0.0, le=1.0)
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    rag: RAGOptions | str | None = None  # temper's extra: answer from a collection (a name, or options)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_INT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_INT)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        if self.tools:
            raise ValueError("tools (function calling) are not supported by temper yet")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self


class EmbeddingRequest(_Request):
    model: str | None = None
    input: str | list[str] | TokenIds | list[TokenIds]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=MAX_INT)
    user: str | None = Field(default=None, max_length=256)

    _check_input = field_validator("input")(classmethod(lambda cls, v: _nonempty(v, "input")))


class TokenizeRequest(_Request):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.messages is not None and not self.messages:
            raise ValueError("messages must not be empty")
        return self


class DetokenizeRequest(_Request):
    model: str | None = None
    tokens: TokenIds


class RAGQueryRequest(RAGOptions):
    """POST /v1/rag/query: retrieve, then (unless generate is false) answer with citations."""

    query: str = Field(min_length=1, max_length=8192)
    model: str | None = None
    generate: bool = True
    max_tokens: int | None = Field(default=256, ge=1, le=MAX_INT)
    temperature: float | None = Field(default=0.0, ge=0.0, le=2.0)
    frequency_penalty: float = Field(default=0.5, ge=-2.0, le=2.0)  # small models loop when greedy (docs/rag.md)
