"""The engine for servers: requests come from asyncio, steps run on a background thread.

`await add_request(...)` returns a `RequestStream` once the engine has accepted the request (errors such as a
prompt over the context length or an invalid grammar raise there, before a server sends any header); iterating
the stream yields a `RequestOutput` each time the request progresses. Leaving early (a client that disconnects)
must call `stream.abort()`, which frees the request's blocks before the next step; `generate()` does it for you.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator

from temper.engine.llm_engine import LLMEngine
from temper.engine.outputs import EngineStats, RequestOutput
from temper.engine.sampling_params import SamplingParams
from temper.errors import TemperError

log = logging.getLogger(__name__)

_ACCEPTED = object()
STATS_PERIOD = 0.25  # seconds between stats snapshots while the engine is busy (always one when it goes idle)


class RequestStream:
    """The outputs of one request, in order; raises the engine's error if the request fails."""

    def __init__(self, engine: AsyncLLMEngine, request_id: str, loop: asyncio.AbstractEventLoop):
        self.request_id = request_id
        self._engine, self._loop = engine, loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self.finished = False

    def _put(self, item) -> None:  # from the engine thread
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    @staticmethod
    def _put_many(items: list[tuple[RequestStream, object]]) -> None:  # on the event loop
        for stream, item in items:
            stream._queue.put_nowait(item)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self.finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self.finished = True
            raise item
        self.finished = item.finished
        return item

    def fail(self, error: BaseException) -> None:
        """Abort the request and make the reader raise `error` (a server's timeout)."""
        if not self.finished:
            self._engine.abort(self.request_id)
            self._queue.put_nowait(error)

    def abort(self) -> None:
        """Stop the request (no-op once finished): its blocks are freed before the next step."""
        if not self.finished:
            self.finished = True
            self._engine.abort(self.request_id)


class AsyncLLMEngine:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self._inbox: queue.Queue = queue.Queue()  # ("add", args) or ("abort", request_id)
        self._streams: dict[str, RequestStream] = {}
        self._wake = threading.Event()
        self._stopped = False
        self._ids = 0
        self._stats = copy.deepcopy(engine.stats())
        self._published = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="temper-engine", daemon=True)
        self._thread.start()

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def stats(self) -> EngineStats:
        """The statistics as of the end of the last step (a copy: safe to read from any thread)."""
        return self._stats

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive() and not self._stopped

    async def add_request(self, prompt_ids: list[int], params: SamplingParams,
                          request_id: str | None = None) -> RequestStream:
        """Queue a request and wait until the engine accepts it; its errors (too long, bad ids, bad grammar)
        raise here."""
        if self._stopped:
            raise RuntimeError("the engine is shut down")
        if request_id is None:
            self._ids += 1
            request_id = f"req-{self._ids}"
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already in use")
        stream = RequestStream(self, request_id, asyncio.get_running_loop())
        self._streams[request_id] = stream
        self._inbox.put(("add", (prompt_ids, params, request_id)))
        self._wake.set()
        try:
            item = await stream._queue.get()
        except asyncio.CancelledError:
            self.abort(request_id)
            raise
        if isinstance(item, BaseException):
            self._streams.pop(request_id, None)
            raise item
        return stream

    async def generate(self, prompt_ids: list[int], params: SamplingParams,
                       request_id: str | None = None) -> AsyncIterator[RequestOutput]:
        """Stream outputs of one request; leaving the loop early aborts it."""
        stream = await self.add_request(prompt_ids, params, request_id)
        try:
            async for out in stream:
                yield out
        finally:
            stream.abort()

    def abort(self, request_id: str) -> None:
        self._streams.pop(request_id, None)
        self._inbox.put(("abort", request_id))
        self._wake.set()

    def shutdown(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=10)
        for request_id, stream in list(self._streams.items()):
            stream._put(RuntimeError("the engine shut down"))
        self._streams.clear()

    # ------------------------------------------------------------------ engine thread
    def _deliver(self, request_id: str, item) -> None:
        stream = self._streams.get(request_id)
        if stream is not None:
            stream._put(item)
            if isinstance(item, BaseException) or (isinstance(item, RequestOutput) and item.finished):
                self._streams.pop(request_id, None)

    def _deliver_step(self, outputs: list[RequestOutput]) -> None:
        """A step's outputs in one wake-up per event loop, not one per request: every wake-up of the server's
        thread takes CPU from the step's matmuls (2 cores here)."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue
            by_loop.setdefault(stream._loop, []).append((stream, out))
            if out.finished:
                self._streams.pop(out.request_id, None)
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(RequestStream._put_many, items)

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, arg = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "abort":
                self.engine.abort(arg)
                continue
            prompt_ids, params, request_id = arg
            if request_id not in self._streams:  # aborted before it was added
                continue
            try:
                self.engine.add_request(prompt_ids, params, request_id)
            except (TemperError, ValueError) as e:  # the server maps these to 400s
                self._deliver(request_id, e)
            else:
                self._deliver(request_id, _ACCEPTED)

    def _publish_stats(self) -> None:
        self._stats = copy.deepcopy(self.engine.stats())  # walks every block table: not on every step
        self._published = time.monotonic()

    def _run(self) -> None:
        while not self._stopped:
            self._drain_inbox()
            if not self.engine.has_unfinished_requests():
                self._publish_stats()
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as e:  # noqa: BLE001 -- fail every request in flight, keep serving
                log.exception("engine step failed; failing the requests in flight")
                for request_id in list(self.engine.requests):
                    self.engine.abort(request_id)
                    self._deliver(request_id, RuntimeError(f"engine step failed: {e}"))
                continue
            self._deliver_step(outputs)
            if time.monotonic() - self._published > STATS_PERIOD:
                self._publish_stats()
