"""The gateway over real HTTP on loopback: fallbacks, streams that break, budgets and rate limits under
concurrency, cache keys and scoping, routing policies, metrics and trace ids."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from temper.gateway.app import create_gateway
from temper.gateway.cache import exact_key, semantic_parts
from temper.gateway.config import GatewayConfigError, load_config
from temper.gateway.store import open_state
from tests.gateway.upstream import Scripted, serve


@pytest.fixture
def upstreams():
    started: list[Scripted] = []

    def make(**kw) -> Scripted:
        s = Scripted(**kw).start()
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


@pytest.fixture
def gateways():
    running = []

    def make(config: dict, state=None, embedder=None, verifier=None):
        app = create_gateway(load_config(config), state or open_state("memory"), embedder, health_checks=False,
                             verifier=verifier)
        r = serve(app)
        running.append(r)
        return r.url, app.state.gateway
    yield make
    for r in running:
        r.stop()


def backend(name: str, url: str, model: str, out_price: float = 1.0, in_price: float = 0.0, **kw) -> dict:
    return {"name": name, "url": url, "model": model,
            "price": {"input_per_million": in_price, "output_per_million": out_price}, **kw}


def chat(url: str, model: str, text: str = "hi", **kw) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4, "temperature": 0, **kw}
    headers = kw.pop("headers", None)
    body.pop("headers", None)
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def settle(gw, timeout: float = 10.0) -> None:
    """Wait until a gateway's bookkeeping after its responses (cache writes, the ledger) is done."""
    deadline = time.monotonic() + timeout
    while gw.pending:
        assert time.monotonic() < deadline, "the gateway's bookkeeping did not finish"
        time.sleep(0.005)


def dead_url() -> str:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    return f"http://127.0.0.1:{port}/v1"


# ---------------------------------------------------------------------- configuration
def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(GatewayConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(GatewayConfigError, match="fallbacks name unknown models"):
        load_config({"backends": [backend("a", "http://x/v1", "m")], "fallbacks": {"m": ["nope"]}})
    with pytest.raises(GatewayConfigError, match="not an http"):
        load_config({"backends": [backend("a", "ftp://x", "m")]})
    with pytest.raises(GatewayConfigError, match="per_hour needs output_tokens_per_second"):
        load_config({"backends": [{"name": "a", "url": "http://x/v1", "model": "m", "price": {"per_hour": 1}}]})
    from temper.gateway.routing import PolicyError
    with pytest.raises(PolicyError, match="threshold"):
        create_gateway(load_config({"backends": [backend("a", "http://x/v1", "m")],
                                    "routes": {"auto": {"policy": "cascade", "cheap": "m", "strong": "m"}}}),
                       open_state("memory"), health_checks=False)


def test_self_hosted_price_comes_from_price_per_hour_and_throughput():
    c = load_config({"backends": [{"name": "a", "url": "http://x/v1", "model": "m",
                                   "price": {"per_hour": 0.36, "output_tokens_per_second": 100,
                                             "input_tokens_per_second": 1000}}]})
    inp, out = c.backends[0].price.per_million()
    assert out == pytest.approx(0.36 / 3600 / 100 * 1e6)  # $1 per million output tokens
    assert inp == pytest.approx(0.1)


# ---------------------------------------------------------------------- cache keys
def test_exact_key_ignores_field_order_and_irrelevant_fields():
    a = {"model": "m", "messages": [{"role": "user", "content": "Hi there"}], "temperature": 0, "max_tokens": 8}
    b = {"max_tokens": 8, "temperature": 0, "stream": True, "user": "u1", "metadata": {"x": 1},
         "messages": [{"content": "  Hi there\n", "role": "user"}], "model": "m", "top_p": 1.0, "n": 1}
    assert exact_key(a, "m") == exact_key(b, "m")
    assert exact_key(a, "m") != exact_key(a, "other")  # model is part of the key
    assert exact_key(a, "m") != exact_key({**a, "temperature": 0.5}, "m")
    assert exact_key(a, "m") != exact_key({**a, "max_tokens": 9}, "m")
    system = {**a, "messages": [{"role": "system", "content": "Be terse."}, *a["messages"]]}
    assert exact_key(a, "m") != exact_key(system, "m")
    # the semantic scope holds the system prompt and the model, not the last question
    scope1, text1 = semantic_parts(a, "m")
    scope2, _ = semantic_parts({**a, "messages": [{"role": "user", "content": "Something else"}]}, "m")
    assert scope1 == scope2 and text1 == "Hi there"
    assert semantic_parts(system, "m")[0] != scope1
    assert semantic_parts(a, "other")[0] != scope1


# ---------------------------------------------------------------------- back ends
def test_fallback_when_the_backend_errors_or_is_down(upstreams, gateways):
    bad, good = upstreams(mode="error500"), upstreams(text="from the fallback")
    url, _ = gateways({"backends": [backend("bad", bad.url, "cheap"), backend("dead", dead_url(), "cheap"),
                                     backend("good", good.url, "strong")],
                        "fallbacks": {"cheap": ["strong"]}, "retry": {"attempts": 3, "backoff": 0.0}})
    r = chat(url, "cheap")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].startswith("from the fallback")
    assert r.headers["x-temper-backend"] == "good"
    assert bad.calls == 1 and good.calls == 1  # each cheap replica tried once, then the fallback
    metrics = httpx.get(f"{url}/metrics").text
    assert 'temper_gateway_backend_errors_total{backend="bad",kind="status"} 1.0' in metrics
    assert 'temper_gateway_backend_errors_total{backend="dead",kind="connect"} 1.0' in metrics
    # nothing left to fall back to: 502 in OpenAI's shape, with what failed
    good.mode = "error500"
    r = chat(url, "cheap", "another question")
    assert r.status_code == 502
    assert "every back end" in r.json()["error"]["message"] and r.headers["x-trace-id"]


