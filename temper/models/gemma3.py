"""Gemma 3 (text): sandwich norms, q/k norms, GeGLU, scaled embeddings, interleaved sliding-window layers
with their own rope base."""
from __future__ import annotations

import torch
from torch import nn

from temper.models.config import ModelConfig
from temper.models.attention import AttentionContext
from temper.models.layers import Attention, GatedMLP, RMSNorm
from temper.models.transformer import CausalLM


class Gemma3Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        d, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = RMSNorm(d, eps, unit_offset=True)
        self.self_attn = Attention(config, layer)
        self.post_attention_layernorm = RMSNorm(d, eps, unit_offset=True)
        self.pre_feedforward_layernorm = RMSNorm(d, eps, unit_offset=True)
        self.mlp = GatedMLP(config)
        self.post_feedforward_layernorm = RMSNorm(d, eps, unit_offset=True)

    def forward(self, x: torch.Tensor, rope, ctx: AttentionContext) -> torch.Tensor:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), rope, ctx))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma3ForCausalLM(CausalLM):
    def __init__(self, config: ModelConfig):
        super().__init__(config, Gemma3Block)
        self.embed_scale = config.hidden_size ** 0.5
