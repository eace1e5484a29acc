"""A streaming load generator for any OpenAI-compatible server: what `temper eval`'s speed suite and
benchmarks/serve.py measure with. Definitions follow vLLM's `vllm bench serve`, all on the client's clock
(benchmarks/serve.py's docstring states them in full): TTFT is request sent -> first chunk with content, E2E
request sent -> last content chunk, TPOT (E2E - TTFT) / (output tokens - 1), ITL every gap between content
chunks; output tokens come from `usage` (stream_options.include_usage), else the number of content chunks.

`send` and `run_level` read their settings from any object with the attributes of `LoadSpec` (the benchmark
passes its argparse namespace).
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import resource
import statistics
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadSpec:
    model: str
    endpoint: str = "chat"  # "chat" or "completions"
    max_tokens: int = 64
    temperature: float = 0.0
    ignore_eos: bool = False
    timeout: float = 600.0
    request_rate: float = math.inf  # Poisson arrivals per second; inf: all at once
    seed: int = 0


WORDS = ["the", "of", "and", "to", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with", "as", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "hot", "word", "but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "an", "each", "she", "which", "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write", "would", "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water", "than", "call", "first", "who", "may", "down", "side", "been", "now", "find", "any", "new", "work", "part", "take", "get", "place", "made", "live", "where", "after", "back", "little", "only", "round", "man", "year", "came", "show", "every", "good", "me", "give", "our", "under", "name", "very", "through", "just", "form", "sentence", "great", "think", "say", "help", "low", "line", "differ"]


@dataclass(slots=True)
class RequestResult:
    ok: bool = False
    error: str = ""
    ttft: float = 0.0  # seconds
    e2e: float = 0.0  # seconds
    itl: list[float] = field(default_factory=list)  # seconds between successive content chunks
    output_tokens: int = 0
    prompt_tokens: int = 0
    has_usage: bool = False
    empty: bool = False  # completed with no content (vLLM's client counts these as failures; we count them apart)


def random_prompts(count: int, input_len: int, seed: int) -> list[str]:
    """Prompts of `input_len` common English words drawn with a fixed seed (about one BPE token each)."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=input_len)) for _ in range(count)]


def _text_completions(choice: dict) -> str | None:
    return choice.get("text")


def _text_chat(choice: dict) -> str | None:
    return (choice.get("delta") or {}).get("content")


# endpoint -> (path, body field that carries the prompt, how a prompt becomes that field, content of a choice)
ENDPOINTS = {
    "completions": ("/v1/completions", "prompt", lambda p: p, _text_completions),
    "chat": ("/v1/chat/completions", "messages", lambda p: [{"role": "user", "content": p}], _text_chat),
}


async def send(client: httpx.AsyncClient, args: LoadSpec, prompt: str) -> RequestResult:
    """One streamed request; SSE parsed by hand: `data: ` lines of JSON until `data: [DONE]`."""
    path, prompt_field, to_field, content_of = ENDPOINTS[args.endpoint]
    body = {"model": args.model, prompt_field: to_field(prompt), "max_tokens": args.max_tokens,
            "temperature": args.temperature, "stream": True, "stream_options": {"include_usage": True}}
    if args.ignore_eos:
        body["ignore_eos"] = True
    result = RequestResult(prompt_tokens=len(prompt.split()))
    num_chunks = 0
    start = last = time.perf_counter()
    try:
        async with asyncio.timeout(args.timeout), client.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                result.error = f"HTTP {response.status_code}: {text[:300]}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, `: ping` comments, `event:` / `id:` fields
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                data = json.loads(payload)
                if "error" in data:
                    result.error = f"error in stream: {json.dumps(data['error'])[:300]}"
                    return result
                if usage := data.get("usage"):  # the last one wins (vLLM can send usage on every chunk)
                    result.output_tokens = usage.get("completion_tokens") or 0
                    result.prompt_tokens = usage.get("prompt_tokens") or result.prompt_tokens
                    result.has_usage = True
                choices = data.get("choices") or []
                if not choices or not content_of(choices[0]):
                    continue
                now = time.perf_counter()
                if num_chunks == 0:
                    result.ttft = now - start
                else:
                    result.itl.append(now - last)
                last = now
                num_chunks += 1
    except TimeoutError:
        result.error = f"timed out after {args.timeout:g} s"
        return result
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        result.error = f"{type(e).__name__}: {e}"
        return result
    if num_chunks == 0:  # a clean stream that ended at once (end of turn first): done, but no TTFT to count
        result.ok, result.empty, result.e2e = True, True, time.perf_counter() - start
        return result
    result.ok, result.e2e = True, last - start
    if not result.has_usage:
        result.output_tokens = num_chunks
    return result


