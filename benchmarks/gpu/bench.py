"""GPU benchmark of the engine against HF transformers on the same card, with bigger models and dummy weights.

Both sides run the very same weights: an HF `LlamaForCausalLM` is built from a config with random bf16 weights
on the GPU, and temper's model adopts its tensors. Measured, per model config:
- the card's copy bandwidth (device-to-device, bytes read + written), the ceiling for decode;
- batch-1 decode with a 128-token prompt and 128 output tokens: temper (Triton paged attention, CUDA graphs)
  vs HF `generate`; memory-bandwidth utilization = (weight bytes + KV bytes read per step) / step time /
  measured bandwidth, for the engine's whole step and for the captured forward alone;
- throughput: N requests with prompt lengths drawn like chat prompts (16-400 tokens), 128 output tokens each
  (ignore EOS), submitted at once: temper vs HF `generate` in padded batches, vs HF's continuous batching
  (`generate_batch`) where the installed transformers has it;
- prefix caching: TTFT of a request with a 1,000-token shared prefix, cold vs warm.

    python benchmarks/gpu/bench.py --models llama-1b,llama-8b --out results.jsonl

Prints a table and ends with one JSON line. Random weights make the text meaningless, not the timings.
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from temper.engine.config import EngineConfig
from temper.engine.llm_engine import LLMEngine
from temper.engine.sampling_params import SamplingParams
from temper.models import ModelConfig
from temper.models.loader import _materialize
from temper.tokenizer import Tokenizer

VOCAB = 49152  # SmolLM2's vocabulary size
SHAPES = {  # Llama 3.2 1B / Llama 3 8B shapes (SmolLM2's vocabulary)
    "tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8),
}
RESULTS: list[dict] = []


def record(out: Path | None, **row) -> None:
    RESULTS.append(row)
    print("  " + json.dumps(row), flush=True)
    if out:
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device: str) -> float:
    """Bytes per second of a 2 GiB device-to-device copy (read + written), median of 10."""
    if device != "cuda":
        return float("nan")
    src = torch.randn(2**30 // 2, device=device, dtype=torch.float32)  # 2 GiB
    dst = torch.empty_like(src)
    times = []
    for i in range(13):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end) / 1e3)
    nbytes = 2 * src.numel() * src.element_size()
    del src, dst
    return nbytes / statistics.median(times)


def word_tokenizer(vocab: int) -> Tokenizer:
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    backend = Backend(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return Tokenizer(backend, eos_token="w1", unk_token="w0")


def build(name: str, device: str, dtype: torch.dtype):
    """An HF Llama with random weights and temper's model over the same tensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = SHAPES[name]
    cfg = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=4096, rope_theta=500000.0,
                      tie_word_embeddings=False, head_dim=shape["hidden_size"] // shape["num_attention_heads"],
                      **shape)
    torch.manual_seed(0)
    with torch.device(device):
        hf = LlamaForCausalLM(cfg).to(dtype).eval()
    ours = _materialize(ModelConfig.from_hf(cfg.to_dict()), dict(hf.state_dict()), device, dtype).eval()
    return hf, ours


def weight_bytes(hf) -> int:
    """Bytes a decode step reads: every weight except the embedding table (one row per token)."""
    return sum(p.numel() * p.element_size() for n, p in hf.named_parameters() if "embed_tokens" not in n)


def kv_bytes_per_token(hf) -> int:
    c = hf.config
    return 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 2


KV_SAMPLES: list[float] = []


def run_engine(engine: LLMEngine, prompts: list[list[int]], max_tokens: int) -> tuple[float, list[float]]:
    """Wall seconds to finish all prompts, and the host time after each step (KV utilization sampled every
    32 steps into KV_SAMPLES)."""
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    for p in prompts:
        engine.add_request(p, params)
    KV_SAMPLES.clear()
    t0 = time.perf_counter()
    stamps = []
    while engine.has_unfinished_requests():
        engine.step()
        stamps.append(time.perf_counter())
        if len(stamps) % 32 == 0:
            KV_SAMPLES.append(engine.stats().kv_utilization)
    return stamps[-1] - t0, [s - t0 for s in stamps]


