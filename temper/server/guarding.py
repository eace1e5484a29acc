"""The guard on the server: input rails before the engine, output rails on whole and streamed replies.

A blocked request never reaches the engine: the client gets a normal completion whose text is the policy's
message and whose finish_reason is "content_filter" (as OpenAI's own filter answers), streamed or not. A streamed
reply goes through one `OutputMonitor` per choice: text is released only after it passed the output checks; when a
check fires, the choice ends at once with finish_reason "content_filter" and nothing after the last check is sent.
Guard work is CPU-bound (MiniLM), so it runs in a worker thread and the event loop keeps serving.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from temper.safety.guard import Guard, InputDecision, OutputMonitor

FILTERED = "content_filter"


async def check_input(guard: Guard | None, messages: list[dict[str, Any]], request_id: str) -> InputDecision | None:
    """The input decision, or None without a guard."""
    if guard is None:
        return None
    return await asyncio.to_thread(guard.check_input, messages, request_id)


async def check_reply(guard: Guard | None, decision: InputDecision | None, text: str,
                      request_id: str) -> tuple[str, bool]:
    """(text to return, blocked) for one whole reply."""
    if guard is None:
        return text, False
    out = await asyncio.to_thread(guard.check_output, text, decision, request_id)
    return out.text, out.blocked


class StreamRails:
    """One OutputMonitor per choice index of a streamed response."""

    def __init__(self, guard: Guard | None, decision: InputDecision | None, request_id: str):
        self.guard, self.decision, self.request_id = guard, decision, request_id
        self.monitors: dict[int, OutputMonitor] = {}

    @property
    def active(self) -> bool:
        return self.guard is not None

    def _monitor(self, index: int) -> OutputMonitor:
        assert self.guard is not None
        if index not in self.monitors:
            self.monitors[index] = self.guard.monitor(self.decision, self.request_id)
        return self.monitors[index]

    async def feed(self, index: int, delta: str) -> tuple[str, bool]:
        """(text that may go out now, blocked) for new text of one choice."""
        if self.guard is None:
            return delta, False
        mon = self._monitor(index)
        out = await asyncio.to_thread(mon.feed, delta) if delta else ""
        return out, mon.blocked

    async def finish(self, index: int) -> tuple[str, bool]:
        """(the held tail, blocked) when a choice ends."""
        if self.guard is None:
            return "", False
        mon = self._monitor(index)
        out = await asyncio.to_thread(mon.finish)
        return out, mon.blocked


def blocked_body(request_id: str, endpoint: str, model: str, message: str, n: int, fingerprint: str,
                 finish_reason: str = FILTERED) -> dict:
    """A whole response for a request answered without the engine (input rails blocked it, or RAG abstained)."""
    created = int(time.time())
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    if endpoint == "chat":
        choices = [{"index": k, "message": {"role": "assistant", "content": message, "refusal": None},
                    "logprobs": None, "finish_reason": finish_reason} for k in range(n)]
        return {"id": f"chatcmpl-{request_id}", "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": fingerprint, "choices": choices, "usage": usage}
    choices = [{"index": k, "text": message, "logprobs": None, "finish_reason": finish_reason} for k in range(n)]
    return {"id": f"cmpl-{request_id}", "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": fingerprint, "choices": choices, "usage": usage}


async def blocked_events(body: dict, sse) -> AsyncIterator[str]:
    """The same blocked response as server-sent events: the message as one delta, then the finish."""
    chat = body["object"] == "chat.completion"
    base = {k: body[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk" if chat else "text_completion"
    for choice in body["choices"]:
        k = choice["index"]
        if chat:
            message = choice["message"]["content"]
            yield sse({**base, "choices": [{"index": k, "delta": {"role": "assistant", "content": message},
                                            "logprobs": None, "finish_reason": None}]})
            yield sse({**base, "choices": [{"index": k, "delta": {}, "logprobs": None,
                                            "finish_reason": choice["finish_reason"]}]})
        else:
            yield sse({**base, "choices": [{"index": k, "text": choice["text"], "logprobs": None,
                                            "finish_reason": choice["finish_reason"]}]})
    yield "data: [DONE]\n\n"
