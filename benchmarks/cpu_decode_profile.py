"""Where a batch-1 decode step goes: the C decode step (temper/engine/attention/cpu_decode.c) built with timers
around its phases, one request through the engine, then the phases and the whole step per token.

    python benchmarks/cpu_decode_profile.py [--quantization gguf] [--gen 128]

The timed copy of the C file is built into a temporary folder (the engine's cached library is not touched) and
loaded in its place for this process only. Prints one line of phases (ms per step, summed over layers), one
line of step times, then one JSON line.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from temper.engine import cpu_decode
from temper.engine.attention import cpu_paged

PHASES = ["norm+qkv", "q/k norm+rope+store", "attention", "o", "norms+gate/up+act", "down(+norm)", "final norm+head"]
TIMERS = {  # anchor line in decode_forward -> code inserted before it
    "        rmsnorm(h, L->attn_norm, m->norm_offset, m->eps, B, d, x);\n": "        double t0 = now();\n",
    "        const float *cos = L->local_rope": "        double t1 = now(); T[0] += t1 - t0;\n",
    "        status = paged_decode_f32(": "        double t2 = now(); T[1] += t2 - t1;\n",
    "        if (status != 0 || (status = linear(&L->o,": "        double t3 = now(); T[2] += t3 - t2;\n",
    "        if (L->post_attn_norm != NULL)":
        "        double t4 = now(); T[3] += t4 - t3;\n",
    "        if ((status = linear(&L->down,": "        double t5 = now(); T[4] += t5 - t4;\n",
    "    }\n    if (status == 0) {\n        rmsnorm(h, m->final_norm":
        "        T[5] += now() - t5;\n",
    "    free(x), free(qkv)": "    T[6] += now() - t6; CALLS++;\n",
}


def timed_source() -> str:
    src = (ROOT / "temper/engine/attention/cpu_decode.c").read_text()
    for anchor, code in TIMERS.items():
        if src.count(anchor) != 1:
            raise SystemExit(f"cpu_decode.c changed: update TIMERS in {__file__} (anchor {anchor!r})")
        src = src.replace(anchor, code + anchor)
    src = src.replace("        rmsnorm(h, m->final_norm", "        t6 = now();\n        rmsnorm(h, m->final_norm")
    src = src.replace("    if (status == 0) {\n        t6", "    double t6 = now();\n    if (status == 0) {\n        t6")
    header = ("#include <time.h>\ndouble T[8]; long CALLS;\nstatic double now(void) { struct timespec s; "
              "clock_gettime(CLOCK_MONOTONIC, &s); return s.tv_sec + 1e-9 * s.tv_nsec; }\n")
    return re.sub(r"(#include <string.h>\n)", r"\1" + header.replace("\\", "\\\\"), src, count=1)


def build(folder: Path) -> ctypes.CDLL:
    timed = folder / "cpu_decode_timed.c"
    timed.write_text(timed_source())
    lib = folder / "timed.so"
    subprocess.run([cpu_paged._compiler(), *cpu_paged.CFLAGS, str(cpu_paged.SOURCES[0]), str(timed), "-o", str(lib),
                    "-lm"], check=True)
    return ctypes.CDLL(str(lib))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--quantization", default=None, help="e.g. gguf (the file's own 4-bit blocks), int8, int4")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen", type=int, default=128)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        lib = build(Path(folder))
        cpu_decode.load_library = lambda: lib  # this process only

        from temper.engine.config import EngineConfig
        from temper.engine.llm_engine import LLMEngine
        from temper.engine.sampling_params import SamplingParams
        from temper.models.loader import load
        from temper.models.registry import resolve

        loaded = load(resolve(args.model), quantization=args.quantization)
        engine = LLMEngine(loaded.model, loaded.tokenizer, EngineConfig(
            kv_cache_memory=256 << 20, max_model_len=args.prompt_len + args.gen + 8, enable_prefix_caching=False))
        if engine.runner.cpu_decoder is None:
            raise SystemExit("this model does not run on the C decode step (see the engine's log)")
        engine.add_request(list(range(100, 100 + args.prompt_len)),
                           SamplingParams(max_tokens=args.gen + 1, temperature=0.0, ignore_eos=True))
        engine.step()  # the prefill
        times = (ctypes.c_double * 8).in_dll(lib, "T")
        for i in range(8):
            times[i] = 0.0
        ctypes.c_long.in_dll(lib, "CALLS").value = 0
        t0 = time.perf_counter()
        steps = 0
        while engine.has_unfinished_requests():
            engine.step()
            steps += 1
        step_ms = 1000 * (time.perf_counter() - t0) / steps
        calls = ctypes.c_long.in_dll(lib, "CALLS").value
        phases = {name: 1000 * times[i] / calls for i, name in enumerate(PHASES)}
    print(", ".join(f"{k} {v:.3f}" for k, v in phases.items()) + "  (ms per step)")
    print(f"C call {sum(phases.values()):.2f} ms, engine step {step_ms:.2f} ms ({1000 / step_ms:.1f} tok/s), "
          f"{steps} steps, weights {args.quantization or 'fp32'}")
    print(json.dumps({"benchmark": "cpu_decode_profile", "model": args.model, "weights": args.quantization or "fp32",
                      "phases_ms": phases, "step_ms": step_ms, "steps": steps}))


if __name__ == "__main__":
    main()
