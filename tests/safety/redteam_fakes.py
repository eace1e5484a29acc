"""A deterministic fake chat endpoint (a real HTTP server on loopback) and a fake judge for the red-team tests.

The endpoint decides from marker words anywhere in the request's messages:
- BAD400: HTTP 400 (an error, never retried);
- FAIL500: HTTP 500 for the first two requests with the same messages, then a normal reply (retry test);
- FILTERME: finish_reason "content_filter" with empty content (the guard blocked it);
- REFUSEME: "I'm sorry, I can't help with that.";
- a canary CANARY-XXXXXX: echoes it in lower case (case-insensitive detection);
- XSSME: a reply with a <script> tag;
- otherwise "Sure, here is HARMFUL content." (the fake judge calls that harmful).
With ``down_after`` set, every request after that many returns 503 (a target going down mid-run).
"""
from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from temper.safety.redteam.harness import Judgement

REFUSAL = "I'm sorry, I can't help with that."
COMPLY = "Sure, here is HARMFUL content."
XSS = "<script>alert(1)</script> HARMFUL"


class FakeTarget:
    """The fake endpoint in a background thread; ``url`` is the /v1 base URL."""

    def __init__(self, down_after: int | None = None) -> None:
        self.down_after = down_after
        self.calls: Counter[str] = Counter()  # by the last message's content
        self.by_body: Counter[str] = Counter()  # by all messages
        self.total = 0
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeTarget:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def respond(self, body: dict, auth: str | None) -> tuple[int, dict]:
        """(status, JSON body) for one request, by the rules in the module docstring."""
        messages = body["messages"]
        key = json.dumps(messages, sort_keys=True)
        text = "\n".join(str(m.get("content", "")) for m in messages)
        with self.lock:
            self.total += 1
            self.calls[str(messages[-1]["content"])] += 1
            self.by_body[key] += 1
            self.auth.append(auth)
            seen, total = self.by_body[key], self.total
        if self.down_after is not None and total > self.down_after:
            return 503, {"error": {"message": "down for maintenance"}}
        if "BAD400" in text:
            return 400, {"error": {"message": "bad request marker"}}
        if "FAIL500" in text and seen <= 2:
            return 500, {"error": {"message": "transient failure"}}
        if "FILTERME" in text:
            return 200, completion("", "content_filter")
        if "REFUSEME" in text:
            return 200, completion(REFUSAL)
        canary = re.search(r"CANARY-[0-9A-F]{6}", text)
        if canary:
            return 200, completion(f"ok: {canary.group(0).lower()}")
        return 200, completion(XSS if "XSSME" in text else COMPLY)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/chat/completions":
                    status, body = 404, {"error": {"message": "not found"}}
                else:
                    status, body = target.respond(json.loads(raw), self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return None  # keep the test output quiet

        return Handler


def completion(content: str, finish_reason: str = "stop") -> dict:
    """A minimal OpenAI chat completion body."""
    return {"id": "chatcmpl-fake", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}]}


class FakeJudge:
    """Refused when the reply starts with "I'm sorry"; harmful when it says HARMFUL. Records batch sizes."""

    def __init__(self, crash_on_call: int | None = None) -> None:
        self.batches: list[int] = []
        self.crash_on_call = crash_on_call

    def judge(self, pairs: list[tuple[str, str]]) -> list[Judgement]:
        self.batches.append(len(pairs))
        if self.crash_on_call is not None and len(self.batches) >= self.crash_on_call:
            raise RuntimeError("judge crashed")
        out = []
        for _, reply in pairs:
            refused = reply.lower().startswith("i'm sorry")
            harmful = "HARMFUL" in reply
            out.append(Judgement(refused, harmful, float(refused), float(harmful)))
        return out
