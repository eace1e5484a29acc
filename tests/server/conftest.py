"""Live servers on loopback for the tests: uvicorn in a background thread, a real model behind it."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx
import pytest
import torch
import uvicorn

from temper.engine.async_engine import AsyncLLMEngine
from temper.engine.config import EngineConfig
from temper.engine.llm_engine import LLMEngine
from temper.models import ModelConfig, build_model
from temper.models.loader import load
from temper.models.registry import resolve
from temper.server.app import Backend, ServerConfig, create_app


@dataclass
class Live:
    url: str
    app: object
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def engine(self) -> LLMEngine:
        return self.app.state.temper.backend.engine.engine

    def idle_free_blocks(self, timeout: float = 10.0) -> int:
        """Free blocks once no request is left (waits for aborts to land)."""
        deadline = time.monotonic() + timeout
        while self.engine.has_unfinished_requests() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        return self.engine.block_manager.num_free_blocks

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(config: ServerConfig, loader) -> Live:
    app = create_app(config, loader)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, access_log=False, log_config=None,
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not (server.started and server.servers):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    while httpx.get(f"{url}/health").status_code != 200:
        if time.monotonic() > deadline or app.state.temper.load_error:
            raise RuntimeError(f"the test server did not get ready: {app.state.temper.load_error}")
        time.sleep(0.05)
    return Live(url, app, server, thread)


@pytest.fixture(scope="session")
def smollm2_loaded():
    return load(resolve("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def smol_server(smollm2_loaded, embedder):
    """The default model with the embedding model, as `temper serve` runs it."""
    def loader() -> Backend:
        engine = LLMEngine(smollm2_loaded.model, smollm2_loaded.tokenizer, EngineConfig(kv_cache_memory=256 * 2**20,
                                                                                       max_model_len=4096))
        return Backend(AsyncLLMEngine(engine), "smollm2-135m-instruct", {}, embedder)
    live = start_server(ServerConfig(), loader)
    yield live
    live.stop()


def tiny_loader(smollm2_loaded, engine_config: EngineConfig | None = None, max_len: int = 256):
    """A 2-layer random model with SmolLM2's tokenizer: fast enough to run thousands of requests."""
    def loader() -> Backend:
        torch.manual_seed(0)
        config = ModelConfig(arch="llama", vocab_size=smollm2_loaded.config.vocab_size, hidden_size=64,
                             intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                             max_position_embeddings=max_len, tie_word_embeddings=True)
        model = build_model(config).eval()
        model.reset_buffers("cpu")
        engine = LLMEngine(model, smollm2_loaded.tokenizer,
                           engine_config or EngineConfig(kv_cache_memory=8 * 2**20))
        return Backend(AsyncLLMEngine(engine), "tiny", {})
    return loader
