"""The gateway's YAML configuration, validated with pydantic so a bad file fails at start with the field named.

    listen: {host: 127.0.0.1, port: 4000}
    backends:                       # one entry per replica: any OpenAI-compatible base URL
      - name: smol-a
        url: http://127.0.0.1:8001/v1
        model: smollm2              # the model name clients use; replicas share it
        upstream_model: smollm2-135m-instruct   # what the back end calls it (default: model)
        price: {input_per_million: 0.05, output_per_million: 0.20}
        # or, self-hosted: {per_hour: 0.10, output_tokens_per_second: 100, input_tokens_per_second: 500}
        context_limit: 8192
        weight: 1
    routes:                         # virtual model names decided by a policy (temper/gateway/routing/)
      auto: {policy: cascade, cheap: smol-int4, strong: smollm2, signal: mean_logprob, threshold: -0.9}
    fallbacks: {smol-int4: [smollm2]}
    cache: {store: sqlite:///~/.cache/temper/gateway.db, exact: {ttl: 3600}, semantic: {enabled: true}}
    keys:
      - {name: alice, key_env: ALICE_KEY, team: research, budget_usd: 5.0, rpm: 60, tpm: 100000}

Secrets come from the environment (`key_env`, `api_key_env`) or the file itself (`key`, `api_key`); a key's
value is never logged.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from temper.errors import TemperError
from temper.gateway.semantic import CANDIDATE_SIMILARITY, VERIFIER_THRESHOLD
from temper.gateway.semantic import DEFAULT_THRESHOLD as SEMANTIC_THRESHOLD


class GatewayConfigError(TemperError):
    """The gateway's YAML file is missing, unreadable or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Price(_Strict):
    """USD per million tokens, given directly (hosted APIs) or derived from a machine's price per hour and the
    throughput measured on it (self-hosted): per token = per_hour / 3600 / tokens_per_second."""

    input_per_million: float | None = Field(default=None, ge=0)
    output_per_million: float | None = Field(default=None, ge=0)
    per_hour: float | None = Field(default=None, ge=0)
    output_tokens_per_second: float | None = Field(default=None, gt=0)
    input_tokens_per_second: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_way(self) -> Price:
        direct = self.input_per_million is not None or self.output_per_million is not None
        hourly = self.per_hour is not None
        if direct and hourly:
            raise ValueError("give either input/output_per_million or per_hour with the measured throughput, not both")
        if hourly and self.output_tokens_per_second is None:
            raise ValueError("per_hour needs output_tokens_per_second (the throughput measured on that machine)")
        return self

    def per_million(self) -> tuple[float, float]:
        """(input, output) USD per million tokens."""
        if self.per_hour is None:
            return self.input_per_million or 0.0, self.output_per_million or 0.0
        out = self.per_hour / 3600 / self.output_tokens_per_second * 1e6
        # prefill is far faster than decode; without a measured rate, prompt tokens cost nothing extra
        inp = self.per_hour / 3600 / self.input_tokens_per_second * 1e6 if self.input_tokens_per_second else 0.0
        return inp, out


class BackendConfig(_Strict):
    name: str
    url: str  # base URL ending in /v1
    model: str
    upstream_model: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    price: Price = Field(default_factory=Price)
    context_limit: int | None = Field(default=None, gt=0)
    weight: float = Field(default=1.0, gt=0)
    timeout: float = Field(default=120.0, gt=0)  # seconds to the whole response (non-streaming) or between chunks
    connect_timeout: float = Field(default=2.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v.rstrip("/")

    def secret(self) -> str | None:
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise GatewayConfigError(f"back end {self.name}: the environment variable {self.api_key_env} is unset")
            return value
        return self.api_key


class RouteConfig(BaseModel):
    """A virtual model whose requests a routing policy sends to one of the real models; the policy's own
    options (cheap/strong, thresholds, rules) are checked by the policy when the gateway starts."""

    model_config = ConfigDict(extra="allow")
    policy: str


class ExactCacheConfig(_Strict):
    enabled: bool = True
    ttl: float = Field(default=3600.0, gt=0)
    max_entries: int = Field(default=10_000, gt=0)


class SemanticCacheConfig(_Strict):
    enabled: bool = False
    # cosine similarity of MiniLM embeddings; the defaults were chosen on the development pairs
    # (benchmarks/semantic_cache.py; docs/gateway.md has the hit and false-hit rates per threshold):
    # 0.85 with the guard alone, 0.7 when the pair verifier checks the candidates
    threshold: float | None = Field(default=None, gt=0, le=1)
    # a cross-encoder that reads both questions (temper/gateway/verifier.py; trained once, on first use): on two
    # unseen test sets 1.1% false hits against 5.2% for the guard alone, at the same hit rate (docs/gateway.md)
    verifier: Literal["pair-classifier", "none"] = "pair-classifier"
    verifier_threshold: float = Field(default=VERIFIER_THRESHOLD, ge=0, le=1)
    verifier_path: str | None = None  # a trained verifier's folder (default: the temper cache's)
    ttl: float = Field(default=3600.0, gt=0)
    max_entries: int = Field(default=10_000, gt=0)  # per scope
    guard: bool = True  # refuse hits whose numbers, entities or negations differ (temper/gateway/semantic.py)
    nondeterministic: bool = False  # also cache sampled (temperature > 0) requests

    @property
    def similarity_threshold(self) -> float:
        if self.threshold is not None:
            return self.threshold
        return CANDIDATE_SIMILARITY if self.verifier != "none" else SEMANTIC_THRESHOLD


class CacheConfig(_Strict):
    store: str | None = None  # sqlite:///PATH, redis://HOST:PORT/DB; default: sqlite in ~/.cache/temper
    exact: ExactCacheConfig = Field(default_factory=ExactCacheConfig)
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)
    nondeterministic: bool = False  # exact cache for sampled requests too


