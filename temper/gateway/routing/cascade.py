"""Cascade: ask the cheap model first; keep its answer when a confidence signal clears the threshold, otherwise
ask the strong model (and pay for both).

    routes:
      auto:
        policy: cascade
        cheap: smol-int4
        strong: smollm2
        signal: mean_logprob        # or self_consistency
        threshold: -0.9             # mean_logprob: nats per token; self_consistency: share of samples agreeing
        samples: 5                  # self_consistency: answers sampled from the cheap model in one request (n)
        temperature: 0.7            # self_consistency: their temperature

Signals:
- `mean_logprob`: the mean log-probability of the tokens of the cheap model's greedy answer (asked with
  `logprobs`; the client gets them only if it asked too). Cheap: one request.
- `self_consistency`: `samples` answers sampled in one request (n > 1 shares the prompt's KV blocks on temper);
  the final answers (the last number when there is one, else the normalized text) are majority-voted; the signal
  is the majority's share and the answer returned is the first sample with the majority answer.
If the cheap model fails (every replica and fallback), the strong one answers: "cheap failed" is the reason.
"""
from __future__ import annotations

import re
from typing import Any

from temper.gateway.routing.base import Decision, Policy, PolicyError, RouteRequest, register
from temper.prompts.answers import parse_number
from temper.prompts.self_consistency import majority_vote
from temper.server.errors import APIError

SIGNALS = ("mean_logprob", "self_consistency")


def mean_logprob(choice: dict) -> float | None:
    """Mean token log-probability of one choice of a chat or completions response (None without logprobs)."""
    lp = choice.get("logprobs")
    if not lp:
        return None
    if isinstance(lp.get("content"), list):  # chat
        values = [t.get("logprob") for t in lp["content"]]
    else:  # completions
        values = lp.get("token_logprobs") or []
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def extract_answer(text: str) -> str:
    """The final answer of a reply for voting: its last number in canonical form (temper.prompts.answers, the
    parser the self-consistency pattern uses) if it has one, else its text lowercased with punctuation and extra
    spaces removed."""
    number = parse_number(text)
    return number if number is not None else " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def choice_text(choice: dict) -> str:
    if "message" in choice:
        return (choice["message"] or {}).get("content") or ""
    return choice.get("text") or ""


@register("cascade")
class CascadePolicy(Policy):
    def configure(self, options: dict[str, Any]) -> None:
        self.cheap = self._model(options, "cheap")
        self.strong = self._model(options, "strong")
        self.signal = options.pop("signal", "mean_logprob")
        if self.signal not in SIGNALS:
            raise PolicyError(f"route {self.route}: signal {self.signal!r}: use one of {', '.join(SIGNALS)}")
        if "threshold" not in options:
            raise PolicyError(f"route {self.route}: `threshold` is required (mean_logprob: e.g. -0.9 nats/token; "
                              "self_consistency: e.g. 0.6)")
        self.threshold = float(options.pop("threshold"))
        self.samples = int(options.pop("samples", 5))
        self.temperature = float(options.pop("temperature", 0.7))
        if self.signal == "self_consistency" and self.samples < 2:
            raise PolicyError(f"route {self.route}: self_consistency needs samples >= 2")
        self._done(options)

    def targets(self) -> list[str]:
        return [self.cheap, self.strong]

    def paths(self) -> list[list[str]]:
        return [[self.cheap], [self.cheap, self.strong]]

    def cheap_body(self, r: RouteRequest) -> dict:
        body = {**r.body, "stream": False}
        body.pop("stream_options", None)
        if self.signal == "self_consistency":
            body.update(n=self.samples, temperature=self.temperature)
        if r.path == "/chat/completions":
            body["logprobs"] = True
        else:
            body["logprobs"] = max(int(body.get("logprobs") or 0), 1)
        return body

    async def decide(self, r: RouteRequest) -> Decision:
        try:
            answer = await self.backends.complete(self.cheap, r.path, self.cheap_body(r))
        except APIError as e:
            return Decision(self.strong, f"cheap model {self.cheap} failed ({e.message[:120]}): {self.strong}",
                            "cheap_failed")
        choices = answer.body.get("choices") or []
        if self.signal == "mean_logprob":
            signal = mean_logprob(choices[0]) if choices else None
            label = "mean logprob"
        else:
            answers = [extract_answer(choice_text(c)) for c in choices]
            vote = majority_vote(answers)
            signal = vote.agreement if choices else None
            label = f"agreement of {len(choices)} samples"
            chosen = next((c for c, a in zip(choices, answers) if a == vote.answer), None)
            if chosen is not None:
                answer.body["choices"] = [{**chosen, "index": 0}]
        if signal is not None and signal >= self.threshold:
            if not _asked_logprobs(r):
                for c in answer.body.get("choices") or []:
                    c["logprobs"] = None
            return Decision(self.cheap, f"{label} {signal:.3f} >= {self.threshold}: kept {self.cheap}'s answer",
                            "accepted", answer=answer, signal=signal)
        shown = "none" if signal is None else f"{signal:.3f}"
        return Decision(self.strong, f"{label} {shown} < {self.threshold}: escalated to {self.strong}",
                        "escalated", spent=[answer], signal=signal)


def _asked_logprobs(r: RouteRequest) -> bool:
    return bool(r.body.get("logprobs"))
