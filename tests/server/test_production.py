"""Production behaviour: API keys, the bounded queue, timeouts, disconnects, SIGTERM drain, access logs, fuzz."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

import httpx
import pytest

from temper.engine.config import EngineConfig
from temper.server.app import ServerConfig
from tests.helpers import wait_healthy
from tests.server.conftest import start_server, tiny_loader

openai = pytest.importorskip("openai")
LONG = {"model": "tiny", "prompt": "Tell me everything.", "max_tokens": 4000, "ignore_eos": True}


@pytest.fixture(scope="module")
def keyed(smollm2_loaded):
    live = start_server(ServerConfig(api_keys=("sk-right", "sk-other")), tiny_loader(smollm2_loaded))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def small_queue(smollm2_loaded):
    """One running sequence and no waiting room: the second concurrent request gets 429."""
    config = EngineConfig(kv_cache_memory=16 * 2**20, max_num_seqs=1)
    live = start_server(ServerConfig(max_queued=0, request_timeout=2.0),
                        tiny_loader(smollm2_loaded, config, max_len=4096))
    yield live
    live.stop()


def test_api_keys(keyed, caplog):
    url = f"{keyed.url}/v1/completions"
    body = {"model": "tiny", "prompt": "Hi", "max_tokens": 2}
    with caplog.at_level(logging.INFO, logger="temper.access"):
        missing = httpx.post(url, json=body)
        wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer sk-wrong"})
        right = httpx.post(url, json=body, headers={"Authorization": "Bearer sk-right"})
        other = httpx.post(url, json=body, headers={"Authorization": "Bearer sk-other"})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert right.status_code == other.status_code == 200
    assert httpx.get(f"{keyed.url}/health").status_code == 200  # probes need no key
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="sk-wrong", max_retries=0).models.list()
    assert openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="sk-right").models.list().data[0].id == "tiny"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "sk-right" not in logged and "sk-wrong" not in logged  # keys never reach the logs
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "temper.access"]
    ok = [e for e in lines if e["status"] == 200]
    assert ok and ok[0]["path"] == "/v1/completions" and ok[0]["completion_tokens"] == 2
    assert {"request_id", "latency_ms", "prompt_tokens", "ttft_ms"} <= ok[0].keys()
    assert right.headers["x-request-id"] in {e["request_id"] for e in lines}


def test_queue_full_gives_429_and_disconnect_frees_blocks(small_queue):
    idle = small_queue.idle_free_blocks()
    url = f"{small_queue.url}/v1/completions"
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", url, json={**LONG, "stream": True}) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))  # generating now
            assert small_queue.engine.block_manager.num_free_blocks < idle
            busy = httpx.post(url, json={"model": "tiny", "prompt": "Hi", "max_tokens": 2})
            assert busy.status_code == 429
            assert busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["type"] == "rate_limit_error"
        # leaving the `with` closes the connection mid-stream
    assert small_queue.idle_free_blocks() == idle
    assert httpx.post(url, json={"model": "tiny", "prompt": "Hi", "max_tokens": 2}).status_code == 200


def test_non_streaming_disconnect_frees_blocks(small_queue):
    idle = small_queue.idle_free_blocks()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{small_queue.url}/v1/completions", json=LONG, timeout=0.5)
    assert small_queue.idle_free_blocks() == idle


def test_request_timeout(small_queue):
    r = httpx.post(f"{small_queue.url}/v1/completions", json=LONG, timeout=30)
    assert r.status_code == 408 and r.json()["error"]["code"] == "request_timeout"
    with httpx.stream("POST", f"{small_queue.url}/v1/completions", json={**LONG, "stream": True}, timeout=30) as s:
        events = [line for line in s.iter_lines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]" and "request_timeout" in events[-2]
    assert small_queue.idle_free_blocks() == small_queue.engine.block_manager.num_blocks


def test_sigterm_drains_in_flight_requests(tmp_path):
    """`temper serve` as users run it: SIGTERM lets the running stream finish, then the process exits."""
    port = 8000 + os.getpid() % 1000
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "temper.cli", "serve", "--port", str(port), "--no-embeddings",
                             "--kv-cache-memory", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        body = {"prompt": "Once upon a time", "max_tokens": 40, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as s:
            lines = s.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data:")]
        assert first and rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2][5:])["usage"]["completion_tokens"] == 40  # every token arrived
        # uvicorn re-raises the signal once drained, so the exit status says "terminated by SIGTERM"
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health")
    finally:
        if proc.poll() is None:
            proc.kill()
        log = proc.stdout.read()
    assert "Waiting for" in log or "Shutting down" in log, log


def test_fuzz_openapi_schema_finds_no_5xx(keyed):
    """Hypothesis-generated bodies for every operation of the OpenAPI schema: no 5xx, no crash."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{keyed.url}/openapi.json")
    failures = []
    headers = {"Authorization": "Bearer sk-right"}
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=int(os.environ.get("TEMPER_FUZZ_EXAMPLES", "40")), deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(base_url=keyed.url, headers=headers, timeout=30)
            if response.status_code >= 500:
                failures.append((op.method, op.path, response.status_code, response.text[:300], case.body))
        given(op.as_strategy())(check)()
    assert not failures, failures[:5]
    assert httpx.get(f"{keyed.url}/health").status_code == 200
