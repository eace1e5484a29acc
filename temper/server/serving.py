"""Completions and chat completions: OpenAI requests in, engine requests out, OpenAI responses back.

One HTTP request becomes one engine request per prompt (a completions `prompt` may be a list), each with n
samples that share the prompt's KV blocks. Non-streaming requests race a disconnect watcher, so a client that
hangs up frees its blocks at once; streaming ones abort when the response generator is closed.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from temper.engine.async_engine import AsyncLLMEngine, RequestStream
from temper.engine.outputs import CompletionOutput, RequestOutput
from temper.engine.sampler import TokenLogprobs
from temper.engine.sampling_params import SamplingParams, StructuredOutput
from temper.errors import ContextLengthExceededError
from temper.server import guarding
from temper.server.errors import APIError
from temper.server.metrics import ServerMetrics
from temper.server.protocol import ChatCompletionRequest, CompletionRequest, _Sampling

log = logging.getLogger(__name__)
FINITE_FLOOR = -9999.0  # JSON has no -inf: a token the grammar or a bias rules out gets this logprob
FINGERPRINT = "temper-0.1.0"


@dataclass
class Job:
    """One engine request: a prompt and its sampling, and where its choices go in the response."""

    prompt_ids: list[int]
    params: SamplingParams
    first_index: int
    prompt_text: str = ""
    echo_max0: bool = False  # completions with echo and max_tokens=0: the prompt only, no new tokens


@dataclass
class Trace:
    """What the access log and the metrics need to know about one request."""

    endpoint: str
    start: float = field(default_factory=time.monotonic)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    first_token: float | None = None
    finish_reasons: list[str] = field(default_factory=list)

    def saw(self, out: RequestOutput) -> None:
        """Note the first token's time from an engine output."""
        if self.first_token is None and out.metrics.first_token_time is not None:
            self.first_token = out.metrics.first_token_time


