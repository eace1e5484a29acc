"""What the paged decode kernels (Triton, C) are checked with: a float64 dense reference and the shapes it runs
on, and tiny models with a word tokenizer for the engine on each backend."""
from __future__ import annotations

from dataclasses import replace

import torch

from temper.engine.llm_engine import LLMEngine
from temper.engine.sampling_params import SamplingParams
from temper.models import build_model
from temper.tokenizer import Tokenizer
from tests.engine.test_paged_attention import CONFIGS


def dense_reference(q, k_pool, v_pool, tables, ctx_lens, block_size, scale, softcap, window):
    """float64 attention of each sequence's last token over its keys, gathered slot by slot."""
    H, B, D = q.shape
    Hkv = k_pool.shape[0]
    out = torch.zeros(H, B, D, dtype=torch.float64)
    for b in range(B):
        n = ctx_lens[b]
        slots = torch.tensor([tables[b][p // block_size] * block_size + p % block_size for p in range(n)])
        k = k_pool[:, slots].double().repeat_interleave(H // Hkv, 0)  # (H, n, D)
        v = v_pool[:, slots].double().repeat_interleave(H // Hkv, 0)
        s = (k @ q[:, b].double()[:, :, None])[..., 0] * scale  # (H, n)
        if softcap is not None:
            s = torch.tanh(s / softcap) * softcap
        if window is not None:
            s[:, : max(0, n - window)] = float("-inf")
        out[:, b] = (s.softmax(-1)[:, :, None] * v).sum(1)
    return out


CASES = {  # heads, kv heads, head_dim, block size, softcap, window
    "gqa3": (9, 3, 64, 8, None, None),
    "mha": (4, 4, 32, 16, None, None),
    "gqa4-window": (8, 2, 64, 8, None, 37),
    "softcap": (4, 1, 128, 32, 20.0, None),
}

def check_paged_decode(paged_decode, case: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
    """Run a `paged_decode(q, k_pool, v_pool, out, rows, block_tables, context_lens, block_size, scale, softcap,
    window)` kernel on one of CASES (blocks scattered over the pool, extra packed tokens that are not decode rows)
    and compare it with `dense_reference`."""
    import random

    H, Hkv, D, bs, softcap, window = CASES[case]
    gen = torch.Generator().manual_seed(sum(map(ord, case)))
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



# the paged-attention test's tiny configs, with a 128-word vocabulary and an 11-token window
MODELS = {"llama": replace(CONFIGS["llama"], vocab_size=128),
          "gemma3-window": replace(CONFIGS["gemma3-window"], vocab_size=128, sliding_window=11)}


def word_tokenizer() -> Tokenizer:
    """A word-level tokenizer over the tiny models' 128 ids ("w0".."w127"; w1 ends a sequence)."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    backend = Backend(models.WordLevel({f"w{i}": i for i in range(128)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return Tokenizer(backend, eos_token="w1", unk_token="w0")


def tiny_model(name: str, device: str):
    torch.manual_seed(0)
    model = build_model(MODELS[name])
    model.reset_buffers()
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    return model.to(device).eval()


def run(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
    ids = [engine.add_request(p, params) for p in prompts]
    done = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    return [list(done[i].outputs[0].token_ids) for i in ids]


def check_engine_matches_loop(name: str, device: str, backend: str) -> LLMEngine:
    """The engine's greedy output on `backend` equals the plain forward loop token for token: 16-token prefill
    chunks mixed with decodes, a pool small enough that some sequences are preempted, then the same prompts again
    with their shared prefix cached. Returns the engine for backend-specific checks."""
    import random

    from temper.engine.config import EngineConfig
    from temper.generation import generate_ids

    model = tiny_model(name, device)
    rng = random.Random(1)
    shared = [rng.randrange(2, 128) for _ in range(40)]  # a common prefix: prefix-cache hits on the second run
    prompts = [shared + [rng.randrange(2, 128) for _ in range(rng.randrange(1, 60))] for _ in range(6)]
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    reference = [list(generate_ids(model, p, params, frozenset())) for p in prompts]
    config = EngineConfig(attention_backend=backend, block_size=8, max_num_batched_tokens=16,
                          kv_cache_memory=40 * 8 * 2 * 2 * 2 * 16 * 4, max_model_len=160)
    engine = LLMEngine(model, word_tokenizer(), config)
    assert engine.runner.backend == backend
    assert run(engine, prompts, params) == reference
    assert run(engine, prompts, params) == reference  # again, with the prefix cached
    stats = engine.stats()
    assert stats.num_preemptions > 0 and stats.prefix_hit_rate > 0
    return engine