def poisson_offsets(count: int, rate: float, rng: random.Random) -> list[float]:
    """Send times in seconds from the start: all 0 for an infinite rate, else exponential gaps (Poisson)."""
    if math.isinf(rate):
        return [0.0] * count
    offsets, t = [], 0.0
    for _ in range(count):
        offsets.append(t)
        t += rng.expovariate(rate)
    return offsets


async def run_level(client: httpx.AsyncClient, args: LoadSpec, prompts: list[str],
                    concurrency: int) -> tuple[list[RequestResult], float, float]:
    """Returns the results, the duration and the client's CPU seconds for one concurrency level."""
    semaphore = asyncio.Semaphore(concurrency)
    offsets = poisson_offsets(len(prompts), args.request_rate, random.Random(args.seed))

    async def limited(prompt: str, offset: float) -> RequestResult:
        if offset:
            await asyncio.sleep(offset)
        async with semaphore:
            return await send(client, args, prompt)

    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    results = await asyncio.gather(*(limited(p, o) for p, o in zip(prompts, offsets)))
    duration = time.perf_counter() - start
    return list(results), duration, _cpu_seconds() - cpu_before


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks, as numpy.percentile does by default."""
    k = (len(sorted_values) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize_ms(values: list[float]) -> dict[str, float] | None:
    """Mean, median, p90 and p99 of seconds, in milliseconds; None when there are no samples."""
    if not values:
        return None
    s = sorted(values)
    return {"mean": 1000 * statistics.fmean(s), "median": 1000 * percentile(s, 50),
            "p90": 1000 * percentile(s, 90), "p99": 1000 * percentile(s, 99)}


def level_metrics(results: list[RequestResult], duration: float, cpu_s: float, concurrency: int) -> dict:
    done = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    output_tokens = sum(r.output_tokens for r in done)
    input_tokens = sum(r.prompt_tokens for r in done)
    num_usage = sum(r.has_usage for r in done)
    return {
        "concurrency": concurrency, "num_requests": len(results), "completed": len(done), "failed": len(failed),
        "errors": list(dict.fromkeys(r.error for r in failed))[:3],
        "duration_s": duration, "request_throughput": len(done) / duration,
        "output_throughput": output_tokens / duration,
        "total_token_throughput": (input_tokens + output_tokens) / duration,
        "total_input_tokens": input_tokens, "total_output_tokens": output_tokens,
        "token_counts": "usage" if num_usage == len(done) else "chunks" if num_usage == 0 else "mixed",
        "empty": sum(r.empty for r in done),
        "ttft_ms": summarize_ms([r.ttft for r in done if not r.empty]),
        "tpot_ms": summarize_ms([(r.e2e - r.ttft) / (r.output_tokens - 1) for r in done if r.output_tokens > 1]),
        "itl_ms": summarize_ms([gap for r in done for gap in r.itl]),
        "e2e_ms": summarize_ms([r.e2e for r in done if not r.empty]),
        "client_cpu_s": cpu_s, "client_cpu_fraction": cpu_s / duration,
    }