def test_client_errors_pass_through_without_retries(upstreams, gateways):
    up = upstreams(mode="bad_request")
    other = upstreams()
    url, _ = gateways({"backends": [backend("a", up.url, "m"), backend("b", other.url, "n")],
                       "fallbacks": {"m": ["n"]}})
    r = chat(url, "m")
    assert r.status_code == 400 and r.json()["error"]["message"] == "scripted refusal"
    assert up.calls == 1 and other.calls == 0


def _stream(url: str, model: str, text: str = "hi", max_tokens: int = 6) -> tuple[list[dict], httpx.Response]:
    events = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30,
                      json={"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0,
                            "messages": [{"role": "user", "content": text}]}) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and line != "data: [DONE]":
                events.append(json.loads(line[5:]))
    return events, r


def _text(events: list[dict]) -> str:
    return "".join((c.get("delta") or {}).get("content") or "" for e in events for c in e.get("choices", []))


def test_stream_falls_back_when_the_backend_dies_before_its_first_token(upstreams, gateways):
    dying, good = upstreams(mode="die_before_token"), upstreams(text="steady")
    url, _ = gateways({"backends": [backend("dying", dying.url, "m"), backend("good", good.url, "n")],
                       "fallbacks": {"m": ["n"]}})
    events, r = _stream(url, "m")
    assert r.status_code == 200 and r.headers["x-temper-backend"] == "good"
    assert _text(events).split() == ["steady"] * 6
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert all("error" not in e for e in events)


def test_stream_that_breaks_after_its_first_token_ends_with_an_error_event(upstreams, gateways):
    dying, good = upstreams(mode="die_after_token", text="partial"), upstreams()
    url, _ = gateways({"backends": [backend("dying", dying.url, "m"), backend("good", good.url, "n")],
                       "fallbacks": {"m": ["n"]}})
    events, r = _stream(url, "m")
    assert r.headers["x-temper-backend"] == "dying"  # text had reached the client: no silent switch
    assert _text(events).split() == ["partial", "partial"]
    assert events[-1]["error"]["code"] == "upstream_stream_broken"
    assert good.calls == 0


