"""Fixtures for the alignment tests: tiny random models that share a real tokenizer and chat template."""
from __future__ import annotations

import pytest
import torch

from temper.models import ModelConfig, build_model


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's tokenizer (ChatML template), from the converted cache folder of the packaged GGUF."""
    from temper.models.loader import converted_folder
    from temper.models.registry import resolve
    from temper.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(converted_folder(resolve("smollm2-135m-instruct")))


def tiny_model(vocab_size: int, seed: int = 0, family: str = "llama", num_layers: int = 2,
               max_positions: int = 512) -> torch.nn.Module:
    """A random 2-layer model (fp32, CPU) with the given vocabulary."""
    torch.manual_seed(seed)
    extra = {}
    if family == "gemma3":
        extra = dict(arch="gemma3_text", hidden_act="gelu_tanh", sliding_window=6, layer_types=("sliding", "full"),
                     rope_local_theta=1e4, query_pre_attn_scalar=16)
    config = ModelConfig(**({"arch": "llama"} | extra), vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_layers=num_layers, num_heads=4, num_kv_heads=2, head_dim=8, max_position_embeddings=max_positions,
                         tie_word_embeddings=True)
    model = build_model(config)
    model.reset_buffers("cpu")
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.05)
    return model
