"""The routing benchmark's task: requests the gateway sends to either back end, and their automatic scores.

    from routing_task import load_items, score
    items = load_items(500, seed=0)          # each: id, request (an OpenAI body), router_text, and what scores it
    score(items[0], reply_text)              # 1.0 correct, 0.0 wrong

Two tasks are defined (`TASKS`); `DEFAULT_TASK` is the one the routing measurements use.

- ``tomi``: ToMi (Le et al., 2019), from OpenAI evals' registry (`theory_of_mind/tomi/test.jsonl`, 5,993 stories):
  short bAbI-style stories of people moving objects between containers, then one of four questions (where was
  X at the beginning, where is X really, where will A look for X, where does A think that B searches for X).
  The answer is one word from the story, so scoring is exact and the models can't win by a constant answer.
  Sent as a /v1/completions request: four worked examples (one per question type, taken out of the item pool)
  then the story, greedy, at most 6 tokens, stopped at the newline.
- ``verifiable``: temper's IFEval-style suite (`temper.align.verifiable`): a short task plus one or two
  programmatically checkable instructions, sent as a /v1/chat/completions request (greedy, 128 tokens) and
  scored by IFEval's strict prompt-level criterion (`follows`).

Why this task and pairing (2-core AMD EPYC VM, torch 2.13 CPU, 2026-11-28). Candidates, greedy accuracy on the
same 100 prompts per task (few-shot completion prompts; the verifiable set as chat):

| task (n=100) | SmolLM2 fp32 | SmolLM2 int4 RTN | SmolLM2 int4 GPTQ | Gemma-3-270M | Gemma int4 RTN | Gemma int4 GPTQ |
|---|---|---|---|---|---|---|
| ToMi | 56% | 13% | 53% | 43% | 11% | 37% |
| verifiable (strict) | 27% | 19% | | | | |
| GSM8K (4-shot, n=40) | 2.5% | | | 0% | | |

GSM8K is near zero for both models: nothing to route. Every evals registry task tried with a fixed label set
(food yes/no, CREPE, which-is-heavier, causal light on/off, QuaRTz, SocialIQa) got one constant label from at least
one model, and the open-answer ones (integer sequences, logical counting, dates, resistor codes, Hi-ToM) were at or
near zero for both; country areas (Gemma 93% vs SmolLM2 57%) has only 99 items. On ToMi the base Gemma is *worse*
than SmolLM2-Instruct, which is also the faster model, so Gemma can't be the strong back end; GPTQ int4 comes within
3 points of fp32 (no gap to route on). So: cheap = SmolLM2-135M-Instruct with temper's round-to-nearest int4 at load
(`quantization="int4"`: group 128, 64 on the 576-wide inputs, int8 head), strong = the same model in fp32 (itself
the published Q4_1 weights dequantized), on ToMi.

Final run (`benchmarks/routing_offline.py`, 1,000 ToMi items, seed 0; Wilson 95% intervals): cheap 12.1%
[10.2, 14.3], strong 49.7% [46.6, 52.8]; both wrong on 475, only strong right on 404, only cheap on 28, both on 93.
Throughput (benchmarks/batched.py's measurement, median of 3 interleaved runs): decode 21.9 vs 11.5 tok/s at batch
1 and 86.5 vs 58.4 at batch 16 (cheap vs strong), prefill 405 vs 433 tok/s at batch 16: int4 speeds up decode only.
Priced as the gateway prices self-hosted back ends (same machine, same price per hour: per token = per_hour / 3600 /
measured tok/s), a cheap request costs 0.69x a strong one when completion tokens are billed at the batch-16 decode
rate, 0.53x at the batch-1 rate, and 0.97x when the computed prompt tokens are billed too (a ToMi request leaves
~51 prompt tokens to compute after the prefix cache and ~2.5 answer tokens; the cheap back end's 1,000 greedy replies
took 258 s against the strong one's 174 s). The verifiable set (465 prompts) has long replies, where int4 is
cheaper (0.44x at batch 16, its replies are also shorter), but the gap there is 21.9% vs 24.5%: not significant.
"""
from __future__ import annotations

import importlib.util
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TASK = "tomi"
TOMI_PATH = "registry/data/theory_of_mind/tomi/test.jsonl"  # inside the installed `evals` package
TOMI_INSTRUCTION = "Answer each question about the story with one word.\n\n"
TOMI_KINDS = ("beginning", "really", "look", "think")  # the four question types, as the question words tell them
_FILLER = {"the", "a", "an", "in", "inside", "into", "at", "on", "to", "it", "is"}


@dataclass(frozen=True)
class Task:
    """How to build `n` items with `seed` and how to score a reply to one."""

    load: Callable[[int, int], list[dict]]
    score: Callable[[dict, str], float]


# ---- ToMi -----------------------------------------------------------------------------------------------------------