def test_a_client_that_hangs_up_abandons_the_back_end_request(upstreams, gateways):
    up = upstreams(mode="hang")
    up.hang_seconds = 20
    url, _ = gateways({"backends": [backend("a", up.url, "m")]})
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
                   timeout=0.5)
    deadline = time.monotonic() + 10
    while 'status="499"} 1.0' not in (metrics := httpx.get(f"{url}/metrics").text):
        assert time.monotonic() < deadline, "the gateway never gave the request up"
        time.sleep(0.05)
    assert time.monotonic() - started < 10  # not after the back end's 20 s
    assert 'temper_gateway_backend_in_flight{backend="a"} 0.0' in metrics  # the back-end call was cancelled
    up.mode = "ok"
    assert chat(url, "m", "next").status_code == 200  # and it keeps serving


def test_least_outstanding_requests_spreads_load(upstreams, gateways):
    a, b = upstreams(mode="hang"), upstreams(mode="hang")
    url, _ = gateways({"backends": [backend("a", a.url, "m"), backend("b", b.url, "m")]})

    async def run():
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
            slow = asyncio.create_task(client.post(f"{url}/v1/chat/completions", json=body))
            while a.calls + b.calls == 0:
                await asyncio.sleep(0.01)
            busy, idle = (a, b) if a.calls else (b, a)
            idle.mode = "ok"
            # while one replica holds a request, the next ones go to the idle one
            rs = [await client.post(f"{url}/v1/chat/completions", json={**body, "temperature": 0.5})
                  for _ in range(4)]
            await slow
            return busy, idle, rs
    busy, idle, rs = asyncio.run(run())
    assert busy.calls == 1 and idle.calls == 4
    assert all(r.status_code == 200 for r in rs)


