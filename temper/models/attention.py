"""Attention math and the contexts that feed it keys and values.

A model layer computes q, k, v for its new tokens and hands them to an attention context, which stores the
new keys and values where it keeps them and attends over what the queries may see. `DenseContext` serves
plain forward passes and the contiguous `KVCache`; the engine's paged contexts live in temper/engine/attention/.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from temper.models.layers import Attention, KVCache

# Up to this many query tokens per sequence, attention runs as plain matmuls: PyTorch's CPU SDPA kernel costs
# milliseconds per call on a decode step (measured: 5.7 ms vs ~0.1 ms on SmolLM2-135M, 2-core EPYC).
EAGER_MAX_QUERIES = 16


class AttentionContext(Protocol):
    def attend(self, attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store k, v (B, Hkv, T, D) of the new tokens and return attention outputs (B, H, T, D) for q."""
        ...


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None,
                   k_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask (B, 1, Tq, Tk): a query sees keys at positions <= its own, within `window` if given."""
    q = q_pos[:, None, :, None]
    k = k_pos[:, None, None, :]
    mask = k <= q
    if window is not None:
        mask = mask & (q - k < window)
    if k_valid is not None:
        mask = mask & k_valid[:, None, None, :]
    return mask


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float,
                      softcap: float | None = None) -> torch.Tensor:
    """Attention as two batched matmuls, the query heads of a group stacked against their shared KV head.

    q (B, H, T, D); k and v laid out heads-first (Hkv, B, S, D), as the engine gathers them from its paged
    pool (a (B, Hkv, S, D) tensor passes as `k.transpose(0, 1)`); mask (B, 1, T, S) -> (B, H, T, D).
    """
    B, H, T, D = q.shape
    Hkv, S = k.shape[0], k.shape[2]
    rep = H // Hkv
    q = q.reshape(B, Hkv, rep * T, D).transpose(0, 1)  # (Hkv, B, rep*T, D)
    scores = (q @ k.transpose(-1, -2)).float() * scale  # (Hkv, B, rep*T, S)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    mask = mask[:, :, None].expand(B, 1, rep, T, S).reshape(1, B, rep * T, S)
    probs = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1).nan_to_num_(0.0).to(v.dtype)
    return (probs @ v).transpose(0, 1).reshape(B, H, T, D)


def attend(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SDPA for long query runs, grouped matmuls for short ones and for soft-capped logits."""
    if attn.softcap is None and q.shape[2] > EAGER_MAX_QUERIES:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale,
                                              enable_gqa=attn.num_heads != attn.num_kv_heads)
    return grouped_attention(q, k.transpose(0, 1), v.transpose(0, 1), mask, attn.scale, attn.softcap)


@dataclass
class DenseContext:
    """Keys are the queries themselves (no cache), or a contiguous cache where slot p holds position p."""

    positions: torch.Tensor  # (B, T) position of each query token
    cache: KVCache | None
    num_keys: int  # T without a cache, max position + 1 with one
    masks: dict[int | None, torch.Tensor]  # sliding window (None: full) -> mask (B, 1, T, num_keys)

    @classmethod
    def build(cls, positions: torch.Tensor, windows: set[int | None], cache: KVCache | None = None,
              key_valid: torch.Tensor | None = None) -> DenseContext:
        """Without a cache, `key_valid` (B, T) marks padding; with one, the slots up to a query's position
        were all written by its own sequence."""
        if cache is not None:
            num_keys = int(positions.max()) + 1
            k_pos = torch.arange(num_keys, device=positions.device).expand(positions.shape[0], num_keys)
            key_valid = None
        else:
            num_keys, k_pos = positions.shape[1], positions
        masks = {w: attention_mask(positions, k_pos, w, key_valid) for w in windows}
        return cls(positions, cache, num_keys, masks)

    def attend(self, attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:
            kc, vc = self.cache.k[attn.layer], self.cache.v[attn.layer]
            B, H, T, D = k.shape
            idx = self.positions[:, None, :, None].expand(B, H, T, D)
            kc.scatter_(2, idx, k)
            vc.scatter_(2, idx, v)
            k, v = kc[:, :, : self.num_keys], vc[:, :, : self.num_keys]
        return attend(attn, q, k, v, self.masks[attn.window])
