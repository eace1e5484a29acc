"""Live HTTP servers on loopback for the gateway's tests.

`Scripted` is an OpenAI-compatible server whose behaviour a test sets per request (answer, 500, close the
connection before or after the first token, hang): the failures a real back end has, on a real socket, which a
healthy temper server cannot be made to produce on cue. Its answers have exact usage (completion_tokens =
max_tokens), so budget tests know each request's cost to the cent. The gateway itself and real temper servers
run with `serve()` too.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


@dataclass
class Running:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve(app, port: int = 0) -> Running:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False, log_config=None,
                                           timeout_graceful_shutdown=2, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (server.started and server.servers):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return Running(f"http://127.0.0.1:{port}", server, thread)


@dataclass
class Scripted:
    """Behaviour, changeable between requests: `mode` is ok | error500 | die_before_token | die_after_token |
    hang; `text` is the answer; `logprob` each token's log-probability."""

    name: str = "scripted"
    mode: str = "ok"
    text: str = "hello from upstream"
    logprob: float = -0.1
    hang_seconds: float = 3.0
    calls: int = 0
    bodies: list = field(default_factory=list)
    running: Running | None = None

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": self.name, "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await self.answer(await request.json(), chat=True)

        @app.post("/v1/completions")
        async def completions(request: Request):
            return await self.answer(await request.json(), chat=False)

        return app

    def tokens(self, body: dict) -> list[str]:
        n = body.get("max_tokens") or body.get("max_completion_tokens") or 4
        words = (self.text.split() * n)[:n]
        return [w + " " for w in words]

    async def answer(self, body: dict, chat: bool):
        self.calls += 1
        self.bodies.append(body)
        if self.mode == "error500":
            return JSONResponse({"error": {"message": "scripted failure", "type": "server_error"}}, status_code=500)
        if self.mode == "hang":
            await asyncio.sleep(self.hang_seconds)
        if self.mode == "bad_request":
            return JSONResponse({"error": {"message": "scripted refusal", "type": "invalid_request_error",
                                           "param": "messages", "code": None}}, status_code=400)
        tokens = self.tokens(body)
        prompt_tokens = 7
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                 "total_tokens": prompt_tokens + len(tokens)}
        n = body.get("n") or 1
        if not body.get("stream"):
            lp = ({"content": [{"token": t, "logprob": self.logprob} for t in tokens]} if chat
                  else {"tokens": tokens, "token_logprobs": [self.logprob] * len(tokens)})
            choices = []
            for i in range(n):
                choice = {"index": i, "finish_reason": "length", "logprobs": lp if body.get("logprobs") else None}
                if chat:
                    choice["message"] = {"role": "assistant", "content": "".join(tokens)}
                else:
                    choice["text"] = "".join(tokens)
                choices.append(choice)
            usage = {**usage, "completion_tokens": len(tokens) * n, "total_tokens": prompt_tokens + len(tokens) * n}
            return {"id": "x-1", "object": "chat.completion" if chat else "text_completion", "created": 0,
                    "model": body.get("model"), "choices": choices, "usage": usage}

        mode = self.mode

        async def events():
            head = {"id": "x-1", "object": "chat.completion.chunk", "created": 0, "model": body.get("model")}
            if chat:
                yield f"data: {json.dumps({**head, 'choices': [{'index': 0, 'delta': {'role': 'assistant'}}]})}\n\n"
            if mode == "die_before_token":
                raise RuntimeError("scripted: the back end dies before its first token")
            for i, t in enumerate(tokens):
                choice = {"index": 0, "delta": {"content": t}} if chat else {"index": 0, "text": t}
                yield f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"
                await asyncio.sleep(0.001)
                if mode == "die_after_token" and i == 1:
                    raise RuntimeError("scripted: the back end dies mid-stream")
            last = {"index": 0, "delta": {}, "finish_reason": "length"} if chat else \
                {"index": 0, "text": "", "finish_reason": "length"}
            yield f"data: {json.dumps({**head, 'choices': [last]})}\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    def start(self) -> Scripted:
        self.running = serve(self.app())
        return self

    @property
    def url(self) -> str:
        return self.running.url + "/v1"

    def stop(self) -> None:
        if self.running:
            self.running.stop()
