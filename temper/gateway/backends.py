"""Back ends: the replicas of each model, health checks, retries with backoff, fallbacks, streaming.

A *model* is what clients name; each back end in the YAML is one *replica* of a model at an OpenAI-compatible URL.
A request for a model goes to the healthy replica with the fewest outstanding requests per unit of weight (ties
broken at random); a connection error, a timeout, a 5xx or a 429 makes the gateway try another replica of the same
model after a backoff (0.05 s, doubling), up to `retry.attempts` tries, then the models in `fallbacks` in order.
Errors the client caused (other 4xx) come back to the client as they are: another back end would refuse them too.

Streams fall back too, as long as nothing has reached the client: events are held back until the first one that
carries text (or a finish reason), so a back end that dies after its role chunk but before its first token is
replaced silently. After the first token the stream cannot be moved (the client has text from one back end); a
failure then ends the stream with an OpenAI-style error event.

Health: every `health.interval` seconds each replica's `GET {url}/models` is called; a replica that fails it, or a
request with a connection error, is marked down and skipped until a check succeeds (if every replica of a model
is down, they are tried anyway: a stale mark must not refuse service).
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from temper.gateway.config import BackendConfig, GatewayConfig
from temper.server.errors import APIError

log = logging.getLogger("temper.gateway")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# seconds this request spent waiting for back ends (the gateway's own overhead is the rest of its latency)
UPSTREAM: ContextVar[list[float] | None] = ContextVar("temper_gateway_upstream", default=None)


def estimate_tokens(text: str) -> int:
    """Prompt tokens before a tokenizer sees them: UTF-8 bytes / 4, rounded up (BPE vocabularies average ~4 bytes
    a token on English; the real count from the back end's usage replaces it when the answer arrives)."""
    return math.ceil(len(text.encode("utf-8")) / 4)


def prompt_text(body: dict) -> str:
    """The text of a chat request's messages (joined by newlines) or of a completions prompt."""
    if isinstance(body.get("messages"), list):
        parts = []
        for m in body["messages"]:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(content if isinstance(content, str) else "")
        return "\n".join(parts)
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return "\n".join(p for p in prompt if isinstance(p, str))
    return prompt if isinstance(prompt, str) else ""


def _waited(since: float) -> None:
    waits = UPSTREAM.get()
    if waits is not None:
        waits.append(time.perf_counter() - since)


@dataclass(eq=False)
class Replica:
    config: BackendConfig
    secret: str | None = None
    healthy: bool = True
    in_flight: int = 0
    last_error: str | None = None
    requests: int = 0
    failures: int = 0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def upstream_model(self) -> str:
        return self.config.upstream_model or self.config.model

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        inp, out = self.config.price.per_million()
        return (prompt_tokens * inp + completion_tokens * out) / 1e6

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"} if self.secret else {}


class BackendError(Exception):
    """One try failed in a way another back end might not (network, timeout, 5xx, 429)."""

    def __init__(self, replica: Replica, kind: str, message: str, status: int | None = None):
        super().__init__(message)
        self.replica, self.kind, self.message, self.status = replica, kind, message, status


class ClientError(Exception):
    """The back end refused the request itself (4xx other than 429): passed to the client unchanged."""

    def __init__(self, replica: Replica, status: int, body: Any):
        super().__init__(f"{replica.name} answered {status}")
        self.replica, self.status, self.body = replica, status, body


@dataclass
class Answer:
    """A non-streaming response from one back end."""

    replica: Replica
    body: dict
    latency: float
    tries: list[str] = field(default_factory=list)  # "<backend>: <error>" for each failed try before it

    @property
    def usage(self) -> tuple[int, int]:
        u = self.body.get("usage") or {}
        return int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)


@dataclass
class Stream:
    """An open upstream stream whose first text-bearing event has arrived: `events` yields the parsed JSON
    events (the ones held back first), `close()` releases the connection."""

    replica: Replica
    events: AsyncIterator[dict]
    close: Callable[[], Any]
    tries: list[str] = field(default_factory=list)
    first_event_at: float = 0.0


