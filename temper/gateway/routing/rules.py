"""Rules: the first rule whose conditions all hold picks the model; otherwise the default.

    routes:
      chat:
        policy: rules
        rules:
          - {when: {max_prompt_tokens: 200}, model: smol-int4}       # short prompts to the cheap model
          - {when: {metadata: {tier: premium}}, model: smollm2}      # a request's `metadata` field
          - {when: {contains: ["```", "def "]}, model: smollm2}      # any of these substrings in the prompt
        default: smollm2

Conditions: `min_prompt_tokens` / `max_prompt_tokens` (the gateway's estimate: UTF-8 bytes / 4, rounded up),
`metadata` (every listed key equal), `contains` (any substring, case-insensitive), `stream` (true/false).
"""
from __future__ import annotations

from typing import Any

from temper.gateway.routing.base import Decision, Policy, PolicyError, RouteRequest, register

CONDITIONS = {"min_prompt_tokens", "max_prompt_tokens", "metadata", "contains", "stream"}


@register("rules")
class RulesPolicy(Policy):
    def configure(self, options: dict[str, Any]) -> None:
        self.default = self._model(options, "default")
        self.rules: list[tuple[dict, str]] = []
        for i, rule in enumerate(options.pop("rules", []) or []):
            if not isinstance(rule, dict) or set(rule) - {"when", "model"} or "model" not in rule:
                raise PolicyError(f"route {self.route}: rules[{i}] must be {{when: {{...}}, model: NAME}}")
            when = rule.get("when") or {}
            unknown = set(when) - CONDITIONS
            if unknown:
                raise PolicyError(f"route {self.route}: rules[{i}]: unknown conditions {sorted(unknown)} "
                                  f"(known: {', '.join(sorted(CONDITIONS))})")
            if "contains" in when and isinstance(when["contains"], str):
                when = {**when, "contains": [when["contains"]]}
            self.rules.append((when, self._model({"model": rule["model"]}, "model")))
        self._done(options)

    def targets(self) -> list[str]:
        return list(dict.fromkeys([m for _, m in self.rules] + [self.default]))

    @staticmethod
    def matches(when: dict, r: RouteRequest) -> bool:
        if "min_prompt_tokens" in when and r.prompt_tokens < when["min_prompt_tokens"]:
            return False
        if "max_prompt_tokens" in when and r.prompt_tokens > when["max_prompt_tokens"]:
            return False
        if "stream" in when and bool(when["stream"]) != r.stream:
            return False
        if "metadata" in when and any(r.metadata.get(k) != v for k, v in when["metadata"].items()):
            return False
        if "contains" in when:
            text = r.prompt_text.lower()
            if not any(s.lower() in text for s in when["contains"]):
                return False
        return True

    async def decide(self, request: RouteRequest) -> Decision:
        for i, (when, model) in enumerate(self.rules):
            if self.matches(when, request):
                return Decision(model, f"rules[{i}] {when} matched", f"rule:{i}")
        return Decision(self.default, "no rule matched: default", "default")
