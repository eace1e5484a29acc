"""Offline throughput: N ShareGPT requests submitted at once, 128 output tokens each (ignore EOS).

    python benchmarks/throughput.py --requests 64 256 [--hf-batch 32] [--no-hf] [--hf-continuous]

temper's continuous-batching engine against HF transformers' padded batch `generate` on the same model and
prompts in the same run. Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from prompts import sharegpt_prompts  # noqa: E402

from temper.engine.config import EngineConfig  # noqa: E402
from temper.engine.llm_engine import LLMEngine  # noqa: E402
from temper.engine.sampling_params import SamplingParams  # noqa: E402
from temper.models.loader import converted_folder, load  # noqa: E402
from temper.models.registry import resolve  # noqa: E402


def run_temper(loaded, prompts: list[list[int]], gen: int, config: EngineConfig) -> dict:
    engine = LLMEngine(loaded.model, loaded.tokenizer, config)
    params = SamplingParams(temperature=0.0, max_tokens=gen, ignore_eos=True)
    start = time.perf_counter()
    for p in prompts:
        engine.add_request(p, params)
    outs, utilization = [], []
    while engine.has_unfinished_requests():
        outs += [o for o in engine.step() if o.finished]
        stats = engine.stats()
        if stats.num_running:
            utilization.append(stats.kv_utilization)
    wall = time.perf_counter() - start
    tokens = sum(o.num_generated_tokens for o in outs)
    ttft = sorted(o.metrics.ttft for o in outs)
    tpot = [(o.metrics.finished_time - o.metrics.first_token_time) / (o.num_generated_tokens - 1) for o in outs]
    return {"engine": "temper", "wall_s": wall, "output_tok_s": tokens / wall,
            "ttft_median_s": statistics.median(ttft), "ttft_p99_s": ttft[int(0.99 * (len(ttft) - 1))],
            "tpot_median_ms": 1000 * statistics.median(tpot), "kv_utilization_mean": statistics.mean(utilization),
            "preemptions": engine.stats().num_preemptions}


@torch.inference_mode()
def run_hf_padded(model, prompts: list[list[int]], gen: int, batch: int, pad_id: int) -> dict:
    """transformers' generate on left-padded batches of `batch` prompts (what a naive server does)."""
    start = time.perf_counter()
    for i in range(0, len(prompts), batch):
        chunk = prompts[i: i + batch]
        T = max(map(len, chunk))
        ids = torch.full((len(chunk), T), pad_id)
        mask = torch.zeros(len(chunk), T, dtype=torch.long)
        for j, p in enumerate(chunk):
            ids[j, T - len(p):], mask[j, T - len(p):] = torch.tensor(p), 1
        model.generate(ids, attention_mask=mask, max_new_tokens=gen, min_new_tokens=gen, do_sample=False,
                       pad_token_id=pad_id)
    wall = time.perf_counter() - start
    return {"engine": f"transformers padded batch {batch}", "wall_s": wall, "output_tok_s": len(prompts) * gen / wall}


@torch.inference_mode()
def run_hf_continuous(model, prompts: list[list[int]], gen: int) -> dict:
    """transformers' own continuous batching (`generate_batch`), where the installed version has it."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=gen, min_new_tokens=gen, do_sample=False, eos_token_id=-1,
                              pad_token_id=0)
    start = time.perf_counter()
    outs = model.generate_batch(inputs=prompts, generation_config=config)
    wall = time.perf_counter() - start
    tokens = sum(len(o.generated_tokens) for o in outs.values())
    return {"engine": "transformers generate_batch", "wall_s": wall, "output_tok_s": tokens / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--requests", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--max-num-batched-tokens", type=int, default=512)
    ap.add_argument("--block-size", type=int, default=EngineConfig.block_size, help="tokens per KV block")
    ap.add_argument("--hf-batch", type=int, default=32)
    ap.add_argument("--hf-requests", type=int, default=64, help="run the transformers anchors on this many")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--hf-continuous", action="store_true", help="also try transformers' generate_batch")
    args = ap.parse_args()
    path = resolve(args.model)
    loaded = load(path)
    prompts = sharegpt_prompts(max(args.requests), loaded.tokenizer)
    config = EngineConfig(max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                          block_size=args.block_size, kv_cache_memory=4 << 30, max_model_len=2048)
    rows = []
    for n in args.requests:
        rows.append({"requests": n, **run_temper(loaded, prompts[:n], args.gen, config)})
        print(f"[{rows[-1]}]", file=sys.stderr, flush=True)
    if not args.no_hf:
        import transformers

        hf = transformers.AutoModelForCausalLM.from_pretrained(converted_folder(path), dtype=torch.float32).eval()
        n = args.hf_requests
        rows.append({"requests": n, **run_hf_padded(hf, prompts[:n], args.gen, args.hf_batch, pad_id=0)})
        if args.hf_continuous:
            try:
                rows.append({"requests": n, **run_hf_continuous(hf, prompts[:n], args.gen)})
            except (AttributeError, TypeError, RuntimeError, ValueError) as e:
                print(f"transformers generate_batch unavailable: {e}", file=sys.stderr)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"{args.model}, fp32, {torch.get_num_threads()} threads, torch {torch.__version__}, commit {commit}; "
          f"ShareGPT prompts (mean {statistics.mean(map(len, prompts)):.0f} tokens), {args.gen} output tokens each")
    print(f"{'engine':34} {'requests':>8} {'wall s':>7} {'out tok/s':>10} {'TTFT p50 s':>10} {'TPOT ms':>8} "
          f"{'KV util':>7}")
    for r in rows:
        print(f"{r['engine']:34} {r['requests']:8d} {r['wall_s']:7.1f} {r['output_tok_s']:10.1f} "
              f"{r.get('ttft_median_s', float('nan')):10.2f} {r.get('tpot_median_ms', float('nan')):8.0f} "
              f"{r.get('kv_utilization_mean', float('nan')):7.3f}")
    print(json.dumps({"benchmark": "throughput", "model": args.model, "commit": commit, "gen": args.gen,
                      "rows": rows}))


if __name__ == "__main__":
    main()