# ---------------------------------------------------------------------- budgets and rate limits
def _fire(url: str, count: int, key: str, max_tokens: int = 10, text: str = "hi") -> list[httpx.Response]:
    async def run():
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"model": "m", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}
            return await asyncio.gather(*(client.post(f"{url}/v1/chat/completions", json=body,
                                                      headers={"Authorization": f"Bearer {key}"})
                                          for _ in range(count)))
    return asyncio.run(run())


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_budget_is_exact_under_concurrent_requests(upstreams, gateways, store, tmp_path, redis_url):
    up = upstreams()
    state = _state(store, tmp_path, redis_url)
    # each request: 10 output tokens at $100 per million = $0.001, reserved and charged exactly (input is free)
    url, _ = gateways({"backends": [backend("a", up.url, "m", out_price=100.0)],
                        "keys": [{"name": "alice", "key": "sk-alice", "budget_usd": 0.005, "team": "t"},
                                 {"name": "admin", "key": "sk-admin", "admin": True}],
                        "cache": {"exact": {"enabled": False}}}, state=state)
    rs = _fire(url, 15, "sk-alice")
    codes = sorted(r.status_code for r in rs)
    assert codes == [200] * 5 + [429] * 10
    refused = next(r for r in rs if r.status_code == 429).json()["error"]
    assert refused["code"] == "budget_exceeded" and "budget" in refused["message"]
    assert sum(float(r.headers["x-temper-cost-usd"]) for r in rs if r.status_code == 200) == pytest.approx(0.005)
    spend = httpx.get(f"{url}/admin/spend", headers={"Authorization": "Bearer sk-admin"}).json()
    assert spend["budgets"]["key:alice"]["spent_usd"] == pytest.approx(0.005)
    assert spend["totals"]["team"]["t"] == pytest.approx(0.005)
    assert httpx.get(f"{url}/admin/spend", headers={"Authorization": "Bearer sk-alice"}).status_code == 403


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_rate_limits_are_exact_under_concurrent_requests(upstreams, gateways, store, tmp_path, redis_url):
    up = upstreams()
    state = _state(store, tmp_path, redis_url)
    url, _ = gateways({"backends": [backend("a", up.url, "m")],
                       "keys": [{"name": "r", "key": "sk-r", "rpm": 4},
                                {"name": "t", "key": "sk-t", "tpm": 100}]}, state=state)
    rs = _fire(url, 10, "sk-r")
    assert sorted(r.status_code for r in rs) == [200] * 4 + [429] * 6
    limited = next(r for r in rs if r.status_code == 429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    # tpm: "hi" counts 1 prompt token (estimate) + max_tokens 24 = 25 at admission: 4 fit in 100
    rs = _fire(url, 10, "sk-t", max_tokens=24)
    assert sorted(r.status_code for r in rs) == [200] * 4 + [429] * 6
    # a request that can never fit is a 400, not a 429 to retry forever
    rs = _fire(url, 1, "sk-t", max_tokens=500)
    assert rs[0].status_code == 400 and "tokens per minute" in rs[0].json()["error"]["message"]


def test_keys_are_required_and_scoped(upstreams, gateways):
    up = upstreams()
    url, _ = gateways({"backends": [backend("a", up.url, "m"), backend("b", up.url, "n")],
                       "keys": [{"name": "k", "key": "sk-k", "models": ["m"]}]})
    assert chat(url, "m").status_code == 401
    assert chat(url, "m", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert chat(url, "m", headers={"Authorization": "Bearer sk-k"}).status_code == 200
    r = chat(url, "n", headers={"Authorization": "Bearer sk-k"})
    assert r.status_code == 403 and r.json()["error"]["param"] == "model"
    models = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer sk-k"}).json()
    assert [m["id"] for m in models["data"]] == ["m"]


# ---------------------------------------------------------------------- caches
def test_exact_cache_hits_and_bypass(upstreams, gateways):
    up = upstreams()
    url, _ = gateways({"backends": [backend("a", up.url, "m"), backend("b", up.url, "n")]})
    first = chat(url, "m", "What is 2+2?")
    assert first.headers["x-temper-cache"] == "miss" and float(first.headers["x-temper-cost-usd"]) > 0
    again = chat(url, "m", "What is 2+2?", user="someone", stream=False)  # irrelevant fields differ
    assert again.headers["x-temper-cache"] == "hit-exact" and again.headers["x-temper-cost-usd"] == "0"
    assert again.json()["choices"] == first.json()["choices"]
    assert up.calls == 1
    assert chat(url, "n", "What is 2+2?").headers["x-temper-cache"] == "miss"  # another model's answer: never
    assert chat(url, "m", "What is 2+2?", temperature=0.7).headers["x-temper-cache"] == "off"  # sampled
    r = chat(url, "m", "What is 2+2?", headers={"Cache-Control": "no-cache"})
    assert r.headers["x-temper-cache"] == "bypass"
    assert up.calls == 4
    # a streaming request is answered from the cache as a stream
    events, r = _stream(url, "m", "What is 2+2?", max_tokens=4)
    assert r.headers["x-temper-cache"] == "hit-exact"
    assert _text(events) == first.json()["choices"][0]["message"]["content"]


def test_semantic_cache_is_scoped_by_model_and_system_prompt(upstreams, gateways, embedder):
    up = upstreams()
    url, _ = gateways({"backends": [backend("a", up.url, "m"), backend("b", up.url, "n")],
                       "cache": {"semantic": {"enabled": True, "threshold": 0.85, "verifier": "none"}}},
                      embedder=embedder)
    q1, q2 = "How do I reverse a list in Python?", "how can i reverse a python list"
    assert chat(url, "m", q1).headers["x-temper-cache"] == "miss"
    hit = chat(url, "m", q2)
    assert hit.headers["x-temper-cache"] == "hit-semantic"
    assert float(hit.headers["x-temper-cache-similarity"]) >= 0.85
    assert chat(url, "n", q2).headers["x-temper-cache"] == "miss"  # another model
    system = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": q2}]
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": system, "max_tokens": 4,
                                                        "temperature": 0})
    assert r.headers["x-temper-cache"] == "miss"  # another system prompt
    assert chat(url, "m", q2, max_tokens=5).headers["x-temper-cache"] == "miss"  # other sampling settings
    # a different question on the same topic is not a paraphrase
    assert chat(url, "m", "How do I reverse a list in JavaScript?").headers["x-temper-cache"] == "miss"


