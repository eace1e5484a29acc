"""The Llama family: Llama 2/3, SmolLM2, Mistral and Qwen2 (pre-norm blocks, SwiGLU, GQA, optional q/k/v biases)."""
from __future__ import annotations

import torch
from torch import nn

from temper.models.config import ModelConfig
from temper.models.attention import AttentionContext
from temper.models.layers import Attention, GatedMLP, RMSNorm
from temper.models.transformer import CausalLM


class LlamaBlock(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = GatedMLP(config)

    def forward(self, x: torch.Tensor, rope, ctx: AttentionContext) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, ctx)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaForCausalLM(CausalLM):
    def __init__(self, config: ModelConfig):
        super().__init__(config, LlamaBlock)
