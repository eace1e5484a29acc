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


@dataclass
class _Part:
    """A piece of a step's attention: a group of decode rows of similar context length, or one sequence's chunk
    of several new tokens. `rows` index the packed tokens (a tensor for decode groups, a slice for a chunk)."""

    rows: torch.Tensor | slice
    blocks: torch.Tensor  # (G, nblk) pool blocks of the keys each row may see (block 0 where padded)
    mask: torch.Tensor  # (G, 1, T, nblk * block_size)
    decode: bool


class TorchPagedContext:
    """The attention context for one engine step over a `PagedKVCache`.

    A step mixes sequences that decode one token with sequences that prefill a chunk. Decode rows go in groups of
    `DECODE_GROUP` sequences of similar context length, one batched matmul pair per group; each prefill chunk is
    attended on its own, over its own context. Padding every sequence to the step's longest chunk and longest
    context made a mixed step of ~120 decodes plus one 400-token chunk cost ~30 s instead of ~2 s.
    """

    torch_decodes = True  # decode rows go through the grouped matmuls (a subclass may take them over)

    def __init__(self, cache: PagedKVCache, layout: StepLayout, positions: torch.Tensor,
                 windows: set[int | None]):
        device = positions.device
        bs = cache.block_size
        self.cache = cache
        q_lens, ctx_lens, tables = layout.query_lens, layout.context_lens, layout.block_tables
        starts = [c - q for q, c in zip(q_lens, ctx_lens)]  # position of each sequence's first new token
        offsets = [0]
        for q in q_lens:
            offsets.append(offsets[-1] + q)
        self.num_tokens = offsets[-1]
        self.is_decode = max(q_lens) == 1
        # slot of each new token, in packed order
        slots = [t[p // bs] * bs + p % bs for t, s, c in zip(tables, starts, ctx_lens) for p in range(s, c)]
        self.slot_mapping = torch.tensor(slots, device=device)
        decode = [b for b, q in enumerate(q_lens) if q == 1] if self.torch_decodes else []
        chunks = [b for b, q in enumerate(q_lens) if q > 1]
        self.parts: dict[int | None, list[_Part]] = {}
        for window in windows:
            # keys from the first whole block the window can still see (the blocks themselves are kept: a prefix
            # hit may need them later)
            first = [0 if window is None else max(0, s - window + 1) for s in starts]
            first = [f - f % bs for f in first]
            parts = []
            by_length = sorted(decode, key=lambda b: ctx_lens[b] - first[b])
            for i in range(0, len(by_length), DECODE_GROUP):
                rows = by_length[i: i + DECODE_GROUP]
                blocks, mask = self._keys(rows, first, starts, q_lens, ctx_lens, tables, window, bs, device)
                parts.append(_Part(torch.tensor([offsets[b] for b in rows], device=device), blocks, mask, True))
            for b in chunks:
                blocks, mask = self._keys([b], first, starts, q_lens, ctx_lens, tables, window, bs, device)
                parts.append(_Part(slice(offsets[b], offsets[b + 1]), blocks, mask, False))
            self.parts[window] = parts

    @staticmethod
    def _keys(rows: list[int], first: list[int], starts: list[int], q_lens: list[int], ctx_lens: list[int],
              tables: list[list[int]], window: int | None, bs: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks (G, nblk) and mask (G, 1, T, nblk * bs) for some sequences, padded to the longest of them.

        Keys are gathered a whole block at a time (one copy of block_size * head_dim values per block and head):
        `first` is block-aligned, so key j of row g sits at position first[g] + j.
        """
        nblk = max(-(-(ctx_lens[b] - first[b]) // bs) for b in rows)
        T = max(q_lens[b] for b in rows)
        blocks = torch.tensor([(tables[b][first[b] // bs: first[b] // bs + nblk] + [0] * nblk)[:nblk] for b in rows],
                              dtype=torch.long)
        key_pos = torch.tensor([first[b] for b in rows])[:, None] + torch.arange(nblk * bs)[None]
        q_pos = torch.tensor([starts[b] for b in rows])[:, None] + torch.arange(T)[None]
        valid = key_pos < torch.tensor([ctx_lens[b] for b in rows])[:, None]
        return blocks.to(device), attention_mask(q_pos, key_pos, window, valid).to(device)

    def store(self, attn, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write the new tokens' keys and values (1, Hkv, N, D) at their slots of the layer's pool."""
        self.cache.k[attn.layer].index_copy_(1, self.slot_mapping, k[0])
        self.cache.v[attn.layer].index_copy_(1, self.slot_mapping, v[0])

    def attend(self, attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (1, H, N, D), k and v (1, Hkv, N, D) of the packed new tokens -> (1, H, N, D)."""
        self.store(attn, k, v)
        out = torch.empty_like(q[0])
        self.attend_parts(attn, q[0], out)
        return out[None]

    def attend_parts(self, attn, queries: torch.Tensor, out: torch.Tensor) -> None:
        """Attention of the step's parts for queries (H, N, D), written into out (H, N, D)."""
        k_pool, v_pool = self.cache.k[attn.layer], self.cache.v[attn.layer]
        Hkv, D, bs = k_pool.shape[0], k_pool.shape[2], self.cache.block_size
        for part in self.parts[attn.window]:
            G, nblk = part.blocks.shape
            K = k_pool.view(Hkv, -1, bs, D)[:, part.blocks].view(Hkv, G, nblk * bs, D)
            V = v_pool.view(Hkv, -1, bs, D)[:, part.blocks].view(Hkv, G, nblk * bs, D)
            if part.decode:
                Q = queries[:, part.rows].transpose(0, 1)[:, :, None]  # (G, H, 1, D)
                o = grouped_attention(Q, K, V, part.mask, attn.scale, attn.softcap)
                out[:, part.rows] = o[:, :, 0].transpose(0, 1)
            else:
                Q = queries[None, :, part.rows]  # (1, H, T, D)
                if Q.shape[2] > EAGER_MAX_QUERIES and attn.softcap is None:
                    o = attend(attn, Q, K.transpose(0, 1), V.transpose(0, 1), part.mask)  # SDPA for long chunks
                else:
                    o = grouped_attention(Q, K, V, part.mask, attn.scale, attn.softcap)
                out[:, part.rows] = o[0]
