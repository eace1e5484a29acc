"""Single-stream latency: load time, TTFT and decode speed of temper vs HF transformers, against two ceilings
of batch-1 decode: the memory read bandwidth, and the speed of fp32 matrix-vector products on this CPU.

    python benchmarks/latency.py [--models smollm2-135m-instruct gemma3-270m] [--prompt-len 128] [--gen 128]

Prints a table, then one JSON line. Numbers are medians over --runs runs after a warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass

import torch

from temper.engine.config import EngineConfig
from temper.engine.llm_engine import LLMEngine
from temper.engine.sampling_params import SamplingParams
from temper.models.loader import converted_folder, load
from temper.models.registry import resolve


def read_bandwidth_gbs(nbytes: int = 512 << 20, runs: int = 5) -> float:
    """Memory read bandwidth: summing a large fp32 tensor, in GB/s (the physical limit of decode)."""
    x = torch.ones(nbytes // 4)
    best = min(_timed(x.sum) for _ in range(runs))
    return nbytes / best / 1e9


def gemv_bandwidth_gbs(rows: int = 1536, cols: int = 576, count: int = 200, runs: int = 3) -> float:
    """Weight bytes per second that fp32 matrix-vector products reach on this CPU (the fp32 ceiling)."""
    weights = [torch.randn(rows, cols) for _ in range(count)]
    x = torch.randn(1, cols)
    best = min(_timed(lambda: [torch.nn.functional.linear(x, w) for w in weights]) for _ in range(runs))
    return rows * cols * 4 * count / best / 1e9


def first_load_seconds(path) -> float:
    """Seconds of a first `load` (GGUF parse, dequantization, conversion to the cache) in an empty cache dir."""
    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("TEMPER_CACHE_DIR")
        os.environ["TEMPER_CACHE_DIR"] = tmp
        try:
            return load(path).load_seconds
        finally:
            if old is None:
                del os.environ["TEMPER_CACHE_DIR"]
            else:
                os.environ["TEMPER_CACHE_DIR"] = old


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def temper_run(engine: LLMEngine, prompt: list[int], gen: int) -> GenerationStats:
    """One request alone through the engine (prefix caching off, so every run prefills)."""
    engine.add_request(prompt, SamplingParams(max_tokens=gen, temperature=0.0, ignore_eos=True))
    out = None
    while engine.has_unfinished_requests():
        out = next((o for o in engine.step() if o.finished), out)
    m = out.metrics
    return GenerationStats(len(prompt), out.num_generated_tokens, m.ttft, m.finished_time - m.arrival_time)


@dataclass
class GenerationStats:
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    total_s: float

    @property
    def decode_tokens_per_s(self) -> float:
        return (self.completion_tokens - 1) / (self.total_s - self.ttft_s)


@torch.inference_mode()
def hf_run(model, prompt: list[int], gen: int) -> GenerationStats:
    """transformers' own generate loop (greedy, its dynamic KV cache), timed the same way."""
    ids = torch.tensor([prompt])
    t = time.perf_counter()
    model(ids[:, :], use_cache=False)  # prefill alone gives TTFT
    ttft = time.perf_counter() - t
    t = time.perf_counter()
    model.generate(ids, max_new_tokens=gen, min_new_tokens=gen, do_sample=False, pad_token_id=0)
    total = time.perf_counter() - t
    # the generate call prefills again: its decode time is total minus one prefill
    return GenerationStats(prompt_tokens=len(prompt), completion_tokens=gen, ttft_s=ttft, total_s=total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma3-270m"])
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers anchor")
    ap.add_argument("--cold", action="store_true",
                    help="also time the one-time GGUF conversion of a first use, in an empty cache dir")
    args = ap.parse_args()
    torch.manual_seed(0)
    bandwidth, gemv = read_bandwidth_gbs(), gemv_bandwidth_gbs()
    rows = []
    for name in args.models:
        path = resolve(name)
        first_load = first_load_seconds(path) if args.cold else None
        converted_folder(path)  # conversion is a one-time cost; the load below is what users wait for each time
        loads = []
        for _ in range(args.runs):
            loaded = load(path)
            loads.append(loaded.load_seconds)
        cfg = loaded.config
        prompt = torch.randint(100, min(cfg.vocab_size, 30000), (args.prompt_len,)).tolist()
        engine = LLMEngine(loaded.model, loaded.tokenizer, EngineConfig(
            enable_prefix_caching=False, kv_cache_memory=1 << 30, max_model_len=1024))
        temper_run(engine, prompt, 8)  # warm-up
        runs = [temper_run(engine, prompt, args.gen) for _ in range(args.runs)]
        weight_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        kv_bytes = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 4 * (args.prompt_len + args.gen // 2)
        limit = bandwidth * 1e9 / (weight_bytes + kv_bytes)
        row = {"model": name, "engine": "temper engine", "load_s": statistics.median(loads), "first_load_s": first_load,
               "ttft_ms": 1000 * statistics.median(r.ttft_s for r in runs),
               "decode_tok_s": statistics.median(r.decode_tokens_per_s for r in runs),
               "limit_tok_s": limit, "gemv_limit_tok_s": gemv * 1e9 / (weight_bytes + kv_bytes)}
        row["gbs"] = row["decode_tok_s"] * (weight_bytes + kv_bytes) / 1e9
        rows.append(row)
        if not args.no_hf:
            import transformers

            t = time.perf_counter()
            hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                                   dtype=torch.float32).eval()
            hf_load = time.perf_counter() - t
            hf_run(hf, prompt, 8)
            hruns = [hf_run(hf, prompt, args.gen) for _ in range(args.runs)]
            ttft = statistics.median(r.ttft_s for r in hruns)
            total = statistics.median(r.total_s for r in hruns)
            decode = (args.gen - 1) / (total - ttft)
            rows.append({"model": name, "engine": "transformers", "load_s": hf_load, "ttft_ms": 1000 * ttft,
                         "decode_tok_s": decode, "limit_tok_s": limit, "gemv_limit_tok_s": rows[-1]["gemv_limit_tok_s"],
                         "gbs": decode * (weight_bytes + kv_bytes) / 1e9})
            del hf
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, fp32, read bandwidth {bandwidth:.1f} GB/s, fp32 GEMV {gemv:.1f} GB/s, "
          f"commit {commit}")
    print(f"prompt {args.prompt_len} tokens, {args.gen} generated, batch 1, greedy, median of {args.runs}")
    print(f"{'model':24} {'engine':13} {'load s':>7} {'TTFT ms':>8} {'decode tok/s':>13} {'ms/tok':>7} {'GB/s':>6} "
          f"{'GEMV-bound':>11} {'BW-bound':>9}")
    for r in rows:
        print(f"{r['model']:24} {r['engine']:13} {r['load_s']:7.2f} {r['ttft_ms']:8.0f} {r['decode_tok_s']:13.1f} "
              f"{1000 / r['decode_tok_s']:7.1f} {r['gbs']:6.1f} {r['gemv_limit_tok_s']:11.1f} {r['limit_tok_s']:9.1f}")
        if r.get("first_load_s") is not None:
            print(f"{'':24} first use (one-time GGUF conversion): {r['first_load_s']:.1f} s")
    print(json.dumps({"benchmark": "latency", "commit": commit, "read_bandwidth_gbs": bandwidth, "gemv_gbs": gemv,
                      "prompt_len": args.prompt_len, "gen": args.gen, "rows": rows}))


if __name__ == "__main__":
    main()
