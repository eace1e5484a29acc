"""Routing offline: log both back ends' outcomes on the routing task, then price every routing policy on them.

    python benchmarks/routing_offline.py collect --backends cheap strong --n 1000   # generation, ~5 min a back end
    python benchmarks/routing_offline.py speed                                      # tok/s of both, interleaved
    python benchmarks/routing_offline.py analyze [--plot routing.png] [--pricing output|compute] [--batch 16]

`collect` runs each back end through temper's offline engine on `routing_task.load_items(n, seed)`: greedy
reply, score, prompt / cached / completion tokens and the mean token log-probability; for the cheap back end also
`--samples` answers sampled at `--sample-temperature` (self-consistency). `speed` measures prefill and decode
tokens/s of every back end at batch 1 and 16 (benchmarks/batched.py's measurement, repeats interleaved so
that the VM's drift hits both alike). Both write their rows into one JSONL file (`--outcomes`), replacing the
rows of the back ends they ran.

`analyze` prices each request as a self-hosted back end is priced by the gateway (temper/gateway/config.py):
per_hour / 3600 / measured tokens/s per token, the same machine price for both back ends, so only the ratio of
throughputs matters. `--pricing output` bills completion tokens only (the gateway's default without an input
rate); `compute` also bills the prompt tokens the engine computed (cache hits excluded) at the prefill rate.
It then sweeps each policy's threshold over quality (mean score) against cost (relative to always-strong):
always-cheap, always-strong, random mix, rules (a prompt-length threshold; a per-question-type rule chosen out of
fold), cascades on the cheap answer's mean log-probability and on self-consistency (agreement of the samples
with the greedy answer; the samples' cost is billed), the learned router (`temper.gateway.router_model`, logistic
regression on MiniLM embeddings of `router_text`, out-of-fold probabilities from 5-fold nested cross-validation)
and the oracle. It reports the cost saved at 95% of the strong model's quality (RouteLLM's measure; between two
thresholds a random mix of both is assumed) with a bootstrap 95% interval over items, the share of requests the
strong model then answers, prints a table and ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from routing_task import DEFAULT_TASK, TASKS, answer_key, load_items, score

from temper.stats import wilson_interval

OUTCOMES = Path(__file__).parent / "data" / "routing_outcomes_offline.jsonl"
BACKENDS = {"cheap": "smollm2-135m-instruct:int4", "strong": "smollm2-135m-instruct"}  # name -> model[:quantization]
TARGET = 0.95  # share of the strong model's quality a policy must keep


# ---- collect --------------------------------------------------------------------------------------------------------

def load_backend(spec: str):
    from temper.models.loader import load
    from temper.models.registry import resolve

    model, _, quantization = spec.partition(":")
    return load(resolve(model), quantization=quantization or None)


def sampling(request: dict, **overrides):
    from temper.engine.sampling_params import SamplingParams

    options = {"max_tokens": request["max_tokens"], "stop": tuple(request.get("stop", ())),
               "temperature": request.get("temperature", 0.0), "logprobs": 0}
    return SamplingParams(**{**options, **overrides})


def prompt_of(request: dict):
    return request["prompt"] if "prompt" in request else request["messages"]


def run_backend(name: str, spec: str, items: list[dict], num_samples: int, temperature: float
                ) -> tuple[list[dict], dict]:
    """Outcome rows of one back end (samples only where num_samples > 0) and the seconds each pass took."""
    from temper.engine.llm import LLM
    from temper.gateway.backends import estimate_tokens, prompt_text  # what the gateway's rules see

    llm = LLM.from_loaded(load_backend(spec), spec)
    start = time.perf_counter()
    greedy = llm.generate([prompt_of(it["request"]) for it in items], [sampling(it["request"]) for it in items])
    seconds = {"greedy_seconds": time.perf_counter() - start}
    print(f"{name}: {len(items)} greedy replies in {seconds['greedy_seconds']:.0f} s", file=sys.stderr)
    sampled = [None] * len(items)
    if num_samples:
        start = time.perf_counter()
        params = [sampling(it["request"], n=num_samples, temperature=temperature, seed=i) for i, it in enumerate(items)]
        sampled = llm.generate([prompt_of(it["request"]) for it in items], params)
        seconds["sample_seconds"] = time.perf_counter() - start
    rows = []
    for item, out, extra in zip(items, greedy, sampled):
        c = out.outputs[0]
        row = {"type": "outcome", "id": item["id"], "backend": name, "task": item["task"], "kind": item["kind"],
               "prompt_tokens_estimate": estimate_tokens(prompt_text(item["request"])),
               "reply": c.text, "score": score(item, c.text), "prompt_tokens": len(out.prompt_token_ids),
               "cached_tokens": out.num_cached_tokens, "completion_tokens": len(c.token_ids),
               "mean_logprob": c.cumulative_logprob / max(len(c.token_ids), 1), "finish_reason": c.finish_reason}
        if extra is not None:
            key = answer_key(item, c.text)
            row["samples"] = [{"reply": s.text, "score": score(item, s.text), "completion_tokens": len(s.token_ids),
                               "agrees": answer_key(item, s.text) == key} for s in extra.outputs]
            row["agreement"] = statistics.mean(s["agrees"] for s in row["samples"])
        rows.append(row)
    return rows, seconds


def measure_speed(specs: dict[str, str], repeats: int) -> dict[str, dict]:
    """Median prefill and decode tokens/s at batch 1 and 16 (128 prompt tokens, 64 generated), interleaved."""
    from batched import temper_level

    loaded = {name: load_backend(spec) for name, spec in specs.items()}
    runs: dict[str, list[dict]] = {name: [] for name in specs}
    for r in range(repeats):
        for name in specs:
            runs[name] += [temper_level(loaded[name], B, npp=128, ntg=64, seed=100 * r + B) for B in (1, 16)]
    speed = {}
    for name, rs in runs.items():
        b1, b16 = [x for x in rs if x["B"] == 1], [x for x in rs if x["B"] == 16]
        speed[name] = {"decode_b1": statistics.median(x["s_tg"] for x in b1),
                       "decode_b16": statistics.median(x["s_tg"] for x in b16),
                       "prefill_b1": statistics.median(x["s_pp"] for x in b1),
                       "prefill_b16": statistics.median(x["s_pp"] for x in b16),
                       "decode_b16_runs": [round(x["s_tg"], 1) for x in b16], "repeats": repeats}
    return speed


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    return {"machine": f"{cpu}, {torch.get_num_threads()} threads, no GPU", "torch": torch.__version__,
            "commit": commit, "date": time.strftime("%Y-%m-%d")}


def merge(path: Path, new_rows: list[dict], replaced: Callable[[dict], bool]) -> None:
    """Rewrite the file with `new_rows` in place of the rows `replaced` selects."""
    old = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in [r for r in old if not replaced(r)] + new_rows:
            f.write(json.dumps(row) + "\n")


def collect(args: argparse.Namespace) -> None:
    items = load_items(args.n, args.seed, args.task)
    rows = []
    for name in args.backends:
        samples = args.samples if name == "cheap" else 0
        outcomes, seconds = run_backend(name, BACKENDS[name], items, samples, args.sample_temperature)
        rows += [{"type": "backend", "name": name, "spec": BACKENDS[name], "task": args.task, "n": args.n,
                  "seed": args.seed, "samples": samples, "sample_temperature": args.sample_temperature, **seconds,
                  **machine()}, *outcomes]
    merge(args.outcomes, rows, lambda r: r["type"] != "speed" and r["task"] == args.task
          and r.get("backend", r.get("name")) in args.backends)


def speed(args: argparse.Namespace) -> None:
    measured = measure_speed({name: BACKENDS[name] for name in args.backends}, args.repeats)
    rows = [{"type": "speed", "name": name, "spec": BACKENDS[name], **s, **machine()} for name, s in measured.items()]
    for row in rows:
        print(json.dumps(row))
    merge(args.outcomes, rows, lambda r: r["type"] == "speed" and r["name"] in args.backends)


# ---- analyze --------------------------------------------------------------------------------------------------------

@dataclass
class Outcomes:
    """Per item, aligned arrays of both back ends' results."""

    ids: list[str]
    kinds: list[str]
    texts: list[str]
    q_cheap: np.ndarray
    q_strong: np.ndarray
    cost_cheap: np.ndarray  # per request, in seconds of the machine (same price per hour for both)
    cost_strong: np.ndarray
    cost_samples: np.ndarray  # the cheap back end's sampled answers, for the self-consistency cascade
    logprob: np.ndarray  # the cheap greedy answer's mean token logprob
    agreement: np.ndarray  # share of the cheap samples agreeing with its greedy answer (NaN if not sampled)
    prompt_tokens_estimate: np.ndarray  # the gateway's estimate (UTF-8 bytes / 4) that its length rules compare
    speed: dict


