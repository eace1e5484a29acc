"""Tiny random models of every architecture against transformers, through config.json and safetensors."""
from __future__ import annotations

import json

import pytest
import torch

from temper.models import ModelConfig
from temper.models.loader import load_pretrained_weights, read_config, save_pretrained
from tests.helpers import assert_close, compare_padded_batch

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_layers=3, num_heads=4, num_kv_heads=2,
            head_dim=16, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
CONFIGS = {
    "llama3": ModelConfig(arch="llama", rope_theta=500000.0, tie_word_embeddings=True, **TINY,
                          rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "llama2-linear": ModelConfig(arch="llama", rope_scaling={"rope_type": "linear", "factor": 2.0}, **TINY),
    "mistral-window": ModelConfig(arch="mistral", sliding_window=5, layer_types=("sliding",) * 3, **TINY),
    "qwen2-bias": ModelConfig(arch="qwen2", attention_bias=True, rope_theta=1e6, tie_word_embeddings=True, **TINY),
    "gemma3": ModelConfig(arch="gemma3_text", hidden_act="gelu_tanh", sliding_window=6,
                          layer_types=("sliding", "sliding", "full"), rope_theta=1e6, rope_local_theta=1e4,
                          query_pre_attn_scalar=16, tie_word_embeddings=True, rms_norm_eps=1e-6, **TINY),
}
LENGTHS = [1, 4, 11, 17]  # longer than the sliding windows above


def _hf_model(config: ModelConfig, folder):
    """A random transformers model built from our config.json, weights perturbed so every tensor matters."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config.to_hf()))
    hf_config = transformers.AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    config = CONFIGS[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    hf = _hf_model(config, tmp / "init")
    hf.save_pretrained(tmp / "hf")
    ours, read = load_pretrained_weights(tmp / "hf")
    return request.param, config, hf, ours.eval(), read, tmp


def _prompts(vocab: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, vocab, (n,), generator=g) for n in LENGTHS]


@torch.no_grad()
def test_config_round_trip(pair):
    name, config, _, _, read, _ = pair
    fields = ["arch", "vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
              "rope_theta", "rope_scaling", "rope_local_theta", "sliding_window", "layer_types",
              "tie_word_embeddings", "attention_bias", "query_pre_attn_scalar", "hidden_act"]
    assert {f: getattr(read, f) for f in fields} == {f: getattr(config, f) for f in fields}


@torch.no_grad()
def test_logits_match_transformers_padded_batch(pair):
    name, config, hf, ours, _, _ = pair
    prompts = _prompts(config.vocab_size)
    compare_padded_batch(ours, hf, prompts, atol=2e-5, what=name)


@torch.no_grad()
def test_kv_cache_decode_matches_full_forward(pair):
    name, config, hf, ours, _, _ = pair
    prompts = _prompts(config.vocab_size)
    B, T = len(prompts), max(LENGTHS)
    cache = ours.new_cache(B, T + 1)
    # prefill the first 3 tokens of each sequence (padding with the first token where shorter), then decode
    # one token at a time at each sequence's own position
    lens = torch.tensor([len(p) for p in prompts])
    for t in range(T):
        step_ids = torch.stack([p[min(t, len(p) - 1)] for p in prompts])[:, None]
        pos = torch.minimum(torch.full((B,), t), lens - 1)[:, None]
        logits = ours(step_ids, pos, cache)
        for i, p in enumerate(prompts):
            if t < len(p):
                expected = hf(p[None, : t + 1]).logits[0, -1]
                assert_close(logits[i, 0], expected, atol=2e-5, what=f"{name} step {t} seq {i}")


@torch.no_grad()
def test_save_pretrained_loads_in_transformers(pair, tmp_path):
    name, config, hf, ours, _, _ = pair
    save_pretrained(ours, None, tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids = _prompts(config.vocab_size)[-1][None]
    assert_close(again(ids).logits, hf(ids).logits, atol=1e-6, what=f"{name} saved by temper")
    assert read_config(tmp_path).layer_types == config.layer_types


@torch.no_grad()
def test_sharded_checkpoint(pair, tmp_path):
    name, config, hf, ours, _, _ = pair
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    sharded, _ = load_pretrained_weights(tmp_path)
    ids = _prompts(config.vocab_size)[-1][None]
    assert torch.equal(sharded(ids), ours(ids))
