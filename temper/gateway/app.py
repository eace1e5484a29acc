"""The gateway's HTTP front: an OpenAI-compatible API over several back ends.

Per request (`/v1/chat/completions`, `/v1/completions`): authenticate the key -> charge its rpm/tpm windows (429
with Retry-After) -> reserve the request's most expensive outcome against the key's and team's budgets (429
`budget_exceeded`) -> look the request up in the exact and semantic caches -> let the route's policy pick a model
(or answer through the cheap model of a cascade) -> call the back end with retries and fallbacks -> price the
usage, settle the budget, count tokens and spend, store the answer in the cache, log one JSON line.

Every response carries `x-trace-id` (the client's `x-trace-id`/`x-request-id`, else a new one) and, for
completions, `x-temper-model`, `x-temper-backend`, `x-temper-route`, `x-temper-cache` and, when known before
the body, `x-temper-cost-usd` (a stream's cost comes in a final SSE comment line, `: x-temper-cost-usd ...`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from temper.gateway.backends import UPSTREAM, Backends, ClientError, Replica, Stream, estimate_tokens, prompt_text
from temper.gateway.cache import CacheControl, Hit, ResponseCache
from temper.gateway.config import GatewayConfig
from temper.gateway.limits import Caller, Keys, admit, reserve
from temper.gateway.metrics import GatewayMetrics
from temper.gateway.routing import Decision, Policy, RouteRequest, build_policy
from temper.gateway.store import State, open_state
from temper.server.errors import APIError, error_body, http_error, validation_error
from temper.server.serving import _wait_disconnect

log = logging.getLogger("temper.gateway")
request_log = logging.getLogger("temper.gateway.requests")

PATHS = {"/v1/chat/completions": "/chat/completions", "/v1/completions": "/completions"}


@dataclass
class Ledger:
    """What one request cost, across every back end it touched."""

    parts: list[tuple[Replica, int, int, float]] = field(default_factory=list)

    def add(self, replica: Replica, prompt_tokens: int, completion_tokens: int) -> float:
        cost = replica.cost(prompt_tokens, completion_tokens)
        self.parts.append((replica, prompt_tokens, completion_tokens, cost))
        return cost

    @property
    def cost(self) -> float:
        return sum(p[3] for p in self.parts)

    @property
    def tokens(self) -> int:
        return sum(p[1] + p[2] for p in self.parts)


class Gateway:
    def __init__(self, config: GatewayConfig, state: State | None = None, embedder=None, verifier=None):
        self.config = config
        self.metrics = GatewayMetrics()
        self.backends = Backends(config, on_error=self._backend_error)
        self.state = state or open_state(config.cache.store)
        needs_embedder = config.cache.semantic.enabled or any(r.policy == "learned" for r in config.routes.values())
        if needs_embedder and embedder is None:
            from temper.embeddings import Embedder
            embedder = Embedder.load()
        self.embedder = embedder
        self.cache = ResponseCache(config.cache, self.state, embedder, verifier)
        self.keys = Keys(config)
        self.policies: dict[str, Policy] = {name: build_policy(name, r.model_dump(), self.backends, embedder)
                                            for name, r in config.routes.items()}

        self.pending: set[asyncio.Task] = set()  # bookkeeping left for after a response went out

    def _backend_error(self, replica: Replica, kind: str) -> None:
        self.metrics.backend_errors.labels(replica.name, kind).inc()

    def after_response(self, work) -> None:
        """Run `work` (a coroutine: a cache write, the spend ledger, metrics, the log line) once the handler has
        returned its response, which goes out first: the caller does not wait for the bookkeeping (0.1-0.2 ms a
        request on a 2-core VM). Limits (budget settlement, the tpm window) are never deferred. `settled()` waits
        for what is pending: the spend report and shutdown do."""
        task = asyncio.ensure_future(work)
        self.pending.add(task)
        task.add_done_callback(self._after_done)

    def _after_done(self, task: asyncio.Task) -> None:
        self.pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("bookkeeping after a response failed", exc_info=task.exception())

    async def settled(self) -> None:
        while self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)

    # ------------------------------------------------------------------ pricing
    def max_cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """The dearest way this request can go: every path of its route, each model's priciest replica and
        fallback."""
        policy = self.policies.get(model)
        paths = policy.paths() if policy else [[model]]

        def dearest(m: str) -> float:
            return max(r.cost(prompt_tokens, completion_tokens)
                       for name in self.backends.chain(m) for r in self.backends.replicas[name])
        return max(sum(dearest(m) for m in path) for path in paths)


def create_gateway(config: GatewayConfig, state: State | None = None, embedder=None,
                   health_checks: bool = True, verifier=None) -> FastAPI:
    gw = Gateway(config, state, embedder, verifier)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if health_checks:
            gw.backends.start_health_checks()
        log.info("gateway: %d back ends for models %s; routes %s; cache %s", len(config.backends),
                 ", ".join(gw.backends.models()), ", ".join(f"{n} ({p.name})" for n, p in gw.policies.items()) or "-",
                 _cache_summary(config))
        yield
        await gw.settled()
        await gw.backends.aclose()
        await gw.state.close()

    app = FastAPI(title="temper gateway", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible gateway: routing, caching, cost tracking, budgets and rate limits")
    app.state.gateway = gw

    async def completion_endpoint(scope, receive, send) -> None:
        # the two proxy endpoints skip FastAPI's routing and dependency machinery (about 0.4 ms a
        # request on a 2-core VM, measured with benchmarks/gateway_overhead.py); errors answer as the handlers do
        request = Request(scope, receive)
        try:
            response = await handle(gw, request, scope["path"])
        except APIError as e:
            response = e.response()
        except Exception as e:
            log.exception("unhandled error on %s", scope["path"])
            response = APIError(500, f"internal error: {type(e).__name__}: {e}").response()
        await response(scope, receive, send)

    app.add_middleware(_Trace, max_body=config.max_body_bytes, metrics=gw.metrics,
                       fast={path: completion_endpoint for path in PATHS})

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        return validation_error(list(e.errors())).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        return http_error(e.status_code, e.detail if isinstance(e.detail, str) else None).response()

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return APIError(500, f"internal error: {type(e).__name__}: {e}").response()

    @app.get("/health")
    async def health():
        replicas = gw.backends.all()
        status = {r.name: {"model": r.model, "healthy": r.healthy, "in_flight": r.in_flight,
                           "last_error": r.last_error} for r in replicas}
        up = any(r.healthy for r in replicas)
        return JSONResponse({"status": "ok" if up else "no healthy back end", "backends": status},
                            status_code=200 if up else 503)

    @app.get("/metrics")
    async def prometheus():
        for r in gw.backends.all():
            gw.metrics.backend_up.labels(r.name).set(1 if r.healthy else 0)
            gw.metrics.in_flight.labels(r.name).set(r.in_flight)
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request):
        caller = gw.keys.authenticate(request.headers.get("authorization"))
        names = gw.backends.models() + sorted(gw.policies)
        allowed = caller.key.models
        data = [{"id": n, "object": "model", "owned_by": "temper-gateway",
                 **({"route": gw.policies[n].name, "targets": gw.policies[n].targets()} if n in gw.policies else {})}
                for n in names if allowed is None or n in allowed]
        return {"object": "list", "data": data}

    @app.get("/admin/spend")
    async def spend(request: Request):
        caller = gw.keys.authenticate(request.headers.get("authorization"))
        if gw.keys.required and not caller.key.admin:
            raise APIError(403, "spend is for admin keys (`admin: true` in the gateway's keys)")
        return await spend_report(gw)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await handle(gw, request, "/v1/chat/completions")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(gw, request, "/v1/completions")

    return app


async def spend_report(gw: Gateway) -> dict:
    await gw.settled()  # this instance's answered requests are in the ledger
    rows = await gw.state.spend_rows()
    totals: dict[str, dict[str, float]] = {"key": {}, "team": {}, "model": {}}
    for row in rows:
        for dim, bucket in totals.items():
            bucket[row[dim]] = bucket.get(row[dim], 0.0) + row["cost_usd"]
    budgets = {}
    for k in gw.config.keys:
        if k.budget_usd is not None:
            budgets[f"key:{k.name}"] = {"budget_usd": k.budget_usd, "spent_usd": await gw.state.spent(f"key:{k.name}")}
    for team, t in gw.config.teams.items():
        if t.budget_usd is not None:
            budgets[f"team:{team}"] = {"budget_usd": t.budget_usd, "spent_usd": await gw.state.spent(f"team:{team}")}
    return {"rows": rows, "totals": totals, "budgets": budgets,
            "total_usd": sum(r["cost_usd"] for r in rows)}


# ====================================================================== one request
async def _json_body(request: Request) -> dict:
    raw = await request.body()
    if not raw:
        raise APIError(400, "the request needs a JSON body")
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise APIError(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    return body


def _int_field(body: dict, name: str, default: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise APIError(400, f"{name} must be a non-negative integer", param=name)
    return value


async def handle(gw: Gateway, request: Request, endpoint: str) -> Response:
    start = time.perf_counter()
    upstream: list[float] = []
    UPSTREAM.set(upstream)
    path = PATHS[endpoint]
    trace_id = request.scope["state"]["trace_id"]
    caller = gw.keys.authenticate(request.headers.get("authorization"))
    body = await _json_body(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "model is required", param="model")
    if model not in gw.policies and model not in gw.backends.replicas:
        raise APIError(404, f"model {model!r} is not served here (models: "
                            f"{', '.join(gw.backends.models() + sorted(gw.policies))})", param="model",
                       code="model_not_found")
    if caller.key.models is not None and model not in caller.key.models:
        raise APIError(403, f"key {caller.name!r} may not use model {model!r}", param="model")
    if path == "/chat/completions" and not isinstance(body.get("messages"), list):
        raise APIError(400, "messages must be a list", param="messages")
    if path == "/completions" and not isinstance(body.get("prompt"), (str, list)):
        raise APIError(400, "prompt is required", param="prompt")
    stream = bool(body.get("stream"))
    metadata = body.pop("metadata", None) or {}
    if not isinstance(metadata, dict):
        raise APIError(400, "metadata must be an object", param="metadata")
    control = CacheControl.of(body, request.headers.get("cache-control"))
    body.pop("cache", None)
    n = _int_field(body, "n", 1) or 1
    max_tokens = _int_field(body, "max_completion_tokens", None) or _int_field(body, "max_tokens", None) \
        or gw.config.default_max_tokens
    text = prompt_text(body)
    est_prompt = estimate_tokens(text)

    budgets = gw.keys.budgets(caller)
    admission = None
    try:
        admission = await admit(gw.state, caller, est_prompt + max_tokens * n)
        reservation = await reserve(gw.state, budgets, gw.max_cost(model, est_prompt, max_tokens * n))
    except APIError as e:
        if admission is not None and admission.ticket:  # refused for budget: it used no tokens of the tpm window
            await gw.state.correct_tokens(caller.name, admission.ticket, 0)
        gw.metrics.rejected.labels(e.code or str(e.status)).inc()
        request_log.info(json.dumps({"trace_id": trace_id, "key": caller.name, "team": caller.team, "model": model,
                                     "endpoint": endpoint, "status": e.status, "rejected": e.code,
                                     "error": e.message[:300]}))
        raise
    info = RequestInfo(trace_id=trace_id, caller=caller, model=model, endpoint=endpoint, stream=stream,
                       start=start, upstream=upstream, budgets=budgets, reservation=reservation.ticket,
                       rate_ticket=admission.ticket)
    task = asyncio.current_task()
    disconnected = False

    async def watch() -> None:  # the client hung up: stop waiting for (and paying) the back end
        nonlocal disconnected
        await _wait_disconnect(request)
        disconnected = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        response = await _serve(gw, info, path, body, control, text, est_prompt, metadata)
    except BaseException as e:
        if disconnected:
            log.info("client disconnected; trace %s abandoned", trace_id)
        info.status = e.status if isinstance(e, APIError) else 499 if isinstance(e, asyncio.CancelledError) else 500
        info.error = getattr(e, "message", None) or repr(e)
        await _finish(gw, info)
        raise
    finally:
        watcher.cancel()
    return response


@dataclass
class RequestInfo:
    trace_id: str
    caller: Caller
    model: str
    endpoint: str
    stream: bool
    start: float
    upstream: list[float]
    budgets: dict[str, float]
    reservation: str
    rate_ticket: str
    ledger: Ledger = field(default_factory=Ledger)
    decision: Decision | None = None
    cache: str = "off"
    status: int = 200
    error: str | None = None
    backend: str | None = None
    tries: list[str] = field(default_factory=list)
    finished: bool = False
    elapsed: float = 0.0

    def headers(self) -> dict[str, str]:
        h = {"x-temper-model": self.decision.model if self.decision else self.model,
             "x-temper-cache": self.cache}
        if self.backend:
            h["x-temper-backend"] = self.backend
        if self.decision is not None:
            h["x-temper-route"] = _header_safe(f"{self.decision.outcome}: {self.decision.reason}")
        return h


def _header_safe(value: str) -> str:
    return value.encode("latin-1", "replace").decode("latin-1")[:300]


async def _serve(gw: Gateway, info: RequestInfo, path: str, body: dict, control: CacheControl, text: str,
                 est_prompt: int, metadata: dict) -> Response:
    # ---- cache: scoped by the requested model (and, for a route, the metadata its rules may read)
    cache_ctx: dict = {}
    scope = info.model
    if metadata and info.model in gw.policies:
        scope += "\0" + json.dumps(metadata, sort_keys=True)
    if gw.cache.applies(body) or gw.cache.applies(body, semantic=True):
        if control.read:
            hit, cache_ctx = await gw.cache.get(body, scope)
            for kind in ("exact", "semantic"):
                if kind in cache_ctx or (hit and hit.kind == kind):
                    gw.metrics.cache.labels(kind, "hit" if hit and hit.kind == kind else "miss").inc()
            if hit is not None:
                return await _from_cache(gw, info, hit, body, path)
            info.cache = "miss"
        elif control.write:
            _, cache_ctx = await gw.cache.get(body, scope, read=False)
            info.cache = "bypass"
        else:
            info.cache = "bypass"
    # ---- route
    policy = gw.policies.get(info.model)
    if policy is not None:
        decision = await policy.decide(RouteRequest(info.model, path, body, info.stream, text, est_prompt,
                                                    metadata))
        gw.metrics.routes.labels(info.model, policy.name, decision.outcome, decision.model).inc()
    else:
        decision = Decision(info.model, "requested directly", "direct")
    info.decision = decision
    for spent in decision.spent:
        info.ledger.add(spent.replica, *spent.usage)
    # ---- answer
    try:
        if decision.answer is not None:
            answer = decision.answer
        elif info.stream:
            return await _stream(gw, info, path, body, cache_ctx if control.write else {}, decision.model)
        else:
            answer = await gw.backends.complete(decision.model, path, body)
    except ClientError as e:
        info.backend = e.replica.name
        info.status = e.status
        info.error = str(e.body)[:300]
        await _finish(gw, info)
        content = e.body if isinstance(e.body, dict) and "error" in e.body else error_body(
            str(e.body)[:2000], "upstream_error")
        return JSONResponse(content, status_code=e.status, headers=info.headers())
    info.backend = answer.replica.name
    info.tries = answer.tries
    info.ledger.add(answer.replica, *answer.usage)
    answer.body["model"] = answer.replica.model
    await _finish(gw, info, record=False)  # limits now; the ledger, metrics and log after the response

    async def bookkeeping() -> None:
        if control.write and cache_ctx and _cacheable(answer.body):
            await gw.cache.put(cache_ctx, answer.body)
        await _record(gw, info)
    gw.after_response(bookkeeping())
    headers = {**info.headers(), "x-temper-cost-usd": f"{info.ledger.cost:.10f}"}
    if info.stream:  # a cascade answered a streaming request: replay its answer as a stream
        return _sse(_replay(answer.body, path, info, body), headers)
    return JSONResponse(answer.body, headers=headers)


def _cacheable(body: dict) -> bool:
    choices = body.get("choices") or []
    return bool(choices) and all(c.get("finish_reason") in ("stop", "length") for c in choices)


async def _from_cache(gw: Gateway, info: RequestInfo, hit: Hit, body: dict, path: str) -> Response:
    info.cache = f"hit-{hit.kind}"
    info.decision = Decision(hit.body.get("model", info.model), f"{hit.kind} cache hit" + (
        f" (similarity {hit.similarity:.3f})" if hit.kind == "semantic" else ""), "cache")
    reply = {**hit.body, "id": f"{'chatcmpl' if path == '/chat/completions' else 'cmpl'}-{uuid.uuid4().hex[:24]}",
             "created": int(time.time())}
    usage = dict(reply.get("usage") or {})
    reply["usage"] = {**usage, "cached": True}
    await _finish(gw, info)
    headers = {**info.headers(), "x-temper-cost-usd": "0"}
    if hit.kind == "semantic":
        headers["x-temper-cache-similarity"] = f"{hit.similarity:.4f}"
        if hit.verified is not None:
            headers["x-temper-cache-verifier"] = f"{hit.verified:.4f}"
    if info.stream:
        return _sse(_replay(reply, path, info, body), headers)
    return JSONResponse(reply, headers=headers)


async def _stream(gw: Gateway, info: RequestInfo, path: str, body: dict, cache_ctx: dict, model: str) -> Response:
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    upstream_body = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
    stream: Stream = await gw.backends.stream(model, path, upstream_body)
    info.backend = stream.replica.name
    info.tries = stream.tries

    async def events():
        usage = None
        pieces: list[dict] = []
        broken = False
        try:
            async for event in stream.events:
                if "error" in event:
                    broken = True
                    info.status, info.error = 502, str(event["error"].get("message"))
                if event.get("usage"):
                    usage = event["usage"]
                pieces.append(event)
                if not event.get("choices") and event.get("usage") and not wants_usage:
                    continue
                event = {**event, "model": stream.replica.model} if "model" in event else event
                yield f"data: {json.dumps(event, separators=(',', ':'))}\n\n"
            prompt_tokens = int((usage or {}).get("prompt_tokens") or 0)
            completion_tokens = int((usage or {}).get("completion_tokens") or 0)
            if usage is None:  # a back end that sends no usage: estimate from the text
                completion_tokens = estimate_tokens("".join(_event_text(e) for e in pieces))
                prompt_tokens = estimate_tokens(prompt_text(body))
            info.ledger.add(stream.replica, prompt_tokens, completion_tokens)
            yield f": x-temper-cost-usd {info.ledger.cost:.10f}\n\n"
            yield "data: [DONE]\n\n"
            if cache_ctx and not broken:
                assembled = _assemble(pieces, path, stream.replica.model)
                if _cacheable(assembled):
                    await gw.cache.put(cache_ctx, assembled)
        finally:
            await stream.close()
            if not info.finished:
                if not info.ledger.parts:  # the client left early: charge what the back end said or nothing known
                    info.status = 499
                await asyncio.shield(_finish(gw, info))

    return _sse(events(), info.headers())


def _event_text(event: dict) -> str:
    out = []
    for c in event.get("choices") or ():
        out.append(((c.get("delta") or {}).get("content")) or c.get("text") or "")
    return "".join(out)


def _assemble(events: list[dict], path: str, model: str) -> dict:
    """A non-streaming response body from the events of a stream (for the cache)."""
    chat = path == "/chat/completions"
    choices: dict[int, dict] = {}
    usage = None
    head = events[0] if events else {}
    for e in events:
        usage = e.get("usage") or usage
        for c in e.get("choices") or ():
            slot = choices.setdefault(c.get("index", 0), {"text": "", "finish_reason": None})
            slot["text"] += ((c.get("delta") or {}).get("content") or "") if chat else (c.get("text") or "")
            slot["finish_reason"] = c.get("finish_reason") or slot["finish_reason"]
    out_choices = []
    for i, c in sorted(choices.items()):
        if chat:
            out_choices.append({"index": i, "message": {"role": "assistant", "content": c["text"]},
                                "finish_reason": c["finish_reason"], "logprobs": None})
        else:
            out_choices.append({"index": i, "text": c["text"], "finish_reason": c["finish_reason"], "logprobs": None})
    return {"id": head.get("id", ""), "object": "chat.completion" if chat else "text_completion",
            "created": head.get("created", int(time.time())), "model": model, "choices": out_choices,
            "usage": usage}


async def _replay(reply: dict, path: str, info: RequestInfo, body: dict):
    """A complete answer (cache hit, cascade) as a stream of chunks: one with the text, one with the finish."""
    chat = path == "/chat/completions"
    base = {"id": reply.get("id"), "object": "chat.completion.chunk" if chat else "text_completion",
            "created": reply.get("created", int(time.time())), "model": reply.get("model")}
    for c in reply.get("choices") or ():
        i = c.get("index", 0)
        if chat:
            content = (c.get("message") or {}).get("content") or ""
            first = {"index": i, "delta": {"role": "assistant", "content": content}, "finish_reason": None}
            last = {"index": i, "delta": {}, "finish_reason": c.get("finish_reason")}
        else:
            first = {"index": i, "text": c.get("text") or "", "finish_reason": None}
            last = {"index": i, "text": "", "finish_reason": c.get("finish_reason")}
        for choice in (first, last):
            yield f"data: {json.dumps({**base, 'choices': [choice]}, separators=(',', ':'))}\n\n"
    if (body.get("stream_options") or {}).get("include_usage") and reply.get("usage"):
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': reply['usage']}, separators=(',', ':'))}\n\n"
    yield f": x-temper-cost-usd {info.ledger.cost:.10f}\n\n"
    yield "data: [DONE]\n\n"


def _sse(gen, headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})


async def _finish(gw: Gateway, info: RequestInfo, record: bool = True) -> None:
    """Settle the budget and the tpm window with what was really used; then (unless the caller defers it with
    `record=False` and calls `_record` itself) count, price and log the request."""
    if info.finished:
        return
    info.finished = True
    info.elapsed = time.perf_counter() - info.start
    if info.reservation:
        await gw.state.settle(info.reservation, info.budgets, info.ledger.cost)
    if info.rate_ticket:
        await gw.state.correct_tokens(info.caller.name, info.rate_ticket, info.ledger.tokens)
    if record:
        await _record(gw, info)


async def _record(gw: Gateway, info: RequestInfo) -> None:
    """The request in the spend ledger, the metrics and the request log."""
    cost = info.ledger.cost
    m = gw.metrics
    for replica, p, c, part_cost in info.ledger.parts:
        await gw.state.spend_add(info.caller.name, info.caller.team, replica.model, part_cost, p, c)
        m.tokens.labels(replica.name, "prompt").inc(p)
        m.tokens.labels(replica.name, "completion").inc(c)
        m.cost.labels(replica.model, replica.name, info.caller.team).inc(part_cost)
    elapsed = info.elapsed
    m.requests.labels(info.model, info.backend or "-", str(info.status)).inc()
    m.latency.labels(info.model).observe(elapsed)
    if not info.stream and info.status == 200:
        m.overhead.observe(max(elapsed - sum(info.upstream), 0.0))
    if gw.config.log_requests:
        entry = {"trace_id": info.trace_id, "key": info.caller.name, "team": info.caller.team,
                 "model": info.model, "endpoint": info.endpoint, "stream": info.stream, "status": info.status,
                 "cache": info.cache, "backend": info.backend, "cost_usd": round(cost, 10),
                 "prompt_tokens": sum(p[1] for p in info.ledger.parts),
                 "completion_tokens": sum(p[2] for p in info.ledger.parts),
                 "latency_ms": round(elapsed * 1000, 2),
                 "upstream_ms": round(sum(info.upstream) * 1000, 2)}
        if info.decision is not None:
            entry["route"] = {"model": info.decision.model, "outcome": info.decision.outcome,
                              "reason": info.decision.reason}
        if info.tries:
            entry["failed_tries"] = info.tries
        if info.error:
            entry["error"] = info.error[:300]
        request_log.info(json.dumps(entry))


def _cache_summary(config: GatewayConfig) -> str:
    c = config.cache
    parts = []
    if c.exact.enabled:
        parts.append(f"exact (ttl {c.exact.ttl:g}s)")
    if c.semantic.enabled:
        s = c.semantic
        verifier = f", pair verifier >= {s.verifier_threshold:g}" if s.verifier != "none" else ""
        parts.append(f"semantic (similarity >= {s.similarity_threshold:g}{', guard' if s.guard else ''}{verifier})")
    return (", ".join(parts) or "off") + f" in {c.store or 'sqlite (default path)'}"


class _Trace:
    """Pure ASGI middleware: a trace id on every response, and a request-body size limit."""

    def __init__(self, app, max_body: int, metrics: GatewayMetrics, fast: dict | None = None):
        self.app, self.max_body, self.metrics = app, max_body, metrics
        self.fast = fast or {}  # POST paths served by a plain ASGI endpoint instead of the FastAPI app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        trace = (headers.get(b"x-trace-id") or headers.get(b"x-request-id") or b"").decode("latin-1")[:64]
        trace = trace or uuid.uuid4().hex
        scope.setdefault("state", {})["trace_id"] = trace

        async def send_with_trace(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-trace-id", trace.encode("latin-1"))]
            await send(message)

        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_body:
            self.metrics.rejected.labels("body_too_large").inc()
            error = APIError(413, f"the request body is {int(length)} bytes; the limit is {self.max_body}")
            return await error.response()(scope, receive, send_with_trace)
        fast = self.fast.get(scope["path"]) if scope["method"] == "POST" else None
        await (fast or self.app)(scope, receive, send_with_trace)