@pytest.mark.parametrize("verifier_threshold", [0.0, 1.0])
def test_the_pair_verifier_has_the_last_word_on_a_semantic_hit(upstreams, gateways, embedder, tiny_verifier,
                                                                verifier_threshold):
    up = upstreams()
    cache = {"semantic": {"enabled": True, "verifier": "pair-classifier", "verifier_threshold": verifier_threshold}}
    url, _ = gateways({"backends": [backend("a", up.url, "m")], "cache": cache}, embedder=embedder,
                      verifier=tiny_verifier[0])
    q1, q2 = "How do I reverse a list in Python?", "how can i reverse a python list"
    assert chat(url, "m", q1).headers["x-temper-cache"] == "miss"
    r = chat(url, "m", q2)  # similar enough, the guard agrees: the verifier decides
    if verifier_threshold == 0.0:
        assert r.headers["x-temper-cache"] == "hit-semantic" and 0 < float(r.headers["x-temper-cache-verifier"]) < 1
        assert up.calls == 1
    else:
        assert r.headers["x-temper-cache"] == "miss" and "x-temper-cache-verifier" not in r.headers
        assert up.calls == 2
        # q2 is stored now; the same text in another case and spacing is the same question after normalization:
        # a hit with no verifier call, even though this verifier refuses everything
        again = chat(url, "m", "  How can I reverse a Python list")
        assert again.headers["x-temper-cache"] == "hit-semantic" and "x-temper-cache-verifier" not in again.headers
        assert up.calls == 2


# ---------------------------------------------------------------------- routing
def test_cascade_keeps_confident_answers_and_escalates_the_rest(upstreams, gateways):
    cheap, strong = upstreams(text="cheap answer", logprob=-0.2), upstreams(text="strong answer")
    url, _ = gateways({"backends": [backend("c", cheap.url, "small", out_price=1.0),
                                     backend("s", strong.url, "big", out_price=10.0)],
                        "routes": {"auto": {"policy": "cascade", "cheap": "small", "strong": "big",
                                            "signal": "mean_logprob", "threshold": -0.5}}})
    r = chat(url, "auto", "q1")
    assert r.headers["x-temper-model"] == "small" and r.headers["x-temper-route"].startswith("accepted")
    assert r.json()["choices"][0]["message"]["content"].startswith("cheap")
    assert r.json()["choices"][0]["logprobs"] is None  # the client did not ask for them
    assert cheap.bodies[-1]["logprobs"] is True
    cost_cheap = float(r.headers["x-temper-cost-usd"])
    cheap.logprob = -2.0
    r = chat(url, "auto", "q2")
    assert r.headers["x-temper-model"] == "big" and r.headers["x-temper-route"].startswith("escalated")
    assert r.json()["choices"][0]["message"]["content"].startswith("strong")
    assert float(r.headers["x-temper-cost-usd"]) == pytest.approx(cost_cheap * 11)  # paid for both
    metrics = httpx.get(f"{url}/metrics").text
    assert 'temper_gateway_route_decisions_total{outcome="escalated",policy="cascade",route="auto",target="big"} 1.0' \
        in metrics
    # a streaming request through an accepted cascade gets the cheap answer as a stream
    cheap.logprob = -0.1
    events, r = _stream(url, "auto", "q3", max_tokens=3)
    assert r.headers["x-temper-model"] == "small" and _text(events).split() == ["cheap", "answer", "cheap"]


