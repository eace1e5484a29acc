"""Verifiable instructions: an IFEval-style suite of instruction types with programmatic checkers.

Design
------
Each instruction type (``Instruction``) has an ``id`` such as ``"case:lowercase"``, a few phrasing templates for the
instruction sentence, a deterministic parameter sampler (driven by a ``random.Random``) and a ``check(reply, **params)``
function whose docstring states exactly what counts. Checkers are forgiving about surrounding whitespace but strict
about the rule itself, so they can serve both as an evaluation metric and as an RL reward without a judge model.

Prompts attach one or two instructions to short, benign base tasks suitable for a tiny model (single turn, replies
well under ~150 words). ``build_prompts`` is fully deterministic for a given seed.

The instruction types are split once, by type, into train types and ``HELDOUT_TYPES``. Each held-out type has a
sibling of similar kind and difficulty in the train split (``case:uppercase`` vs ``case:lowercase``,
``format:numbered_list`` vs ``format:bullets`` ...). RL (GRPO / DPO pair labelling via ``reward``) uses only train
prompts, so accuracy on held-out prompts measures generalization of instruction following rather than memorization
of the rewarded rules. Base tasks may be shared between splits; only instruction types are disjoint, and a combined
prompt never mixes splits.

Scoring follows IFEval: ``follows`` is the strict prompt-level criterion, ``loose_follows`` also accepts the reply with
its first and/or last line removed and/or markdown ``*`` removed (an instruction counts as followed if any variant
passes), and ``score`` reports prompt-level strict/loose accuracy, instruction-level accuracy and a per-type breakdown.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from temper.align.checkers import BASE_TASKS, HELDOUT_TYPES, INSTRUCTIONS, TRAIN_TYPES, Instruction

__all__ = [
    "BASE_TASKS",
    "HELDOUT_TYPES",
    "INSTRUCTIONS",
    "TRAIN_TYPES",
    "Instruction",
    "Prompt",
    "build_prompts",
    "check_prompt",
    "follows",
    "loose_follows",
    "read_prompts",
    "reward",
    "score",
    "split_prompts",
    "write_jsonl",
]

# --------------------------------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Prompt:
    """A user message: a base ``task`` plus one or more verifiable instructions (``params`` aligned with ids)."""

    key: str
    task: str
    instruction_ids: list[str]
    params: list[dict[str, Any]]
    text: str

    @property
    def heldout(self) -> bool:
        """True if all instructions are held-out types (prompts never mix splits)."""
        return all(i in HELDOUT_TYPES for i in self.instruction_ids)


def _make_prompt(key: str, task: str, type_ids: Sequence[str], rng: random.Random) -> Prompt:
    params = [INSTRUCTIONS[t].sample(rng, task) for t in type_ids]
    sentences = [INSTRUCTIONS[t].describe(p, rng) for t, p in zip(type_ids, params)]
    return Prompt(key=key, task=task, instruction_ids=list(type_ids), params=params,
                  text=" ".join([task, *sentences]))


def build_prompts(seed: int = 0, per_type: int = 12) -> list[Prompt]:
    """Deterministic prompt set: ``per_type`` single-instruction prompts per type, then, per split, about
    ``per_type * n_types / 4`` prompts combining two compatible types of that split (never mixing splits)."""
    rng = random.Random(seed)
    prompts: list[Prompt] = []
    for type_id in INSTRUCTIONS:
        if per_type <= len(BASE_TASKS):
            tasks = rng.sample(BASE_TASKS, per_type)
        else:
            tasks = [rng.choice(BASE_TASKS) for _ in range(per_type)]
        for j, task in enumerate(tasks):
            prompts.append(_make_prompt(f"{type_id}/{j:02d}", task, [type_id], rng))
    combo = 0
    for split in (TRAIN_TYPES, HELDOUT_TYPES):
        types = [INSTRUCTIONS[t] for t in INSTRUCTIONS if t in split and INSTRUCTIONS[t].combinable]
        pairs = [(a.id, b.id) for i, a in enumerate(types) for b in types[i + 1:] if a.compatible(b)]
        if not pairs:
            continue
        for _ in range(per_type * sum(1 for t in INSTRUCTIONS if t in split) // 4):
            pair = list(rng.choice(pairs))
            rng.shuffle(pair)
            prompts.append(_make_prompt(f"{'+'.join(pair)}/{combo:03d}", rng.choice(BASE_TASKS), pair, rng))
            combo += 1
    return prompts


def split_prompts(prompts: Iterable[Prompt]) -> tuple[list[Prompt], list[Prompt]]:
    """Partition into (train, heldout) by instruction type; raises ValueError on a prompt mixing the splits."""
    train: list[Prompt] = []
    heldout: list[Prompt] = []
    for p in prompts:
        held = [i in HELDOUT_TYPES for i in p.instruction_ids]
        if all(held):
            heldout.append(p)
        elif not any(held):
            train.append(p)
        else:
            raise ValueError(f"prompt {p.key!r} mixes train and held-out instruction types")
    return train, heldout


# --------------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------------


def check_prompt(prompt: Prompt, reply: str) -> list[bool]:
    """Strict result of each instruction of ``prompt`` on ``reply`` (same order as ``instruction_ids``)."""
    return [INSTRUCTIONS[t].check(reply, **p) for t, p in zip(prompt.instruction_ids, prompt.params)]


def _loose_variants(reply: str) -> list[str]:
    """IFEval loose variants: the reply with first / last / both lines removed, each also with ``*`` removed."""
    lines = reply.split("\n")
    bases = [reply, "\n".join(lines[1:]), "\n".join(lines[:-1]), "\n".join(lines[1:-1])]
    return [v for b in bases for v in (b, b.replace("*", "")) if v.strip()]


def check_prompt_loose(prompt: Prompt, reply: str) -> list[bool]:
    """Loose result of each instruction: followed if any IFEval loose variant of the reply passes its checker."""
    variants = _loose_variants(reply)
    return [any(INSTRUCTIONS[t].check(v, **p) for v in variants)
            for t, p in zip(prompt.instruction_ids, prompt.params)]


def follows(prompt: Prompt, reply: str) -> bool:
    """Strict prompt-level criterion: every instruction is followed by the reply as is."""
    return all(check_prompt(prompt, reply))


def loose_follows(prompt: Prompt, reply: str) -> bool:
    """Loose prompt-level criterion (IFEval): every instruction is followed by at least one loose variant."""
    return all(check_prompt_loose(prompt, reply))


def reward(prompt: Prompt, reply: str) -> float:
    """Fraction of the prompt's instructions strictly followed, in [0, 1] (RL reward / DPO pair labelling)."""
    results = check_prompt(prompt, reply)
    return sum(results) / len(results) if results else 0.0