def read_outcomes(path: Path, task: str, pricing: str, batch: int) -> Outcomes:
    all_rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    speed = {r["name"]: r for r in all_rows if r["type"] == "speed"}
    rows = [r for r in all_rows if r["type"] == "outcome" and r["task"] == task]
    by_backend = {name: {r["id"]: r for r in rows if r["backend"] == name}
                  for name in ("cheap", "strong")}
    if set(speed) < {"cheap", "strong"}:
        raise SystemExit(f"{path}: run `speed` first (has speed rows for {sorted(speed)})")
    ids = [i for i in by_backend["cheap"] if i in by_backend["strong"]]
    cheap, strong = [by_backend["cheap"][i] for i in ids], [by_backend["strong"][i] for i in ids]

    def cost(row: dict, name: str, completion_tokens: int, prompt: bool = True) -> float:
        s = speed[name]
        seconds = completion_tokens / s[f"decode_b{batch}"]
        if pricing == "compute" and prompt:
            seconds += (row["prompt_tokens"] - row["cached_tokens"]) / s[f"prefill_b{batch}"]
        return seconds

    # the items' own text (not stored in the outcomes: it is the task's data, rebuilt from the same seeded order)
    head = next(r for r in all_rows if r["type"] == "backend" and r.get("task") == task)
    texts = {it["id"]: it["router_text"] for it in load_items(head["n"], head["seed"], task)}
    return Outcomes(
        ids=ids, kinds=[r["kind"] for r in cheap], texts=[texts[i] for i in ids],
        q_cheap=np.array([r["score"] for r in cheap]), q_strong=np.array([r["score"] for r in strong]),
        cost_cheap=np.array([cost(r, "cheap", r["completion_tokens"]) for r in cheap]),
        cost_strong=np.array([cost(r, "strong", r["completion_tokens"]) for r in strong]),
        # NOTE: n samples share the prompt's KV blocks, so only their new tokens cost
        cost_samples=np.array([cost(r, "cheap", sum(s["completion_tokens"] for s in r.get("samples", [])), False)
                               for r in cheap]),
        logprob=np.array([r["mean_logprob"] for r in cheap]),
        agreement=np.array([r.get("agreement", math.nan) for r in cheap]),
        prompt_tokens_estimate=np.array([r["prompt_tokens_estimate"] for r in cheap]), speed=speed)


