"""Online serving: an async streaming load generator for any OpenAI-compatible server (temper, llama.cpp, vLLM).

    temper serve --kv-cache-memory 2 --no-embeddings      # or: llama-server -m model.gguf -np 32 -c 16384 -t 2
    python benchmarks/serve.py --label temper --dataset random --input-len 128 --concurrency 32 --num-prompts 64 \
        --ignore-eos --offline smollm2-135m-instruct --offline-kv-gib 2   # --offline: the HTTP layer's overhead
    python benchmarks/serve.py --label llama.cpp --base-url http://127.0.0.1:8080 --dataset random --ignore-eos
    python benchmarks/serve.py --dataset sharegpt --max-tokens 64 --ignore-eos --concurrency 256 --num-prompts 256

llama.cpp's tools build with benchmarks/anchors/build_llamacpp.sh (binaries in ~/.cache/temper/llama.cpp/bin).

For llama-server give every slot room for prompt + output: its context is split over `-np` slots.
Each concurrency level submits --num-prompts requests at once (or at Poisson --request-rate arrivals), at most
C in flight, and gets its own prompts so that a prefix cache cannot reuse an earlier level's. Definitions follow
vLLM's `vllm bench serve` (formerly benchmarks/benchmark_serving.py), all on the client's clock:
- TTFT: request sent -> first chunk with non-empty content. The chat role chunk does not count (vLLM's older
  benchmark_serving.py agrees; its current code starts the clock at any chunk with choices, empty ones too).
- E2E latency: request sent -> last content chunk.
- TPOT: (E2E - TTFT) / (output_tokens - 1) per request, over requests with more than one output token.
- ITL: every gap between successive content chunks, pooled over requests (a chunk may carry several tokens).
- A stream that ends cleanly with no content (the model's first token ends its turn) counts as done and is
  reported as `empty`, left out of TTFT and E2E (vLLM's client counts it as failed).
- Output tokens: `usage.completion_tokens` (asked for with stream_options.include_usage), else the number of
  content chunks; input tokens: `usage.prompt_tokens`, else the prompt's word count.
- Duration: first request submitted -> last request done; req/s = completed / duration, out tok/s = output
  tokens / duration, total tok/s = (input + output tokens) / duration.
- Client CPU: user + system time of this process during the level (getrusage), as seconds and as a fraction
  of one core, so that a saturated client can be told apart from a slow server.
Percentiles interpolate linearly between samples (numpy's default). Prints one table row per level as it
finishes, then one JSON line.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from prompts import sharegpt_prompts

from temper.eval.load import ENDPOINTS, level_metrics, random_prompts, run_level, send

CHARS_PER_TOKEN = 4  # rough English average, only used to filter ShareGPT prompts by length without a tokenizer


class _RawText:
    """Stands in for a tokenizer in `sharegpt_prompts`: returns the user turn itself, so lengths are characters."""

    def apply_chat_template(self, messages: list[dict], tokenize: bool = True) -> str:
        return messages[0]["content"]


def load_prompts(args: argparse.Namespace, count: int) -> list[str]:
    if args.dataset == "random":
        return random_prompts(count, args.input_len, args.seed)
    # NOTE: the server applies its own chat template (chat endpoint) or none (completions), as in vLLM's ShareGPT.
    return sharegpt_prompts(count, _RawText(), min_tokens=4 * CHARS_PER_TOKEN, max_tokens=1024 * CHARS_PER_TOKEN)


HEADER = (f"{'conc':>5} {'done':>5} {'fail':>4} {'dur s':>7} {'req/s':>7} {'out tok/s':>9} "
          f"{'TTFT ms mean/p50/p99':>22} {'TPOT ms mean/p50/p99':>22} {'ITL ms p50/p99':>15} "
          f"{'E2E ms p50/p99':>15} {'cli CPU':>7}")


def format_row(m: dict) -> str:
    def cell(stats: dict | None, keys: tuple[str, ...], width: int) -> str:
        text = "/".join(f"{stats[k]:.1f}" for k in keys) if stats else "-"
        return f"{text:>{width}}"

    return (f"{m['concurrency']:5d} {m['completed']:5d} {m['failed']:4d} {m['duration_s']:7.2f} "
            f"{m['request_throughput']:7.2f} {m['output_throughput']:9.1f} "
            f"{cell(m['ttft_ms'], ('mean', 'median', 'p99'), 22)} {cell(m['tpot_ms'], ('mean', 'median', 'p99'), 22)} "
            f"{cell(m['itl_ms'], ('median', 'p99'), 15)} {cell(m['e2e_ms'], ('median', 'p99'), 15)} "
            f"{m['client_cpu_fraction']:7.0%}")


async def first_model(client: httpx.AsyncClient) -> str:
    try:
        response = await client.get("/v1/models")
        response.raise_for_status()
        return response.json()["data"][0]["id"]
    except (httpx.HTTPError, json.JSONDecodeError, KeyError, IndexError) as e:
        raise SystemExit(f"cannot read the model from {client.base_url.join('/v1/models')} ({type(e).__name__}: {e}); "
                         "is the server up? Or pass --model") from e


async def benchmark(args: argparse.Namespace) -> list[dict]:
    needed = args.warmup + args.num_prompts * len(args.concurrency)
    pool = load_prompts(args, needed)
    if len(pool) < needed:
        print(f"only {len(pool)} prompts for {needed} requests: later levels repeat prompts, so a prefix cache "
              "can hit", file=sys.stderr)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=max(args.concurrency), max_keepalive_connections=max(args.concurrency))
    async with httpx.AsyncClient(base_url=args.base_url, headers=headers, limits=limits,
                                 timeout=httpx.Timeout(args.timeout)) as client:
        args.model = args.model or await first_model(client)
        for i in range(args.warmup):
            warm = await send(client, args, pool[i % len(pool)])
            if not warm.ok:
                raise SystemExit(f"warm-up request failed: {warm.error}")
        eos = " (ignore EOS)" if args.ignore_eos else ""
        print(f"{args.label}: {args.base_url}{ENDPOINTS[args.endpoint][0]} model {args.model!r}; {args.dataset} "
              f"prompts, {args.max_tokens} max tokens{eos}, request rate {args.request_rate:g}/s; "
              f"client on {platform.node()}, commit {_commit()}")
        offline = Offline(args.offline, args) if args.offline else None
        print(HEADER, flush=True)
        rows = []
        for level, concurrency in enumerate(args.concurrency):
            first = args.warmup + level * args.num_prompts
            prompts = [pool[(first + j) % len(pool)] for j in range(args.num_prompts)]
            results, duration, cpu_s = await run_level(client, args, prompts, concurrency)
            rows.append(level_metrics(results, duration, cpu_s, concurrency))
            print(format_row(rows[-1]), flush=True)
            if rows[-1]["empty"]:
                print(f"{'':>5} {rows[-1]['empty']} of them ended at once with no content (counted as done, left out "
                      "of TTFT and E2E)", flush=True)
            if offline is not None:
                row = rows[-1]
                row.update(offline.run(prompts, concurrency))
                row["http_overhead"] = round(1 - row["output_throughput"] / row["offline_out_tok_s"], 4)
                print(f"{'':>5} offline engine, same prompts: {row['offline_out_tok_s']:.1f} out tok/s in "
                      f"{row['offline_duration_s']:.1f} s; HTTP overhead {row['http_overhead']:+.1%}", flush=True)
            for error in rows[-1]["errors"]:
                print(f"  error: {error}", file=sys.stderr)
    return rows


class Offline:
    """The same prompts through temper's engine in this process (no HTTP), at the same concurrency: the
    denominator of the HTTP layer's overhead. Load it only while the server is idle (2 cores here)."""

    def __init__(self, model: str, args: argparse.Namespace):
        sys.path.insert(0, str(Path(__file__).parent.parent))
        from temper.models.loader import load
        from temper.models.registry import resolve

        self.loaded = load(resolve(model))
        self.args = args

    def run(self, prompts: list[str], concurrency: int) -> dict:
        from temper.engine.config import EngineConfig
        from temper.engine.llm_engine import LLMEngine
        from temper.engine.sampling_params import SamplingParams

        tok, args = self.loaded.tokenizer, self.args
        engine = LLMEngine(self.loaded.model, tok, EngineConfig(max_num_seqs=concurrency,
                                                                kv_cache_memory=int(args.offline_kv_gib * 2**30)))
        engine.add_request(tok.encode("warm up"), SamplingParams(max_tokens=2))
        while engine.has_unfinished_requests():  # first steps pay one-off costs (allocation, kernels)
            engine.step()
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, ignore_eos=args.ignore_eos)
        for prompt in prompts:
            ids = tok.encode(prompt) if args.endpoint == "completions" else \
                tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True)
            engine.add_request(ids, params)
        start, tokens = time.perf_counter(), 0
        while engine.has_unfinished_requests():
            tokens += sum(o.num_generated_tokens for o in engine.step() if o.finished)
        duration = time.perf_counter() - start
        return {"offline_duration_s": round(duration, 2), "offline_out_tok_s": round(tokens / duration, 2)}


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()


