"""Routing through the live gateway: two temper servers, `temper gateway` in front, each policy on fresh items.

    python benchmarks/routing.py --n 200          # after routing_offline.py collect + speed (the logged outcomes)

The offline outcomes (benchmarks/data/routing_outcomes_offline.jsonl, routing_offline.py) are the *logged
outcomes*: they train the learned router (temper.gateway.router_model on MiniLM embeddings of
temper.gateway.routing.learned.routing_text, what the gateway embeds) and choose every policy's threshold: the
cheapest one that keeps 95% of the strong back end's offline quality. Then, on `--n` items the offline run never
saw (the next ones in the same seeded order, same few-shot prefix), this script starts the cheap back end
(`temper serve --quantization int4`: round-to-nearest int4) and the strong one (fp32) as real servers, the gateway
with one route per policy, sends every item through every route and scores the replies. Cost is what the gateway
billed (the `x-temper-cost-usd` header) at self-hosted prices: one price per hour for the machine, divided by each
back end's measured decode throughput at batch 16 (the speed rows), prompt tokens free.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from routing_task import load_items, score

from temper.stats import wilson_interval

OUTCOMES = Path(__file__).parent / "data" / "routing_outcomes_offline.jsonl"
TARGET = 0.95
PER_HOUR = 0.10  # USD per hour of the machine both back ends run on (any value: only ratios are reported)


def read_logged(path: Path) -> tuple[dict, dict, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    speed = {r["name"]: r for r in rows if r["type"] == "speed"}
    out = {name: {r["id"]: r for r in rows if r["type"] == "outcome" and r["backend"] == name and r["task"] == "tomi"}
           for name in ("cheap", "strong")}
    return out["cheap"], out["strong"], speed


def price(speed: dict) -> dict:
    """Output tokens at the batch-16 decode rate; prompt tokens free (the gateway's default without an input rate:
    prefill is several times faster than decode, and a few-shot prompt's examples come from the prefix cache)."""
    return {"per_hour": PER_HOUR, "output_tokens_per_second": round(speed["decode_b16"], 2)}


def request_cost(row: dict, p: dict, completion_tokens: int | None = None) -> float:
    c = row["completion_tokens"] if completion_tokens is None else completion_tokens
    return p["per_hour"] / 3600 * c / p["output_tokens_per_second"]


def pick_threshold(signal: np.ndarray, q_cheap: np.ndarray, q_strong: np.ndarray, c_cheap: np.ndarray,
                   c_strong: np.ndarray, cascade: bool) -> tuple[float, float, float]:
    """The threshold with the lowest logged cost whose logged quality is >= TARGET x the strong model's.
    Requests with signal >= threshold stay on the cheap model."""
    goal = TARGET * q_strong.mean()
    best = (math.inf, math.inf, 0.0)
    for t in np.unique(np.concatenate([signal, [np.inf]])):
        keep = signal >= t
        quality = np.where(keep, q_cheap, q_strong).mean()
        cost = (np.where(keep, c_cheap, c_strong + c_cheap) if cascade else np.where(keep, c_cheap, c_strong)).sum()
        if quality >= goal and cost < best[1]:
            best = (float(t), float(cost), float(quality))
    return best


def start(cmd: list[str], url: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(cmd)} exited; see {log}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not get ready; see {log}")


async def run_route(url: str, route: str, items: list[dict], concurrency: int) -> list[dict]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600) as client:
        async def one(item: dict) -> dict:
            body = {**item["request"], "model": route}
            path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
            async with sem:
                r = await client.post(url + path, json=body, headers={"Cache-Control": "no-store"})
            if r.status_code != 200:
                raise SystemExit(f"{route}: HTTP {r.status_code}: {r.text[:300]}")
            choice = r.json()["choices"][0]
            text = choice.get("text") if "text" in choice else choice["message"]["content"]
            return {"id": item["id"], "route": route, "score": score(item, text or ""),
                    "cost": float(r.headers["x-temper-cost-usd"]), "model": r.headers["x-temper-model"],
                    "decision": r.headers.get("x-temper-route", "")}
        return await asyncio.gather(*(one(it) for it in items))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="fresh items sent through every route")
    ap.add_argument("--outcomes", type=Path, default=OUTCOMES)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--samples", type=int, default=5, help="self-consistency samples")
    ap.add_argument("--port", type=int, default=4100, help="gateway port (back ends take the next two)")
    ap.add_argument("--json-out", type=Path, default=None, help="also write per-request rows here")
    args = ap.parse_args()

    cheap_log, strong_log, speed = read_logged(args.outcomes)
    ids = [i for i in cheap_log if i in strong_log]
    if not ids or set(speed) < {"cheap", "strong"}:
        raise SystemExit(f"{args.outcomes}: run routing_offline.py collect and speed first")
    prices = {name: price(speed[name]) for name in ("cheap", "strong")}
    q_c = np.array([cheap_log[i]["score"] for i in ids])
    q_s = np.array([strong_log[i]["score"] for i in ids])
    c_c = np.array([request_cost(cheap_log[i], prices["cheap"]) for i in ids])
    c_s = np.array([request_cost(strong_log[i], prices["strong"]) for i in ids])

    # ---- thresholds and the learned router, from the logged outcomes only
    from temper.embeddings import Embedder
    from temper.gateway.router_model import RouterModel, cross_val_predict
    from temper.gateway.routing.learned import routing_text

    n_logged = len(ids)
    logged_items = {it["id"]: it for it in load_items(n_logged, 0)}
    embedder = Embedder.load()
    x = embedder.embed([routing_text(logged_items[i]["request"]) for i in ids]).numpy()
    labels = (q_c >= q_s).astype(int)  # the cheap answer is good enough: as good as the strong one
    oof = cross_val_predict(x, labels, folds=5, seed=0)
    t_learned = pick_threshold(oof, q_c, q_s, c_c, c_s, cascade=False)
    workdir = Path(tempfile.mkdtemp(prefix="temper-routing-"))
    RouterModel.fit(x, labels).save(workdir / "router.json")
    lp = np.array([cheap_log[i]["mean_logprob"] for i in ids])
    t_lp = pick_threshold(lp, q_c, q_s, c_c, c_s, cascade=True)
    sc_cost = np.array([request_cost(cheap_log[i], prices["cheap"], completion_tokens=sum(
        s["completion_tokens"] for s in cheap_log[i].get("samples", []))) for i in ids])
    agreement = np.array([cheap_log[i].get("agreement", np.nan) for i in ids])
    t_sc = pick_threshold(agreement, q_c, q_s, sc_cost, c_s, cascade=True)
    print(f"thresholds from {n_logged} logged outcomes (cheapest at >= {TARGET:.0%} of strong's {q_s.mean():.3f}): "
          f"mean logprob {t_lp[0]:.3f}, agreement {t_sc[0]:.2f}, learned p {t_learned[0]:.3f}", file=sys.stderr)

    # ---- the live run
    items = load_items(n_logged + args.n, 0)[n_logged:]
    p_gw, p_cheap, p_strong = args.port, args.port + 1, args.port + 2
    temper = [sys.executable, "-m", "temper.cli"]
    common = ["--no-embeddings", "--max-model-len", "2048", "--kv-cache-memory", "0.5"]
    config = {"listen": {"port": p_gw}, "log_requests": False,
              "backends": [{"name": "smol-int4", "url": f"http://127.0.0.1:{p_cheap}/v1", "model": "cheap",
                            "upstream_model": "smollm2-int4", "price": prices["cheap"]},
                           {"name": "smol-fp32", "url": f"http://127.0.0.1:{p_strong}/v1", "model": "strong",
                            "upstream_model": "smollm2", "price": prices["strong"]}],
              "routes": {"cascade-logprob": {"policy": "cascade", "cheap": "cheap", "strong": "strong",
                                             "signal": "mean_logprob", "threshold": t_lp[0]},
                         "cascade-consistency": {"policy": "cascade", "cheap": "cheap", "strong": "strong",
                                                 "signal": "self_consistency", "samples": args.samples,
                                                 "temperature": 0.7, "threshold": t_sc[0]},
                         "learned": {"policy": "learned", "cheap": "cheap", "strong": "strong",
                                     "model_path": str(workdir / "router.json"), "threshold": t_learned[0]}},
              "cache": {"store": f"sqlite:///{workdir}/gw.db", "exact": {"enabled": False}}}
    (workdir / "gateway.yaml").write_text(yaml.safe_dump(config))
    procs = []
    try:
        procs.append(start([*temper, "serve", "--port", str(p_cheap), "--quantization", "int4",
                            "--served-model-name", "smollm2-int4", *common], f"http://127.0.0.1:{p_cheap}/health",
                           workdir / "cheap.log"))
        procs.append(start([*temper, "serve", "--port", str(p_strong), "--served-model-name", "smollm2", *common],
                           f"http://127.0.0.1:{p_strong}/health", workdir / "strong.log"))
        procs.append(start([*temper, "gateway", "--config", str(workdir / "gateway.yaml")],
                           f"http://127.0.0.1:{p_gw}/health", workdir / "gateway.log"))
        url = f"http://127.0.0.1:{p_gw}"
        results = {}
        for route in ("strong", "cheap", "cascade-logprob", "cascade-consistency", "learned"):
            t = time.perf_counter()
            results[route] = asyncio.run(run_route(url, route, items, args.concurrency))
            print(f"{route}: {len(items)} requests in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)

    strong_q = np.mean([r["score"] for r in results["strong"]])
    strong_cost = sum(r["cost"] for r in results["strong"])
    thresholds = {"cascade-logprob": t_lp[0], "cascade-consistency": t_sc[0], "learned": t_learned[0]}
    print(f"\n{'route':<22} {'quality':>8} {'95% CI':>16} {'% of strong':>12} {'to strong':>10} {'cost':>8} "
          f"{'saved':>7} {'threshold':>10}")
    summary = {}
    for route, rows in results.items():
        k = sum(r["score"] for r in rows)
        lo, hi = wilson_interval(k, len(rows))
        cost = sum(r["cost"] for r in rows)
        to_strong = np.mean([r["model"] == "strong" for r in rows])
        rel = k / len(rows) / strong_q if strong_q else float("nan")
        saved = 1 - cost / strong_cost
        summary[route] = {"quality": k / len(rows), "ci": [lo, hi], "of_strong": rel, "to_strong": float(to_strong),
                          "cost_rel": cost / strong_cost, "saved": saved, "threshold": thresholds.get(route)}
        t = thresholds.get(route)
        print(f"{route:<22} {k / len(rows):>8.3f} {f'[{lo:.3f}, {hi:.3f}]':>16} {rel:>12.1%} {to_strong:>10.1%} "
              f"{cost / strong_cost:>8.3f} {saved:>7.1%} {'' if t is None else f'{t:.3f}':>10}")
    if args.json_out:
        args.json_out.write_text("\n".join(json.dumps(r) for rows in results.values() for r in rows) + "\n")
    print(json.dumps({"bench": "routing_live", "n": len(items), "logged": n_logged, "target": TARGET,
                      "prices": prices, "routes": summary}))


if __name__ == "__main__":
    main()
