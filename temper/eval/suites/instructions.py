"""Verifiable instructions (IFEval-style) on the held-out instruction types that no training step reads."""
from __future__ import annotations

from typing import Any

from temper.eval.suites import rate

DEFAULTS = {"max_tokens": 128, "limit": None, "samples": 4}


def run(target, options: dict[str, Any]) -> dict[str, Any]:
    from temper.align import verifiable as V
    from temper.align.evaluate import ended_properly

    o = {**DEFAULTS, **options}
    _, heldout = V.split_prompts(V.build_prompts())
    if o["limit"]:
        heldout = heldout[: o["limit"]]
    replies = target.chat([[{"role": "user", "content": p.text}] for p in heldout], o["max_tokens"], progress=True)
    texts = [r.text for r in replies]
    scored = V.score(heldout, texts)
    n = len(heldout)
    strict = [all(V.check_prompt(p, t)) for p, t in zip(heldout, texts)]
    loose = [all(V.check_prompt_loose(p, t)) for p, t in zip(heldout, texts)]
    metrics = {
        "verifiable_strict": rate(strict, "verifiable instructions (strict)", True),
        "verifiable_loose": rate(loose, "verifiable instructions (loose)", True),
        "ended_turn": rate([ended_properly(r.text, r.finish_reason or "length") for r in replies],
                           "replies that end their turn", True),
    }
    details = {"prompts": n, "max_tokens": o["max_tokens"],
               "instruction_strict": scored["instruction_strict"],
               "per_type": {k: v["strict"] for k, v in scored["per_type"].items()}}
    samples = [{"prompt": p.text, "reply": t, "strict": ok} for p, t, ok in zip(heldout[: o["samples"]], texts, strict)]
    return {"metrics": metrics, "details": details, "samples": samples}
