"""Paged attention with a Triton decode kernel (CUDA; the CPU through Triton's interpreter in tests).

Decode rows, one query token per sequence, go through `triton_kernels.paged_decode`, which reads keys straight
from the pool through device-side block tables: no gather, no mask, and nothing read from the host, so a
decode-only step can be captured in a CUDA graph (the model runner does). Prefill chunks keep the portable path
of `TorchPagedContext` (gathered keys, SDPA): they are few per step and matrix-bound.
"""
from __future__ import annotations

import importlib.util

import torch

from temper.engine.attention.torch_paged import PagedKVCache, StepLayout, TorchPagedContext


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def padded_tables(tables: list[list[int]]) -> torch.Tensor:
    """Block tables as one int32 (B, longest) tensor on the CPU, zero-padded (the kernel never reads the pad)."""
    out = torch.zeros(len(tables), max((len(t) for t in tables), default=1), dtype=torch.int32)
    for i, table in enumerate(tables):
        out[i, :len(table)] = torch.tensor(table, dtype=torch.int32)
    return out


class TritonPagedContext(TorchPagedContext):
    """Chunks through the portable path, decode rows through the Triton kernel."""

    torch_decodes = False

    def __init__(self, cache: PagedKVCache, layout: StepLayout, positions: torch.Tensor,
                 windows: set[int | None]):
        super().__init__(cache, layout, positions, windows)
        device = positions.device
        offsets = [0]
        for n in layout.query_lens:
            offsets.append(offsets[-1] + n)
        decode = [b for b, n in enumerate(layout.query_lens) if n == 1]
        self.decode_rows = torch.tensor([offsets[b] for b in decode], dtype=torch.int32, device=device)
        self.block_tables = padded_tables([layout.block_tables[b] for b in decode]).to(device)
        self.context_lens = torch.tensor([layout.context_lens[b] for b in decode], dtype=torch.int32, device=device)

    @classmethod
    def static(cls, cache: PagedKVCache, slot_mapping: torch.Tensor, rows: torch.Tensor, block_tables: torch.Tensor,
               context_lens: torch.Tensor) -> TritonPagedContext:
        """A decode-only context over fixed device tensors that the caller refills before each step (what a
        captured CUDA graph replays): token b of the step is sequence b's query (`rows` is 0..B-1); context
        length 0 marks padding. The caller keeps the tensors alive as long as a graph reads them."""
        ctx = cls.__new__(cls)
        ctx.cache = cache
        ctx.slot_mapping = slot_mapping
        ctx.num_tokens = slot_mapping.shape[0]
        ctx.is_decode = True
        ctx.parts = {}
        ctx.decode_rows = rows
        ctx.block_tables = block_tables
        ctx.context_lens = context_lens
        return ctx

    @staticmethod
    def decode_kernel():
        """The `paged_decode` function that attends the decode rows (a subclass may bring its own)."""
        from temper.engine.attention.triton_kernels import paged_decode

        return paged_decode

    def attend(self, attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        paged_decode = self.decode_kernel()
        self.store(attn, k, v)
        queries = q[0]
        if queries.stride(-1) != 1:
            queries = queries.contiguous()
        out = torch.empty_like(queries)
        if self.parts.get(attn.window):
            self.attend_parts(attn, queries, out)
        paged_decode(queries, self.cache.k[attn.layer], self.cache.v[attn.layer], out, self.decode_rows,
                     self.block_tables, self.context_lens, self.cache.block_size, attn.scale, attn.softcap,
                     attn.window)
        return out[None]
