"""Prefix caching: TTFT of requests that share a ~1,000-token system prompt, cache cold vs warm.

    python benchmarks/prefix_cache.py [--questions 5]

Each question runs alone; "cold" clears the prefix cache first, "warm" follows a request with the same
system prompt. Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess

from temper.engine.config import EngineConfig
from temper.engine.llm_engine import LLMEngine
from temper.engine.sampling_params import SamplingParams
from temper.models.loader import load
from temper.models.registry import resolve

SYSTEM = ("You are the support assistant of a hardware store. Policies: returns within 30 days with a receipt; "
          "store credit without one; power tools carry a two-year warranty; paint is not returnable once tinted; "
          "delivery is free over 50 euros within the city. ")
QUESTIONS = ["Can I return a drill without a receipt?", "Is delivery free for a 30 euro order?",
             "How long is the warranty on a saw?", "Can I return tinted paint?", "Do you sell garden hoses?",
             "What are your opening hours?", "Can I get store credit?"]


def ttft(engine: LLMEngine, ids: list[int]) -> tuple[float, int]:
    engine.add_request(ids, SamplingParams(temperature=0.0, max_tokens=1))
    out = None
    while engine.has_unfinished_requests():
        out = next((o for o in engine.step() if o.finished), out)
    return out.metrics.ttft, out.num_cached_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--questions", type=int, default=5)
    args = ap.parse_args()
    loaded = load(resolve(args.model))
    tok = loaded.tokenizer
    system = SYSTEM * (1000 // len(tok.encode(SYSTEM)) + 1)
    engine = LLMEngine(loaded.model, tok, EngineConfig(kv_cache_memory=1 << 30, max_model_len=2048))
    prompts = [tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": q}],
                                       tokenize=True) for q in QUESTIONS[: args.questions]]
    ttft(engine, prompts[0])  # warm-up
    cold, warm, cached = [], [], []
    for ids in prompts:
        engine.block_manager.reset_prefix_cache()
        cold.append(ttft(engine, ids)[0])
        engine.block_manager.reset_prefix_cache()
        ttft(engine, prompts[(prompts.index(ids) + 1) % len(prompts)])  # another question fills the cache
        t, n = ttft(engine, ids)
        warm.append(t)
        cached.append(n)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    row = {"prompt_tokens": statistics.mean(map(len, prompts)), "cached_tokens": statistics.mean(cached),
           "ttft_cold_ms": 1000 * statistics.median(cold), "ttft_warm_ms": 1000 * statistics.median(warm)}
    row["warm_over_cold"] = row["ttft_warm_ms"] / row["ttft_cold_ms"]
    print(f"{args.model}, fp32, commit {commit}; median over {len(prompts)} questions")
    print(f"{'prompt tokens':>13} {'cached':>7} {'TTFT cold ms':>13} {'TTFT warm ms':>13} {'warm/cold':>9}")
    print(f"{row['prompt_tokens']:13.0f} {row['cached_tokens']:7.0f} {row['ttft_cold_ms']:13.0f} "
          f"{row['ttft_warm_ms']:13.0f} {row['warm_over_cold']:9.3f}")
    print(json.dumps({"benchmark": "prefix_cache", "model": args.model, "commit": commit, **row}))


if __name__ == "__main__":
    main()
