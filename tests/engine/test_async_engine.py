"""The async engine: concurrent streams, client aborts, request errors, and the same tokens as the sync one."""
from __future__ import annotations

import asyncio

import pytest

from temper.engine.async_engine import AsyncLLMEngine
from temper.engine.config import EngineConfig
from temper.engine.llm_engine import LLMEngine
from temper.engine.sampling_params import SamplingParams
from temper.errors import ContextLengthExceededError
from temper.models.loader import load
from temper.models.registry import resolve


@pytest.fixture(scope="module")
def engine():
    m = load(resolve("smollm2-135m-instruct"))
    e = AsyncLLMEngine(LLMEngine(m.model, m.tokenizer, EngineConfig(kv_cache_memory=64 << 20, max_model_len=512)))
    yield e
    e.shutdown()


def chat(engine, text: str) -> list[int]:
    return engine.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True)


async def collect(engine, ids, params):
    outs = [o async for o in engine.generate(ids, params)]
    return outs


def test_concurrent_streams(engine):
    params = SamplingParams(temperature=0.0, max_tokens=16)
    prompts = [chat(engine, q) for q in ("What is the capital of France?", "Name a color.", "Count to five.")]

    async def main():
        return await asyncio.gather(*(collect(engine, p, params) for p in prompts))

    results = asyncio.run(main())
    for outs in results:
        assert outs[-1].finished and all(not o.finished for o in outs[:-1])
        texts = [o.outputs[0].text for o in outs]
        assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # text only grows
    assert "Paris" in results[0][-1].outputs[0].text
    # the same greedy tokens one at a time
    alone = asyncio.run(collect(engine, prompts[1], params))
    assert alone[-1].outputs[0].token_ids == results[1][-1].outputs[0].token_ids


def test_client_leaving_aborts(engine):
    bm = engine.engine.block_manager

    async def main():
        async for out in engine.generate(chat(engine, "Tell me a long story."), SamplingParams(max_tokens=200)):
            if len(out.outputs[0].token_ids) >= 3:
                break  # the client disconnects
        for _ in range(50):
            await asyncio.sleep(0.05)
            if not engine.engine.has_unfinished_requests():
                return True
        return False

    assert asyncio.run(main())
    assert not engine.engine.scheduler.running and bm.num_free_blocks == bm.num_blocks


def test_request_error_reaches_the_caller(engine):
    async def main():
        return await collect(engine, list(range(10, 400)), SamplingParams(max_tokens=200))

    with pytest.raises(ContextLengthExceededError):
        asyncio.run(main())
