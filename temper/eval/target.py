"""What `temper eval` measures: a model run in this process, or any OpenAI-compatible endpoint.

Both answer batches of chat conversations greedily; the suites see only `chat` (and, where they need the weights
or the retriever, `llm` and `rag`), so the same suite measures a checkpoint on disk and a served deployment
with its guard and RAG in front.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from temper.errors import TemperError

log = logging.getLogger(__name__)


class TargetError(TemperError):
    """The model or endpoint could not be loaded or answered with an error."""


@dataclass
class Reply:
    text: str
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Target:
    kind = "model"
    label: str
    model: str

    def chat(self, conversations: list[list[dict]], max_tokens: int, temperature: float = 0.0,
             frequency_penalty: float = 0.0, progress: bool = False) -> list[Reply]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalTarget(Target):
    """A registered name or a model folder, loaded once into temper's engine (greedy, batched)."""

    kind = "model"

    def __init__(self, model: str, quantization: str | None = None, device: str = "cpu", max_model_len: int = 2048,
                 kv_cache_memory: int | None = 1 << 30):
        self.model = model
        self.quantization = quantization
        self.device = device
        self.max_model_len = max_model_len
        self.kv_cache_memory = kv_cache_memory
        self._llm = None

    @property
    def llm(self):
        if self._llm is None:
            from temper.engine.llm import LLM

            options: dict[str, Any] = {"max_model_len": self.max_model_len}
            if self.kv_cache_memory:
                options["kv_cache_memory"] = self.kv_cache_memory
            try:
                self._llm = LLM(self.model, device=self.device, quantization=self.quantization, **options)
            except TemperError as e:
                raise TargetError(f"cannot load {self.model!r}: {e}") from e
        return self._llm

    def chat(self, conversations, max_tokens, temperature=0.0, frequency_penalty=0.0, progress=False):
        from temper.engine.sampling_params import SamplingParams

        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, frequency_penalty=frequency_penalty)
        outs = self.llm.generate(conversations, params, use_tqdm=progress)
        return [Reply(o.outputs[0].text, o.outputs[0].finish_reason, len(o.prompt_token_ids),
                      len(o.outputs[0].token_ids)) for o in outs]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "url": None, "quantization": self.quantization,
                "guard": None, "rag_collection": None}

    def close(self) -> None:
        self._llm = None


class EndpointTarget(Target):
    """An OpenAI-compatible server (`base_url` ends in /v1); requests go `concurrency` at a time."""

    kind = "endpoint"

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 600.0, guard: str | None = None, rag_collection: str | None = None):
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout = timeout
        self.guard = guard  # what the operator says is in front (recorded; the endpoint does the guarding)
        self.rag_collection = rag_collection
        self.model = model or self._first_model()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _first_model(self) -> str:
        try:
            r = httpx.get(f"{self.base_url}/models", headers=self._headers(), timeout=30)
            r.raise_for_status()
            return r.json()["data"][0]["id"]
        except (httpx.HTTPError, KeyError, IndexError, json.JSONDecodeError) as e:
            raise TargetError(f"cannot list the models of {self.base_url} ({type(e).__name__}: {e}); is the server "
                              "up, and is --api-key right? Or pass --served-model") from None

    def post_many(self, path: str, bodies: list[dict], progress: bool = False) -> list[dict]:
        """POST every body (at most `concurrency` in flight); an HTTP error raises TargetError with its body."""
        from tqdm import tqdm

        async def run() -> list[dict]:
            sem = asyncio.Semaphore(self.concurrency)
            bar = tqdm(total=len(bodies), desc=path, unit="req", disable=not progress)
            limits = httpx.Limits(max_connections=self.concurrency)
            async with httpx.AsyncClient(headers=self._headers(), timeout=self.timeout, limits=limits) as client:
                async def one(body: dict) -> dict:
                    async with sem:
                        try:
                            r = await client.post(f"{self.base_url}{path}", json=body)
                        except httpx.HTTPError as e:
                            raise TargetError(f"POST {self.base_url}{path}: {type(e).__name__}: {e}") from None
                        bar.update(1)
                        if r.status_code != 200:
                            raise TargetError(f"POST {self.base_url}{path} answered {r.status_code}: {r.text[:300]}")
                        return r.json()

                try:
                    return list(await asyncio.gather(*(one(b) for b in bodies)))
                finally:
                    bar.close()

        return asyncio.run(run())

    def chat(self, conversations, max_tokens, temperature=0.0, frequency_penalty=0.0, progress=False):
        bodies = [{"model": self.model, "messages": c, "max_tokens": max_tokens, "temperature": temperature,
                   "frequency_penalty": frequency_penalty} for c in conversations]
        out = []
        for body in self.post_many("/chat/completions", bodies, progress):
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            out.append(Reply(choice["message"].get("content") or "", choice.get("finish_reason"),
                             usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)))
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "url": self.base_url, "quantization": None,
                "guard": self.guard, "rag_collection": self.rag_collection}
