"""Batch-1 decode step time of temper's attention backends, interleaved in one process so that the VM's drift
between runs cancels.

    python benchmarks/backend_step.py [--backends cpu,torch] [--rounds 4] [--tokens 64]

Each round runs one 128-token prompt to --tokens greedy tokens on every backend in turn (prefix caching off) and
records the median step time of its decode steps. Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from temper.engine.config import EngineConfig
from temper.engine.llm_engine import LLMEngine
from temper.engine.sampling_params import SamplingParams
from temper.models.loader import load
from temper.models.registry import resolve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--backends", default="cpu,torch")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    loaded = load(resolve(args.model))
    engines = {b: LLMEngine(loaded.model, loaded.tokenizer, EngineConfig(
        kv_cache_memory=64 << 20, max_model_len=1024, enable_prefix_caching=False, attention_backend=b))
        for b in args.backends.split(",")}
    prompt = list(range(1000, 1128))
    medians: dict[str, list[float]] = {b: [] for b in engines}
    for _ in range(args.rounds):
        for backend, engine in engines.items():
            engine.add_request(prompt, SamplingParams(max_tokens=args.tokens, temperature=0.0, ignore_eos=True))
            steps = []
            while engine.has_unfinished_requests():
                t = time.perf_counter()
                engine.step()
                steps.append(time.perf_counter() - t)
            medians[backend].append(statistics.median(steps[1:]) * 1e3)  # the first step is the prefill
    for backend, values in medians.items():
        print(f"{backend:8} decode step ms per round: " + "  ".join(f"{v:.1f}" for v in values))
    print(json.dumps({"benchmark": "backend_step", "model": args.model, "step_ms": medians}))


if __name__ == "__main__":
    main()
