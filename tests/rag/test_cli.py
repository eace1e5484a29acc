"""`temper rag` end to end in subprocesses: ingest, list, search, ask (the real default model), eval, remove."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


def temper(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "temper.cli", "rag", *args], capture_output=True, text=True, check=False,
                          timeout=timeout)


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    root = tmp_path_factory.mktemp("kb")
    docs = root / "docs"
    docs.mkdir()
    (docs / "net.md").write_text("# Networking\n\nThe Zorblax 3000 server listens on TCP port 7431 by default.\n")
    (docs / "backup.md").write_text("# Backups\n\nBackups of Zorblax are kept for 14 days.\n")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    store = str(root / "store.db")
    out = temper("ingest", str(docs), "--collection", "kb", "--store", store, "--json")
    assert out.returncode == 0, out.stderr
    return root, docs, store, json.loads(out.stdout)


def test_ingest_reports_files_and_errors(kb):
    _, docs, store, report = kb
    assert report["added"] == 2 and report["chunks"] == 2
    assert [e["path"] for e in report["errors"]] == [str(docs / "broken.pdf")]
    out = temper("ingest", str(docs), "--collection", "kb", "--store", store)
    assert out.returncode == 0 and "2 unchanged" in out.stdout and "1 errors" in out.stdout
    assert "broken.pdf" in out.stderr
    listed = temper("list", "--store", store)
    assert listed.stdout.startswith("kb\t2 documents\t2 chunks")


def test_search_and_filters(kb):
    _, _, store, _ = kb
    out = temper("search", "how long are backups kept", "--collection", "kb", "--store", store, "-k", "1", "--json")
    hits = json.loads(out.stdout)
    assert len(hits) == 1 and "14 days" in hits[0]["text"]
    out = temper("search", "backups", "--collection", "kb", "--store", store, "--filter", "path=net.md", "--json")
    assert {h["metadata"]["path"] for h in json.loads(out.stdout)} == {"net.md"}
    out = temper("search", "x", "--collection", "nope", "--store", store)
    assert out.returncode == 2 and "no collection 'nope'" in out.stderr and "kb" in out.stderr


def test_ask_answers_with_a_source(kb):
    _, _, store, _ = kb
    out = temper("ask", "Which TCP port does the Zorblax server listen on?", "--collection", "kb", "--store", store,
                 "-k", "2", "--max-tokens", "48", "--json")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert "7431" in answer["answer"] and answer["sources"][0]["path"] == "net.md"


def test_eval_on_a_small_qa_set(kb, tmp_path):
    _, docs, store, _ = kb
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(x) for x in [
        {"id": "q1", "question": "What port does Zorblax use?", "answer": "7431", "source": "net.md",
         "evidence": "listens on TCP port 7431 by default", "answerable": True},
        {"id": "q2", "question": "How long are backups retained?", "answer": "14 days", "source": "backup.md",
         "evidence": "Backups of Zorblax are kept for 14 days", "answerable": True}]))
    results = tmp_path / "r.json"
    out = temper("eval", "--collection", "kb", "--store", store, "--qa", str(qa), "--root", str(docs),
                 "-o", str(results))
    assert out.returncode == 0, out.stderr
    r = json.loads(results.read_text())["retrieval"]
    assert r["hybrid"]["recall@1"] == 1.0 and r["dense"]["mrr@10"] == 1.0
    assert r["hybrid"]["strict"]["recall@1"] == 1.0 and r["judged_passages"] == 0
    assert "strict" in out.stdout


def test_remove(kb):
    _, docs, store, _ = kb
    out = temper("remove", "--collection", "kb", "--store", store, "--source", str(docs / "net.md"))
    assert "removed 1 of 1" in out.stdout
    assert temper("list", "--store", store).stdout.startswith("kb\t1 documents")
    temper("remove", "--collection", "kb", "--store", store)
    assert temper("list", "--store", store).stdout == ""
