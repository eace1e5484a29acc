"""Perplexity on the held-out slice of the Python documentation (temper.quant.corpus: every 10th file).

A local model is scored on `tokens` tokens in windows of `seq_len` (each window predicted from itself alone). An
endpoint is scored through `/v1/completions` with `echo` and `max_tokens: 0` (the prompt's own log-probabilities):
the same windows, sent as text and re-tokenized by the server, so the number is comparable when the served
model has the same tokenizer (it says how many tokens it scored). Windows the endpoint does not score (a guard
filtering them) make the result `perplexity_partial`: a perplexity of other text, kept out of comparisons.
"""
from __future__ import annotations

import math
from typing import Any

from temper.eval.suites import SuiteSkipped, metric
from temper.eval.target import TargetError

DEFAULTS = {"tokens": 16384, "seq_len": 512}


def _ids(tokenizer, o: dict[str, Any]) -> list[int]:
    from temper.quant.corpus import CORPUS_NAME, corpus_available, heldout_ids

    if not corpus_available():
        raise SuiteSkipped(f"the held-out corpus is missing: apt-get install {CORPUS_NAME}")
    return heldout_ids(tokenizer, o["tokens"])


def run(target, options: dict[str, Any]) -> dict[str, Any]:
    from temper.quant.corpus import perplexity

    o = {**DEFAULTS, **options}
    details: dict[str, Any] = {"corpus": "python3.11-doc held-out files", "seq_len": o["seq_len"]}
    if target.kind == "model":
        llm = target.llm
        ids = _ids(llm.tokenizer, o)
        ppl = perplexity(llm.engine.model, ids, seq_len=o["seq_len"], progress=True)
        details["tokens"] = len(ids)
        return {"metrics": {"perplexity": metric(round(ppl, 4), "ppl", False, "perplexity (Python docs)",
                                                 len(ids))}, "details": details, "samples": []}
    tokenizer = _local_tokenizer(o.get("tokenizer"))  # only cuts the text into windows
    ids = _ids(tokenizer, o)
    windows = [tokenizer.decode(ids[i: i + o["seq_len"]]) for i in range(0, len(ids), o["seq_len"])]
    bodies = [{"model": target.model, "prompt": w, "max_tokens": 0, "echo": True, "logprobs": 0} for w in windows]
    try:
        responses = target.post_many("/completions", bodies, progress=True)
    except TargetError as e:  # an endpoint without echo scoring (most hosted APIs)
        raise SuiteSkipped(f"the endpoint cannot score a prompt (completions with echo and max_tokens 0): {e}") from e
    nll, count, filtered = 0.0, 0, 0
    for r in responses:
        choice = r["choices"][0]
        lps = (choice.get("logprobs") or {}).get("token_logprobs") or []
        scored = [x for x in lps[1:] if x is not None]
        if not scored:
            filtered += 1
            continue
        nll -= sum(scored)
        count += len(scored)
    if not count:
        raise SuiteSkipped("the endpoint returned no prompt log-probabilities")
    details.update(tokens=count, windows=len(windows), windows_without_logprobs=filtered,
                   note="scored by the endpoint on its own tokenization of the same text")
    ppl = math.exp(nll / count)
    if filtered:  # a guard filtered some windows: a perplexity of other text, not comparable with the full one
        label = f"perplexity on the {len(windows) - filtered} of {len(windows)} windows the endpoint scored"
        return {"metrics": {"perplexity_partial": metric(round(ppl, 4), "ppl", False, label, count)},
                "details": details, "samples": []}
    return {"metrics": {"perplexity": metric(round(ppl, 4), "ppl", False, "perplexity (Python docs)", count)},
            "details": details, "samples": []}


def _local_tokenizer(model: str | None):
    """The tokenizer of a registered model or folder (default: the default model's) without its weights."""
    from pathlib import Path

    from temper.models.registry import DEFAULT_MODEL, resolve
    from temper.tokenizer import Tokenizer

    path = Path(resolve(model or DEFAULT_MODEL))
    return Tokenizer.from_gguf(path) if path.suffix == ".gguf" else Tokenizer.from_pretrained(path)
