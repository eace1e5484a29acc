"""Recipes: one YAML file per stage, read into a trainer config plus the model and data to train on.

A recipe names the model (registered name, GGUF file or the folder an earlier stage wrote), the training data
(JSONL files or the offline sources of temper.align.data), and any field of the stage's config class, by its
name. `temper align STAGE --config FILE --set key=value` overrides single keys; values are parsed as YAML
scalars or lists (never evaluated as code). Unknown keys are errors: a typo must not silently train with the
default.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from temper.align import data as D

log = logging.getLogger(__name__)

STAGES = ("sft", "rm", "dpo", "ppo", "grpo")
RECIPE_KEYS = {"stage", "model", "train_data", "eval_data", "reward_model", "description"}


class RecipeError(ValueError):
    """A recipe that cannot run, with what to change."""


def config_class(stage: str) -> type:
    if stage == "sft":
        from temper.align.sft import SFTConfig
        return SFTConfig
    if stage == "rm":
        from temper.align.reward import RewardConfig
        return RewardConfig
    if stage == "dpo":
        from temper.align.dpo import DPOConfig
        return DPOConfig
    if stage == "ppo":
        from temper.align.ppo import PPOConfig
        return PPOConfig
    if stage == "grpo":
        from temper.align.grpo import GRPOConfig
        return GRPOConfig
    raise RecipeError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")


def read_recipe(path: str | Path | None, overrides: list[str] = ()) -> dict[str, Any]:
    """The recipe's keys with `key=value` overrides applied (dotted keys reach into mappings: lora.r=8)."""
    recipe: dict[str, Any] = {}
    if path is not None:
        try:
            recipe = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise RecipeError(f"recipe {path} does not exist") from None
        except yaml.YAMLError as e:
            raise RecipeError(f"recipe {path} is not valid YAML: {e}") from None
        if not isinstance(recipe, dict):
            raise RecipeError(f"recipe {path} must be a mapping of settings, got {type(recipe).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--set {item!r}: write key=value")
        target = recipe
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                raise RecipeError(f"--set {item!r}: {p} is not a mapping")
        target[leaf] = yaml.safe_load(value)
    return recipe


def build_config(stage: str, recipe: dict[str, Any]):
    cls = config_class(stage)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(recipe) - fields - RECIPE_KEYS
    if unknown:
        raise RecipeError(f"unknown recipe key(s) for {stage}: {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(fields | RECIPE_KEYS))}")
    try:
        return cls(**{k: v for k, v in recipe.items() if k in fields})
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{stage} settings: {e}") from None


def load_source(spec: Any, kind: str) -> list[Any]:
    """Records from a JSONL path or an offline source: {source: sharegpt|chatterbot|forgelm|forgelm-math|verifiable}.

    Every source takes `skip` and `limit` (applied after its own filters); chat sources also `first_turn` (keep
    only the first exchange) and `unique_prompts` (one record per distinct first user message)."""
    if isinstance(spec, str):
        spec = {"source": "jsonl", "path": spec}
    if not isinstance(spec, dict) or "source" not in spec:
        raise RecipeError(f"a data entry must be a path or a mapping with 'source', got {spec!r}")
    spec = dict(spec)
    source = spec.pop("source")
    skip, limit = int(spec.pop("skip", 0)), spec.pop("limit", None)
    first_turn = bool(spec.pop("first_turn", False)) if source != "sharegpt" else False
    unique = bool(spec.pop("unique_prompts", False))
    if source == "jsonl":
        records = D.read_jsonl(spec.pop("path"), spec.pop("kind", kind), spec.pop("on_error", "raise"))
    elif source == "sharegpt":
        records = D.sharegpt_conversations(limit=None if limit is None else skip + int(limit), **spec)
    elif source == "chatterbot":
        records = D.chatterbot_conversations(**spec)
    elif source == "forgelm":
        records = D.forgelm_examples(**spec)
    elif source == "forgelm-math":
        records = D.forgelm_math_prompts(**spec)
    elif source == "verifiable":
        from temper.align import verifiable as V
        from temper.align.rewards import prompt_record

        split = spec.pop("split", "train")
        if split not in ("train", "heldout"):
            raise RecipeError(f"verifiable split must be train or heldout, got {split!r}")
        train, heldout = V.split_prompts(V.build_prompts(**spec))
        records = [prompt_record(p) for p in (train if split == "train" else heldout)]
    else:
        raise RecipeError(f"unknown data source {source!r}; use a JSONL path or one of sharegpt, chatterbot, "
                          "forgelm, forgelm-math, verifiable")
    records = list(records)
    if first_turn:  # chat records: keep the system message and the first user/assistant exchange
        records = [D.ChatRecord(_first_exchange(r.messages), r.extra) for r in records]
    if unique:  # one record per distinct first user message (chatterbot lists several answers per question)
        seen: set[str] = set()
        records = [r for r in records if not (_first_user(r) in seen or seen.add(_first_user(r)))]
    records = records[skip:]
    return records if limit is None else records[: int(limit)]


def _first_exchange(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    out = []
    for m in messages:
        out.append(m)
        if m["role"] == "assistant":
            break
    return out


def _first_user(record: Any) -> str:
    messages = getattr(record, "messages", None) or getattr(record, "prompt_messages", None) or []
    return next((m["content"].strip().lower() for m in messages if m["role"] == "user"), "")


def load_data(specs: Any, kind: str) -> list[Any]:
    if specs is None:
        return []
    if not isinstance(specs, list):
        specs = [specs]
    out: list[Any] = []
    for spec in specs:
        out += load_source(spec, kind)
    return out


def run(stage: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """Train one stage as the recipe says; returns the trainer's final metrics."""
    from temper.models.loader import load
    from temper.models.registry import resolve

    if stage not in STAGES:
        raise RecipeError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    if recipe.get("stage", stage) != stage:
        raise RecipeError(f"this recipe is for `temper align {recipe['stage']}`, not {stage}")
    config = build_config(stage, recipe)
    if "model" not in recipe:
        raise RecipeError("the recipe names no model: set `model:` (a registered name, .gguf file or folder)")
    kind = {"sft": "chat", "rm": "preference", "dpo": "preference", "ppo": "prompt", "grpo": "prompt"}[stage]
    train = load_data(recipe.get("train_data"), kind)
    evals = load_data(recipe.get("eval_data"), kind)
    if not train:
        raise RecipeError("no training data: set `train_data:` to a JSONL path or an offline source")
    start = time.perf_counter()
    loaded = load(resolve(recipe["model"]))
    log.info("loaded %s in %.1f s; %d train / %d eval records", recipe["model"], time.perf_counter() - start,
             len(train), len(evals))
    model, tok = loaded.model, loaded.tokenizer
    if stage == "sft":
        from temper.align.sft import SFTTrainer
        trainer = SFTTrainer(model, tok, config, train, evals)
    elif stage == "rm":
        from temper.align.reward import RewardTrainer
        trainer = RewardTrainer(model, tok, config, train, evals)
    elif stage == "dpo":
        from temper.align.dpo import DPOTrainer
        trainer = DPOTrainer(model, tok, config, train, evals)
    elif stage == "grpo":
        from temper.align.grpo import GRPOTrainer
        trainer = GRPOTrainer(model, tok, config, train, eval_prompts=evals)
    else:
        from temper.align.ppo import PPOTrainer
        trainer = PPOTrainer(model, tok, config, train, eval_prompts=evals)
    result = trainer.train()
    result["seconds"] = time.perf_counter() - start
    result["output_dir"] = str(config.output_dir)
    return result
