"""What the guard adds to a request: its checks in-process, and end to end against two servers (guard off / on).

    python benchmarks/guard_latency.py                                   # in-process only
    python benchmarks/guard_latency.py --off http://127.0.0.1:8101/v1 --on http://127.0.0.1:8102/v1

In-process: milliseconds of `Guard.check_input` (harm with decoded views, attack, PII) on the benign-edgy and
benign test prompts, of `check_output` on whole replies, and of one streaming check (`stream_check_chars`).
End to end: sequential chat requests with max_tokens=1 (time to a one-token reply, so generation does not drown
the difference) to each server, alternating, medians and p95 over the same prompts; the difference is the guard's
cost per request as a client sees it. Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time

import httpx

from temper.safety import data
from temper.safety.guard import Guard


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(int(q * (len(xs) - 1) + 0.5), len(xs) - 1)]


def timed(fn, items) -> list[float]:
    out = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - start) * 1000)
    return out


def in_process(guard: Guard, prompts: list[str], replies: list[str]) -> dict[str, list[float]]:
    guard.check_input([{"role": "user", "content": "warm up"}])
    clear = guard.models.encoder.clear_cache  # every message is new to the guard, as in production
    return {
        "check_input": timed(lambda p: (clear(), guard.check_input([{"role": "user", "content": p}])), prompts),
        "check_output": timed(lambda r: (clear(), guard.check_output(r)), replies),
        "stream check (48 chars)": timed(lambda r: (clear(), guard.monitor().feed(r[:48])), replies),
    }


def end_to_end(urls: dict[str, str], prompts: list[str], model: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in urls}
    with httpx.Client(timeout=120) as client:
        for p in prompts:
            for name, url in urls.items():
                body = {"model": model, "max_tokens": 1, "temperature": 0,
                        "messages": [{"role": "user", "content": p}]}
                start = time.perf_counter()
                client.post(f"{url}/chat/completions", json=body).raise_for_status()
                out[name].append((time.perf_counter() - start) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="default")
    ap.add_argument("--off", default=None, help="base URL of a server without the guard")
    ap.add_argument("--on", default=None, help="base URL of the same server with the guard")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("-n", type=int, default=80, help="prompts (benign-edgy test first, then benign test)")
    args = ap.parse_args()
    prompts = [p.text for p in data.benign_edgy_prompts("test")]
    prompts += [p.text for p in data.benign_prompts("test", sharegpt=300)][: max(args.n - len(prompts), 0)]
    prompts = prompts[:args.n]
    replies = [p.text for p in data.benign_answers(sharegpt=300) if data.split_of(p.text) == "test"][:args.n]
    rows = in_process(Guard.from_policy(args.policy), prompts, replies)
    if args.off and args.on:
        e2e = end_to_end({"guard off": args.off, "guard on": args.on}, prompts, args.model)
        rows.update({f"1-token request, {k}": v for k, v in e2e.items()})
    print(f"{'what':<34}{'p50 ms':>9}{'p95 ms':>9}{'n':>5}")
    result = {}
    for name, xs in rows.items():
        result[name] = {"p50_ms": round(statistics.median(xs), 2), "p95_ms": round(pct(xs, 0.95), 2), "n": len(xs)}
        print(f"{name:<34}{result[name]['p50_ms']:>9.1f}{result[name]['p95_ms']:>9.1f}{len(xs):>5}")
    if args.off and args.on:
        added = statistics.median(rows["1-token request, guard on"]) - statistics.median(rows["1-token request, guard off"])
        print(f"added by the guard per request (median difference): {added:.1f} ms")
        result["added_p50_ms"] = round(added, 2)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    print(json.dumps({"bench": "guard_latency", "machine": platform.processor() or platform.machine(),
                      "commit": commit, **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