def test_cascade_on_self_consistency(upstreams, gateways):
    cheap, strong = upstreams(text="the answer is 42"), upstreams(text="strong")
    url, _ = gateways({"backends": [backend("c", cheap.url, "small"), backend("s", strong.url, "big")],
                       "routes": {"sc": {"policy": "cascade", "cheap": "small", "strong": "big",
                                         "signal": "self_consistency", "samples": 4, "threshold": 0.75}}})
    r = chat(url, "sc", "q", max_tokens=4)
    assert r.headers["x-temper-model"] == "small" and "agreement of 4 samples 1.000" in r.headers["x-temper-route"]
    assert cheap.bodies[-1]["n"] == 4 and cheap.bodies[-1]["temperature"] == 0.7
    assert len(r.json()["choices"]) == 1


def test_rules_route_by_length_and_metadata(upstreams, gateways):
    small, big = upstreams(text="small"), upstreams(text="big")
    url, _ = gateways({"backends": [backend("s", small.url, "small"), backend("b", big.url, "big")],
                       "routes": {"chat": {"policy": "rules", "default": "big", "rules": [
                           {"when": {"metadata": {"tier": "premium"}}, "model": "big"},
                           {"when": {"max_prompt_tokens": 10}, "model": "small"}]}}})
    assert chat(url, "chat", "short").headers["x-temper-model"] == "small"
    assert chat(url, "chat", "a much longer prompt " * 10).headers["x-temper-model"] == "big"
    r = chat(url, "chat", "short", metadata={"tier": "premium"})
    assert r.headers["x-temper-model"] == "big" and "rules[0]" in r.headers["x-temper-route"]
    assert "metadata" not in big.bodies[-1]  # gateway-only fields are not forwarded


def test_learned_router_routes_by_predicted_quality(upstreams, gateways, embedder, tmp_path):
    import numpy as np

    from temper.gateway.router_model import RouterModel
    small, big = upstreams(text="small"), upstreams(text="big")
    easy = ["What is 2 + 2?", "Say hello.", "What colour is the sky?", "Name a fruit.", "What is 3 + 1?",
            "Greet me politely.", "What is the opposite of hot?", "Count to three."]
    hard = ["Prove that there are infinitely many primes.", "Derive the Black-Scholes equation step by step.",
            "Explain the proof of Fermat's last theorem.", "Solve this integral of x^2 e^x and justify each step.",
            "Write a formal proof of the fundamental theorem of calculus.", "Prove the Cauchy-Schwarz inequality.",
            "Show that the square root of 2 is irrational, rigorously.", "Derive the Euler-Lagrange equations."]
    x = embedder.embed(easy + hard).numpy()
    RouterModel.fit(x, np.array([1] * len(easy) + [0] * len(hard))).save(tmp_path / "router.json")
    url, _ = gateways({"backends": [backend("s", small.url, "small"), backend("b", big.url, "big")],
                       "routes": {"smart": {"policy": "learned", "cheap": "small", "strong": "big",
                                            "model_path": str(tmp_path / "router.json"), "threshold": 0.5}}},
                      embedder=embedder)
    assert chat(url, "smart", "What is 5 + 2?").headers["x-temper-model"] == "small"
    assert chat(url, "smart", "Prove that the harmonic series diverges.").headers["x-temper-model"] == "big"


# ---------------------------------------------------------------------- observability and errors
def test_trace_ids_metrics_and_errors(upstreams, gateways):
    up = upstreams()
    url, _ = gateways({"backends": [backend("a", up.url, "m")]})
    r = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers={"x-trace-id": "trace-123"})
    assert r.status_code == 400 and r.headers["x-trace-id"] == "trace-123"
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = chat(url, "unknown-model")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found" and r.headers["x-trace-id"]
    r = chat(url, "m")
    assert r.status_code == 200 and len(r.headers["x-trace-id"]) == 32
    metrics = httpx.get(f"{url}/metrics").text
    for name in ("temper_gateway_requests_total", "temper_gateway_request_duration_seconds",
                 "temper_gateway_overhead_seconds", "temper_gateway_tokens_total", "temper_gateway_cost_usd_total",
                 "temper_gateway_cache_total"):
        assert name in metrics, name
    assert httpx.get(f"{url}/health").json()["backends"]["a"]["healthy"] is True


