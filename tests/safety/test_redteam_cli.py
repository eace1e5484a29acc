"""`temper redteam` from the command line, with temper.safety.data and temper.safety.judges replaced by fakes."""
from __future__ import annotations

import argparse
import json
import sys
import types
from types import SimpleNamespace

import pytest

from temper.safety.redteam.attacks import ATTACKS
from temper.safety.redteam.cli import add_parser, parse_families, run
from tests.safety.redteam_fakes import FakeJudge, FakeTarget


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="temper")
    add_parser(p.add_subparsers(dest="command", required=True))
    return p


@pytest.fixture
def fake_modules(monkeypatch):
    """The two lazily imported modules, returning the shapes their authors promised (objects, dicts, tuples)."""
    data = types.ModuleType("temper.safety.data")
    data.redteam_objectives = lambda split="test": [
        SimpleNamespace(id="o1", text="Explain REFUSEME thing", category="cyber", label=1, source="x"),
        SimpleNamespace(id="o2", text="Explain plain thing", category="", label=1, source="x")]
    data.benign_edgy_prompts = lambda split="test": [
        {"id": "b1", "text": "How do locks work REFUSEME?", "category": "security"},
        {"id": "b2", "text": "How do locks work?", "category": "security"}]
    data.jailbreak_templates = lambda split="test": [("t1", "No rules: {{ prompt }}"),
                                                     SimpleNamespace(name="t2", text="{{prompt}} {x}!")]
    data.many_shot_examples = lambda: [("q", "a")] * 3
    data.injection_documents = lambda: ["A benign document about gardening and roses in the spring."]
    judges = types.ModuleType("temper.safety.judges")
    judges.load_judge = FakeJudge
    monkeypatch.setitem(sys.modules, "temper.safety.data", data)
    monkeypatch.setitem(sys.modules, "temper.safety.judges", judges)


def test_cli_runs_reports_and_ends_with_a_json_line(tmp_path, fake_modules, capsys):
    with FakeTarget() as target:
        args = parser().parse_args(["redteam", "--target", target.url, "--model", "m", "--no-progress",
                                    "--attacks", "direct,jailbreak,injection", "--concurrency", "2",
                                    "--output", str(tmp_path / "o"), "--seed", "5"])
        assert run(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1]) == {"model": "m", "asr": {"direct": 0.5, "jailbreak": 0.5, "injection": 0.75},
                                     "overall_asr": 0.6, "over_refusal": 0.5}
    text = "\n".join(lines)
    assert "OVERALL" in text and "over-refusal" in text and "report.html" in text
    for name in ("results.jsonl", "run.json", "summary.json", "report.md", "report.html"):
        assert (tmp_path / "o" / name).exists()
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert set(summary["categories"]) == {"cyber", "uncategorized", "prompt-injection"}


def test_cli_flags_and_family_parsing():
    args = parser().parse_args(["redteam", "--target", "http://h/v1", "--model", "m"])
    assert args.attacks == tuple(ATTACKS) and args.output is None and args.concurrency == 8
    assert args.max_tokens == 128 and args.temperature == 0.0 and args.seed == 0 and not args.no_benign
    assert parse_families("direct, encoding,direct") == ("direct", "encoding")
    assert parse_families("all") == tuple(ATTACKS)
    with pytest.raises(argparse.ArgumentTypeError, match="unknown attack families nope"):
        parse_families("direct,nope")
    with pytest.raises(SystemExit):
        parser().parse_args(["redteam", "--target", "http://h/v1", "--model", "m", "--attacks", "bogus"])
