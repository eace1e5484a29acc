"""A minimal OpenAI-compatible chat client over httpx, with retries on the failures worth retrying.

Connection errors, timeouts, 429 and 5xx are retried with exponential backoff (honouring a numeric Retry-After);
any other non-200 status, or a 200 without a usable body, becomes an error reply at once.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

MAX_BACKOFF_S = 60.0


@dataclass
class Reply:
    """What came back for one request: the text and finish reason, or an error after ``attempts`` tries."""

    text: str = ""
    finish_reason: str | None = None
    latency_s: float | None = None
    attempts: int = 0
    status: int | None = None
    error: str | None = None


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _error_text(resp: httpx.Response, limit: int = 300) -> str:
    """The server's error message when it sent an OpenAI error body, else the start of the raw body."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:limit]
    if isinstance(body, dict) and isinstance(body.get("error"), dict) and body["error"].get("message"):
        return str(body["error"]["message"])[:limit]
    return resp.text[:limit]


def parse_completion(body: Any) -> tuple[str, str | None]:
    """(content, finish_reason) of the first choice; ValueError when the body is not a chat completion."""
    try:
        choice = body["choices"][0]
        content = choice["message"].get("content")
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"not a chat completion ({type(e).__name__}: {e})") from None
    if content is not None and not isinstance(content, str):
        raise ValueError(f"message content is {type(content).__name__}, not a string")
    return content or "", finish


def _retry_after(resp: httpx.Response | None) -> float:
    """The Retry-After header in seconds; 0 when absent or an HTTP date (then the backoff alone decides)."""
    value = "" if resp is None else resp.headers.get("retry-after", "")
    try:
        return float(value)
    except ValueError:
        return 0.0


def _delay(attempt: int, backoff_s: float, resp: httpx.Response | None) -> float:
    """Exponential backoff, or the server's Retry-After when it asks for longer; capped at MAX_BACKOFF_S."""
    return min(max(backoff_s * 2**attempt, _retry_after(resp)), MAX_BACKOFF_S)


def _ok_reply(resp: httpx.Response, latency: float, attempts: int) -> Reply:
    try:
        text, finish = parse_completion(resp.json())
    except ValueError as e:
        return Reply(latency_s=latency, attempts=attempts, status=resp.status_code, error=f"bad response: {e}")
    return Reply(text, finish, latency, attempts, resp.status_code)


async def post_chat(client: httpx.AsyncClient, url: str, body: dict, retries: int, backoff_s: float) -> Reply:
    """POST one chat completion; ``retries`` more tries on connection errors, timeouts, 429 and 5xx."""
    failure, status = "", None
    for attempt in range(retries + 1):
        resp = None
        start = time.perf_counter()
        try:
            resp = await client.post(url, json=body)
        except httpx.TransportError as e:
            failure, status = f"{type(e).__name__}: {e}", None
        else:
            latency = time.perf_counter() - start
            if resp.status_code == 200:
                return _ok_reply(resp, latency, attempt + 1)
            failure, status = f"HTTP {resp.status_code}: {_error_text(resp)}", resp.status_code
            if not _retryable(resp.status_code):
                return Reply(latency_s=latency, attempts=attempt + 1, status=status, error=failure)
        if attempt < retries:
            await asyncio.sleep(_delay(attempt, backoff_s, resp))
    return Reply(attempts=retries + 1, status=status, error=failure)
