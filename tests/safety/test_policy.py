"""Policy files: every mistake is an error that names the file, the key and what is allowed."""
from __future__ import annotations

import pytest

from temper.safety.policy import DEFAULT_POLICY, PolicyError, load_policy, parse_policy


def test_default_policy_parses():
    policy = load_policy("default")
    assert [c.check for c in policy.input] == ["harm", "attack", "pii"]
    assert [c.check for c in policy.output] == ["harm", "pii"]
    assert policy.input[0].rule("self_harm").message.startswith("I can't help with that. If you are thinking")
    assert policy.input[0].rule("weapons").action == "block"
    assert policy.input[2].restore and policy.source == str(DEFAULT_POLICY)


@pytest.mark.parametrize("raw, where, says", [
    ({"inputs": []}, "top level", "unknown key(s) ['inputs']"),
    ({"input": {"check": "harm"}}, "input", "must be a list"),
    ({"input": [{"check": "toxicity"}]}, "input[0].check", "one of harm, attack, pii"),
    ({"output": ["attack"]}, "output[0].check", "on output one of harm, pii"),
    ({"input": [{"check": "harm", "action": "redact"}]}, "input[0].action", "redact is for the pii check only"),
    ({"input": [{"check": "harm", "action": "drop"}]}, "input[0].action", "one of block, flag, redact"),
    ({"input": [{"check": "harm", "threshold": 1.5}]}, "input[0].threshold", "a number in (0, 1)"),
    ({"input": [{"check": "harm", "categories": {"gore": "block"}}]}, "input[0].categories.gore",
     "unknown category"),
    ({"input": [{"check": "harm", "categories": {"weapons": "redact"}}]}, "input[0].categories.weapons.action",
     "one of block, flag"),
    ({"input": [{"check": "pii", "types": ["EMAIL", "PASSPORT"]}]}, "input[0].types", "a list out of"),
    ({"output": [{"check": "pii", "restore": True}]}, "output[0].restore", "only pii on input"),
    ({"input": [{"check": "harm", "colour": "red"}]}, "input[0]", "unknown key(s) ['colour']"),
    ({"stream_check_chars": 0}, "stream_check_chars", "an integer in [1, 4096]"),
    ({"stream_first_check_chars": "soon"}, "stream_first_check_chars", "an integer in [1, 4096]"),
    ({"block_message": ""}, "block_message", "non-empty string"),
])
def test_policy_errors_name_the_key(raw, where, says):
    with pytest.raises(PolicyError) as e:
        parse_policy(raw, "my.yaml")
    assert f"guard policy my.yaml: {where}: " in str(e.value)
    assert says in str(e.value)


def test_policy_file_errors(tmp_path):
    with pytest.raises(PolicyError, match="cannot read it"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [check: harm\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(bad)


def test_category_rules_override_the_check():
    policy = parse_policy({"input": [{"check": "harm", "action": "flag", "message": "no",
                                      "categories": {"weapons": {"action": "block", "message": "never"}}}]})
    cp = policy.input[0]
    assert (cp.rule("weapons").action, cp.rule("weapons").message) == ("block", "never")
    assert (cp.rule("fraud").action, cp.rule("fraud").message) == ("flag", "no")


def test_pick_threshold_weighs_hard_negatives_and_keeps_a_margin():
    from temper.safety.classifiers import pick_threshold
    pos, neg = [0.9, 0.8, 0.7], [0.1, 0.2]
    assert pick_threshold(pos, neg) == pytest.approx((0.2 + 0.7) / 2)
    # a hard negative at 0.75 costs 5 false positives: cutting above it (losing one positive) is better
    assert pick_threshold(pos, neg, [0.75]) == pytest.approx((0.75 + 0.8) / 2)


def test_serve_refuses_a_bad_policy_before_binding(tmp_path, capsys):
    from temper.cli import main
    bad = tmp_path / "guard.yaml"
    bad.write_text("input:\n  - check: harm\n    action: redact\n")
    assert main(["serve", "--guard", str(bad), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "temper serve: error: guard policy" in err and "input[0].action" in err


def test_safety_cli_parses():
    from temper.cli import build_parser
    args = build_parser().parse_args(["safety", "check", "hello", "--policy", "default"])
    assert (args.command, args.safety_command, args.text) == ("safety", "check", "hello")
    args = build_parser().parse_args(["redteam", "--target", "http://127.0.0.1:1/v1", "--model", "m"])
    assert args.command == "redteam"


def test_request_threshold_only_on_output_harm():
    assert parse_policy({"output": [{"check": "harm", "request_threshold": 0}]}).output[0].request_threshold == 0.0
    with pytest.raises(PolicyError, match=r"input\[0\]\.request_threshold: only harm on output"):
        parse_policy({"input": [{"check": "harm", "request_threshold": 0.2}]})
    with pytest.raises(PolicyError, match=r"a number in \[0, 1\)"):
        parse_policy({"output": [{"check": "harm", "request_threshold": 1}]})