@dataclass
class Curve:
    cost: np.ndarray  # relative to always-strong, in the order of the sweep (more traffic to strong as it goes)
    quality: np.ndarray
    strong_share: np.ndarray


def sweep(signal: np.ndarray, o: Outcomes, idx: np.ndarray, cascade: bool = False, extra: np.ndarray | None = None
          ) -> Curve:
    """Keep the cheap answer for the items with the highest signal, the strong one for the rest, at every
    threshold between distinct signal values. A cascade pays the cheap call (and `extra`) on every item."""
    s, qc, qs, cc, cs = signal[idx], o.q_cheap[idx], o.q_strong[idx], o.cost_cheap[idx], o.cost_strong[idx]
    base = cc + (extra[idx] if extra is not None else 0.0)
    order = np.argsort(-s, kind="stable")
    s, qc, qs, cc, cs, base = s[order], qc[order], qs[order], cc[order], cs[order], base[order]
    n = len(s)
    cuts = np.concatenate([[0], np.flatnonzero(np.diff(s) != 0) + 1, [n]])  # k = items kept on cheap
    kept_q = np.concatenate([[0.0], np.cumsum(qc)])[cuts]
    strong_q = qs.sum() - np.concatenate([[0.0], np.cumsum(qs)])[cuts]
    if cascade:
        cost = base.sum() + cs.sum() - np.concatenate([[0.0], np.cumsum(cs)])[cuts]
    else:
        cost = np.concatenate([[0.0], np.cumsum(cc)])[cuts] + cs.sum() - np.concatenate([[0.0], np.cumsum(cs)])[cuts]
    rev = slice(None, None, -1)  # from all-cheap to all-strong: cost rises along the curve
    return Curve(cost[rev] / cs.sum(), (kept_q + strong_q)[rev] / n, (1 - cuts / n)[rev])


