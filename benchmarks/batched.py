"""Batched decode, the way llama.cpp's `llama-batched-bench` measures it, with llama.cpp in the same run.

    python benchmarks/batched.py [--npl 1,16,32,64,128] [--npp 128] [--ntg 128] [--backends auto,torch]
                                 [--weights fp32,gguf] [--no-llamacpp]

For each parallel level B: B sequences of npp random prompt tokens are prefilled (one engine step: the token
budget is B * npp), then decode ntg tokens each (ignore EOS). S_PP = B * npp / prefill seconds; S_TG = B * (ntg
- 1) / decode seconds (the first token comes out of the prefill step); S = all tokens / all seconds, as in
llama-batched-bench. temper runs fp32 weights, or with `--weights gguf` the GGUF file's own 4-bit blocks (the
very codes llama.cpp reads), int8 or int4; llama.cpp runs the packaged Q4_1 GGUF (the only file we have; build its
tools with benchmarks/anchors/build_llamacpp.sh).
Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent.parent))
from temper.engine.config import EngineConfig  # noqa: E402
from temper.engine.llm_engine import LLMEngine  # noqa: E402
from temper.engine.sampling_params import SamplingParams  # noqa: E402
from temper.models.loader import load  # noqa: E402
from temper.models.registry import resolve  # noqa: E402

LLAMACPP = Path(os.environ.get("LLAMACPP_DIR", Path.home() / ".cache/temper/llama.cpp")) / "bin"


def temper_level(loaded, B: int, npp: int, ntg: int, seed: int, backend: str = "auto", weights: str = "fp32",
                 cpu_decode_max_batch: int = EngineConfig.cpu_decode_max_batch) -> dict:
    vocab = loaded.config.vocab_size
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(100, vocab - 100, (B, npp), generator=g).tolist()
    config = EngineConfig(max_num_seqs=B, max_num_batched_tokens=max(B * npp, 512), enable_prefix_caching=False,
                          max_model_len=npp + ntg + 16,
                          kv_cache_memory=B * (npp + ntg + 16) * 46080 + (64 << 20), attention_backend=backend,
                          cpu_decode_max_batch=cpu_decode_max_batch)
    engine = LLMEngine(loaded.model, loaded.tokenizer, config)
    engine.add_request([1, 2, 3], SamplingParams(max_tokens=2))
    while engine.has_unfinished_requests():  # warm-up: first-use costs stay out of the timing
        engine.step()
    params = SamplingParams(temperature=0.0, max_tokens=ntg, ignore_eos=True)
    for p in prompts:
        engine.add_request(p, params)
    t0 = time.perf_counter()
    engine.step()  # every prompt in one step
    t1 = time.perf_counter()
    assert all(not s.is_prefill for s in engine.scheduler.running), "prefill did not fit one step"
    while engine.has_unfinished_requests():
        engine.step()
    t2 = time.perf_counter()
    pp, tg = t1 - t0, t2 - t1
    return {"engine": f"temper {weights} {engine.runner.backend}", "B": B, "t_pp": pp, "s_pp": B * npp / pp, "t_tg": tg,
            "s_tg": B * (ntg - 1) / tg, "s": B * (npp + ntg) / (pp + tg)}


def llamacpp_levels(gguf: Path, levels: list[int], npp: int, ntg: int, threads: int) -> list[dict]:
    exe = LLAMACPP / "llama-batched-bench"
    if not exe.exists():
        print(f"no {exe}: run benchmarks/anchors/build_llamacpp.sh for the llama.cpp rows", file=sys.stderr)
        return []
    ctx = max(levels) * (npp + ntg) + 256
    out = subprocess.run([str(exe), "-m", str(gguf), "-c", str(ctx), "-b", "2048", "-ub", "512", "-npp", str(npp),
                          "-ntg", str(ntg), "-npl", ",".join(map(str, levels)), "-t", str(threads)],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and re.fullmatch(r"\d+", cells[0]):
            _, _, b, _, t_pp, s_pp, t_tg, s_tg, _, s = cells
            rows.append({"engine": "llama.cpp Q4_1", "B": int(b), "t_pp": float(t_pp), "s_pp": float(s_pp),
                         "t_tg": float(t_tg), "s_tg": float(s_tg), "s": float(s)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--npl", default="1,16,32,64,128", help="parallel sequences, comma-separated")
    ap.add_argument("--npp", type=int, default=128, help="prompt tokens per sequence")
    ap.add_argument("--ntg", type=int, default=128, help="generated tokens per sequence")
    ap.add_argument("--backends", default="auto",
                    help="temper attention backends to run, comma-separated (auto, cpu, torch)")
    ap.add_argument("--weights", default="fp32",
                    help="temper weight formats, comma-separated: fp32, gguf (the file's 4-bit blocks), int8, int4")
    ap.add_argument("--cpu-decode-max-batch", type=int, default=EngineConfig.cpu_decode_max_batch,
                    help="decode steps of up to this many sequences run as one C call (0: never)")
    ap.add_argument("--no-llamacpp", action="store_true")
    args = ap.parse_args()
    levels = [int(x) for x in args.npl.split(",")]
    path = resolve(args.model)
    threads = torch.get_num_threads()
    rows = []
    print(f"{args.model}, npp {args.npp}, ntg {args.ntg}, {threads} threads, torch {torch.__version__}, commit "
          + subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip())
    print(f"{'engine':22} {'B':>4} {'PP s':>8} {'S_PP t/s':>9} {'TG s':>8} {'S_TG t/s':>9} {'S t/s':>8}")
    show = lambda r: print(f"{r['engine']:22} {r['B']:4d} {r['t_pp']:8.2f} {r['s_pp']:9.1f} {r['t_tg']:8.2f} "  # noqa: E731
                           f"{r['s_tg']:9.1f} {r['s']:8.1f}", flush=True)
    for weights in args.weights.split(","):
        loaded = load(path, quantization=None if weights == "fp32" else weights)
        for backend in args.backends.split(","):
            for B in levels:
                rows.append(temper_level(loaded, B, args.npp, args.ntg, seed=B, backend=backend, weights=weights,
                                         cpu_decode_max_batch=args.cpu_decode_max_batch))
                show(rows[-1])
    if not args.no_llamacpp and path.suffix == ".gguf":
        for r in llamacpp_levels(path, levels, args.npp, args.ntg, threads):
            rows.append(r)
            show(r)
    print(json.dumps({"benchmark": "batched", "model": args.model, "npp": args.npp, "ntg": args.ntg,
                      "threads": threads, "rows": rows}))


if __name__ == "__main__":
    main()
