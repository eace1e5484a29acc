"""The guard's YAML policy: which checks run on which stage, their thresholds, and what happens when they fire.

```yaml
block_message: "I can't help with that request."
stream_check_chars: 48            # streamed output is checked each time this many new characters arrived,
stream_first_check_chars: 1       # ... and first as soon as this many exist (the client's time to first token)
input:                            # the messages of a request (user turns; assistant turns with the reply head)
  - check: harm                   # harm classifier (decodes base64/rot13/leetspeak/reversed text first)
    action: block                 # block | flag (log and count only) | redact (pii only)
    categories:                   # per-category overrides of action and message
      self_harm: {action: block, message: "If you are thinking about harming yourself, ..."}
  - check: attack                 # jailbreak and prompt-injection detector
    threshold: 0.99               # default: the threshold chosen when the heads were trained
  - check: pii
    action: redact
    types: [EMAIL, PHONE, CREDIT_CARD, IBAN, US_SSN, API_KEY]
    restore: true                 # put the originals back into the reply the caller receives
documents:                        # retrieved documents (RAG): block drops the document
  - check: attack
output:                           # the model's reply, streamed or not
  - check: harm                   # judged as compliance: only replies to requests the prompt head scored at least
    # request_threshold: 0.05     # this much (default: the trained harm_context; 0 judges every reply)
  - check: pii
    action: redact
```
Unknown keys, checks, actions and categories are errors that name the file and the key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from temper.errors import TemperError
from temper.safety.data import CATEGORIES
from temper.safety.pii import PII_TYPES

STAGES = ("input", "documents", "output")
ACTIONS = ("block", "flag", "redact")
STAGE_CHECKS = {"input": ("harm", "attack", "pii"), "documents": ("attack", "harm", "pii"),
                "output": ("harm", "pii")}
DEFAULT_POLICY = Path(__file__).parent / "policies" / "default.yaml"
DEFAULT_BLOCK_MESSAGE = "I can't help with that request."


class PolicyError(TemperError, ValueError):
    """A policy file that cannot be used; the message names the file, the key and what is allowed."""


@dataclass(frozen=True)
class CategoryRule:
    action: str
    message: str | None = None


@dataclass(frozen=True)
class CheckPolicy:
    """One check on one stage."""

    check: str
    action: str = "block"
    threshold: float | None = None  # None: the trained threshold
    message: str | None = None  # None: the policy's block_message
    categories: dict[str, CategoryRule] = field(default_factory=dict)
    types: tuple[str, ...] | None = None  # pii: which entity types (None: all)
    style: str = "placeholder"  # pii redaction style: placeholder | mask | partial
    restore: bool = False  # pii on input: put the originals back into the reply
    request_threshold: float | None = None  # harm on output: judge replies only to requests scoring this much


    def rule(self, category: str) -> CategoryRule:
        """The action and message for a flagged verdict of this category."""
        return self.categories.get(category, CategoryRule(self.action, self.message))


@dataclass(frozen=True)
class Policy:
    input: tuple[CheckPolicy, ...] = ()
    documents: tuple[CheckPolicy, ...] = ()
    output: tuple[CheckPolicy, ...] = ()
    block_message: str = DEFAULT_BLOCK_MESSAGE
    stream_check_chars: int = 48
    stream_first_check_chars: int = 1
    models: str | None = None  # folder of trained heads (None: the cache)
    source: str = "<dict>"

    def stage(self, name: str) -> tuple[CheckPolicy, ...]:
        return getattr(self, name)


_TOP_KEYS = {"block_message", "stream_check_chars", "stream_first_check_chars", "models", *STAGES}
_CHECK_KEYS = {"check", "action", "threshold", "message", "categories", "types", "style", "restore",
               "request_threshold"}


def _fail(source: str, where: str, problem: str) -> PolicyError:
    return PolicyError(f"guard policy {source}: {where}: {problem}")


def _parse_categories(raw: Any, source: str, where: str) -> dict[str, CategoryRule]:
    if not isinstance(raw, dict):
        raise _fail(source, where, "must be a mapping of category -> {action, message}")
    out = {}
    for name, rule in raw.items():
        if name not in CATEGORIES:
            raise _fail(source, f"{where}.{name}", f"unknown category; one of {', '.join(CATEGORIES)}")
        rule = {"action": rule} if isinstance(rule, str) else rule
        if not isinstance(rule, dict) or set(rule) - {"action", "message"}:
            raise _fail(source, f"{where}.{name}", "must be an action or {action: ..., message: ...}")
        action = rule.get("action", "block")
        if action not in ("block", "flag"):
            raise _fail(source, f"{where}.{name}.action", f"{action!r}: one of block, flag")
        out[name] = CategoryRule(action, rule.get("message"))
    return out


def _parse_check(raw: Any, stage: str, i: int, source: str) -> CheckPolicy:
    where = f"{stage}[{i}]"
    if isinstance(raw, str):
        raw = {"check": raw}
    if not isinstance(raw, dict):
        raise _fail(source, where, "must be a check name or a mapping with a 'check' key")
    unknown = set(raw) - _CHECK_KEYS
    if unknown:
        raise _fail(source, where, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_CHECK_KEYS)}")
    check = raw.get("check")
    if check not in STAGE_CHECKS[stage]:
        raise _fail(source, f"{where}.check", f"{check!r}: on {stage} one of {', '.join(STAGE_CHECKS[stage])}")
    action = raw.get("action", "redact" if check == "pii" else "block")
    if action not in ACTIONS:
        raise _fail(source, f"{where}.action", f"{action!r}: one of {', '.join(ACTIONS)}")
    if action == "redact" and check != "pii":
        raise _fail(source, f"{where}.action", f"redact is for the pii check only; {check} can block or flag")
    threshold = raw.get("threshold")
    if threshold is not None and (not isinstance(threshold, (int, float)) or not 0 < threshold < 1):
        raise _fail(source, f"{where}.threshold", f"{threshold!r}: a number in (0, 1)")
    types = raw.get("types")
    if types is not None:
        if check != "pii":
            raise _fail(source, f"{where}.types", "only the pii check takes types")
        if not isinstance(types, list) or not set(types) <= set(PII_TYPES):
            raise _fail(source, f"{where}.types", f"{types!r}: a list out of {', '.join(PII_TYPES)}")
        types = tuple(types)
    style = raw.get("style", "placeholder")
    if style not in ("placeholder", "mask", "partial"):
        raise _fail(source, f"{where}.style", f"{style!r}: one of placeholder, mask, partial")
    restore = raw.get("restore", False)
    if restore and (check != "pii" or stage != "input" or style != "placeholder"):
        raise _fail(source, f"{where}.restore", "only pii on input with style placeholder can restore")
    gate = raw.get("request_threshold")
    if gate is not None and (check != "harm" or stage != "output"):
        raise _fail(source, f"{where}.request_threshold", "only harm on output takes a request_threshold")
    if gate is not None and (not isinstance(gate, (int, float)) or not 0 <= gate < 1):
        raise _fail(source, f"{where}.request_threshold", f"{gate!r}: a number in [0, 1) (0: judge every reply)")
    message = raw.get("message")
    if message is not None and not isinstance(message, str):
        raise _fail(source, f"{where}.message", "must be a string")
    categories = _parse_categories(raw.get("categories", {}), source, f"{where}.categories")
    return CheckPolicy(check, action, None if threshold is None else float(threshold), message, categories, types,
                       style, bool(restore), None if gate is None else float(gate))


def parse_policy(raw: Any, source: str = "<dict>") -> Policy:
    """A Policy from the mapping a YAML file holds; PolicyError names what is wrong."""
    if not isinstance(raw, dict):
        raise _fail(source, "top level", "must be a mapping with input/documents/output lists")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise _fail(source, "top level", f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    stages = {}
    for stage in STAGES:
        items = raw.get(stage) or []
        if not isinstance(items, list):
            raise _fail(source, stage, "must be a list of checks")
        stages[stage] = tuple(_parse_check(item, stage, i, source) for i, item in enumerate(items))
    message = raw.get("block_message", DEFAULT_BLOCK_MESSAGE)
    if not isinstance(message, str) or not message.strip():
        raise _fail(source, "block_message", "must be a non-empty string")
    every = raw.get("stream_check_chars", 48)
    if not isinstance(every, int) or not 1 <= every <= 4096:
        raise _fail(source, "stream_check_chars", f"{every!r}: an integer in [1, 4096]")
    first = raw.get("stream_first_check_chars", 1)
    if not isinstance(first, int) or isinstance(first, bool) or not 1 <= first <= 4096:
        raise _fail(source, "stream_first_check_chars", f"{first!r}: an integer in [1, 4096]")
    models = raw.get("models")
    return Policy(**stages, block_message=message, stream_check_chars=every, stream_first_check_chars=first,
                  models=None if models is None else str(models), source=source)


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read a policy file; "default" names the packaged policies/default.yaml."""
    file = DEFAULT_POLICY if str(path) == "default" else Path(path)
    try:
        text = file.read_text()
    except OSError as e:
        raise PolicyError(f"guard policy {file}: cannot read it ({e.strerror}); pass a YAML file or 'default'") \
            from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PolicyError(f"guard policy {file}: not valid YAML: {e}") from e
    return parse_policy(raw, str(file))
