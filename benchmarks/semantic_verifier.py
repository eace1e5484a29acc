"""Semantic cache with the pair verifier, on question pairs nobody tuned anything on.

    python benchmarks/semantic_verifier.py [--plot docs/gateway-verifier.png]

The test set is benchmarks/data/semantic_pairs_fresh3.jsonl: 360 pairs (140 paraphrases in 7 kinds, 220 hard
negatives in 11 kinds) written by a helper that saw none of the other sets, the guard's rules, the verifier or the
docs, committed before the verifier (format 2) was first evaluated on it. Both cache rules are scored on it with
their settings fixed beforehand:
- the guard alone: similarity >= 0.85 (`DEFAULT_THRESHOLD`) and no key-term mismatch;
- the guard + the pair verifier (temper/gateway/verifier.py): similarity >= 0.7, no mismatch, verifier >= 0.5, the
  rule the out-of-fold experiment chose on the development pairs (benchmarks/semantic_pair_classifier_experiment.py).
The verifier's training pairs (temper/gateway/data/) are scored too, marked in-sample. A sweep of the verifier's
threshold on the test set is printed for the record (and plotted), never used to choose. Latency: the verifier's
score of one candidate (both orders in one batch), one at a time, after a warm-up.

History: format 1 (trained without fresh2 and without swapped questions) was tested the same way on
temper/gateway/data/semantic_pairs_fresh2.jsonl at commit 3b37c17 (`--test` that file); its false hits there, word
order swaps, are why format 2 trains on swapped questions, so fresh2 is training data now and fresh3 the test.
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

from temper.embeddings import Embedder
from temper.gateway.semantic import (
    CANDIDATE_SIMILARITY,
    DEFAULT_THRESHOLD,
    VERIFIER_THRESHOLD,
    embed_key,
    normalize_text,
    semantic_match,
)
from temper.gateway.verifier import FORMAT, PairVerifier, training_pairs
from temper.stats import wilson_interval

TEST = Path(__file__).parent / "data" / "semantic_pairs_fresh3.jsonl"
GOAL_HIT, GOAL_FALSE_HIT = 0.60, 0.01


def load(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def score_pairs(pairs: list[dict], embedder: Embedder, verifier: PairVerifier) -> None:
    a, b = embed_key(embedder, [p["a"] for p in pairs]), embed_key(embedder, [p["b"] for p in pairs])
    for p, sim in zip(pairs, (a * b).sum(-1).tolist()):
        p["similarity"] = sim
        p["same_text"] = normalize_text(p["a"]) == normalize_text(p["b"])
    probs = verifier.score([(p["a"], p["b"]) for p in pairs])
    for p, prob in zip(pairs, probs):
        p["verifier"] = prob


def guard_only(p: dict) -> bool:
    return semantic_match(p["a"], p["b"], p["similarity"], DEFAULT_THRESHOLD)


def verified(p: dict, threshold: float = VERIFIER_THRESHOLD) -> bool:
    if not semantic_match(p["a"], p["b"], p["similarity"], CANDIDATE_SIMILARITY):
        return False
    return p["same_text"] or p["verifier"] >= threshold


def rates(pairs: list[dict], rule) -> dict:
    hits = sum(rule(p) for p in pairs if p["equivalent"])
    false = sum(rule(p) for p in pairs if not p["equivalent"])
    n_eq = sum(p["equivalent"] for p in pairs)
    n_ne = len(pairs) - n_eq
    hci, fci = wilson_interval(hits, n_eq), wilson_interval(false, n_ne)
    return {"hits": hits, "equivalent": n_eq, "false_hits": false, "non_equivalent": n_ne,
            "hit_rate": round(hits / n_eq, 4), "false_hit_rate": round(false / n_ne, 4),
            "hit_rate_ci95": [round(x, 4) for x in hci], "false_hit_rate_ci95": [round(x, 4) for x in fci]}


def show(name: str, r: dict) -> None:
    print(f"{name:<44}{r['hit_rate']:>7.3f} [{r['hit_rate_ci95'][0]:.3f}, {r['hit_rate_ci95'][1]:.3f}] "
          f"{r['hits']:>3}/{r['equivalent']:<4}{r['false_hit_rate']:>8.3f} "
          f"[{r['false_hit_rate_ci95'][0]:.3f}, {r['false_hit_rate_ci95'][1]:.3f}] {r['false_hits']:>3}/{r['non_equivalent']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", type=Path, nargs="+", default=[TEST],
                    help="test set(s) (JSONL); several are scored as one pool")
    ap.add_argument("--verifier", default=None, help="a trained verifier's folder (default: the cached one, "
                                                     "trained first if missing)")
    ap.add_argument("--verifier-threshold", type=float, default=VERIFIER_THRESHOLD,
                    help="the verifier's threshold to report (default: the gateway's)")
    ap.add_argument("--plot", default=None, help="PNG: hit rate vs false-hit rate on the test set")
    args = ap.parse_args()

    embedder = Embedder.load()
    verifier = PairVerifier.load_or_train(args.verifier)
    test, train = [p for path in args.test for p in load(path)], training_pairs()
    start = time.perf_counter()
    score_pairs(test, embedder, verifier)
    score_pairs(train, embedder, verifier)
    print(f"scored {len(test)} test and {len(train)} training pairs in {time.perf_counter() - start:.0f} s")

    def checked(p: dict) -> bool:
        return verified(p, args.verifier_threshold)

    out: dict = {"verifier_threshold": args.verifier_threshold}
    print(f"\n{'rule (pairs)':<44}{'hit rate [95% CI]':>24}{'false-hit rate [95% CI]':>30}")
    for split, pairs in (("test", test), ("train (in-sample)", train)):
        for key, rule, label in (("guard", guard_only, f"guard alone, similarity >= {DEFAULT_THRESHOLD}"),
                                 ("verifier", checked, (f"+ verifier >= {args.verifier_threshold}, "
                                                         f"similarity >= {CANDIDATE_SIMILARITY}"))):
            r = rates(pairs, rule)
            show(f"{split}: {label}", r)
            out.setdefault(split.split()[0], {})[key] = r

    print("\nper kind on the test set: share matched (hits for paraphrases, false hits for the others)")
    print(f"{'kind':<22}{'n':>4}{'guard':>8}{'+verifier':>11}")
    kinds = sorted({(p["equivalent"], p["kind"]) for p in test}, key=lambda k: (not k[0], k[1]))
    per_kind = {}
    for equivalent, kind in kinds:
        rows = [p for p in test if p["kind"] == kind and p["equivalent"] == equivalent]
        g, v = sum(map(guard_only, rows)), sum(map(checked, rows))
        per_kind[kind] = {"n": len(rows), "guard": g, "verifier": v}
        print(f"{kind:<22}{len(rows):>4}{g / len(rows):>8.3f}{v / len(rows):>11.3f}")
    out["test"]["per_kind"] = per_kind
    wrong = [p for p in test if not p["equivalent"] and checked(p)]
    print(f"\nfalse hits on the test set with the verifier: {len(wrong)}")
    for p in wrong:
        print(f"  sim {p['similarity']:.3f} p {p['verifier']:.3f} {p['kind']:<20} {p['a']!r} | {p['b']!r}")

    # for the record only, never for choosing: the verifier's threshold swept on the test set
    sweep = {}
    print(f"\n(record only) verifier threshold on the test set: {'thr':>5}{'hits':>8}{'false':>8}")
    for th in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        r = rates(test, lambda p, th=th: verified(p, th))
        sweep[th] = (r["hit_rate"], r["false_hit_rate"])
        print(f"{'':>50}{th:>5.2f}{r['hit_rate']:>8.3f}{r['false_hit_rate']:>8.3f}")
    out["test"]["sweep"] = sweep

    # latency: one candidate pair, both orders, as the cache scores it
    pairs = [(p["a"], p["b"]) for p in test[:120]]
    for pair in pairs[:5]:
        verifier.score([pair])
    ms = []
    for pair in pairs:
        t = time.perf_counter()
        verifier.score([pair])
        ms.append((time.perf_counter() - t) * 1000)
    ms.sort()
    out["verifier_ms"] = {"p50": round(statistics.median(ms), 2), "p95": round(ms[int(0.95 * (len(ms) - 1))], 2),
                          "pairs": len(ms)}
    print(f"\nverifier per candidate (both orders, one batch, CPU): p50 {out['verifier_ms']['p50']} ms, "
          f"p95 {out['verifier_ms']['p95']} ms")

    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        xs, ys = zip(*[(f, h) for h, f in sweep.values()])
        ax.plot(xs, ys, "C2-", marker=".", label="guard + verifier (threshold swept)")
        v, g = out["test"]["verifier"], out["test"]["guard"]
        ax.plot(v["false_hit_rate"], v["hit_rate"], "C2o", markersize=9,
                label=f"guard + verifier >= {args.verifier_threshold} (chosen before)")
        ax.plot(g["false_hit_rate"], g["hit_rate"], "C0s", markersize=8, label=f"guard alone, {DEFAULT_THRESHOLD}")
        ax.axvline(GOAL_FALSE_HIT, color="grey", linewidth=0.8, linestyle=":")
        ax.axhline(GOAL_HIT, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("false-hit rate (non-equivalent pairs)")
        ax.set_ylabel("hit rate (equivalent pairs)")
        ax.set_title(f"semantic cache on {len(test)} unseen pairs")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")

    v = out["test"]["verifier"]
    out["goal_met"] = v["hit_rate"] >= GOAL_HIT and v["false_hit_rate"] <= GOAL_FALSE_HIT
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    print(json.dumps({"bench": "semantic_verifier", "machine": platform.processor() or platform.machine(),
                      "commit": commit, "verifier_format": FORMAT, "test_files": [path.name for path in args.test],
                      "test_pairs": len(test), "train_pairs": len(train),
                      "counts": dict(collections.Counter(p["equivalent"] for p in test)), **out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