def cost_at(curve: Curve, target: float) -> tuple[float, float]:
    """(relative cost, strong share) of the cheapest way along the curve to reach `target` quality: a point of it,
    or a random mix of two neighbouring thresholds that lands exactly on the target; (nan, nan) if none does."""
    candidates = [(c, s) for c, q, s in zip(curve.cost, curve.quality, curve.strong_share) if q >= target]
    for i in range(1, len(curve.cost)):
        q0, q1 = curve.quality[i - 1], curve.quality[i]
        if (q0 - target) * (q1 - target) < 0:
            t = (target - q0) / (q1 - q0)
            candidates.append((curve.cost[i - 1] + t * (curve.cost[i] - curve.cost[i - 1]),
                               curve.strong_share[i - 1] + t * (curve.strong_share[i] - curve.strong_share[i - 1])))
    return min(candidates) if candidates else (math.nan, math.nan)


def kind_rule_signal(o: Outcomes, folds: np.ndarray) -> np.ndarray:
    """Per item type (ToMi question, instruction set): how much better the cheap answer was than the strong one,
    averaged over the other folds' items of that type."""
    kinds = np.array(o.kinds)
    out = np.zeros(len(kinds))
    for k in np.unique(folds):
        train = folds != k
        for kind in np.unique(kinds):
            rows = train & (kinds == kind)
            gain = (o.q_cheap[rows] - o.q_strong[rows]).mean() if rows.any() else 0.0
            out[(folds == k) & (kinds == kind)] = gain
    return out


def policies(o: Outcomes, args: argparse.Namespace) -> dict[str, dict]:
    """name -> {signal, cascade, extra}: what `sweep` needs for each policy."""
    from temper.embeddings import Embedder
    from temper.gateway.router_model import cross_val_predict, stratified_folds

    good_enough = (o.q_cheap >= o.q_strong).astype(int)  # the cheap answer is no worse than the strong one
    embeddings = Embedder.load().embed(o.texts).numpy()
    out = {
        "always-cheap": {"fixed": "cheap"},
        "always-strong": {"fixed": "strong"},
        "random mix": {"mix": True},
        "rules: prompt length": {"signal": -o.prompt_tokens_estimate.astype(float)},
        "rules: item type (CV)": {"signal": kind_rule_signal(o, stratified_folds(good_enough, 5, args.seed))},
        "cascade: mean logprob": {"signal": o.logprob, "cascade": True},
        "learned router (CV)": {"signal": cross_val_predict(embeddings, good_enough, folds=5, seed=args.seed)},
        "learned: label = cheap correct": {"signal": cross_val_predict(embeddings, o.q_cheap.astype(int), folds=5,
                                                                       seed=args.seed)},
        "oracle": {"signal": (o.q_cheap - o.q_strong) + 1e-9 * (o.cost_strong - o.cost_cheap)},
    }
    if not np.isnan(o.agreement).any():
        # k samples give k + 1 levels; between two, cost_at mixes (a random tie-break, in expectation)
        out["cascade: self-consistency"] = {"signal": o.agreement, "cascade": True, "extra": o.cost_samples}
    return out


