"""Serving speed: throughput against concurrency, latency percentiles, server memory and cost per token.

Always measured through the OpenAI-compatible API, as users get it: an endpoint as it is, a local model by
starting `temper serve` for it on a free loopback port (and stopping it after). Each concurrency level sends
`requests` streamed chat requests of `input_words` random common words with `ignore_eos` (every request makes
exactly `max_tokens` tokens) and fresh prompts per level so no prefix cache helps; the definitions of TTFT,
TPOT and throughput are temper.eval.load's (vLLM's `bench serve`). Memory is the server's resident set
(`/proc/PID` for a server started here, else `process_resident_memory_bytes` from its /metrics). Cost per
million output tokens = price per hour / (3600 x the best output tokens/s), at the stated price of the machine.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from temper.eval.suites import SuiteSkipped, metric

log = logging.getLogger(__name__)

DEFAULTS = {"levels": [1, 4, 16], "requests": 16, "max_tokens": 64, "input_words": 128, "price_per_hour": 0.10,
            "kv_cache_memory_gib": 1.0, "max_model_len": 4096, "startup_timeout": 600.0, "seed": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """`temper serve` for a model, in a child process on a free loopback port."""

    def __init__(self, model: str, quantization: str | None, kv_gib: float, log_path: Path | None = None,
                 extra: list[str] = (), max_model_len: int = 4096):
        self.port = _free_port()
        cmd = [sys.executable, "-m", "temper.cli", "serve", "--model", model, "--port", str(self.port),
               "--kv-cache-memory", str(kv_gib), "--max-num-seqs", "64", "--max-model-len", str(max_model_len),
               *extra]
        if "--rag-store" not in extra:
            cmd.append("--no-embeddings")  # the embedder serves /v1/embeddings and RAG only
        if quantization:
            cmd += ["--quantization", quantization]
        self.log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"temper serve exited with status {self.proc.returncode} before it was ready")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"temper serve was not ready after {timeout:.0f} s")

    def rss(self) -> tuple[int | None, int | None]:
        """(resident bytes now, peak resident bytes) of the server process."""
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None, None
        vals = {k: int(v) * 1024 for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.MULTILINE)}
        return vals.get("VmRSS"), vals.get("VmHWM")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not subprocess.DEVNULL:
            self.log.close()


def _metrics_rss(root: str, headers: dict[str, str]) -> int | None:
    try:
        text = httpx.get(f"{root}/metrics", headers=headers, timeout=10).text
    except httpx.HTTPError:
        return None
    m = re.search(r"^process_resident_memory_bytes\s+([0-9.e+]+)", text, re.MULTILINE)
    return int(float(m.group(1))) if m else None


async def _measure(base_url: str, model: str, headers: dict[str, str], o: dict[str, Any]) -> list[dict]:
    from temper.eval.load import LoadSpec, level_metrics, random_prompts, run_level, send

    spec = LoadSpec(model=model, endpoint="chat", max_tokens=o["max_tokens"], ignore_eos=True, seed=o["seed"])
    levels = list(o["levels"])
    pool = random_prompts(1 + o["requests"] * len(levels), o["input_words"], o["seed"])
    limits = httpx.Limits(max_connections=max(levels), max_keepalive_connections=max(levels))
    rows = []
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=600) as client:
        warm = await send(client, spec, pool[0])
        if not warm.ok:
            raise SuiteSkipped(f"the warm-up request failed: {warm.error}")
        for i, c in enumerate(levels):
            prompts = pool[1 + i * o["requests"]: 1 + (i + 1) * o["requests"]]
            results, duration, cpu_s = await run_level(client, spec, prompts, c)
            row = level_metrics(results, duration, cpu_s, c)
            log.info("speed: concurrency %d: %.1f output tok/s, TTFT p50 %s ms", c, row["output_throughput"],
                     row["ttft_ms"] and round(row["ttft_ms"]["median"], 1))
            rows.append({k: row[k] for k in ("concurrency", "completed", "failed", "errors", "duration_s",
                                              "request_throughput", "output_throughput", "ttft_ms", "tpot_ms",
                                              "itl_ms", "e2e_ms", "client_cpu_fraction")})
    return rows


def run(target, options: dict[str, Any]) -> dict[str, Any]:
    o = {**DEFAULTS, **options}
    server = None
    headers: dict[str, str] = {}
    try:
        if target.kind == "model":
            log_path = Path(o["log_dir"]) / "speed-server.log" if o.get("log_dir") else None
            server = LocalServer(target.model, target.quantization, o["kv_cache_memory_gib"], log_path,
                                 max_model_len=o["max_model_len"])
            server.wait(o["startup_timeout"])
            base, model = server.url + "/v1", target.model
        else:
            base, model, headers = target.base_url, target.model, target._headers()
        # the client's base_url keeps /v1 out: temper.eval.load posts to /v1/chat/completions
        root = base[: -len("/v1")]
        levels = asyncio.run(_measure(root, model, headers, o))
        if server is not None:
            rss, peak = server.rss()
        else:
            rss, peak = _metrics_rss(root, headers), None
    finally:
        if server is not None:
            server.stop()
    best = max((lv["output_throughput"] for lv in levels if lv["completed"]), default=0.0)
    first = levels[0]
    usd = o["price_per_hour"] / (3600 * best) * 1e6 if best else None
    metrics = {
        "output_tok_s_max": metric(round(best, 2), "tok/s", True, "output tokens/s (best level)"),
        "ttft_p50_ms": metric(first["ttft_ms"] and round(first["ttft_ms"]["median"], 1), "ms", False,
                              f"TTFT p50 at concurrency {first['concurrency']}"),
        "tpot_p50_ms": metric(first["tpot_ms"] and round(first["tpot_ms"]["median"], 2), "ms", False,
                              f"TPOT p50 at concurrency {first['concurrency']}"),
        "usd_per_million_output_tokens": metric(usd and round(usd, 4), "usd", False,
                                                f"USD per million output tokens at ${o['price_per_hour']:g}/h"),
    }
    if rss is not None:
        metrics["rss_bytes"] = metric(rss, "bytes", False, "server resident memory")
    details = {"levels": levels, "price_per_hour": o["price_per_hour"], "max_tokens": o["max_tokens"],
               "input_words": o["input_words"], "requests_per_level": o["requests"], "peak_rss_bytes": peak,
               "server": "started here: temper serve" if server is not None else target.base_url,
               "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    return {"metrics": metrics, "details": details, "samples": []}