def tomi_records() -> list[dict]:
    """The evals registry's ToMi test set: [{'story', 'question', 'answer', 'kind', 'index'}] in file order."""
    spec = importlib.util.find_spec("evals")
    if spec is None:
        raise SystemExit("OpenAI evals is not installed: pip install --no-deps evals==3.0.1.post1")
    path = Path(next(iter(spec.submodule_search_locations))) / TOMI_PATH
    records = []
    for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        row = json.loads(line)
        story, question = row["input"][-1]["content"].rsplit(". ", 1)
        records.append({"story": story + ".", "question": question, "answer": row["ideal"],
                        "kind": tomi_kind(question), "index": index})
    return records


def tomi_kind(question: str) -> str:
    """Which of the four ToMi questions this is (some stories put a distractor sentence before it)."""
    last = question.rsplit(". ", 1)[-1]
    for kind in TOMI_KINDS:
        if kind in last:
            return kind
    raise ValueError(f"not a ToMi question: {question!r}")


def _tomi_block(record: dict) -> str:
    return f"Story: {record['story']}\nQuestion: {record['question']}\nAnswer:"


def load_tomi(n: int, seed: int) -> list[dict]:
    """n ToMi items in a seeded order; the four worked examples (one per kind) come first in that order and are
    never items. The prompt is identical for every back end."""
    records = tomi_records()
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    shots: dict[str, int] = {}
    for i in order:
        shots.setdefault(records[i]["kind"], i)
        if len(shots) == len(TOMI_KINDS):
            break
    prefix = TOMI_INSTRUCTION + "".join(f"{_tomi_block(records[shots[k]])} {records[shots[k]]['answer']}\n\n"
                                        for k in TOMI_KINDS)
    pool = [records[i] for i in order if i not in shots.values()]
    if n > len(pool):
        raise ValueError(f"ToMi has {len(pool)} items besides the examples, asked for {n}")
    return [{"id": f"tomi-{r['index']}", "task": "tomi", "kind": r["kind"], "answer": r["answer"],
             "request": {"prompt": prefix + _tomi_block(r), "max_tokens": 6, "stop": ["\n"], "temperature": 0},
             "router_text": f"{r['story']} {r['question']}"} for r in pool[:n]]


def tomi_answer(reply: str) -> str:
    """The answer word of a reply: lowercased, underscores as spaces, leading filler words ('in the') dropped."""
    words = re.sub(r"[^a-z0-9 ]+", " ", reply.lower().replace("_", " ")).split()
    while words and words[0] in _FILLER:
        words = words[1:]
    return " ".join(words)


def score_tomi(item: dict, reply: str) -> float:
    """1.0 if the reply's answer starts with the gold location (a whole-word match: 'pantry.' and 'the dining
    room' count, 'boxes' does not)."""
    gold, answer = tomi_answer(item["answer"]), tomi_answer(reply)
    return float(bool(gold) and (answer == gold or answer.startswith(gold + " ")))


# ---- verifiable instructions ----------------------------------------------------------------------------------------

def load_verifiable(n: int, seed: int) -> list[dict]:
    """n verifiable-instruction prompts (all types, single and combined), in a seeded order."""
    from temper.align.verifiable import build_prompts

    per_type = 12
    prompts = build_prompts(seed=0, per_type=per_type)
    while len(prompts) < n:
        per_type += 4
        prompts = build_prompts(seed=0, per_type=per_type)
    random.Random(seed).shuffle(prompts)
    return [{"id": f"verifiable-{p.key}", "task": "verifiable", "kind": "+".join(p.instruction_ids),
             "instruction_ids": p.instruction_ids, "params": p.params,
             "request": {"messages": [{"role": "user", "content": p.text}], "max_tokens": 128, "temperature": 0},
             "router_text": p.text} for p in prompts[:n]]


def score_verifiable(item: dict, reply: str) -> float:
    """IFEval's strict prompt-level criterion: every instruction followed by the reply as it is."""
    from temper.align.verifiable import Prompt, follows

    prompt = Prompt(key=item["id"], task="", instruction_ids=item["instruction_ids"], params=item["params"], text="")
    return float(follows(prompt, reply))


TASKS: dict[str, Task] = {"tomi": Task(load_tomi, score_tomi), "verifiable": Task(load_verifiable, score_verifiable)}


def load_items(n: int, seed: int = 0, task: str = DEFAULT_TASK) -> list[dict]:
    """n items of a task. Each has `id`, `task`, `kind` (question or instruction type), `request` (the body for
    /v1/completions if it has `prompt`, else /v1/chat/completions), `router_text` (the item's own text, without
    the shared worked examples, for a router to embed) and the fields `score` needs.

    NOTE: embed `router_text`, not the whole ToMi prompt: MiniLM reads the first 256 tokens, which are the worked
    examples that every item shares, so the embedding of the whole prompt is the same for every item."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (tasks: {', '.join(TASKS)})")
    return TASKS[task].load(n, seed)


def score(item: dict, reply_text: str) -> float:
    """1.0 if the reply is correct for the item, else 0.0."""
    return TASKS[item["task"]].score(item, reply_text)


def answer_key(item: dict, reply_text: str) -> str:
    """What two replies must share to count as the same answer (self-consistency voting): ToMi's answer word;
    for free text, the normalized reply."""
    if item["task"] == "tomi":
        return tomi_answer(reply_text)
    return " ".join(re.sub(r"[^\w\s]", " ", reply_text.lower()).split())
