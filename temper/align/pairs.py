"""Preference pairs from verifiable rewards: sample several replies per training prompt, score them with the
checkers (plus the end-of-turn bonus), and pair the best with the worst when the best is clearly better.

    python -m temper.align.pairs --model runs/gemma-instruct/sft/model -o runs/gemma-instruct/pairs.jsonl

Only training instruction types are used (`verifiable.split_prompts`); held-out types never become pairs.
"""
from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path

from temper.align import verifiable as V
from temper.align.data import PreferenceRecord, write_jsonl
from temper.align.rewards import VerifiableReward, prompt_record
from temper.align.rollout import Completion

log = logging.getLogger(__name__)


def verifiable_pairs(model: str, num_prompts: int, samples: int = 4, max_tokens: int = 128, temperature: float = 1.0,
                     top_p: float = 0.95, min_gap: float = 0.5, seed: int = 0) -> tuple[list[PreferenceRecord], dict]:
    """(pairs, stats): best vs worst sampled reply of each prompt whose reward gap is at least `min_gap`."""
    from temper.engine.llm import LLM
    from temper.engine.sampling_params import SamplingParams

    train, _ = V.split_prompts(V.build_prompts())
    prompts = random.Random(seed).sample(train, min(num_prompts, len(train)))
    llm = LLM(model, max_model_len=1024)
    reward = VerifiableReward()
    start = time.perf_counter()
    outs = llm.generate([[{"role": "user", "content": p.text}] for p in prompts],
                        [SamplingParams(n=samples, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                        seed=seed + i) for i in range(len(prompts))])
    pairs, gaps, all_rewards = [], [], []
    for p, out in zip(prompts, outs):
        comps = [Completion(list(c.token_ids), c.text, c.finish_reason or "length") for c in out.outputs]
        scores = reward(prompt_record(p), comps)
        all_rewards += scores
        best = max(range(len(scores)), key=scores.__getitem__)
        worst = min(range(len(scores)), key=scores.__getitem__)
        gap = scores[best] - scores[worst]
        if gap >= min_gap:
            gaps.append(gap)
            pairs.append(PreferenceRecord([{"role": "user", "content": p.text}], comps[best].text, comps[worst].text,
                                          {"key": p.key, "chosen_reward": scores[best],
                                           "rejected_reward": scores[worst], "margin": gap}))
    stats = {"prompts": len(prompts), "samples": samples, "pairs": len(pairs),
             "mean_reward": sum(all_rewards) / len(all_rewards), "mean_gap": sum(gaps) / max(len(gaps), 1),
             "seconds": time.perf_counter() - start}
    return pairs, stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m temper.align.pairs", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the policy that samples (usually the SFT model)")
    p.add_argument("-o", "--output", required=True, help="JSONL file of preference records")
    p.add_argument("--prompts", type=int, default=128, help="training prompts to sample")
    p.add_argument("--samples", type=int, default=4, help="replies per prompt")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--min-gap", type=float, default=0.5, help="smallest reward difference that makes a pair")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pairs, stats = verifiable_pairs(args.model, args.prompts, args.samples, args.max_tokens, min_gap=args.min_gap,
                                    seed=args.seed)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(pairs, args.output)
    log.info("%d pairs from %d prompts (mean reward %.3f, mean gap %.2f) in %.0f s -> %s", stats["pairs"],
             stats["prompts"], stats["mean_reward"], stats["mean_gap"], stats["seconds"], args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