def curve_of(policy: dict, o: Outcomes, idx: np.ndarray) -> Curve:
    if policy.get("fixed"):
        share = 1.0 if policy["fixed"] == "strong" else 0.0
        q = (o.q_strong if share else o.q_cheap)[idx].mean()
        c = (o.cost_strong if share else o.cost_cheap)[idx].sum() / o.cost_strong[idx].sum()
        return Curve(np.array([c]), np.array([q]), np.array([share]))
    if policy.get("mix"):
        return random_mix(o, idx)
    return sweep(policy["signal"], o, idx, policy.get("cascade", False), policy.get("extra"))


def random_mix(o: Outcomes, idx: np.ndarray) -> Curve:
    """The expected curve of sending a random share of requests to the strong model: a straight line."""
    c = o.cost_cheap[idx].sum() / o.cost_strong[idx].sum()
    return Curve(np.array([c, 1.0]), np.array([o.q_cheap[idx].mean(), o.q_strong[idx].mean()]), np.array([0.0, 1.0]))


def auc(labels: np.ndarray, signal: np.ndarray) -> float:
    """Probability that a random positive item has a higher signal than a random negative one (ties: half)."""
    pos, neg = signal[labels == 1], signal[labels == 0]
    if not len(pos) or not len(neg):
        return math.nan
    greater = (pos[:, None] > neg[None, :]).mean()
    return float(greater + 0.5 * (pos[:, None] == neg[None, :]).mean())


def analyze(args: argparse.Namespace) -> None:
    o = read_outcomes(args.outcomes, args.task, args.pricing, args.batch)
    n, everything = len(o.ids), np.arange(len(o.ids))
    pols = policies(o, args)
    good_enough = (o.q_cheap >= o.q_strong).astype(int)
    rng = np.random.default_rng(args.seed)
    boots = [rng.integers(0, n, n) for _ in range(args.bootstrap)]

    def saved(name: str, idx: np.ndarray) -> tuple[float, float]:
        c, share = cost_at(curve_of(pols[name], o, idx), TARGET * o.q_strong[idx].mean())
        return 1 - c, share

    results = {}
    for name in pols:
        point = saved(name, everything)
        dist = np.array([saved(name, b)[0] for b in boots])
        dist = dist[~np.isnan(dist)]
        lo, hi = (np.percentile(dist, [2.5, 97.5]) if len(dist) else (math.nan, math.nan))
        results[name] = {"saved": point[0], "saved_ci": [float(lo), float(hi)], "strong_share": point[1],
                         "reached_in": len(dist) / len(boots),
                         "auc": None if "signal" not in pols[name] else auc(good_enough, pols[name]["signal"])}
    print_report(o, results, args)
    if args.plot:
        plot(o, pols, args)


