"""Fused q/k/v and gate/up projections (the engine's CPU fast path) compute what the separate layers do."""
from __future__ import annotations

import copy

import pytest
import torch

from temper.models import ModelConfig, build_model
from temper.models.layers import fuse_projections
from tests.helpers import assert_close

TINY = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2,
            head_dim=16, max_position_embeddings=128)
CONFIGS = {
    "llama": ModelConfig(arch="llama", **TINY),
    "qwen2-bias": ModelConfig(arch="qwen2", attention_bias=True, **TINY),
    "gemma3": ModelConfig(arch="gemma3_text", hidden_act="gelu_tanh", sliding_window=6,
                          layer_types=("sliding", "full"), query_pre_attn_scalar=16, tie_word_embeddings=True,
                          **TINY),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_fused_matches_separate(name):
    torch.manual_seed(0)
    model = build_model(CONFIGS[name]).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    ids = torch.randint(0, 101, (2, 9))
    before = model(ids)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert fuse_projections(model) == 2 * model.config.num_layers
    assert fuse_projections(model) == 0  # once is enough
    assert_close(model(ids), before, atol=1e-5, what=f"{name} fused")
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    # a weight replaced wholesale (assign=True) is picked up: the fused buffer is rebuilt
    other = build_model(CONFIGS[name]).eval()
    for p in other.parameters():
        p.data.normal_(0, 0.1)
    model.load_state_dict(copy.deepcopy(other.state_dict()), assign=True)
    assert_close(model(ids), other(ids), atol=1e-5, what=f"{name} after assign")
    # and an in-place update through the layer's own parameter reaches the fused matmul
    model.model.layers[0].self_attn.q_proj.weight.add_(0.5)
    other.model.layers[0].self_attn.q_proj.weight.add_(0.5)
    assert_close(model(ids), other(ids), atol=1e-5, what=f"{name} after in-place update")
