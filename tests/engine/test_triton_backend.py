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
from tests.engine.paged_reference import CASES, MODELS, dense_reference, run, tiny_model, word_tokenizer


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("device,dtype", [
    pytest.param("cpu", torch.float32, marks=DEVICES[0].marks),
    pytest.param("cuda", torch.float32, marks=pytest.mark.gpu),
    pytest.param("cuda", torch.bfloat16, marks=pytest.mark.gpu),
    pytest.param("cuda", torch.float16, marks=pytest.mark.gpu),
])
@torch.no_grad()
def test_paged_decode_matches_dense(case, device, dtype):
    H, Hkv, D, bs, softcap, window = CASES[case]
    gen = torch.Generator().manual_seed(hash(case) & 0xFFFF)
    lengths = [1, 7, bs, bs + 1, 100, 257]
    num_blocks = sum(-(-n // bs) for n in lengths) + 5
    free = list(range(num_blocks))
    random.Random(0).shuffle(free)  # blocks scattered over the pool
    tables = [[free.pop() for _ in range(-(-n // bs))] for n in lengths]
    k_pool = torch.randn(Hkv, num_blocks * bs, D, generator=gen)
    v_pool = torch.randn(Hkv, num_blocks * bs, D, generator=gen)
    q = torch.randn(H, len(lengths) + 3, D, generator=gen)  # extra packed tokens that are not decode rows
    rows = [2, 0, 5, 1, 8, 4]
    scale = D ** -0.5
    expected = dense_reference(q[:, rows], k_pool, v_pool, tables, lengths, bs, scale, softcap, window)

    width = max(map(len, tables))
    block_tables = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32)
    out = torch.full_like(q, float("nan"), dtype=dtype, device=device)  # poisoned: every decode row must be written
    paged_decode(q.to(device, dtype), k_pool.to(device, dtype), v_pool.to(device, dtype), out,
                 torch.tensor(rows, dtype=torch.int32, device=device), block_tables.to(device),
                 torch.tensor(lengths, dtype=torch.int32, device=device), bs, scale, softcap, window)
    got = out[:, rows].double().cpu()
    assert not got.isnan().any()
    error = ((got - expected).norm() / expected.norm()).item()
    assert error < (1e-5 if dtype == torch.float32 else 1e-2), f"relative error {error:.2e}"
    others = [i for i in range(q.shape[1]) if i not in rows]
    assert out[:, others].isnan().all(), "the kernel wrote rows that are not decode rows"


# ---------------------------------------------------------------------------------------------- the engine
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
