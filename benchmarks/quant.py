"""Quantization: quality, memory and speed of fp32, bf16, int8, int4 round-to-nearest, int4 GPTQ and the GGUF
file's own 4-bit blocks, through temper's engine.

    python benchmarks/quant.py [--models smollm2-135m-instruct gemma3-270m] [--group-size 128] [--ppl-tokens 8192]

For each model and variant (each in its own process, so that peak memory is its own):
- perplexity on a fixed held-out slice of the Python docs (temper.quant.corpus; calibration never sees it);
- greedy agreement with fp32: 16 ShareGPT prompts x 32 greedy tokens; the share of tokens generated before the
  first divergence from fp32's, and how many of the 16 continuations are identical;
- weight bytes (codes, scales and float tensors as held in memory) and the process's peak RSS;
- prefill tokens/s (16 x 128-token prompts in one step) and decode tokens/s at batch 1 and 16 (128 prompt
  tokens, 64 generated, ignore EOS), as benchmarks/batched.py measures them; at batch 1 also the weight bytes
  read per second against the machine's memory read bandwidth (the physical limit of batch-1 decode).
Quantized variants load from checkpoints written once by `temper quantize` (cached under --work-dir), so their
peak memory is that of serving them, without a float copy. NOTE: SmolLM2's published weights were already 4-bit
(Q4_1, groups of 32) before we dequantized them to fp32: its "fp32" is those 4-bit weights, exactly.
Prints a table per model, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from batched import temper_level
from latency import read_bandwidth_gbs
from prompts import sharegpt_prompts

VARIANTS = ("fp32", "bf16", "int8", "int4-rtn", "int4-gptq", "gguf")
NUM_PROMPTS, GREEDY_TOKENS = 16, 32


def checkpoint(model: str, variant: str, args: argparse.Namespace) -> tuple[Path, float]:
    """The quantized checkpoint of a variant, written once by `temper quantize`; (folder, seconds it took)."""
    from temper.models.registry import resolve
    from temper.quant.config import QuantConfig
    from temper.quant.quantize import quantize_checkpoint

    folder = Path(args.work_dir) / f"{model}-{variant}-g{args.group_size}-head{args.head_bits}"
    stamp = folder / "quantize_seconds.txt"
    if not stamp.exists():
        config = QuantConfig(variant, group_size=args.group_size, head_bits=args.head_bits)
        report = quantize_checkpoint(resolve(model), folder, config, force=True)
        stamp.write_text(f"{report.seconds:.1f}")
    return folder, float(stamp.read_text())


def load_variant(model: str, variant: str, args: argparse.Namespace):
    from temper.models.loader import load
    from temper.models.registry import resolve

    if variant in ("fp32", "bf16"):
        return load(resolve(model), dtype=torch.float32 if variant == "fp32" else torch.bfloat16)
    if variant == "gguf":
        return load(resolve(model), quantization="gguf")
    return load(checkpoint(model, variant, args)[0])


def greedy(loaded, prompts: list[list[int]]) -> list[list[int]]:
    from temper.engine.config import EngineConfig
    from temper.engine.llm_engine import LLMEngine
    from temper.engine.sampling_params import SamplingParams

    engine = LLMEngine(loaded.model, loaded.tokenizer, EngineConfig(max_num_seqs=NUM_PROMPTS, max_model_len=512,
                                                                     kv_cache_memory=256 << 20))
    params = SamplingParams(temperature=0.0, max_tokens=GREEDY_TOKENS, ignore_eos=True)
    ids = [engine.add_request(p, params) for p in prompts]
    outputs = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                outputs[out.request_id] = list(out.outputs[0].token_ids)
    return [outputs[i] for i in ids]


def child(model: str, variant: str, args: argparse.Namespace) -> dict:
    """Everything measured on one variant, in this process."""
    from temper.quant.corpus import heldout_ids, perplexity
    from temper.quant.model import weight_bytes

    torch.manual_seed(0)
    start = time.perf_counter()
    loaded = load_variant(model, variant, args)
    load_s = time.perf_counter() - start
    row = {"model": model, "variant": variant, "load_s": load_s, "weight_bytes": weight_bytes(loaded.model)}
    row["perplexity"] = perplexity(loaded.model, heldout_ids(loaded.tokenizer, args.ppl_tokens))
    row["greedy"] = greedy(loaded, sharegpt_prompts(NUM_PROMPTS, loaded.tokenizer, max_tokens=256))
    for B in (1, 16):
        r = temper_level(loaded, B, npp=128, ntg=64, seed=B)
        row[f"decode_b{B}"] = r["s_tg"]
        if B == 16:
            row["prefill"] = r["s_pp"]
    row["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return row


def agreement(tokens: list[list[int]], reference: list[list[int]]) -> tuple[float, int]:
    """(share of tokens before the first divergence from the reference, continuations identical to it)."""
    before, same = 0, 0
    for ours, ref in zip(tokens, reference):
        n = next((i for i, (a, b) in enumerate(zip(ours, ref)) if a != b), len(ref))
        before += n
        same += n == len(ref)
    return before / sum(len(r) for r in reference), same


def run_child(model: str, variant: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", model, variant, "--group-size", str(args.group_size),
           "--head-bits", str(args.head_bits), "--ppl-tokens", str(args.ppl_tokens), "--work-dir", args.work_dir]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{model} {variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma3-270m"])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--head-bits", type=int, default=8)
    ap.add_argument("--ppl-tokens", type=int, default=8192)
    ap.add_argument("--work-dir", default=str(Path.home() / ".cache/temper/bench-quant"))
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args)))
        return
    variants = args.variants.split(",")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    bandwidth = read_bandwidth_gbs()
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, commit {commit}, memory read "
          f"{bandwidth:.1f} GB/s, int4 group {args.group_size}, head {args.head_bits or 'float'}")
    rows = []
    for model in args.models:
        quantize_s = {v: checkpoint(model, v, args)[1] for v in variants if v in ("int8", "int4-rtn", "int4-gptq")}
        print(f"\n{model}  (quantize seconds: {json.dumps({k: round(v, 1) for k, v in quantize_s.items()})})")
        print(f"{'variant':10} {'ppl':>8} {'Δppl':>7} {'agree':>6} {'same':>5} {'weights MB':>10} {'x fp16':>6} "
              f"{'peak MB':>8} {'prefill':>8} {'dec b1':>7} {'GB/s b1':>7} {'dec b16':>8}")
        base = None
        for variant in variants:
            r = run_child(model, variant, args)
            base = base or dict(r)  # the first variant (fp32) is the reference
            r["agreement"], r["identical"] = agreement(r.pop("greedy"), base["greedy"])
            r["ppl_change"] = r["perplexity"] / base["perplexity"] - 1
            r["x_fp16"] = r["weight_bytes"] / (base["weight_bytes"] / 2)
            r["gbs_b1"] = r["weight_bytes"] * r["decode_b1"] / 1e9
            r["quantize_s"] = quantize_s.get(variant)
            rows.append(r)
            print(f"{variant:10} {r['perplexity']:8.3f} {r['ppl_change']:+7.2%} {r['agreement']:6.1%} "
                  f"{r['identical']:3d}/{NUM_PROMPTS} {r['weight_bytes'] / 1e6:10.1f} {r['x_fp16']:6.3f} "
                  f"{r['peak_rss_bytes'] / 1e6:8.0f} {r['prefill']:8.1f} {r['decode_b1']:7.1f} {r['gbs_b1']:7.2f} "
                  f"{r['decode_b16']:8.1f}", flush=True)
    print(json.dumps({"benchmark": "quant", "commit": commit, "threads": torch.get_num_threads(),
                      "bandwidth_gbs": bandwidth, "group_size": args.group_size, "head_bits": args.head_bits,
                      "ppl_tokens": args.ppl_tokens, "rows": rows}))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
