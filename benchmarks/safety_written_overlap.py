"""How close the project-written safety training prompts come to the held-out (dev and test) prompts.

    python benchmarks/safety_written_overlap.py [--edgy-max 0.8] [--harmful-max 0.85]

temper/safety/written/ holds benign-but-edgy prompts and rephrased harmful requests that helpers wrote for the
train split. A written prompt that paraphrases a held-out one would leak the measure into training, so each was
compared with every dev and test prompt of its kind (MiniLM cosine) and dropped at or above the limits; this
script repeats the comparison on the committed files, prints the closest pairs, and exits 1 if any pair is at or
above a limit. Prints one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from temper.embeddings import Embedder
from temper.safety import data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edgy-max", type=float, default=0.8)
    ap.add_argument("--harmful-max", type=float, default=0.85)
    args = ap.parse_args()
    emb = Embedder.load()

    def unit(texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.as_tensor(emb.embed(texts)), dim=-1)

    pairs = {
        "edgy": ([p.text for p in data.written_edgy_prompts()],
                 [p.text for s in ("dev", "test") for p in data.benign_edgy_prompts(s)], args.edgy_max),
        "harmful": ([p.text for p in data.written_harmful_rephrasings()],
                    [p.text for s in ("dev", "test") for p in data.harmful_prompts(s)], args.harmful_max),
    }
    report, failed = {}, False
    for kind, (written, held, limit) in pairs.items():
        sims = unit(written) @ unit(held).T
        best, where = sims.max(1)
        order = best.argsort(descending=True)[:3].tolist()
        print(f"{kind}: {len(written)} written vs {len(held)} held-out, closest {best.max():.3f} (limit {limit})")
        for i in order:
            print(f"  {best[i]:.3f}  {written[i][:70]!r}  ~  {held[where[i]][:70]!r}")
        report[kind] = {"written": len(written), "held_out": len(held), "max_similarity": float(best.max()),
                        "at_or_above_limit": int((best >= limit).sum())}
        failed |= bool((best >= limit).any())
    print(json.dumps({"benchmark": "safety_written_overlap", **report}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