def _levels(text: str) -> list[int]:
    levels = [int(x) for x in text.split(",") if x.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"--concurrency wants positive integers like 1,8,32, got {text!r}")
    return levels


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument("--endpoint", choices=sorted(ENDPOINTS), default="completions")
    ap.add_argument("--model", default=None, help="default: the first model of GET /v1/models")
    ap.add_argument("--api-key", default=None, help="sent as Authorization: Bearer KEY")
    ap.add_argument("--label", default="server", help="names the server in the output (temper, llama.cpp, ...)")
    ap.add_argument("--dataset", choices=["sharegpt", "random"], default="sharegpt")
    ap.add_argument("--input-len", type=int, default=128, help="words per prompt for --dataset random")
    ap.add_argument("--num-prompts", type=int, default=64, help="requests per concurrency level")
    ap.add_argument("--concurrency", type=_levels, default=[1, 8, 32], help="comma-separated levels, run in turn")
    ap.add_argument("--request-rate", type=float, default=math.inf, help="Poisson arrivals per second")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ignore-eos", action="store_true", help="send ignore_eos so that every request makes "
                    "exactly --max-tokens tokens (vLLM, llama.cpp and temper accept it)")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--warmup", type=int, default=1, help="requests sent before measuring")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also append the JSON line to this file")
    ap.add_argument("--offline", default=None, metavar="MODEL",
                    help="after each level, run its prompts through temper's engine in-process (same "
                         "concurrency) and report the HTTP layer's overhead")
    ap.add_argument("--offline-kv-gib", type=float, default=1.0, help="KV cache of the --offline engine")
    args = ap.parse_args()
    for name in ("input_len", "num_prompts", "max_tokens"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.request_rate <= 0 or args.timeout <= 0 or args.warmup < 0:
        ap.error("--request-rate and --timeout must be positive, --warmup at least 0")
    return args


def main() -> None:
    args = parse_args()
    rows = asyncio.run(benchmark(args))
    line = json.dumps({"benchmark": "serve", "label": args.label, "base_url": args.base_url,
                       "endpoint": args.endpoint, "model": args.model, "dataset": args.dataset,
                       "input_len": args.input_len if args.dataset == "random" else None,
                       "max_tokens": args.max_tokens, "ignore_eos": args.ignore_eos,
                       "temperature": args.temperature, "seed": args.seed,
                       "request_rate": None if math.isinf(args.request_rate) else args.request_rate,
                       "client_host": platform.node(), "commit": _commit(), "results": rows})
    print(line)
    if args.out:
        with args.out.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