def print_report(o: Outcomes, results: dict, args: argparse.Namespace) -> None:
    n = len(o.ids)
    print(f"{args.task}: {n} items; pricing: {args.pricing} at batch {args.batch}; "
          f"target {TARGET:.0%} of the strong quality")
    for name, q, c in (("cheap", o.q_cheap, o.cost_cheap), ("strong", o.q_strong, o.cost_strong)):
        lo, hi = wilson_interval(q.sum(), n)
        s = o.speed[name]
        print(f"  {name:6s} {o.speed[name]['spec']:28s} accuracy {q.mean():.3f} [{lo:.3f}, {hi:.3f}]  "
              f"decode b1 {s['decode_b1']:.1f} / b16 {s['decode_b16']:.1f} tok/s, prefill b16 {s['prefill_b16']:.0f} "
              f"tok/s, cost/request {c.mean() * 1000:.2f} ms")
    joint = {f"cheap {a:.0f} strong {b:.0f}": int(((o.q_cheap == a) & (o.q_strong == b)).sum())
             for a in (0, 1) for b in (0, 1)}
    print(f"  joint outcomes: {joint}; cheap/strong cost ratio {o.cost_cheap.sum() / o.cost_strong.sum():.3f}")
    kinds = sorted(set(o.kinds))
    if len(kinds) <= 8:
        for kind in kinds:
            rows = np.array(o.kinds) == kind
            print(f"  {kind:10s} n={rows.sum():4d}  cheap {o.q_cheap[rows].mean():.3f}  "
                  f"strong {o.q_strong[rows].mean():.3f}")
    print(f"\n| policy | cost saved at {TARGET:.0%} quality | 95% bootstrap CI | requests to strong | reached in | "
          "AUC (good enough) |")
    print("|---|---|---|---|---|---|")
    def fmt(v: float) -> str:
        return "not reached" if math.isnan(v) else f"{v:.1%}"

    for name, r in results.items():
        area = "" if r["auc"] is None else f"{r['auc']:.3f}"
        print(f"| {name} | {fmt(r['saved'])} | [{fmt(r['saved_ci'][0])}, {fmt(r['saved_ci'][1])}] | "
              f"{fmt(r['strong_share'])} | {r['reached_in']:.0%} of resamples | {area} |")
    summary = {"task": args.task, "n": n, "pricing": args.pricing, "batch": args.batch, "target": TARGET,
               "accuracy": {"cheap": float(o.q_cheap.mean()), "strong": float(o.q_strong.mean())},
               "cost_ratio": float(o.cost_cheap.sum() / o.cost_strong.sum()), "joint": joint,
               "saved": {k: (None if math.isnan(v["saved"]) else round(v["saved"], 4)) for k, v in results.items()},
               "saved_ci": {k: [None if math.isnan(x) else round(x, 4) for x in v["saved_ci"]]
                            for k, v in results.items()},
               "auc": {k: round(v["auc"], 4) for k, v in results.items() if v["auc"] is not None},
               "strong_share": {k: (None if math.isnan(v["strong_share"]) else round(v["strong_share"], 4))
                                for k, v in results.items()}}
    print(json.dumps(summary))


def plot(o: Outcomes, pols: dict, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = np.arange(len(o.ids))
    x_max = 2.0  # a cascade that samples several answers can cost several times the strong model: off the chart
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, policy in pols.items():
        curve = curve_of(policy, o, idx)
        style = "o" if policy.get("fixed") else "-"
        label = name if curve.cost.min() <= x_max else f"{name} (cost {curve.cost.min():.1f}-{curve.cost.max():.1f})"
        ax.plot(curve.cost, curve.quality, style, label=label, linewidth=1.2, markersize=7)
    ax.set_xlim(0, x_max)
    ax.axhline(TARGET * o.q_strong.mean(), color="gray", linestyle=":", label=f"{TARGET:.0%} of strong quality")
    ax.set_xlabel(f"cost relative to always-strong ({args.pricing} pricing, batch {args.batch} throughput)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Routing {o.speed['cheap']['spec']} / {o.speed['strong']['spec']} ({len(o.ids)} items)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("collect", "speed", "analyze"):
        p = sub.add_parser(name)
        p.add_argument("--outcomes", type=Path, default=OUTCOMES, help="the JSONL file of logged outcomes")
        p.add_argument("--seed", type=int, default=0)
    for name in ("collect", "speed"):
        sub.choices[name].add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
    for name in ("collect", "analyze"):
        sub.choices[name].add_argument("--task", choices=list(TASKS), default=DEFAULT_TASK)
    c = sub.choices["collect"]
    c.add_argument("--n", type=int, default=1000, help="items")
    c.add_argument("--samples", type=int, default=5, help="cheap back end's sampled answers (0: none)")
    c.add_argument("--sample-temperature", type=float, default=0.7)
    sub.choices["speed"].add_argument("--repeats", type=int, default=3)
    a = sub.choices["analyze"]
    a.add_argument("--pricing", choices=("output", "compute"), default="output")
    a.add_argument("--batch", type=int, choices=(1, 16), default=16, help="whose measured tok/s set the prices")
    a.add_argument("--bootstrap", type=int, default=500)
    a.add_argument("--plot", help="write the quality-cost curves to this PNG")
    args = ap.parse_args()
    {"collect": collect, "speed": speed, "analyze": analyze}[args.command](args)


if __name__ == "__main__":
    main()
