"""Streamed time to first token through `temper serve` with and without the guard.

    python benchmarks/guard_stream_ttft.py [--max-tokens 48] [--repeat 2]

Three servers in turn (no guard; `--guard default` with its first output check held for a whole 48-character
window, as before `stream_first_check_chars`; `--guard default` as shipped), each sent the same benign chat
prompts one at a time after a warm-up pass. TTFT: request sent -> first chunk with content. Prints a table, then
one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PROMPTS = ["Explain how a hash table handles collisions.", "Write a short poem about the sea.",
           "What are three tips for learning Python?", "Describe how photosynthesis works."]


def start(extra: list[str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "temper.cli", "serve", "--port", str(port), "--kv-cache-memory",
                             "1", "--no-embeddings", *extra], stdout=log.open("w"), stderr=subprocess.STDOUT)
    for _ in range(900):  # a first guarded start trains the guard's heads (minutes)
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"the server exited; see {log}")
        time.sleep(1)
    proc.kill()
    raise SystemExit(f"the server did not become ready; see {log}")


def one(port: int, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    first, chunks = None, 0
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", timeout=300, json={
            "model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True}) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("choices") and event["choices"][0]["delta"].get("content"):
                chunks += 1
                first = first if first is not None else time.perf_counter() - t0
    return first if first is not None else float("nan"), time.perf_counter() - t0, chunks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--repeat", type=int, default=2, help="passes over the prompts after the warm-up")
    ap.add_argument("--port", type=int, default=8101)
    args = ap.parse_args()
    from temper.safety.policy import DEFAULT_POLICY

    with tempfile.TemporaryDirectory() as tmp:
        windowed = Path(tmp) / "windowed.yaml"
        windowed.write_text(DEFAULT_POLICY.read_text().replace("stream_first_check_chars: 1 ",
                                                               "stream_first_check_chars: 48 "))
        cases = [("no guard", []), ("guard, first check after 48 chars", ["--guard", str(windowed)]),
                 ("guard default", ["--guard", "default"])]
        rows = []
        print(f"{'server':36} {'TTFT p50 ms':>12} {'E2E p50 ms':>11} {'chunks p50':>11}")
        for label, extra in cases:
            proc = start(extra, args.port, Path(tmp) / "server.log")
            try:
                for p in PROMPTS:
                    one(args.port, p, args.max_tokens)  # warm-up
                runs = [one(args.port, p, args.max_tokens) for _ in range(args.repeat) for p in PROMPTS]
            finally:
                proc.send_signal(2)
                proc.wait(60)
            row = {"server": label, "ttft_p50_ms": statistics.median(r[0] for r in runs) * 1e3,
                   "e2e_p50_ms": statistics.median(r[1] for r in runs) * 1e3,
                   "chunks_p50": statistics.median(r[2] for r in runs), "requests": len(runs)}
            rows.append(row)
            print(f"{label:36} {row['ttft_p50_ms']:12.0f} {row['e2e_p50_ms']:11.0f} {row['chunks_p50']:11.0f}",
                  flush=True)
    print(json.dumps({"benchmark": "guard_stream_ttft", "max_tokens": args.max_tokens, "rows": rows}))


if __name__ == "__main__":
    main()
