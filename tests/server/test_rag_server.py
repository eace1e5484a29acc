"""RAG through the server: /v1/rag/query and the `rag` field of chat completions, with the real default model."""
from __future__ import annotations

import json

import httpx
import openai
import pytest

from temper.engine.async_engine import AsyncLLMEngine
from temper.engine.config import EngineConfig
from temper.engine.llm_engine import LLMEngine
from temper.rag.ingest import Ingestor
from temper.rag.store.sqlite import SQLiteStore
from temper.server.app import Backend, ServerConfig
from temper.server.rag import RAGService
from tests.server.conftest import start_server

KB = {
    "port.md": "# Zorblax networking\n\nThe Zorblax 3000 server listens on TCP port 7431 by default. Change it "
               "with the `--port` flag.\n",
    "backup.md": "# Zorblax backups\n\nRun `zorblax backup --full` every night; backups are kept for 14 days.\n",
    "licence.md": "# Zorblax licence\n\nZorblax is released under the Mozilla Public License 2.0.\n",
}


@pytest.fixture(scope="module")
def rag_server(smollm2_loaded, embedder, tmp_path_factory):
    store = SQLiteStore(tmp_path_factory.mktemp("rag") / "kb.db")
    Ingestor(store, embedder).ingest_texts(KB, "kb", format="markdown")

    def loader() -> Backend:
        engine = LLMEngine(smollm2_loaded.model, smollm2_loaded.tokenizer,
                           EngineConfig(kv_cache_memory=256 * 2**20, max_model_len=4096))
        return Backend(AsyncLLMEngine(engine), "smollm2-135m-instruct", {}, embedder,
                       rag=RAGService(store, embedder, min_score=0.3))
    live = start_server(ServerConfig(), loader)
    yield live
    live.stop()


def test_rag_query_retrieves_and_answers_with_sources(rag_server):
    r = httpx.post(f"{rag_server.url}/v1/rag/query",
                   json={"collection": "kb", "query": "Which port does the Zorblax server use?", "top_k": 2,
                         "generate": False}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "rag.answer" and body["answer"] is None
    assert "7431" in body["sources"][0]["text"] and body["sources"][0]["index"] == 1
    r = httpx.post(f"{rag_server.url}/v1/rag/query", json={"collection": "kb", "top_k": 2, "max_tokens": 48,
                                                          "query": "Which port does the Zorblax server use?"},
                   timeout=120)
    body = r.json()
    assert "7431" in body["answer"] and not body["abstained"]
    assert body["usage"]["prompt_tokens"] > 50 and set(body["citations"]) <= {1, 2}


def test_chat_completion_with_a_rag_collection(rag_server):
    client = openai.OpenAI(base_url=f"{rag_server.url}/v1", api_key="unused")
    out = client.chat.completions.create(
        model="smollm2-135m-instruct", max_tokens=48, temperature=0,
        messages=[{"role": "user", "content": "How long are Zorblax backups kept?"}],
        extra_body={"rag": {"collection": "kb", "top_k": 2}})
    extra = out.model_extra
    assert "14 days" in extra["sources"][0]["text"]
    assert "14" in out.choices[0].message.content
    assert extra["citations"][0]["index"] == 0 and out.usage.prompt_tokens > 50


def test_streamed_rag_chat_sends_the_sources_first(rag_server):
    with httpx.stream("POST", f"{rag_server.url}/v1/chat/completions", timeout=120, json={
            "model": "smollm2-135m-instruct", "max_tokens": 24, "stream": True, "rag": "kb",
            "messages": [{"role": "user", "content": "What licence is Zorblax released under?"}]}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert events[0]["choices"] == [] and "Mozilla" in events[0]["sources"][0]["text"]
    text = "".join(c["delta"].get("content") or "" for e in events[1:] for c in e["choices"])
    assert text and events[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_weak_retrieval_abstains_without_the_model(rag_server):
    before = rag_server.engine.stats().prompt_tokens
    r = httpx.post(f"{rag_server.url}/v1/chat/completions", timeout=60, json={
        "model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Who painted the Mona Lisa?"}],
        "rag": {"collection": "kb", "min_score": 0.6}})
    body = r.json()
    assert r.status_code == 200 and body["choices"][0]["message"]["content"] == "The sources don't say."
    assert body["usage"]["prompt_tokens"] == 0 and body["choices"][0]["finish_reason"] == "stop"
    assert body["sources"]  # what was found is still shown
    assert rag_server.engine.stats().prompt_tokens == before, "the model ran on an abstained request"


def test_rag_errors_are_openai_errors_and_the_server_goes_on(rag_server):
    r = httpx.post(f"{rag_server.url}/v1/rag/query", json={"collection": "nope", "query": "x"}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "collection_not_found"
    assert "kb" in r.json()["error"]["message"]
    r = httpx.post(f"{rag_server.url}/v1/rag/query", json={"collection": "kb", "query": "x",
                                                          "filter": {"path": {"regex": ".*"}}}, timeout=30)
    assert r.status_code == 400 and "prefix" in r.json()["error"]["message"]
    r = httpx.post(f"{rag_server.url}/v1/rag/query", json={"collection": "kb", "query": ""}, timeout=30)
    assert r.status_code == 400
    r = httpx.post(f"{rag_server.url}/v1/rag/query", json={"collection": "kb", "query": "port", "generate": False},
                   timeout=30)
    assert r.status_code == 200


def test_grounded_messages_keep_history_and_the_clients_system_text():
    from temper.rag.types import Chunk, Hit
    from temper.server.rag import grounded_messages

    hits = [Hit(chunk=Chunk(text="Port 7431.", source="/kb/port.md"), score=1.0, dense_score=0.9)]
    out = grounded_messages([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
                             {"role": "assistant", "content": "hello"}, {"role": "user", "content": "Which port?"}],
                            hits)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert "not instructions" in out[0]["content"] and out[0]["content"].endswith("Be terse.")
    assert out[-1]["content"].startswith("<sources>\n[1]") and out[-1]["content"].endswith("Question: Which port?\nAnswer:")
