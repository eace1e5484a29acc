"""API keys, budgets and rate limits (the bookkeeping itself is in store.py, shared by every gateway instance).

A key has a name, an optional team, an optional budget in USD, optional requests- and tokens-per-minute limits,
and optionally the models it may use. Teams may have budgets too (`teams:` in the YAML); a request must fit both.
Presented keys are compared by their SHA-256, so a lookup's time does not depend on how much of a key matched.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from temper.gateway.config import GatewayConfig, KeyConfig
from temper.gateway.store import Admission, State
from temper.server.errors import APIError

ANONYMOUS = KeyConfig(name="anonymous", key="-")


@dataclass(frozen=True)
class Caller:
    key: KeyConfig

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def team(self) -> str:
        return self.key.team or "-"


class Keys:
    def __init__(self, config: GatewayConfig):
        self.config = config
        self._by_hash = {hashlib.sha256(k.secret().encode()).digest(): k for k in config.keys}

    @property
    def required(self) -> bool:
        return bool(self._by_hash)

    def authenticate(self, authorization: str | None) -> Caller:
        if not self.required:
            return Caller(ANONYMOUS)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise APIError(401, "missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")
        key = self._by_hash.get(hashlib.sha256(token.strip().encode()).digest())
        if key is None:
            raise APIError(401, "invalid API key", code="invalid_api_key")
        return Caller(key)

    def budgets(self, caller: Caller) -> dict[str, float]:
        out = {}
        if caller.key.budget_usd is not None:
            out[f"key:{caller.name}"] = caller.key.budget_usd
        team = self.config.teams.get(caller.team)
        if caller.key.team and team is not None and team.budget_usd is not None:
            out[f"team:{caller.team}"] = team.budget_usd
        return out


async def admit(state: State, caller: Caller, tokens: int) -> Admission:
    """Charge the request to the key's rpm/tpm windows or raise 429 with Retry-After."""
    k = caller.key
    if k.rpm is None and k.tpm is None:
        return Admission(True)
    verdict = await state.admit(caller.name, k.rpm, k.tpm, tokens)
    if verdict.ok:
        return verdict
    if verdict.retry_after == 0.0:  # can never fit
        raise APIError(400, verdict.reason, code="request_too_large_for_tpm", param="max_tokens")
    seconds = min(max(1, math.ceil(verdict.retry_after - 1e-3)), 60)
    raise APIError(429, f"{verdict.reason} for key {caller.name!r}; retry in {verdict.retry_after:.1f} s",
                   code="rate_limit_exceeded", headers={"Retry-After": str(seconds)})


async def reserve(state: State, budgets: dict[str, float], amount: float) -> Admission:
    if not budgets:
        return Admission(True)
    verdict = await state.reserve(budgets, amount)
    if not verdict.ok:
        raise APIError(429, f"budget exceeded: {verdict.reason}", code="budget_exceeded",
                       type="insufficient_quota")
    return verdict
