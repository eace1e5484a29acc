"""Portable paged attention in plain PyTorch (CPU and any device).

All tokens of a step are packed into one row (1, N): the linear layers see no padding. For attention, each
sequence's queries are gathered into a padded (B, Tmax) grid and its keys and values are gathered from the
block pool by its block table. Sliding-window layers gather only the blocks their window can still see (the
blocks themselves are kept: a prefix-cache hit may need them later).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from temper.models.attention import EAGER_MAX_QUERIES, attend, attention_mask, grouped_attention
from temper.models.config import ModelConfig


# Decode batches gather keys in groups of this many sequences of similar length: padding every sequence to
# the batch's longest context made the gather 6x larger on ShareGPT-like lengths.
DECODE_GROUP = 8


@dataclass
class PagedKVCache:
    """One pool of KV slots per layer: slot s is block s // block_size, offset s % block_size."""

    # per layer (Hkv, num_blocks * block_size, D): heads outermost, so that a gather of key slots is already
    # laid out (Hkv, B, L, D) for batched matmuls, with no copy
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    block_size: int

    @classmethod
    def allocate(cls, config: ModelConfig, num_blocks: int, block_size: int, device: torch.device | str,
                 dtype: torch.dtype) -> PagedKVCache:
        shape = (config.num_kv_heads, num_blocks * block_size, config.head_dim)
        # zeros, not empty: masked-out slots still meet a 0 weight in probs @ v, and 0 * NaN garbage is NaN
        return cls(k=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)],
                   v=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)],
                   block_size=block_size)

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        return 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim * dtype.itemsize

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy whole blocks (src, dst) in every layer (copy-on-write)."""
        if not pairs:
            return
        bs = self.block_size
        src = torch.cat([torch.arange(s * bs, (s + 1) * bs) for s, _ in pairs]).to(self.k[0].device)
        dst = torch.cat([torch.arange(d * bs, (d + 1) * bs) for _, d in pairs]).to(self.k[0].device)
        for pool in (*self.k, *self.v):
            pool.index_copy_(1, dst, pool.index_select(1, src))


@dataclass
class StepLayout:
    """Where each sequence's tokens of this step sit, built once per step by the model runner."""

    query_lens: list[int]  # new tokens per sequence
    context_lens: list[int]  # tokens in the cache per sequence after this step
    block_tables: list[list[int]]


class TorchPagedContext:
    """The attention context for one engine step over a `PagedKVCache`."""

    def __init__(self, cache: PagedKVCache, layout: StepLayout, positions: torch.Tensor,
                 windows: set[int | None]):
        device = positions.device
        bs = cache.block_size
        B = len(layout.query_lens)
        self.cache = cache
        q_lens, ctx_lens = layout.query_lens, layout.context_lens
        N = sum(q_lens)
        T = max(q_lens)
        starts = [c - q for q, c in zip(q_lens, ctx_lens)]  # position of each sequence's first new token
        self.is_decode = T == 1
        # slot of each new token, in packed order
        slots = [t[p // bs] * bs + p % bs for t, s, c in zip(layout.block_tables, starts, ctx_lens)
                 for p in range(s, c)]
        self.slot_mapping = torch.tensor(slots, device=device)
        # packed token -> (sequence, row in the padded query grid); padding points at a zero row appended at N
        q_index = torch.full((B, T), N, dtype=torch.long)
        offset = 0
        for b, q in enumerate(q_lens):
            q_index[b, :q] = torch.arange(offset, offset + q)
            offset += q
        self.q_index = q_index.to(device)
        self.q_valid = (self.q_index < N)
        self.num_tokens, self.T = N, T
        q_pos = torch.tensor([[s + i for i in range(T)] for s in starts], device=device)
        # per window: the key slots each sequence gathers, and the mask over them
        self.keys: dict[int | None, tuple[torch.Tensor, torch.Tensor]] = {}
        self.groups: dict[int | None, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        for window in windows:
            first = [0 if window is None else max(0, s - window + 1) for s in starts]
            first = [f - f % bs for f in first]  # whole blocks
            L = max(c - f for f, c in zip(first, ctx_lens))
            key_pos = torch.tensor([[f + j for j in range(L)] for f in first], device=device)
            valid = key_pos < torch.tensor(ctx_lens, device=device)[:, None]
            table = torch.zeros(B, max(len(t) for t in layout.block_tables) or 1, dtype=torch.long)
            for b, t in enumerate(layout.block_tables):
                table[b, : len(t)] = torch.tensor(t, dtype=torch.long)
            table = table.to(device)
            block_of = torch.where(valid, key_pos // bs, 0)
            key_slots = torch.gather(table, 1, block_of) * bs + key_pos % bs
            key_slots = torch.where(valid, key_slots, 0)
            mask = attention_mask(q_pos, key_pos, window, valid)
            self.keys[window] = (key_slots, mask)
            if self.is_decode and B > DECODE_GROUP:
                self.groups[window] = self._groups([c - f for f, c in zip(first, ctx_lens)], key_slots, mask)

    @staticmethod
    def _groups(lengths: list[int], key_slots: torch.Tensor, mask: torch.Tensor):
        """Decode rows in groups of similar context length, each padded only to its own longest."""
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        groups = []
        for i in range(0, len(order), DECODE_GROUP):
            rows = order[i: i + DECODE_GROUP]
            L = max(lengths[r] for r in rows)
            idx = torch.tensor(rows, device=key_slots.device)
            groups.append((idx, key_slots[idx, :L], mask[idx][..., :L]))
        return groups

    def _grouped_decode(self, attn, q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor) -> torch.Tensor:
        Q = q[0].transpose(0, 1)[:, :, None]  # (B, H, 1, D)
        out = torch.empty_like(Q)
        for idx, slots, mask in self.groups[attn.window]:
            out[idx] = grouped_attention(Q[idx], k_pool[:, slots], v_pool[:, slots], mask, attn.scale,
                                            attn.softcap)
        return out[:, :, 0].transpose(0, 1)[None]

    def attend(self, attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (1, H, N, D), k and v (1, Hkv, N, D) of the packed new tokens -> (1, H, N, D)."""
        k_pool, v_pool = self.cache.k[attn.layer], self.cache.v[attn.layer]
        k_pool.index_copy_(1, self.slot_mapping, k[0])
        v_pool.index_copy_(1, self.slot_mapping, v[0])
        if attn.window in self.groups:
            return self._grouped_decode(attn, q, k_pool, v_pool)
        key_slots, mask = self.keys[attn.window]
        K, V = k_pool[:, key_slots], v_pool[:, key_slots]  # (Hkv, B, L, D)
        H, D = q.shape[1], q.shape[3]
        if self.is_decode:  # one token per sequence: the packed row is the batch
            Q = q[0].transpose(0, 1)[:, :, None]  # (B, H, 1, D)
        else:
            qp = torch.cat([q[0], q.new_zeros(H, 1, D)], dim=1)  # (H, N + 1, D)
            Q = qp[:, self.q_index].permute(1, 0, 2, 3)  # (B, H, T, D)
        if self.T > EAGER_MAX_QUERIES and attn.softcap is None:
            out = attend(attn, Q, K.transpose(0, 1), V.transpose(0, 1), mask)  # SDPA for long chunks
        else:
            out = grouped_attention(Q, K, V, mask, attn.scale, attn.softcap)
        if self.is_decode:
            return out[:, :, 0].transpose(0, 1)[None]
        out = out.permute(1, 0, 2, 3).reshape(H, -1, D)  # (H, B*T, D)
        flat = self.q_valid.flatten().nonzero().squeeze(1)
        return out[:, flat][None]