class Backends:
    """Every replica of every model, with the HTTP client they share.

    The client is aiohttp's: on this 2-core CPU a kept-alive round trip to a back end on loopback costs 0.96 ms
    p50 with it against 2.70 ms with httpx's AsyncClient (1.42 ms with httpx's sync client), and the gateway's
    whole budget is 2 ms a request (benchmarks/gateway_overhead.py)."""

    def __init__(self, config: GatewayConfig, on_error: Callable[[Replica, str], None] | None = None):
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self.replicas: dict[str, list[Replica]] = {}
        for b in config.backends:
            self.replicas.setdefault(b.model, []).append(Replica(b, b.secret()))
        self.on_error = on_error or (lambda replica, kind: None)
        self._health_task: asyncio.Task | None = None

    # ------------------------------------------------------------------ choice
    def models(self) -> list[str]:
        return sorted(self.replicas)

    def all(self) -> list[Replica]:
        return [r for rs in self.replicas.values() for r in rs]

    def pick(self, model: str, exclude: set[Replica] = frozenset()) -> Replica | None:
        """Least outstanding requests per weight among the healthy replicas not yet tried."""
        candidates = [r for r in self.replicas.get(model, ()) if r not in exclude]
        if not candidates:
            return None
        healthy = [r for r in candidates if r.healthy] or candidates
        load = min(r.in_flight / r.config.weight for r in healthy)
        return random.choice([r for r in healthy if r.in_flight / r.config.weight == load])

    def chain(self, model: str) -> list[str]:
        """The model, then its fallbacks (each once)."""
        return list(dict.fromkeys([model, *self.config.fallbacks.get(model, [])]))

    # ------------------------------------------------------------------ calls
    @property
    def session(self) -> aiohttp.ClientSession:
        """One connection pool for every back end, made in the running event loop on first use."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1024, limit_per_host=0, keepalive_timeout=30),
                read_bufsize=2**20, json_serialize=lambda o: json.dumps(o, separators=(",", ":")))
        return self._session

    def _body(self, replica: Replica, body: dict) -> dict:
        return {**body, "model": replica.upstream_model}

    def _failed(self, replica: Replica, kind: str, message: str, status: int | None = None) -> BackendError:
        replica.failures += 1
        replica.last_error = message
        if kind in ("connect", "timeout"):
            replica.healthy = False  # until the next health check succeeds
        self.on_error(replica, kind)
        log.warning("back end %s failed (%s): %s", replica.name, kind, message)
        return BackendError(replica, kind, message, status)

    async def _attempts(self, model: str, body: dict, tries: list[str]):
        """Yield replicas to try, in order: the model's replicas (least loaded first, each at most once, up to
        `retry.attempts`, with backoff), then each fallback model's the same way. Replicas whose `context_limit`
        is below the request's estimated prompt + max_tokens are passed over (a fallback with a longer context
        can take the request); if none fits, the client gets 400 context_length_exceeded."""
        retry = self.config.retry
        need = estimate_tokens(prompt_text(body)) + int(body.get("max_completion_tokens") or body.get("max_tokens")
                                                        or 0)
        too_long = []
        for name in self.chain(model):
            tried: set[Replica] = {r for r in self.replicas.get(name, ())
                                   if r.config.context_limit is not None and need > r.config.context_limit}
            too_long += [f"{r.name} ({r.config.context_limit})" for r in tried]
            for attempt in range(retry.attempts):
                replica = self.pick(name, tried)
                if replica is None:
                    break
                if attempt:
                    await asyncio.sleep(retry.backoff * 2 ** (attempt - 1) * (0.5 + random.random()))
                tried.add(replica)
                yield replica
        if too_long and not tries:
            raise APIError(400, f"the request needs about {need} tokens (prompt estimate + max_tokens), more than "
                                f"the context of {', '.join(too_long)}", code="context_length_exceeded",
                           param="messages" if "messages" in body else "prompt")

    async def complete(self, model: str, path: str, body: dict) -> Answer:
        """POST a non-streaming request, with retries and fallbacks; raises APIError(502/503) when all fail."""
        tries: list[str] = []
        async for replica in self._attempts(model, body, tries):
            start = time.monotonic()
            waited = time.perf_counter()
            replica.in_flight += 1
            replica.requests += 1
            c = replica.config
            try:
                async with self.session.post(c.url + path, json=self._body(replica, body), headers=replica.headers(),
                                             timeout=aiohttp.ClientTimeout(total=c.timeout,
                                                                           sock_connect=c.connect_timeout)) as r:
                    status, content = r.status, await r.read()
            except TimeoutError as e:
                tries.append(f"{replica.name}: {self._failed(replica, 'timeout', repr(e)).message}")
                continue
            except aiohttp.ClientError as e:
                tries.append(f"{replica.name}: {self._failed(replica, 'connect', repr(e)).message}")
                continue
            finally:
                replica.in_flight -= 1
                _waited(waited)
            if status in RETRYABLE_STATUS:
                tries.append(f"{replica.name}: {self._failed(replica, 'status', _brief(status, content), status).message}")
                continue
            if status >= 400:
                raise ClientError(replica, status, _json_or_text(content))
            try:
                data = json.loads(content)
            except ValueError:
                tries.append(f"{replica.name}: {self._failed(replica, 'invalid', 'the body is not JSON').message}")
                continue
            replica.healthy = True
            return Answer(replica, data, time.monotonic() - start, tries)
        raise _exhausted(model, tries)

    async def stream(self, model: str, path: str, body: dict) -> Stream:
        """Open a streaming request and wait for its first text-bearing event; fall back while none has come."""
        tries: list[str] = []
        async for replica in self._attempts(model, body, tries):
            replica.in_flight += 1
            replica.requests += 1
            waited = time.perf_counter()
            c = replica.config
            response: aiohttp.ClientResponse | None = None
            try:
                response = await self.session.post(
                    c.url + path, json=self._body(replica, body), headers=replica.headers(),
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=c.connect_timeout, sock_read=c.timeout))
                if response.status >= 400:
                    content = await response.read()
                    response.release()
                    if response.status in RETRYABLE_STATUS:
                        raise self._failed(replica, "status", _brief(response.status, content), response.status)
                    replica.in_flight -= 1
                    raise ClientError(replica, response.status, _json_or_text(content))
                events = _sse_events(response)
                held: list[dict] = []
                async for event in events:
                    held.append(event)
                    if "error" in event:
                        raise self._failed(replica, "stream", f"error event: {event['error']}")
                    if _carries_text(event):
                        break
                else:
                    if not held:
                        raise self._failed(replica, "stream", "the stream ended before any event")
            except BackendError as e:
                tries.append(f"{replica.name}: {e.message}")
            except TimeoutError as e:
                tries.append(f"{replica.name}: {self._failed(replica, 'timeout', repr(e)).message}")
            except (aiohttp.ClientError, ValueError) as e:  # refused, reset, a body cut short, or broken SSE
                tries.append(f"{replica.name}: {self._failed(replica, 'connect', repr(e)).message}")
            else:
                _waited(waited)
                replica.healthy = True
                return Stream(replica, _replay(held, events, replica, self), _closer(response, replica),
                              tries, time.monotonic())
            _waited(waited)
            if response is not None:
                response.close()
            replica.in_flight -= 1
        raise _exhausted(model, tries)

    # ------------------------------------------------------------------ health
    async def check(self, replica: Replica) -> bool:
        c = replica.config
        try:
            async with self.session.get(c.url + self.config.health.path, headers=replica.headers(),
                                        timeout=aiohttp.ClientTimeout(total=5.0, sock_connect=c.connect_timeout)) as r:
                content = await r.read()
                ok = r.status == 200
                error = None if ok else _brief(r.status, content)
        except (TimeoutError, aiohttp.ClientError) as e:
            ok, error = False, repr(e)
        if ok != replica.healthy:
            log.warning("back end %s is %s%s", replica.name, "up" if ok else "down", f": {error}" if error else "")
        replica.healthy, replica.last_error = ok, error if not ok else replica.last_error
        return ok

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(r) for r in self.all()))

    def start_health_checks(self) -> None:
        async def loop() -> None:
            while True:
                await self.check_all()
                await asyncio.sleep(self.config.health.interval)
        self._health_task = asyncio.create_task(loop(), name="temper-gateway-health")

    async def aclose(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        if self._session is not None:
            await self._session.close()


async def _sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[dict]:
    """The JSON events of a server-sent-event stream, up to `data: [DONE]`."""
    async for raw in response.content:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


def _carries_text(event: dict) -> bool:
    for choice in event.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or choice.get("text") or choice.get("finish_reason"):
            return True
    return False


async def _replay(held: list[dict], events: AsyncIterator[dict], replica: Replica,
                  backends: Backends) -> AsyncIterator[dict]:
    for event in held:
        yield event
    try:
        async for event in events:
            yield event
    except (TimeoutError, aiohttp.ClientError, ValueError) as e:
        backends._failed(replica, "stream", f"the stream broke after its first token: {e!r}")
        yield {"error": {"message": f"the back end's stream broke after it had started ({type(e).__name__}); "
                                    "the reply is incomplete", "type": "server_error", "param": None,
                         "code": "upstream_stream_broken"}}


def _closer(response: aiohttp.ClientResponse, replica: Replica) -> Callable[[], Any]:
    closed = False

    async def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            replica.in_flight -= 1
            response.release()  # back to the pool if the stream was read to its end, else the connection closes
    return close


def _json_or_text(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")


def _brief(status: int, content: bytes) -> str:
    return f"HTTP {status}: {content.decode('utf-8', 'replace')[:200]}"


def _exhausted(model: str, tries: list[str]) -> APIError:
    if not tries:
        return APIError(503, f"no back end serves model {model!r}", code="no_backend")
    return APIError(502, f"every back end for {model!r} failed ({len(tries)} tries): " + "; ".join(tries[-3:]),
                    code="backends_failed", type="upstream_error")
