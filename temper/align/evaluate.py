"""Measure a model at each stage of base -> instruct: does it end its turn, does it follow instructions it was
never trained on, and how well does it predict held-out assistant replies.

    python -m temper.align.evaluate --model runs/gemma-instruct/sft/model --name sft -o runs/gemma-instruct/eval

- ended_turn: share of greedy replies that end with the end-of-turn token within `max_tokens` and do not invent
  a next turn ("User:", "Q:", a new turn marker...), which is what a base model does instead of answering.
- heldout strict / loose: prompt-level accuracy on the held-out verifiable-instruction types (IFEval-style; no
  prompt of these types is ever used for training, pairs or rewards); instruction-level strict too.
- train-type strict: the same on the training types (what GRPO and DPO optimized directly).
- heldout_loss: mean NLL per assistant token on held-out ShareGPT replies (the SFT recipe's eval records).
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import re
import time
from pathlib import Path
from typing import Any

import torch

from temper.align import verifiable as V
from temper.align.batching import collate, encode_chat, truncate, unpacked
from temper.align.policy import token_logps
from temper.align.sft import messages_of, pad_id

log = logging.getLogger(__name__)

# A reply that goes on to write the user's next turn itself (the base model's habit).
INVENTED_TURN = re.compile(r"(^|\n)\s*(user|human|question|q|assistant|model)\s*:|<start_of_turn>|<\|im_start\|>",
                           re.IGNORECASE)


def ended_properly(text: str, finish_reason: str) -> bool:
    return finish_reason == "stop" and not INVENTED_TURN.search(text)


def heldout_loss(model, tokenizer, records: list[Any], max_len: int = 1024, batch_size: int = 4) -> float:
    """Mean NLL per assistant token over the records (one per row, truncated to max_len)."""
    examples = [e for e in (truncate(encode_chat(tokenizer, messages_of(r)), max_len) for r in records) if e]
    rows = unpacked(examples)
    nll, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            b = collate(rows[i: i + batch_size], pad_id(tokenizer)).to(model.device)
            nll -= float(token_logps(model, b).logps.sum())
            n += b.num_targets
    return nll / max(n, 1)


def evaluate(model_path: str, max_tokens: int = 160, loss_records: list[Any] | None = None,
             prompts: list[V.Prompt] | None = None, train_types_limit: int | None = None) -> dict[str, Any]:
    """All the measures for one model (registered name or folder); greedy decoding through the engine."""
    from temper.engine.llm import LLM
    from temper.engine.sampling_params import SamplingParams

    start = time.perf_counter()
    llm = LLM(model_path, max_model_len=1024)
    prompts = prompts if prompts is not None else V.build_prompts()
    train, heldout = V.split_prompts(prompts)
    if train_types_limit is not None and train_types_limit < len(train):  # a fixed sample: same for every stage
        train = random.Random(0).sample(train, train_types_limit)
    chosen = heldout + train
    messages = [[{"role": "user", "content": p.text}] for p in chosen]
    outs = llm.generate(messages, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    replies = [o.outputs[0] for o in outs]
    texts = [r.text for r in replies]
    gen_s = time.perf_counter() - start
    n_out = sum(len(r.token_ids) for r in replies)
    h, t = len(heldout), len(train)
    held = V.score(heldout, texts[:h])
    tr = V.score(train, texts[h:])
    ended = [ended_properly(r.text, r.finish_reason or "length") for r in replies]
    result = {
        "model": model_path,
        "ended_turn": sum(ended) / len(ended),
        "stopped": sum(r.finish_reason == "stop" for r in replies) / len(replies),
        "heldout_strict": held["prompt_strict"], "heldout_loose": held["prompt_loose"],
        "heldout_instruction_strict": held["instruction_strict"],
        "train_types_strict": tr["prompt_strict"],
        "n_heldout": h, "n_train_types": t,
        "mean_reply_tokens": n_out / len(replies),
        "generation_s": gen_s,
        "per_type_heldout": {k: v["strict"] for k, v in held["per_type"].items()},
    }
    if loss_records:
        model = llm.engine.model
        result["heldout_loss"] = heldout_loss(model, llm.tokenizer, loss_records)
    result["seconds"] = time.perf_counter() - start
    result["samples"] = [{"key": p.key, "prompt": p.text, "reply": r.text, "finish": r.finish_reason}
                         for p, r in zip(chosen, replies)]
    return result


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown table of the headline numbers, one row per stage."""
    lines = ["| stage | ends its turn | held-out strict | held-out loose | held-out instr. | train-type strict "
             "| held-out loss | reply tokens |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        loss = f"{r['heldout_loss']:.3f}" if "heldout_loss" in r else "-"
        lines.append(f"| {r['name']} | {r['ended_turn']:.1%} | {r['heldout_strict']:.1%} | {r['heldout_loose']:.1%} "
                     f"| {r['heldout_instruction_strict']:.1%} | {r['train_types_strict']:.1%} | {loss} "
                     f"| {r['mean_reply_tokens']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from temper.align.recipe import load_data

    p = argparse.ArgumentParser(prog="python -m temper.align.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, help="model to measure (repeatable)")
    p.add_argument("--name", action="append", default=None, help="stage name of each --model")
    p.add_argument("-o", "--output", default="runs/eval", help="folder for <name>.json and table.md")
    p.add_argument("--max-tokens", type=int, default=160)
    p.add_argument("--train-types-limit", type=int, default=None,
                   help="score a fixed sample of this many training-type prompts (default: all 330)")
    p.add_argument("--loss-data", default="sharegpt:3000:60",
                   help="held-out replies for the loss: sharegpt:SKIP:LIMIT (the SFT recipe's eval records)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = args.name or [Path(m).name for m in args.model]
    if len(names) != len(args.model):
        p.error("give one --name per --model")
    _, skip, limit = args.loss_data.split(":")
    records = load_data({"source": "sharegpt", "skip": int(skip), "limit": int(limit), "max_turns": 1,
                         "max_chars": 1200}, "chat")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for model, name in zip(args.model, names):
        r = evaluate(model, args.max_tokens, records, train_types_limit=args.train_types_limit)
        r["name"] = name
        (out / f"{name}.json").write_text(json.dumps(r, indent=1))
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("samples", "per_type_heldout")}))
    order = {name: i for i, name in enumerate(("base", "sft", "dpo", "grpo", "ppo"))}
    previous = sorted((json.loads(f.read_text()) for f in out.glob("*.json")), key=lambda r: order.get(r["name"], 9))
    (out / "table.md").write_text(table(previous) + "\n")
    print(table(previous))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
