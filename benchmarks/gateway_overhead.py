"""What the gateway adds to a request: latency of the same requests sent straight to a back end and through
`temper gateway`, and through a bare proxy (the floor of a Python hop on the same stack), for cache misses (exact cache on, every prompt new), with the semantic cache on too (one MiniLM
embedding per miss), and for cache hits.

The back end is a constant-time OpenAI-compatible responder in its own process (so the model's own variance does
not hide the gateway's milliseconds); `--upstream URL` uses a real server instead (e.g. `temper serve`). The
gateway runs as `temper gateway` in its own process with a SQLite store, like a user runs it; the client sends
requests one at a time over a kept-alive connection.

    python benchmarks/gateway_overhead.py --requests 400
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

UPSTREAM_APP = r'''
import sys, time
from fastapi import FastAPI, Request
import uvicorn
app = FastAPI()
@app.get("/v1/models")
async def models():
    return {"object": "list", "data": [{"id": "echo", "object": "model"}]}
@app.post("/v1/chat/completions")
async def chat(request: Request):
    body = await request.json()
    text = "ok " * int(body.get("max_tokens") or 8)
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length",
                         "logprobs": None}],
            "usage": {"prompt_tokens": 12, "completion_tokens": int(body.get("max_tokens") or 8),
                      "total_tokens": 12 + int(body.get("max_tokens") or 8)}}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
'''

# the floor a Python proxy can reach on this stack: uvicorn (auto: httptools + uvloop when installed) and aiohttp,
# forwarding bytes without reading them, no cache, no limits, no metrics
BARE_PROXY_APP = r'''
import sys, aiohttp, uvicorn
UPSTREAM = sys.argv[2]
session = None
async def app(scope, receive, send):
    global session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                session = aiohttp.ClientSession()
                await send({"type": "lifespan.startup.complete"})
            else:
                await session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    async with session.post(UPSTREAM + scope["path"], data=body, headers={"content-type": "application/json"}) as r:
        status, data = r.status, await r.read()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
'''


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not get ready")


def start_gateway(upstream: str, model: str, semantic: bool, workdir: Path,
                  server: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = {"listen": {"port": port}, "log_requests": False,
              "backends": [{"name": "b", "url": upstream, "model": model,
                            "price": {"input_per_million": 0.1, "output_per_million": 0.4}}],
              "cache": {"store": f"sqlite:///{workdir}/gw-{port}.db",
                        "semantic": {"enabled": semantic}}}
    path = workdir / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "temper.cli", "gateway", "--config", str(path), *server],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/health", proc)
    return proc, url


def timed(client: httpx.Client, url: str, bodies: list[dict]) -> list[float]:
    out = []
    for body in bodies:
        t = time.perf_counter()
        r = client.post(url + "/v1/chat/completions", json=body)
        out.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{url}: HTTP {r.status_code}: {r.text[:200]}")
    return out


def summary(ms: list[float]) -> dict:
    q = statistics.quantiles(ms, n=100)
    return {"p50": statistics.median(ms), "p90": q[89], "p99": q[98], "mean": statistics.fmean(ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=400, help="requests per measured case")
    ap.add_argument("--upstream", default=None, help="a real back end's /v1 URL (default: a constant-time responder)")
    ap.add_argument("--model", default="echo", help="the model name the back end serves")
    ap.add_argument("--max-tokens", type=int, default=8)
    args = ap.parse_args()

    procs = []
    try:
        if args.upstream is None:
            port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-c", UPSTREAM_APP, str(port)]))
            upstream = f"http://127.0.0.1:{port}/v1"
            wait_ready(upstream + "/models", procs[-1])
        else:
            upstream = args.upstream.rstrip("/")
        workdir = Path(tempfile.mkdtemp(prefix="temper-gw-bench-"))
        gw_exact, url_exact = start_gateway(upstream, args.model, False, workdir)
        procs.append(gw_exact)
        gw_sem, url_sem = start_gateway(upstream, args.model, True, workdir)
        procs.append(gw_sem)
        # the same gateway on uvicorn's pure-Python parser and loop, which it runs on without httptools and uvloop
        gw_slow, url_slow = start_gateway(upstream, args.model, False, workdir, ("--http", "h11", "--loop", "asyncio"))
        procs.append(gw_slow)
        bare_port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", BARE_PROXY_APP, str(bare_port),
                                       upstream.removesuffix("/v1")]))
        url_bare = f"http://127.0.0.1:{bare_port}"
        wait_ready(url_bare + "/health", procs[-1])

        def bodies(tag: str) -> list[dict]:
            return [{"model": args.model, "temperature": 0, "max_tokens": args.max_tokens,
                     "messages": [{"role": "user", "content": f"Question {tag}-{i}: what is {i} plus {i * 7}?"}]}
                    for i in range(args.requests)]

        results: dict[str, list[float]] = {}
        paired: dict[str, list[float]] = {}
        with httpx.Client(timeout=60) as client:
            direct_root = upstream.removesuffix("/v1")
            for url in (direct_root, url_exact, url_sem, url_slow, url_bare):  # warm up connections, imports and the embedder
                timed(client, url, bodies(f"warm-{url}")[:20])
            # each gateway request right after a direct one with the same shape: this VM's speed drifts by tens of
            # percent between minutes, and pairing makes the drift cancel in the differences
            cases = {"bare proxy (floor)": (url_bare, bodies("bare")),
                     "gateway, exact cache miss": (url_exact, bodies("exact")),
                     "  same on h11 + asyncio": (url_slow, bodies("slow")),
                     "gateway, exact + semantic miss": (url_sem, bodies("semantic")),
                     "gateway, exact cache hit": (url_exact, bodies("exact")[:1] * args.requests)}
            for name, (url, gateway_bodies) in cases.items():
                direct = timed(client, direct_root, [])
                via = []
                for i, body in enumerate(gateway_bodies):
                    direct += timed(client, direct_root, bodies(f"direct-{name}")[i:i + 1])
                    via += timed(client, url, [body])
                results.setdefault("direct", []).extend(direct)
                results[name] = via
                paired[name] = [g - d for g, d in zip(via, direct)]
            metrics = client.get(url_exact + "/metrics").text
        own = {}
        for line in metrics.splitlines():
            if line.startswith("temper_gateway_overhead_seconds_sum"):
                own["sum"] = float(line.split()[-1])
            if line.startswith("temper_gateway_overhead_seconds_count"):
                own["count"] = float(line.split()[-1])
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=20)

    rows = {name: summary(ms) for name, ms in results.items()}
    added = {name: statistics.median(d) for name, d in paired.items()}
    print(f"{'case':<34} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'added p50 ms':>13}")
    for name, s in rows.items():
        extra = f"{added[name]:+.2f}" if name in added else ""
        print(f"{name:<34} {s['p50']:>8.2f} {s['p90']:>8.2f} {s['p99']:>8.2f} {extra:>13}")
    print("added p50: the median of (gateway - direct) over requests sent in alternation")
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"  # what uvicorn's "auto" picks
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    print(f"the gateway's uvicorn ran on {loop} with {http} (the back end's too), but where named")
    mean_own = own["sum"] / own["count"] * 1000 if own.get("count") else float("nan")
    print(f"the gateway's own time per request (its overhead histogram, misses and hits): mean {mean_own:.2f} ms")
    print(json.dumps({"bench": "gateway_overhead", "requests": args.requests,
                      "upstream": "constant-time responder" if args.upstream is None else args.upstream,
                      "p50_ms": {k: round(v["p50"], 3) for k, v in rows.items()},
                      "p99_ms": {k: round(v["p99"], 3) for k, v in rows.items()},
                      "added_p50_ms_miss": round(added["gateway, exact cache miss"], 3),
                      "added_p50_ms_miss_h11_asyncio": round(added["  same on h11 + asyncio"], 3),
                      "added_p50_ms_bare_proxy": round(added["bare proxy (floor)"], 3),
                      "added_p50_ms_semantic_miss": round(added["gateway, exact + semantic miss"], 3),
                      "hit_p50_ms": round(rows["gateway, exact cache hit"]["p50"], 3),
                      "gateway_own_mean_ms": round(mean_own, 3),
                      "uvicorn": f"{loop}+{http}", "machine": f"{platform.machine()} {os.cpu_count()} cores", "python": platform.python_version()}))


if __name__ == "__main__":
    main()
