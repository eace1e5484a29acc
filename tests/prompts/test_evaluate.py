"""The strategy comparison harness: data loading, scoring, the interval, and the CLI's render."""
from __future__ import annotations

import argparse
import json

import pytest

from temper.prompts import cli
from temper.prompts.evaluate import Item, evaluate, fewshot_prompt, format_table, load_items, wilson_interval


def test_load_items(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q1", "answer": "48 / 2 = 24\n#### 1,024"}) + "\n\n"
                    + json.dumps({"question": "q2", "answer": 7}) + "\n")
    assert [(i.question, i.answer) for i in load_items(data)] == [("q1", "1024"), ("q2", "7")]
    assert load_items(data)[0].solution == "48 / 2 = 24" and load_items(data)[1].solution == ""
    assert len(load_items(data, limit=1)) == 1
    data.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match="needs `question` and `answer`"):
        load_items(data)


def test_fewshot_prompts_and_the_engine(llm):
    shots = [Item("Tom has 3 apples and buys 2. How many?", "5", "3 + 2 = 5 apples."),
             Item("A box holds 4 pens. How many pens in 2 boxes?", "8", "")]
    assert fewshot_prompt(shots, "What is 6 + 1?", reasoning=True) == (
        "Q: Tom has 3 apples and buys 2. How many?\nA: 3 + 2 = 5 apples. The answer is 5.\n\n"
        "Q: A box holds 4 pens. How many pens in 2 boxes?\nA: The answer is 8.\n\nQ: What is 6 + 1?\nA:")
    assert fewshot_prompt(shots, "What is 6 + 1?", reasoning=False).endswith("Q: What is 6 + 1?\nA: The answer is")
    items = [Item("What is 6 + 1?", "7"), Item("What is 9 - 4?", "5")]
    reports = evaluate(llm, items, ["fewshot", "fewshot-cot"], max_tokens=48, shots=shots)
    assert [r.strategy for r in reports] == ["fewshot", "fewshot-cot"]
    assert reports[0].generated_tokens_per_item <= 16 and reports[1].prompt_tokens_per_item > 40
    with pytest.raises(ValueError, match="need examples"):
        evaluate(llm, items, ["fewshot"])


def test_wilson_interval():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0) and wilson_interval(0, 10)[0] == 0.0


def test_evaluate_direct_with_the_engine(llm, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n"
                            for q, a in [("What is 2 + 2?", 4), ("What is 10 - 3?", 7)]))
    (report,) = evaluate(llm, load_items(data), ["direct"])
    assert report.num_items == 2 and report.accuracy in (0.0, 0.5, 1.0)
    assert report.prompt_tokens_per_item > 0 and 0 < report.generated_tokens_per_item <= 16
    assert "| direct | 2 |" in format_table([report])
    priced = format_table([report], price_per_hour=3.6)  # $0.001 a second
    assert priced.splitlines()[0].endswith("USD/1k q |")
    assert priced.splitlines()[2].endswith(f" {report.seconds_per_item:.4f} |")
    with pytest.raises(ValueError, match=r"unknown strategies \['best'\]"):
        evaluate(llm, load_items(data), ["best"])


def test_cli_render(tmp_path, capsys):
    (tmp_path / "t.yaml").write_text("name: greet\nversion: 1\nvariables: [who]\ntemplate: 'Hello {{ who }}'\n")
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"), lambda p: None)
    args = parser.parse_args(["prompts", "render", str(tmp_path), "--name", "greet", "--var", "who=Ada"])
    assert cli.run(args) == 0 and capsys.readouterr().out == "Hello Ada\n"
    args = parser.parse_args(["prompts", "render", str(tmp_path), "--name", "greet"])
    assert cli.run(args) == 1 and "missing ['who']" in capsys.readouterr().err
