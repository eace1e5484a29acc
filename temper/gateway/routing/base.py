"""The routing-policy interface and its registry.

A route is a virtual model name (`routes:` in the YAML) whose requests a policy sends to one of the real models.
Each policy lives in its own file and registers itself with `@register("name")`; the gateway builds one instance
per route from the route's YAML options and asks it, per request, for a `Decision`: which model answers and why.
A policy may answer the request itself on the way (a cascade keeps the cheap model's answer when it is confident),
and says what that cost; the reason is logged, returned in the `x-temper-route` header and counted in /metrics.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from temper.gateway.backends import Answer, Backends

POLICIES: dict[str, type[Policy]] = {}


def register(name: str):
    def wrap(cls: type[Policy]) -> type[Policy]:
        cls.name = name
        POLICIES[name] = cls
        return cls
    return wrap


@dataclass
class RouteRequest:
    route: str
    path: str  # /chat/completions or /completions
    body: dict  # as the back end will get it (without gateway-only fields)
    stream: bool
    prompt_text: str
    prompt_tokens: int  # estimate
    metadata: dict = field(default_factory=dict)


@dataclass
class Decision:
    model: str
    reason: str
    outcome: str  # a short label for metrics: "rule:<i>", "default", "accepted", "escalated", "cheap", "strong"
    answer: Answer | None = None  # the policy already has the reply (cascade accepted)
    spent: list[Answer] = field(default_factory=list)  # answers paid for and not returned (cascade escalated)
    signal: float | None = None


class PolicyError(ValueError):
    """A route's options are wrong; raised when the gateway starts."""


class Policy(ABC):
    name: ClassVar[str]

    def __init__(self, route: str, options: dict[str, Any], backends: Backends, embedder=None):
        self.route, self.backends, self.embedder = route, backends, embedder
        self.configure(dict(options))

    @abstractmethod
    def configure(self, options: dict[str, Any]) -> None:
        """Read and check the route's options (raise PolicyError naming the route and the option)."""

    @abstractmethod
    def targets(self) -> list[str]:
        """Every model this route may use, for budget reservations (the dearest outcome) and /v1/models."""

    def paths(self) -> list[list[str]]:
        """The sets of models one request may pay for together (a cascade pays cheap + strong)."""
        return [[m] for m in self.targets()]

    @abstractmethod
    async def decide(self, request: RouteRequest) -> Decision: ...

    def _model(self, options: dict, key: str) -> str:
        model = options.pop(key, None)
        if not model:
            raise PolicyError(f"route {self.route}: `{key}` (a model name) is required")
        if model not in self.backends.replicas:
            raise PolicyError(f"route {self.route}: {key}: unknown model {model!r} "
                              f"(models: {', '.join(self.backends.models())})")
        return model

    def _done(self, options: dict) -> None:
        if options:
            raise PolicyError(f"route {self.route} ({self.name}): unknown options {sorted(options)}")


def build_policy(route: str, options: dict[str, Any], backends: Backends, embedder=None) -> Policy:
    from temper.gateway.routing import cascade, learned, rules  # noqa: F401 -- they register themselves

    options = dict(options)
    name = options.pop("policy")
    if name not in POLICIES:
        raise PolicyError(f"route {route}: unknown policy {name!r} (policies: {', '.join(sorted(POLICIES))})")
    return POLICIES[name](route, options, backends, embedder)
