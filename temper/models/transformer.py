"""The decoder-only causal LM that every architecture shares; blocks differ per family."""
from __future__ import annotations

import torch
from torch import nn

from temper.models.config import ModelConfig
from temper.models.attention import AttentionContext, DenseContext
from temper.models.layers import KVCache, RMSNorm, rope_cos_sin, rope_inv_freq


class Backbone(nn.Module):
    """Embedding, blocks and final norm; parameter names follow HF checkpoints (`model.layers.N...`)."""

    def __init__(self, config: ModelConfig, block_cls: type[nn.Module]):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(block_cls(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, unit_offset=config.family == "gemma3")


class CausalLM(nn.Module):
    """A causal LM driven by explicit positions, with or without a KV cache.

    `forward(input_ids (B, T), positions (B, T))` returns logits (B, T, V). With a `KVCache`, each token's
    keys and values are written at the slot of its position and queries attend to the slots up to their own
    position, so batches of different lengths (right-padded) and mixed positions need no extra mask.
    """

    embed_scale: float | None = None  # Gemma multiplies embeddings by sqrt(hidden_size)

    def __init__(self, config: ModelConfig, block_cls: type[nn.Module]):
        super().__init__()
        self.config = config
        self.model = Backbone(config, block_cls)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.windows = {config.layer_window(i) for i in range(config.num_layers)}
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.reset_buffers()

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the rotary frequencies, e.g. after weights were loaded onto a model built on meta."""
        c = self.config
        inv_freq = rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling)
        local = rope_inv_freq(c.head_dim, c.rope_local_theta, None) if c.rope_local_theta else inv_freq
        if device is not None:
            inv_freq, local = inv_freq.to(device), local.to(device)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("inv_freq_local", local, persistent=False)

    # NOTE: the final norm, not the head: a quantized head has no float weight
    @property
    def device(self) -> torch.device:
        return self.model.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.norm.weight.dtype

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        """A contiguous KV cache for `batch_size` sequences of up to `max_len` tokens."""
        return KVCache.allocate(self.config, batch_size, max_len, self.device, self.dtype)

    def hidden_states(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None,
                      cache: KVCache | None = None, key_valid: torch.Tensor | None = None,
                      ctx: AttentionContext | None = None) -> torch.Tensor:
        """Final-norm hidden states (B, T, d).

        Attention goes through `ctx` when given (the engine's paged KV cache); otherwise through a dense
        context over `cache`, or over the input itself with `key_valid` (B, T) marking padding.
        """
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        if ctx is None:
            ctx = DenseContext.build(positions, self.windows, cache, None if key_valid is None else key_valid.bool())
        h = self.model.embed_tokens(input_ids)
        if self.embed_scale is not None:
            h = h * torch.tensor(self.embed_scale, dtype=h.dtype)
        rope_full = rope_cos_sin(self.inv_freq, positions, h.dtype)
        rope_local = rope_full if self.config.rope_local_theta is None else rope_cos_sin(
            self.inv_freq_local, positions, h.dtype)
        for layer in self.model.layers:
            rope = rope_local if layer.self_attn.window is not None else rope_full
            h = layer(h, rope, ctx)
        return self.model.norm(h)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for hidden states, soft-capped where the config says so."""
        logits = self.lm_head(h)
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None, cache: KVCache | None = None,
                key_valid: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, V), or (B, 1, V) for the last token only when `last_only`."""
        h = self.hidden_states(input_ids, positions, cache, key_valid)
        return self.logits(h[:, -1:] if last_only else h)
