"""Paged attention over a shuffled block pool equals dense attention, for mixed prefill chunks and decodes."""
from __future__ import annotations

import random

import pytest
import torch

from temper.engine.attention.torch_paged import PagedKVCache, StepLayout, TorchPagedContext
from temper.models import ModelConfig, build_model
from tests.helpers import assert_close

TINY = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2,
            head_dim=16, max_position_embeddings=512)
CONFIGS = {
    "llama": ModelConfig(arch="llama", **TINY),
    "gemma3-window": ModelConfig(arch="gemma3_text", hidden_act="gelu_tanh", sliding_window=7,
                                 layer_types=("sliding", "full"), rope_local_theta=1e4, query_pre_attn_scalar=16,
                                 tie_word_embeddings=True, **TINY),
    "softcap": ModelConfig(arch="gemma3_text", hidden_act="gelu_tanh", attn_logit_softcapping=5.0,
                           query_pre_attn_scalar=16, tie_word_embeddings=True, **TINY),
}
BS = 4


def random_model(name: str, seed: int):
    """A tiny model with weights large enough that attention patterns matter."""
    torch.manual_seed(seed)
    model = build_model(CONFIGS[name]).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_paged_matches_dense(name):
    model = random_model(name, seed=0)
    rng = random.Random(0)
    lengths = [23, 5, 17, 40]
    seqs = [torch.randint(0, 101, (n,)).tolist() for n in lengths]
    dense = [model(torch.tensor([s]))[0] for s in seqs]
    free = list(range(64))
    rng.shuffle(free)  # blocks scattered over the pool
    cache = PagedKVCache.allocate(model.config, 64, BS, "cpu", torch.float32)
    tables = [[free.pop() for _ in range(-(-n // BS))] for n in lengths]
    computed = [0] * len(seqs)
    # steps of mixed work: chunks of various sizes, single-token decodes, some sequences idle
    plans = [[7, 5, 0, 16], [1, 0, 9, 3], [15, 0, 8, 1], [0, 0, 0, 20]]
    for plan in plans:
        active = [i for i, n in enumerate(plan) if n]
        layout = StepLayout(query_lens=[plan[i] for i in active],
                            context_lens=[computed[i] + plan[i] for i in active],
                            block_tables=[tables[i] for i in active])
        ids = [t for i in active for t in seqs[i][computed[i]: computed[i] + plan[i]]]
        pos = [p for i in active for p in range(computed[i], computed[i] + plan[i])]
        pos_t = torch.tensor([pos])
        ctx = TorchPagedContext(cache, layout, pos_t[0], model.windows)
        logits = model.logits(model.hidden_states(torch.tensor([ids]), pos_t, ctx=ctx))[0]
        offset = 0
        for i in active:
            n = plan[i]
            assert_close(logits[offset: offset + n], dense[i][computed[i]: computed[i] + n], atol=1e-5,
                         what=f"{name} seq {i} tokens {computed[i]}..{computed[i] + n}")
            offset += n
            computed[i] += n
    assert computed == lengths


def test_copy_blocks():
    config = CONFIGS["llama"]
    cache = PagedKVCache.allocate(config, 4, BS, "cpu", torch.float32)
    for pool in (*cache.k, *cache.v):
        pool.copy_(torch.randn_like(pool))
    before = cache.k[1][:, BS:2 * BS].clone()
    cache.copy_blocks([(1, 3)])
    assert torch.equal(cache.k[1][:, 3 * BS:4 * BS], before)
    assert torch.equal(cache.v[0][:, 3 * BS:], cache.v[0][:, BS:2 * BS])


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_grouped_decode_matches_dense(name):
    """A decode step over 19 sequences of very different lengths (grouped gathers) equals dense attention."""
    model = random_model(name, seed=1)
    lengths = [3, 60, 7, 33, 1, 45, 12, 9, 70, 2, 18, 26, 5, 64, 11, 40, 8, 15, 30]
    seqs = [torch.randint(0, 101, (n + 1,)).tolist() for n in lengths]
    cache = PagedKVCache.allocate(model.config, 512, BS, "cpu", torch.float32)
    free = list(range(512))
    random.Random(1).shuffle(free)
    tables = [[free.pop() for _ in range(-(-(n + 1) // BS))] for n in lengths]
    # prefill each sequence's first n tokens, then decode token n of all of them in one step
    for s, n, t in zip(seqs, lengths, tables):
        layout = StepLayout([n], [n], [t])
        pos = torch.arange(n)[None]
        model.hidden_states(torch.tensor([s[:n]]), pos, ctx=TorchPagedContext(cache, layout, pos[0], model.windows))
    layout = StepLayout([1] * len(seqs), [n + 1 for n in lengths], tables)
    pos = torch.tensor([lengths])
    ctx = TorchPagedContext(cache, layout, pos[0], model.windows)
    assert sum(p.decode for p in ctx.parts[None]) == 3  # 19 rows in groups of 8
    logits = model.logits(model.hidden_states(torch.tensor([[s[n] for s, n in zip(seqs, lengths)]]), pos, ctx=ctx))[0]
    for i, (s, n) in enumerate(zip(seqs, lengths)):
        assert_close(logits[i], model(torch.tensor([s]))[0, n], atol=1e-5, what=f"{name} seq {i} (len {n})")