def test_through_the_openai_sdk_to_a_real_temper_server(gateways, smollm2_loaded):
    from openai import OpenAI

    from temper.server.app import ServerConfig
    from tests.server.conftest import start_server, tiny_loader
    live = start_server(ServerConfig(), tiny_loader(smollm2_loaded))
    try:
        url, _ = gateways({"backends": [backend("t", live.url + "/v1", "tiny-model", upstream_model="tiny")]})
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        out = client.chat.completions.create(model="tiny-model", messages=[{"role": "user", "content": "Hello"}],
                                             max_tokens=5, temperature=0)
        assert out.model == "tiny-model" and out.usage.completion_tokens == 5
        chunks = list(client.chat.completions.create(model="tiny-model", max_tokens=5, temperature=0, stream=True,
                                                     messages=[{"role": "user", "content": "Hello"}],
                                                     stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        # the cached non-streaming answer and the streamed one are the same greedy tokens
        assert text == out.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == 5
        comp = client.completions.create(model="tiny-model", prompt="Once upon", max_tokens=3, temperature=0)
        assert comp.usage.completion_tokens == 3
    finally:
        live.stop()


def _state(kind: str, tmp_path, redis_url):
    if kind == "sqlite":
        return open_state(f"sqlite:///{tmp_path}/gw.db")
    if redis_url is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    return open_state(redis_url)


def test_two_gateway_instances_share_limits_and_caches_through_redis(upstreams, gateways, redis_url, embedder):
    if redis_url is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    up = upstreams()
    config = {"backends": [backend("a", up.url, "m")], "keys": [{"name": "k", "key": "sk-k", "rpm": 6}],
              "cache": {"store": redis_url, "semantic": {"enabled": True, "threshold": 0.85, "verifier": "none"}}}
    url1, gw1 = gateways(config, state=open_state(redis_url), embedder=embedder)
    url2, _ = gateways(config, state=open_state(redis_url), embedder=embedder)
    auth = {"Authorization": "Bearer sk-k"}
    assert chat(url1, "m", "How do I reverse a list in Python?", headers=auth).headers["x-temper-cache"] == "miss"
    settle(gw1)  # the cache write goes out right after the response: another instance sees it a moment later
    assert chat(url2, "m", "How do I reverse a list in Python?", headers=auth).headers["x-temper-cache"] == "hit-exact"
    r = chat(url2, "m", "how can i reverse a python list", headers=auth)
    assert r.headers["x-temper-cache"] == "hit-semantic"  # the other instance's entry, through the shared log
    assert up.calls == 1
    # 3 requests used; the key's 6 per minute are shared: 3 more pass across both instances, then 429
    codes = [chat(u, "m", f"q{i}", headers=auth).status_code for i, u in enumerate([url1, url2] * 3)]
    assert codes == [200, 200, 200, 429, 429, 429]


def test_health_checks_take_a_dead_replica_out_and_bring_it_back(upstreams):
    from temper.gateway.backends import Backends
    a, b = upstreams(), upstreams()
    config = load_config({"backends": [backend("a", a.url, "m"), backend("b", b.url, "m")]})

    async def run():
        backends = Backends(config)
        await backends.check_all()
        assert all(r.healthy for r in backends.all())
        a.stop()
        await backends.check_all()
        down = {r.name: r.healthy for r in backends.all()}
        picks = {backends.pick("m").name for _ in range(20)}
        a.running = serve(a.app(), port=int(a.url.rsplit(":", 1)[1].split("/")[0]))
        await backends.check_all()
        up_again = {r.name: r.healthy for r in backends.all()}
        await backends.aclose()
        return down, picks, up_again
    down, picks, up_again = asyncio.run(run())
    assert down == {"a": False, "b": True} and picks == {"b"}
    assert up_again == {"a": True, "b": True}


def test_context_limits_pick_a_fallback_with_room_or_refuse_clearly(upstreams, gateways):
    short, long = upstreams(text="short"), upstreams(text="long")
    url, _ = gateways({"backends": [backend("s", short.url, "small", context_limit=64),
                                    backend("l", long.url, "big", context_limit=4096)],
                       "fallbacks": {"small": ["big"]}})
    assert chat(url, "small", "hi").headers["x-temper-backend"] == "s"
    r = chat(url, "small", "word " * 100)  # ~125 tokens + 4: too long for the 64-token model
    assert r.status_code == 200 and r.headers["x-temper-backend"] == "l" and short.calls == 1
    r = chat(url, "big", "word " * 100, max_tokens=5000)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_cli_spend_and_check_read_the_same_store(upstreams, gateways, tmp_path, capsys):
    import yaml

    from temper.cli import main
    up = upstreams()
    config = {"backends": [backend("a", up.url, "m", out_price=2.0), backend("down", dead_url(), "n")],
              "keys": [{"name": "alice", "key": "sk-a", "team": "lab", "budget_usd": 1.0}],
              "cache": {"store": f"sqlite:///{tmp_path}/gw.db"}}
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(config))
    url, _ = gateways(config, state=open_state(config["cache"]["store"]))
    assert chat(url, "m", "hi", headers={"Authorization": "Bearer sk-a"}).status_code == 200
    assert main(["gateway", "spend", "--config", str(tmp_path / "gw.yaml"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == [{"key": "alice", "team": "lab", "model": "m", "cost_usd": pytest.approx(8e-6),
                               "requests": 1, "prompt_tokens": 7, "completion_tokens": 4}]
    assert report["budgets"]["key:alice"]["spent_usd"] == pytest.approx(8e-6)
    assert main(["gateway", "check", "--config", str(tmp_path / "gw.yaml")]) == 1  # one back end is down
    out = capsys.readouterr().out
    assert "DOWN" in out and " up " in out


def test_the_example_config_builds(embedder, tiny_verifier):
    from pathlib import Path
    config = load_config(Path(__file__).parents[2] / "examples" / "gateway.yaml")
    app = create_gateway(config, open_state("memory"), embedder, health_checks=False, verifier=tiny_verifier[0])
    gw = app.state.gateway
    assert gw.backends.models() == ["smollm2", "smollm2-int4"] and set(gw.policies) == {"auto", "chat"}
    assert gw.keys.required and gw.config.cache.semantic.enabled
    assert gw.cache.verifier is tiny_verifier[0]  # the semantic cache checks candidates with the pair verifier


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_cache_store_keeps_each_kind_within_its_size_and_evicts_least_recently_used(store, tmp_path, redis_url):
    state = _state(store, tmp_path, redis_url)

    async def run():
        for i in range(40):  # semantic entries have their own, larger limit: they must not push exact ones out
            await state.cache_put(f"s:{i}", b"s", 60, 10_000)
        for i in range(32):
            await state.cache_put(f"x:{i}", str(i).encode(), 60, 32)
            await asyncio.sleep(0.002)  # distinct use times
        assert await state.cache_get("x:0") == b"0"  # now the most recently used
        await asyncio.sleep(0.002)
        await state.cache_put("x:32", b"32", 60, 32)
        await state.cache_put("x:gone", b"old", 0.001, 32)
        await asyncio.sleep(0.01)
        kept = [i for i in range(33) if await state.cache_get(f"x:{i}") is not None]
        assert await state.cache_get("x:gone") is None  # expired entries are never returned
        semantic = [i for i in range(40) if await state.cache_get(f"s:{i}") is not None]
        await state.close()
        return kept, semantic

    kept, semantic = asyncio.run(run())
    assert semantic == list(range(40))
    assert 0 in kept and 32 in kept and len(kept) <= 32
    evicted = sorted(set(range(33)) - set(kept))
    assert evicted and evicted == list(range(1, 1 + len(evicted)))  # the least recently used went first
