"""Choose the pair verifier's threshold out of fold on its own training pairs.

    python benchmarks/semantic_verifier_oof.py [--folds 5] [--out oof.json]     # ~30 min on 2 cores

The verifier scores its training pairs near 0 or 1 (in-sample, no false hits at any threshold), so its threshold
cannot be read there. This trains it `--folds` times (the same settings and swapped-question negatives as
temper/gateway/verifier.py, each time without one fold), scores each fold's pairs with the model that did not see
them, and applies the cache's rule (similarity >= 0.7, the key-term guard, verifier >= t) to those scores. The
threshold chosen is the one with the highest hit rate whose out-of-fold false-hit rate is at most --max-false-hit
(0.5%: half the issue's 1%, the margin the guard's threshold was chosen with). Prints the table, the choice and one
JSON line.
"""
from __future__ import annotations

import argparse
import json
import random
import time

from temper.embeddings import Embedder
from temper.gateway.semantic import CANDIDATE_SIMILARITY, embed_key, normalize_text, semantic_match
from temper.gateway.verifier import SETTINGS, train, training_pairs

GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--max-false-hit", type=float, default=0.005)
    ap.add_argument("--out", default=None, help="write the out-of-fold scores here (JSON)")
    args = ap.parse_args()

    rows = training_pairs()
    order = list(range(len(rows)))
    random.Random(SETTINGS["seed"]).shuffle(order)
    folds = [order[k::args.folds] for k in range(args.folds)]
    oof = [0.0] * len(rows)
    start = time.monotonic()
    for k, held in enumerate(folds):
        held_set = set(held)
        model = train([rows[i] for i in range(len(rows)) if i not in held_set], None, progress=False,
                      seed=SETTINGS["seed"] + k)
        for i, p in zip(held, model.score([(rows[i]["a"], rows[i]["b"]) for i in held])):
            oof[i] = p
        print(f"fold {k + 1}/{args.folds}: {len(held)} pairs scored, {time.monotonic() - start:.0f} s", flush=True)

    embedder = Embedder.load()
    a, b = embed_key(embedder, [r["a"] for r in rows]), embed_key(embedder, [r["b"] for r in rows])
    candidate = [semantic_match(r["a"], r["b"], s, CANDIDATE_SIMILARITY) for r, s in zip(rows, (a * b).sum(-1).tolist())]
    same = [normalize_text(r["a"]) == normalize_text(r["b"]) for r in rows]
    n_eq = sum(r["equivalent"] for r in rows)
    n_ne = len(rows) - n_eq
    table = {}
    print(f"\nout of fold, {len(rows)} pairs ({n_eq} paraphrases): similarity >= {CANDIDATE_SIMILARITY} + guard + verifier >= t")
    print(f"{'t':>6}{'hits':>8}{'false hits':>12}")
    for t in GRID:
        hit = [c and (s or p >= t) for c, s, p in zip(candidate, same, oof)]
        h = sum(x for x, r in zip(hit, rows) if r["equivalent"]) / n_eq
        f = sum(x for x, r in zip(hit, rows) if not r["equivalent"]) / n_ne
        table[t] = (round(h, 4), round(f, 4))
        print(f"{t:>6.2f}{h:>8.3f}{f:>12.4f}")
    ok = [(h, t) for t, (h, f) in table.items() if f <= args.max_false_hit]
    chosen = max(ok)[1] if ok else None
    print(f"\nchosen (highest hit rate with out-of-fold false hits <= {args.max_false_hit:.1%}): {chosen}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"oof": oof, "ids": [r.get("id") for r in rows]}, f)
    print(json.dumps({"bench": "semantic_verifier_oof", "folds": args.folds, "pairs": len(rows), "table": table,
                      "chosen": chosen, "seconds": round(time.monotonic() - start)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
