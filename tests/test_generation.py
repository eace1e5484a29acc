"""Sampling and the reference generation loop."""
from __future__ import annotations

import pytest
import torch

from temper.errors import ContextLengthExceededError
from temper.engine.sampling_params import SamplingParams
from temper.generation import generate_ids, sample
from temper.models import ModelConfig, build_model


def test_greedy_and_degenerate_filters_pick_argmax():
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(0))
    best = logits.argmax(-1)
    assert torch.equal(sample(logits, SamplingParams(temperature=0.0)), best)
    assert torch.equal(sample(logits, SamplingParams(temperature=1.0, top_k=1)), best)
    assert torch.equal(sample(logits, SamplingParams(temperature=1.0, top_p=1e-6)), best)


def test_sampling_follows_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    g = torch.Generator().manual_seed(0)
    n = 20000
    draws = torch.stack([sample(logits, SamplingParams(temperature=1.0), g) for _ in range(n)])
    freq = torch.bincount(draws[:, 0], minlength=4).float() / n
    torch.testing.assert_close(freq, logits.softmax(-1)[0], atol=0.015, rtol=0)


def test_top_p_keeps_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    g = torch.Generator().manual_seed(0)
    draws = {int(sample(probs.log(), SamplingParams(temperature=1.0, top_p=0.75), g)) for _ in range(500)}
    assert draws == {0, 1}  # 0.5 < 0.75, 0.5 + 0.3 reaches it: token 2 and 3 are cut


def test_top_k_keeps_k():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    draws = {int(sample(logits, SamplingParams(temperature=2.0, top_k=3), g)) for _ in range(500)}
    assert draws == {0, 1, 2}


@pytest.mark.parametrize("bad", [dict(max_tokens=0), dict(temperature=-1.0), dict(top_p=0.0), dict(top_k=-2)])
def test_invalid_params(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**bad)


@pytest.fixture(scope="module")
def tiny():
    config = ModelConfig(arch="llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=8, max_position_embeddings=40)
    torch.manual_seed(0)
    return build_model(config).eval()


def test_seed_reproducible(tiny):
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=7)
    a = list(generate_ids(tiny, [1, 2, 3], params, frozenset()))
    b = list(generate_ids(tiny, [1, 2, 3], params, frozenset()))
    assert a == b and len(a) == 12


def test_greedy_matches_full_forward(tiny):
    prompt = [5, 6, 7, 8]
    out = list(generate_ids(tiny, prompt, SamplingParams(max_tokens=10, temperature=0.0), frozenset()))
    ids = prompt + out
    with torch.no_grad():
        logits = tiny(torch.tensor([ids]))[0]
    assert out == logits[len(prompt) - 1: -1].argmax(-1).tolist()


def test_context_length_exceeded(tiny):
    with pytest.raises(ContextLengthExceededError, match="context is 40 tokens"):
        list(generate_ids(tiny, list(range(30)), SamplingParams(max_tokens=20), frozenset()))
