"""The `temper` CLI end to end, in a subprocess, with the real packaged models."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest


def temper(*args: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "temper.cli", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def test_models_lists_both_packaged_models():
    out = temper("models", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["smollm2-135m-instruct"]["installed"] and rows["smollm2-135m-instruct"]["license"] == "Apache-2.0"
    assert rows["gemma3-270m"]["architecture"] == "gemma3" and rows["gemma3-270m"]["size_mb"] > 200


def test_default_model_answers_paris():
    out = temper("generate", "What is the capital of France?", "--temperature", "0", "--max-tokens", "24",
                 "--stats")
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    assert "tokens/s" in out.stderr


def test_stop_string_ends_the_answer():
    out = temper("generate", "What is the capital of France?", "--temperature", "0", "--max-tokens", "24",
                 "--stop", "Paris")
    assert out.returncode == 0, out.stderr
    assert "Paris" not in out.stdout and "capital of France" in out.stdout


def test_gemma_base_continues_text():
    prompt = "The three primary colors are"
    out = temper("generate", "-m", "gemma3-270m", prompt, "--temperature", "0", "--max-tokens", "16", "--stats")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip()) > 10
    # a base model ships no chat template, so `--format auto` sends the text as is: <bos> + 5 tokens
    assert "[6 prompt tokens" in out.stderr, out.stderr


def test_chat_reads_stdin_and_keeps_history():
    out = temper("chat", "--temperature", "0", "--max-tokens", "20", "--stats",
                 stdin="My name is Ada.\nWhat is my name?\n")
    assert out.returncode == 0, out.stderr
    turns = re.findall(r"\[(\d+) prompt tokens \((\d+) cached\), (\d+) generated", out.stderr)
    assert len(turns) == 2, out.stderr
    (p1, _, c1), (p2, cached2, _) = [tuple(map(int, t)) for t in turns]
    # the second prompt holds the first exchange: its prompt, the reply, and the new question;
    # the engine's prefix cache serves the start of it
    assert p2 > p1 + c1 and cached2 >= 16, out.stderr


@pytest.mark.parametrize("args, message", [
    (("generate", "-m", "no-such-model", "hi"), "unknown model 'no-such-model'"),
    (("generate", "hi", "--max-tokens", "9000"), "maximum context length is 8192 tokens"),
    (("generate", "hi", "--temperature", "-1"), "temperature must be in"),
])
def test_errors_are_one_line(args, message):
    out = temper(*args)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.parametrize("args, message", [
    (["serve", "-m", "no-such-model"], "no-such-model"),
    (["serve", "--api-key-file", "/nonexistent/keys"], "--api-key-file /nonexistent/keys"),
])
def test_serve_errors_before_binding(args, message):
    out = temper(*args, timeout=60)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("temper serve: error:") and message in lines[-1], out.stderr


def test_serve_exits_when_the_model_cannot_load(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    out = temper("serve", "-m", str(bad), "--port", "0", "--no-embeddings", timeout=60)
    assert out.returncode == 2 and "failed to load" in out.stderr.splitlines()[-1], out.stderr