class Serving:
    def __init__(self, engine: AsyncLLMEngine, model_name: str, metrics: ServerMetrics,
                 sampling_defaults: dict[str, Any] | None = None, request_timeout: float | None = None,
                 guard: Any = None):
        self.engine, self.tokenizer = engine, engine.tokenizer
        self.guard = guard  # temper.safety.guard.Guard or None
        self.model_name, self.metrics = model_name, metrics
        self.defaults = dict(sampling_defaults or {})
        self.timeout = request_timeout
        self.vocab_size = engine.engine.model.config.vocab_size

    # ------------------------------------------------------------------ requests to jobs
    def sampling_params(self, req: _Sampling, max_tokens: int, logprobs: int | None, prompt_logprobs: int | None,
                        n: int, best_of: int | None) -> SamplingParams:
        chosen = {k: v for k, v in self.defaults.items()}
        for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty",
                     "frequency_penalty"):
            if (value := getattr(req, name)) is not None:
                chosen[name] = value
        structured = None
        if req.response_format is not None and req.response_format.type != "text":
            if req.response_format.type == "json_object":
                structured = StructuredOutput(json_object=True)
            else:
                structured = StructuredOutput(json_schema=req.response_format.json_schema.schema_)
        bias = {int(k): v for k, v in (req.logit_bias or {}).items()}
        bad = [t for t in [*bias, *(req.stop_token_ids or [])] if not 0 <= t < self.vocab_size]
        if bad:
            raise APIError(400, f"token ids must be in [0, {self.vocab_size}), got {bad[:5]}",
                           param="logit_bias" if bad[0] in bias else "stop_token_ids")
        try:
            return SamplingParams(
                n=n, best_of=best_of, max_tokens=max_tokens, min_tokens=min(req.min_tokens, max_tokens),
                logit_bias=bias, seed=req.seed, stop=tuple(req.stop or ()), stop_token_ids=tuple(req.stop_token_ids or ()),
                include_stop_str_in_output=req.include_stop_str_in_output, ignore_eos=req.ignore_eos,
                logprobs=logprobs, prompt_logprobs=prompt_logprobs, skip_special_tokens=req.skip_special_tokens,
                structured=structured, **chosen)
        except ValueError as e:
            raise APIError(400, str(e)) from e

    def _check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(404, f"the model '{name}' does not exist; this server serves '{self.model_name}'",
                           param="model", code="model_not_found")

    def _max_tokens(self, requested: int | None, prompt_len: int, param: str) -> int:
        room = self.engine.max_model_len - prompt_len
        if room < 1:
            raise APIError(400, f"this model's maximum context length is {self.engine.max_model_len} tokens, but "
                                f"the prompt has {prompt_len} tokens; shorten it", param=param,
                           code="context_length_exceeded")
        return room if requested is None else requested

    def completion_jobs(self, req: CompletionRequest) -> list[Job]:
        self._check_model(req.model)
        p = req.prompt
        if isinstance(p, str):
            prompts: list[str | list[int]] = [p]
        elif isinstance(p[0], int):
            prompts = [list(p)]
        else:
            prompts = list(p)
        jobs = []
        n = req.n
        for i, prompt in enumerate(prompts):
            ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
            if not ids:
                raise APIError(400, "the prompt is empty", param="prompt")
            if bad := [t for t in ids if t >= self.vocab_size]:
                raise APIError(400, f"prompt token ids must be in [0, {self.vocab_size}), got {bad[:5]}",
                               param="prompt")
            text = prompt if isinstance(prompt, str) else self.tokenizer.decode(ids)
            echo_max0 = req.max_tokens == 0
            if echo_max0 and not req.echo:
                raise APIError(400, "max_tokens must be >= 1 (0 is allowed only with echo)", param="max_tokens")
            max_tokens = 1 if echo_max0 else self._max_tokens(req.max_tokens, len(ids), "prompt")
            prompt_lp = req.logprobs if req.echo and req.logprobs is not None else None
            params = self.sampling_params(req, max_tokens, req.logprobs, prompt_lp, n, req.best_of)
            jobs.append(Job(ids, params, i * n, text if req.echo else "", echo_max0))
        return jobs

    @staticmethod
    def chat_messages(req: ChatCompletionRequest) -> list[dict[str, Any]]:
        """The request's messages as template dicts (content parts joined, developer -> system)."""
        messages = []
        for m in req.messages:
            role = "system" if m.role == "developer" else m.role
            messages.append({"role": role, "content": m.text(), **({"name": m.name} if m.name else {})})
        return messages

    def chat_job(self, req: ChatCompletionRequest, messages: list[dict[str, Any]] | None = None) -> Job:
        self._check_model(req.model)
        messages = self.chat_messages(req) if messages is None else messages
        try:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=req.add_generation_prompt,
                                                     tokenize=True)
        except Exception as e:  # a template's raise_exception (e.g. roles out of order) or a render error
            raise APIError(400, f"the chat template rejected the messages: {e}", param="messages") from e
        requested = req.max_completion_tokens or req.max_tokens
        max_tokens = self._max_tokens(requested, len(ids), "messages")
        top = (req.top_logprobs or 0) if req.logprobs else None
        return Job(ids, self.sampling_params(req, max_tokens, top, None, req.n, None), 0)

    # ------------------------------------------------------------------ the guard
    async def guard_input(self, messages: list[dict[str, Any]], rid: str):
        """The guard's input decision (None without a guard); the model name is checked first."""
        return await guarding.check_input(self.guard, messages, rid)

    async def guard_completion(self, req: CompletionRequest, rid: str):
        """Input rails for /v1/completions: each prompt is checked as a user message; redacted prompts replace
        the request's (token-id prompts are decoded for the check and sent as text when redacted)."""
        if self.guard is None:
            return None
        p = req.prompt
        prompts = [p] if isinstance(p, str) else [list(p)] if p and isinstance(p[0], int) else list(p)
        texts = [x if isinstance(x, str) else self.tokenizer.decode([t for t in x if 0 <= t < self.vocab_size])
                 for x in prompts]
        decision = await guarding.check_input(self.guard, [{"role": "user", "content": t} for t in texts], rid)
        redacted = [m["content"] for m in decision.messages]
        if redacted != texts:
            req.prompt = redacted if len(redacted) > 1 else redacted[0]
        return decision

    def blocked_response(self, rid: str, endpoint: str, req: Any, message: str | None):
        """What a request blocked by the input rails gets: a dict, or SSE events when it streams."""
        self.metrics.requests.labels(endpoint, guarding.FILTERED).inc()
        n = req.n if endpoint == "chat" else req.n * (1 if isinstance(req.prompt, str) or
                                                      isinstance(req.prompt[0], int) else len(req.prompt))
        body = guarding.blocked_body(rid, endpoint, self.model_name, message or "", n, FINGERPRINT)
        return guarding.blocked_events(body, _sse) if req.stream else body

    # ------------------------------------------------------------------ running jobs
    async def start(self, jobs: list[Job], request_id: str) -> list[RequestStream]:
        streams: list[RequestStream] = []
        try:
            for i, job in enumerate(jobs):
                streams.append(await self.engine.add_request(job.prompt_ids, job.params, f"{request_id}-{i}"))
        except BaseException as e:
            for s in streams:
                s.abort()
            if isinstance(e, ContextLengthExceededError):
                raise APIError(400, str(e), param="max_tokens", code="context_length_exceeded") from e
            if isinstance(e, ValueError):
                param = "response_format" if "structured output" in str(e) else None
                raise APIError(400, str(e), param=param) from e
            raise
        return streams

    async def run_to_end(self, streams: list[RequestStream], trace: Trace, raw: Request) -> list[RequestOutput]:
        """Final outputs of every stream; aborts all of them if the client leaves or the timeout passes."""
        async def final(stream: RequestStream) -> RequestOutput:
            last = None
            async for out in stream:
                trace.saw(out)
                last = out
            return last

        work = asyncio.ensure_future(asyncio.gather(*(final(s) for s in streams)))
        watcher = asyncio.ensure_future(_wait_disconnect(raw))
        try:
            done, _ = await asyncio.wait({work, watcher}, timeout=self.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                return work.result()
            if watcher in done:
                log.info("client disconnected; aborting %s", streams[0].request_id.rsplit("-", 1)[0])
                raise asyncio.CancelledError
            raise self._timeout_error()
        finally:
            watcher.cancel()
            work.cancel()
            for s in streams:
                s.abort()

    def _timeout_error(self) -> APIError:
        return APIError(408, f"the request did not finish within the server's timeout of {self.timeout:g} s",
                        code="request_timeout")

    async def merged(self, streams: list[RequestStream], trace: Trace) -> AsyncIterator[tuple[int, RequestOutput]]:
        """(job index, output) from every stream as they come; past the timeout the streams fail with a 408."""
        timer = None
        if self.timeout is not None:
            error = self._timeout_error()
            timer = asyncio.get_running_loop().call_later(self.timeout,
                                                          lambda: [s.fail(error) for s in streams])
        tasks: list[asyncio.Future] = []
        try:
            if len(streams) == 1:  # the common case: no pump tasks
                async for out in streams[0]:
                    trace.saw(out)
                    yield 0, out
                return
            queue: asyncio.Queue = asyncio.Queue()

            async def pump(i: int, stream: RequestStream) -> None:
                try:
                    async for out in stream:
                        await queue.put((i, out))
                except BaseException as e:  # noqa: BLE001 -- hand it to the consumer
                    await queue.put((i, e))
                    return
                await queue.put((i, None))

            tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
            remaining = len(streams)
            while remaining:
                i, item = await queue.get()
                if item is None:
                    remaining -= 1
                    continue
                if isinstance(item, BaseException):
                    raise item
                trace.saw(item)
                yield i, item
        finally:
            if timer is not None:
                timer.cancel()
            for t in tasks:
                t.cancel()
            for s in streams:
                s.abort()

    def finish(self, trace: Trace, outs: list[RequestOutput]) -> None:
        """Fill the trace's usage and observe the metrics of a finished request."""
        ep, m = trace.endpoint, self.metrics
        now = time.monotonic()
        for out in outs:
            trace.prompt_tokens += len(out.prompt_token_ids)
            trace.cached_tokens += out.num_cached_tokens
            trace.completion_tokens += out.num_generated_tokens
            trace.finish_reasons += [o.finish_reason or "abort" for o in out.outputs]
            if out.metrics.queue_time is not None:
                m.queue.labels(ep).observe(out.metrics.queue_time)
            n = max((len(o.token_ids) for o in out.outputs), default=0)
            first, last = out.metrics.first_token_time, out.metrics.finished_time or now
            if first is not None and n > 1:
                m.tpot.labels(ep).observe((last - first) / (n - 1))
        if trace.first_token is not None:
            m.ttft.labels(ep).observe(max(trace.first_token - trace.start, 0.0))
        m.e2e.labels(ep).observe(now - trace.start)
        for reason in trace.finish_reasons:
            m.requests.labels(ep, reason).inc()
        m.prompt_tokens.inc(trace.prompt_tokens)
        m.cached_tokens.inc(trace.cached_tokens)
        m.generation_tokens.inc(trace.completion_tokens)

    @staticmethod
    def usage(trace: Trace) -> dict[str, Any]:
        return {"prompt_tokens": trace.prompt_tokens, "completion_tokens": trace.completion_tokens,
                "total_tokens": trace.prompt_tokens + trace.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": trace.cached_tokens}}

    # ------------------------------------------------------------------ logprobs in OpenAI's two formats
    def _token_str(self, token_id: int) -> str:
        text = self.tokenizer.decode([token_id])
        if "\ufffd" in text:  # part of a UTF-8 character: show its bytes as OpenAI does
            return "bytes:" + "".join(f"\\x{b:02x}" for b in self.tokenizer.token_bytes(token_id))
        return text

    def _visible(self, lps: list[TokenLogprobs | None], token_ids: list[int]) -> tuple[list, list[int]]:
        """Drop special tokens (end of turn...) that the text leaves out, so tokens join to the text."""
        special = self.tokenizer.special_ids
        keep = [i for i, t in enumerate(token_ids) if t not in special]
        return [lps[i] for i in keep], [token_ids[i] for i in keep]

    def chat_logprobs(self, lps: list[TokenLogprobs]) -> dict[str, Any]:
        lps, _ = self._visible(lps, [lp.token_id for lp in lps])

        def entry(token_id: int, logprob: float) -> dict[str, Any]:
            return {"token": self._token_str(token_id), "logprob": _finite(logprob),
                    "bytes": list(self.tokenizer.token_bytes(token_id))}

        return {"content": [{**entry(lp.token_id, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]}
                            for lp in lps], "refusal": None}

    def completion_logprobs(self, lps: list[TokenLogprobs | None], token_ids: list[int],
                            offset: int) -> dict[str, Any]:
        lps, token_ids = self._visible(lps, token_ids)
        tokens = [self._token_str(t) for t in token_ids]
        offsets = []
        for t in tokens:
            offsets.append(offset)
            offset += len(t)
        return {"tokens": tokens,
                "token_logprobs": [None if lp is None else _finite(lp.logprob) for lp in lps],
                "top_logprobs": [None if lp is None else {self._token_str(t): _finite(v) for t, v in lp.top}
                                 for lp in lps],
                "text_offset": offsets}

    # ------------------------------------------------------------------ response bodies
    async def completion_body(self, rid: str, jobs: list[Job], outs: list[RequestOutput], trace: Trace,
                              logprobs: int | None, decision: Any = None) -> dict[str, Any]:
        body = self._completion_body(rid, jobs, outs, trace, logprobs)
        await self._guard_choices(rid, body["choices"], decision, lambda c: c, "text")
        return body

    async def _guard_choices(self, rid: str, choices: list[dict], decision: Any, get, key: str) -> None:
        """Output rails on whole replies: a blocked choice gets the message and finish_reason content_filter."""
        if self.guard is None:
            return
        for choice in choices:
            text, blocked = await guarding.check_reply(self.guard, decision, get(choice)[key], rid)
            get(choice)[key] = text
            if blocked:
                choice["finish_reason"], choice["logprobs"] = guarding.FILTERED, None

    def _completion_body(self, rid: str, jobs: list[Job], outs: list[RequestOutput], trace: Trace,
                         logprobs: int | None) -> dict[str, Any]:
        choices = []
        for job, out in zip(jobs, outs):
            for k, o in enumerate(out.outputs):
                text, token_ids, lps = self._completion_text(job, out, o)
                choice = {"index": job.first_index + k, "text": text,
                          "logprobs": None if logprobs is None else self.completion_logprobs(lps, token_ids, 0),
                          "finish_reason": "length" if job.echo_max0 else o.finish_reason}
                choices.append(choice)
        if any(job.echo_max0 for job in jobs):
            trace.completion_tokens = 0
        return {"id": f"cmpl-{rid}", "object": "text_completion", "created": int(time.time()),
                "model": self.model_name, "system_fingerprint": FINGERPRINT, "choices": choices,
                "usage": self.usage(trace)}

    def _completion_text(self, job: Job, out: RequestOutput, o: CompletionOutput):
        """Text, token ids and logprobs of one choice, with the prompt in front for echo."""
        if job.echo_max0:
            return job.prompt_text, list(out.prompt_token_ids), list(out.prompt_logprobs or [])
        if job.prompt_text:
            lps = list(out.prompt_logprobs or []) + list(o.logprobs or [])
            return job.prompt_text + o.text, list(out.prompt_token_ids) + list(o.token_ids), lps
        return o.text, list(o.token_ids), list(o.logprobs or [])

    async def chat_body(self, rid: str, out: RequestOutput, trace: Trace, logprobs: bool,
                        decision: Any = None) -> dict[str, Any]:
        body = self._chat_body(rid, out, trace, logprobs)
        await self._guard_choices(rid, body["choices"], decision, lambda c: c["message"], "content")
        return body

    def _chat_body(self, rid: str, out: RequestOutput, trace: Trace, logprobs: bool) -> dict[str, Any]:
        choices = [{"index": k, "message": {"role": "assistant", "content": o.text, "refusal": None},
                    "logprobs": self.chat_logprobs(o.logprobs or []) if logprobs else None,
                    "finish_reason": o.finish_reason} for k, o in enumerate(out.outputs)]
        return {"id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model_name, "system_fingerprint": FINGERPRINT, "choices": choices,
                "usage": self.usage(trace)}

    # ------------------------------------------------------------------ streaming
    def stream_completion(self, rid: str, jobs: list[Job], streams: list[RequestStream], trace: Trace,
                          req: CompletionRequest, done: Callable[[], None], decision: Any = None
                          ) -> AsyncIterator[str]:
        rails = guarding.StreamRails(self.guard, decision, rid)
        return self._guarded(self._completion_events(rid, jobs, streams, trace, req, rails), streams, trace, done)

    def stream_chat(self, rid: str, job: Job, stream: RequestStream, trace: Trace, req: ChatCompletionRequest,
                    done: Callable[[], None], decision: Any = None) -> AsyncIterator[str]:
        rails = guarding.StreamRails(self.guard, decision, rid)
        return self._guarded(self._chat_events(rid, job, stream, trace, req, rails), [stream], trace, done)

    async def _guarded(self, events: AsyncIterator[str], streams: list[RequestStream], trace: Trace,
                       done: Callable[[], None]) -> AsyncIterator[str]:
        """SSE events, then an error event if the request fails midway; on any exit the engine requests are
        aborted (a no-op once finished) and the queue slot is released."""
        try:
            async for event in events:
                yield event
        except APIError as e:
            self.metrics.errors.labels(e.type, str(e.status)).inc()
            trace.finish_reasons.append("error")
            yield _sse(e.body())
            yield "data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):  # the client left
            trace.finish_reasons.append("abort")
            self.metrics.requests.labels(trace.endpoint, "abort").inc()
            raise
        finally:
            for stream in streams:
                stream.abort()
            await events.aclose()
            done()

    async def _completion_events(self, rid: str, jobs: list[Job], streams: list[RequestStream], trace: Trace,
                                 req: CompletionRequest, rails: guarding.StreamRails) -> AsyncIterator[str]:
        created, include_usage = int(time.time()), bool(req.stream_options and req.stream_options.include_usage)
        base = {"id": f"cmpl-{rid}", "object": "text_completion", "created": created, "model": self.model_name,
                "system_fingerprint": FINGERPRINT}
        sent_text: dict[int, int] = {}
        sent_tokens: dict[int, int] = {}
        finals: dict[int, RequestOutput] = {}
        closed: set[int] = set()  # choices whose finish_reason went out
        for job in jobs:  # echo: the prompt goes out first
            if job.prompt_text:
                for k in range(job.params.n):
                    yield _sse({**base, "choices": [{"index": job.first_index + k, "text": job.prompt_text,
                                                     "logprobs": None, "finish_reason": None}],
                                **({"usage": None} if include_usage else {})})
        async for i, out in self.merged(streams, trace):
            job = jobs[i]
            if out.finished:
                finals[i] = out
            for k, o in enumerate(out.outputs):
                index = job.first_index + k
                if rails.active and not job.echo_max0:
                    if index in closed:
                        continue
                    async for event in _railed_events(rails, index, o, sent_text, closed,
                                                    lambda text, finish, index=index: {**base, "choices": [
                                                        {"index": index, "text": text, "logprobs": None,
                                                         "finish_reason": finish}],
                                                        **({"usage": None} if include_usage else {})}):
                        yield event
                    continue
                text = "" if job.echo_max0 else o.text[sent_text.get(index, 0):]
                new_ids = [] if job.echo_max0 else o.token_ids[sent_tokens.get(index, 0):]
                finished = o.finish_reason is not None and index not in closed
                if not text and not finished:
                    continue
                if finished:
                    closed.add(index)
                finish = "length" if job.echo_max0 else o.finish_reason
                lps = None
                if req.logprobs is not None and new_ids:
                    new_lps = (o.logprobs or [])[sent_tokens.get(index, 0):]
                    lps = self.completion_logprobs(new_lps, new_ids, sent_text.get(index, 0))
                sent_text[index] = len(o.text)
                sent_tokens[index] = len(o.token_ids)
                yield _sse({**base, "choices": [{"index": index, "text": text, "logprobs": lps,
                                                 "finish_reason": finish}],
                            **({"usage": None} if include_usage else {})})
            if rails.active and len(finals) < len(jobs) and len(closed) == sum(jb.params.n for jb in jobs):
                for st in streams:
                    st.abort()  # a rail ended every choice: stop computing tokens nobody will see
                break
        self.finish(trace, [finals[i] for i in sorted(finals)])
        if any(job.echo_max0 for job in jobs):
            trace.completion_tokens = 0
        if include_usage:
            yield _sse({**base, "choices": [], "usage": self.usage(trace)})
        yield "data: [DONE]\n\n"

    async def _chat_events(self, rid: str, job: Job, stream: RequestStream, trace: Trace,
                           req: ChatCompletionRequest, rails: guarding.StreamRails) -> AsyncIterator[str]:
        created, include_usage = int(time.time()), bool(req.stream_options and req.stream_options.include_usage)
        base = {"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": created,
                "model": self.model_name, "system_fingerprint": FINGERPRINT}
        usage = {"usage": None} if include_usage else {}
        sent_text: dict[int, int] = {}
        sent_tokens: dict[int, int] = {}
        final = None
        closed: set[int] = set()  # choices whose finish_reason went out
        for k in range(job.params.n):
            yield _sse({**base, "choices": [{"index": k, "delta": {"role": "assistant", "content": ""},
                                             "logprobs": None, "finish_reason": None}], **usage})
        async for _, out in self.merged([stream], trace):
            if out.finished:
                final = out
            for k, o in enumerate(out.outputs):
                if rails.active:
                    if k in closed:
                        continue
                    async for event in _railed_events(rails, k, o, sent_text, closed, lambda text, finish, k=k: {
                            **base, "choices": [{"index": k, "delta": {"content": text} if text else {},
                                                 "logprobs": None, "finish_reason": finish}], **usage}):
                        yield event
                    continue
                text = o.text[sent_text.get(k, 0):]
                new = o.token_ids[sent_tokens.get(k, 0):]
                if text or (new and req.logprobs):
                    lps = None
                    if req.logprobs:
                        lps = self.chat_logprobs((o.logprobs or [])[sent_tokens.get(k, 0):])
                    sent_text[k], sent_tokens[k] = len(o.text), len(o.token_ids)
                    yield _sse({**base, "choices": [{"index": k, "delta": {"content": text}, "logprobs": lps,
                                                     "finish_reason": None}], **usage})
                if o.finish_reason is not None and k not in closed:
                    closed.add(k)
                    yield _sse({**base, "choices": [{"index": k, "delta": {}, "logprobs": None,
                                                     "finish_reason": o.finish_reason}], **usage})
            if rails.active and final is None and len(closed) == job.params.n:
                stream.abort()  # a rail ended every choice: stop computing tokens nobody will see
                break
        self.finish(trace, [final] if final is not None else [])
        if include_usage:
            yield _sse({**base, "choices": [], "usage": self.usage(trace)})
        yield "data: [DONE]\n\n"


async def _railed_events(rails: guarding.StreamRails, index: int, o: CompletionOutput, sent_text: dict[int, int],
                         closed: set[int], chunk: Callable[[str, str | None], dict]) -> AsyncIterator[str]:
    """One choice's new text through the output rails: released text, then the finish (content_filter when a
    check fired). Per-token logprobs are not streamed under a guard (they would reveal held-back text)."""
    delta = o.text[sent_text.get(index, 0):]
    sent_text[index] = len(o.text)
    text, blocked = await rails.feed(index, delta)
    if o.finish_reason is not None and not blocked:
        tail, blocked = await rails.finish(index)
        text += tail
    if text:
        yield _sse(chunk(text, None))
    if blocked or o.finish_reason is not None:
        closed.add(index)
        yield _sse(chunk("", guarding.FILTERED if blocked else o.finish_reason))


def _finite(x: float) -> float:
    return x if math.isfinite(x) else FINITE_FLOOR


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _wait_disconnect(raw: Request) -> None:
    """Return when the client hangs up (the body was read already, so the next message is the disconnect)."""
    while True:
        message = await raw.receive()
        if message["type"] == "http.disconnect":
            return

