"""The Triton decode kernel and the engine on it.

Paged decode attention equals a float64 dense reference (grouped queries, sliding windows, soft-capping, blocks
scattered over the pool); the engine's greedy output on the Triton backend equals the plain forward loop token
for token, through mixed prefill/decode steps, prefix hits and preemption, and on CUDA through captured graphs.
On the CPU the kernel runs under Triton's interpreter (skipped where triton is not installed); `-m gpu` runs it
compiled on CUDA.
"""
from __future__ import annotations

import random

import pytest
import torch

from tests.triton_support import CUDA, DEVICES, interpreter_scalars  # noqa: F401  (sets TRITON_INTERPRET first)

triton = pytest.importorskip("triton", reason="the Triton backend needs the triton package (pip install triton)")

from temper.engine.attention.triton_kernels import paged_decode
from temper.engine.config import EngineConfig
from temper.engine.llm_engine import LLMEngine
from temper.engine.sampling_params import SamplingParams
from temper.generation import generate_ids
from tests.engine.paged_reference import CASES, MODELS, check_paged_decode, run, tiny_model, word_tokenizer


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("device,dtype", [
    pytest.param("cpu", torch.float32, marks=DEVICES[0].marks),
    pytest.param("cuda", torch.float32, marks=pytest.mark.gpu),
    pytest.param("cuda", torch.bfloat16, marks=pytest.mark.gpu),
    pytest.param("cuda", torch.float16, marks=pytest.mark.gpu),
])
@torch.no_grad()
def test_paged_decode_matches_dense(case, device, dtype):
    check_paged_decode(paged_decode, case, device, dtype)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("device", DEVICES)
@torch.no_grad()
def test_engine_on_triton_matches_loop(name, device):
    model = tiny_model(name, device)
    tok = word_tokenizer()
    rng = random.Random(1)
    shared = [rng.randrange(2, 128) for _ in range(40)]  # a common prefix: prefix-cache hits on the second run
    prompts = [shared + [rng.randrange(2, 128) for _ in range(rng.randrange(1, 60))] for _ in range(6)]
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    reference = [list(generate_ids(model, p, params, frozenset())) for p in prompts]
    # 16-token chunks mixed with decodes; a pool small enough that some sequences are preempted
    config = EngineConfig(attention_backend="triton", block_size=8, max_num_batched_tokens=16,
                          kv_cache_memory=40 * 8 * 2 * 2 * 2 * 16 * 4, max_model_len=160)
    engine = LLMEngine(model, tok, config)
    assert run(engine, prompts, params) == reference
    assert run(engine, prompts, params) == reference  # again, with the prefix cached
    stats = engine.stats()
    assert stats.num_preemptions > 0 and stats.prefix_hit_rate > 0
    if device == "cuda":
        assert engine.runner.graph_replays > 0, "no decode step ran through a captured CUDA graph"