class KeyConfig(_Strict):
    name: str
    key: str | None = None
    key_env: str | None = None
    team: str | None = None
    budget_usd: float | None = Field(default=None, ge=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    models: list[str] | None = None  # models and routes the key may use (default: all)
    admin: bool = False

    @model_validator(mode="after")
    def _has_key(self) -> KeyConfig:
        if not self.key and not self.key_env:
            raise ValueError(f"key {self.name!r} needs `key` or `key_env`")
        return self

    def secret(self) -> str:
        if self.key_env:
            value = os.environ.get(self.key_env)
            if not value:
                raise GatewayConfigError(f"key {self.name}: the environment variable {self.key_env} is unset")
            return value
        return self.key  # type: ignore[return-value]


class TeamConfig(_Strict):
    budget_usd: float | None = Field(default=None, ge=0)


class ListenConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=4000, ge=0, le=65535)


class HealthConfig(_Strict):
    interval: float = Field(default=10.0, gt=0)  # seconds between checks of each back end
    path: str = "/models"  # appended to the back end's URL


class RetryConfig(_Strict):
    attempts: int = Field(default=3, ge=1)  # tries over the replicas of one model before its fallbacks
    backoff: float = Field(default=0.05, ge=0)  # seconds before the 2nd try; doubles after each


class GatewayConfig(_Strict):
    listen: ListenConfig = Field(default_factory=ListenConfig)
    backends: list[BackendConfig]
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    keys: list[KeyConfig] = Field(default_factory=list)
    teams: dict[str, TeamConfig] = Field(default_factory=dict)
    health: HealthConfig = Field(default_factory=HealthConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    default_max_tokens: int = Field(default=1024, gt=0)  # reserved against budgets when a request sets none
    max_body_bytes: int = Field(default=8 * 2**20, gt=0)
    log_requests: bool = True
    source: str = Field(default="<dict>", exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        names = [b.name for b in self.backends]
        if len(set(names)) != len(names):
            raise ValueError(f"back end names must be unique: {names}")
        if not self.backends:
            raise ValueError("at least one back end is needed")
        models = {b.model for b in self.backends}
        clash = models & set(self.routes)
        if clash:
            raise ValueError(f"route names clash with model names: {sorted(clash)}")
        for model, chain in self.fallbacks.items():
            unknown = [m for m in [model, *chain] if m not in models]
            if unknown:
                raise ValueError(f"fallbacks name unknown models {unknown} (models: {sorted(models)})")
        key_names = [k.name for k in self.keys]
        if len(set(key_names)) != len(key_names):
            raise ValueError(f"key names must be unique: {key_names}")
        for k in self.keys:
            for m in k.models or ():
                if m not in models and m not in self.routes:
                    raise ValueError(f"key {k.name} allows unknown model {m!r}")
        return self

    @property
    def models(self) -> list[str]:
        return sorted({b.model for b in self.backends})


def load_config(source: str | os.PathLike | dict[str, Any]) -> GatewayConfig:
    """Read and validate a gateway YAML file (or an already parsed dict)."""
    if isinstance(source, dict):
        raw, name = source, "<dict>"
    else:
        path = Path(source).expanduser()
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GatewayConfigError(f"{path}: no such file (see examples/gateway.yaml)") from None
        except (OSError, yaml.YAMLError) as e:
            raise GatewayConfigError(f"{path}: cannot read it as YAML: {e}") from None
        name = str(path)
    if not isinstance(raw, dict):
        raise GatewayConfigError(f"{name}: the top level must be a mapping with `backends:`")
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
                             for err in e.errors()[:5])
        raise GatewayConfigError(f"{name}: {problems}") from None
    config.source = name
    return config