def score(prompts: Sequence[Prompt], replies: Sequence[str]) -> dict[str, Any]:
    """Aggregate metrics: prompt-level strict/loose accuracy, instruction-level strict/loose accuracy and, per type,
    ``{"n", "strict", "loose"}`` instruction-level accuracy."""
    if len(prompts) != len(replies):
        raise ValueError(f"{len(prompts)} prompts but {len(replies)} replies")
    prompt_strict = prompt_loose = 0
    inst_strict: list[bool] = []
    inst_loose: list[bool] = []
    per_type: dict[str, list[int]] = {}
    for prompt, reply in zip(prompts, replies):
        strict = check_prompt(prompt, reply)
        loose = check_prompt_loose(prompt, reply)
        prompt_strict += all(strict)
        prompt_loose += all(loose)
        inst_strict += strict
        inst_loose += loose
        for type_id, s, lo in zip(prompt.instruction_ids, strict, loose):
            counts = per_type.setdefault(type_id, [0, 0, 0])
            counts[0] += 1
            counts[1] += s
            counts[2] += lo
    n = len(prompts)
    return {
        "n_prompts": n,
        "n_instructions": len(inst_strict),
        "prompt_strict": prompt_strict / n if n else 0.0,
        "prompt_loose": prompt_loose / n if n else 0.0,
        "instruction_strict": sum(inst_strict) / len(inst_strict) if inst_strict else 0.0,
        "instruction_loose": sum(inst_loose) / len(inst_loose) if inst_loose else 0.0,
        "per_type": {t: {"n": c[0], "strict": c[1] / c[0], "loose": c[2] / c[0]} for t, c in sorted(per_type.items())},
    }


# --------------------------------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------------------------------


def write_jsonl(prompts: Iterable[Prompt], path: str | Path) -> None:
    """Write one JSON object per line with key, task, instruction_ids, params and text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")


def read_prompts(path: str | Path) -> list[Prompt]:
    """Read prompts written by ``write_jsonl`` (blank lines ignored)."""
    prompts = []
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                prompts.append(Prompt(key=d["key"], task=d["task"], instruction_ids=list(d["instruction_ids"]),
                                      params=list(d["params"]), text=d["text"]))
    return prompts