@torch.inference_mode()
def graph_forward_ms(engine: LLMEngine, size: int = 1) -> float:
    """Median time of one captured decode forward plus the logits, timed with CUDA events."""
    runner = engine.runner
    if size not in runner.graphs:
        return float("nan")
    times = []
    for i in range(30):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        runner.graphs[size].replay()
        runner.model.logits(runner._g_out[0, :size])
        end.record()
        torch.cuda.synchronize()
        if i >= 5:
            times.append(start.elapsed_time(end))
    return statistics.median(times)


@torch.inference_mode()
def hf_generate(hf, batch: list[list[int]], max_tokens: int, device: str) -> float:
    """Seconds for HF `generate` on a left-padded batch, greedy, exactly max_tokens new tokens."""
    width = max(map(len, batch))
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for i, p in enumerate(batch):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    sync(device)
    t0 = time.perf_counter()
    hf.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_tokens,
                min_new_tokens=max_tokens, do_sample=False, pad_token_id=0)
    sync(device)
    return time.perf_counter() - t0


def bench_model(name: str, args, device: str, dtype: torch.dtype, bandwidth: float, out: Path | None) -> None:
    t0 = time.perf_counter()
    hf, ours = build(name, device, dtype)
    rng = random.Random(0)
    probe = torch.tensor([[rng.randrange(2, VOCAB) for _ in range(64)]], device=device)
    with torch.inference_mode():
        a, b = hf(probe).logits.float(), ours(probe).float()
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    record(out, model=name, section="setup", build_s=round(time.perf_counter() - t0, 1),
           params_b=round(sum(p.numel() for p in hf.parameters()) / 1e9, 3), top1_agreement_vs_hf=round(agree, 4))

    config = EngineConfig(block_size=16, max_num_seqs=args.requests, max_num_batched_tokens=4096,
                          kv_cache_memory=args.kv_gib << 30, max_model_len=2048)
    t0 = time.perf_counter()
    engine = LLMEngine(ours, word_tokenizer(VOCAB), config)
    record(out, model=name, section="engine", backend=engine.runner.backend,
           graphs=sorted(engine.runner.graphs), engine_start_s=round(time.perf_counter() - t0, 1))

    # ---- batch-1 latency: 128-token prompt, 128 new tokens
    prompt = [rng.randrange(2, VOCAB) for _ in range(128)]
    run_engine(engine, [prompt[:16]], 8)  # warm-up
    wall, stamps = run_engine(engine, [prompt], 128)
    decode_s = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    wbytes = weight_bytes(hf)
    kv_read = kv_bytes_per_token(hf) * (128 + 64)  # mean context during decode
    fwd_ms = graph_forward_ms(engine, 1) if device == "cuda" else float("nan")
    hf_generate(hf, [prompt[:16]], 4, device)  # warm-up
    hf_first = hf_generate(hf, [prompt], 1, device)
    hf_all = hf_generate(hf, [prompt], 128, device)
    hf_decode_s = (hf_all - hf_first) / 127
    record(out, model=name, section="latency", temper_decode_tok_s=round(1 / decode_s, 1),
           temper_ms_per_token=round(decode_s * 1e3, 3), temper_ttft_ms=round(stamps[0] * 1e3, 1),
           graph_forward_ms=round(fwd_ms, 3), hf_decode_tok_s=round(1 / hf_decode_s, 1),
           hf_ms_per_token=round(hf_decode_s * 1e3, 3),
           weight_gb=round(wbytes / 1e9, 3), bandwidth_tb_s=round(bandwidth / 1e12, 3),
           floor_ms_per_token=round((wbytes + kv_read) / bandwidth * 1e3, 3),
           bw_util_engine=round((wbytes + kv_read) / decode_s / bandwidth, 3),
           bw_util_forward=round((wbytes + kv_read) / (fwd_ms / 1e3) / bandwidth, 3),
           speedup_vs_hf=round(hf_decode_s / decode_s, 2))

    # ---- prefix caching: TTFT of a 1,000-token shared prefix, cold then warm
    prefix = [rng.randrange(2, VOCAB) for _ in range(1000)]
    cold, _ = run_engine(engine, [prefix + [5, 6, 7]], 1)
    warm, _ = run_engine(engine, [prefix + [8, 9, 10]], 1)
    record(out, model=name, section="prefix", ttft_cold_ms=round(cold * 1e3, 1), ttft_warm_ms=round(warm * 1e3, 1),
           warm_over_cold=round(warm / cold, 3))

    if name not in args.throughput_models:
        del engine, hf, ours
        return
    # ---- throughput: N requests at once, 128 new tokens each
    prompts = [[rng.randrange(2, VOCAB) for _ in range(rng.randint(16, 400))] for _ in range(args.requests)]
    run_engine(engine, prompts[:8], 4)  # warm-up of mixed steps
    wall, stamps = run_engine(engine, prompts, 128)
    stats = engine.stats()
    kv = statistics.mean(KV_SAMPLES) if KV_SAMPLES else float("nan")
    n_out = 128 * len(prompts)
    row = dict(model=name, section="throughput", requests=len(prompts), temper_tok_s=round(n_out / wall, 1),
               temper_wall_s=round(wall, 2), steps=len(stamps), kv_utilization=round(kv, 3), preemptions=stats.num_preemptions,
               graph_replays=engine.runner.graph_replays)
    for bsz in args.hf_batches:
        t = sum(hf_generate(hf, prompts[i: i + bsz], 128, device) for i in range(0, len(prompts), bsz))
        row[f"hf_padded_b{bsz}_tok_s"] = round(n_out / t, 1)
    record(out, **row)
    del engine, ours
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    if args.hf_continuous and hasattr(hf, "generate_batch"):
        import signal

        from transformers import GenerationConfig

        def give_up(*_):
            raise TimeoutError("HF continuous batching took over 120 s")

        signal.signal(signal.SIGALRM, give_up)
        signal.alarm(120)
        try:
            gen = GenerationConfig(max_new_tokens=128, min_new_tokens=128, do_sample=False, eos_token_id=-1,
                                   pad_token_id=0, num_blocks=4096, max_batch_tokens=4096)
            hf.generate_batch(inputs=prompts[:8], generation_config=gen, progress_bar=False)  # warm-up
            sync(device)
            t0 = time.perf_counter()
            hf.generate_batch(inputs=prompts, generation_config=gen, progress_bar=False)
            sync(device)
            record(out, model=name, section="hf_continuous", hf_cb_tok_s=round(n_out / (time.perf_counter() - t0), 1))
        except Exception as e:  # report, do not hide: the installed transformers may not support it here
            record(out, model=name, section="hf_continuous", error=f"{type(e).__name__}: {e}"[:300])
        finally:
            signal.alarm(0)
    del hf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="llama-1b,llama-8b")
    ap.add_argument("--throughput-models", default="llama-8b")
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--hf-batches", default="64")
    ap.add_argument("--kv-gib", type=int, default=20)
    ap.add_argument("--no-hf-continuous", dest="hf_continuous", action="store_false")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.throughput_models = args.throughput_models.split(",")
    args.hf_batches = [int(b) for b in args.hf_batches.split(",") if b]
    device = args.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    bandwidth = copy_bandwidth(device)
    import transformers
    record(args.out, section="machine", card=card, torch=torch.__version__, transformers=transformers.__version__,
           copy_bandwidth_tb_s=round(bandwidth / 1e12, 3))
    for name in args.models.split(","):
        try:
            bench_model(name, args, device, dtype, bandwidth if device == "cuda" else 1e11, args.out)
        except Exception as e:
            import traceback

            traceback.print_exc()
            record(args.out, model=name, section="error", error=f"{type(e).__name__}: {e}"[:300])
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    print("\n| model | section | numbers |\n|---|---|---|")
    for r in RESULTS:
        rest = {k: v for k, v in r.items() if k not in ("model", "section")}
        print(f"| {r.get('model', '')} | {r['section']} | {json.dumps(rest)} |")
    print(json.dumps({"card": card, "results": RESULTS}))


if __name__ == "__main__":
    main()
