"""Triton kernel for decode attention over the paged KV pool (imported only where Triton is installed).

One program per (sequence, KV head) computes the attention of every query head of that KV head's group for the
sequence's one new token, walking its context `BLOCK_N` keys at a time through the block table with an online
softmax (FlashAttention's running max and sum), so keys are read once, straight from the pool, with no gather
and no mask tensor. The query heads of a group are stacked as the rows of one matrix product (padded to 16,
the smallest `tl.dot`), which is what grouped-query attention is for: each key is read once per group.

It reads the step's lengths and block tables from device tensors, never from the host, so a decode step can be
captured in a CUDA graph and replayed with new tables. Runs under `TRITON_INTERPRET=1` on the CPU (the tests do).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _paged_decode_kernel(
    Q, K, V, O, rows, block_tables, context_lens,
    stride_qh, stride_qn, stride_kh, stride_ks, stride_oh, stride_on, stride_bt,
    scale, softcap, window,
    REP: tl.constexpr, REP_PAD: tl.constexpr, D: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, HAS_WINDOW: tl.constexpr, IEEE: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    ctx = tl.load(context_lens + b)
    row = tl.load(rows + b)
    r = tl.arange(0, REP_PAD)
    head = kvh * REP + r
    d = tl.arange(0, D)
    q = tl.load(Q + head[:, None] * stride_qh + row * stride_qn + d[None, :], mask=(r < REP)[:, None], other=0.0)
    lo = 0
    if HAS_WINDOW:  # the query at position ctx - 1 sees keys at positions > ctx - 1 - window
        lo = tl.maximum(ctx - window, 0)
    m = tl.full((REP_PAD,), float("-inf"), dtype=tl.float32)
    l_sum = tl.zeros((REP_PAD,), dtype=tl.float32)
    acc = tl.zeros((REP_PAD, D), dtype=tl.float32)
    k_base = K + kvh * stride_kh
    v_base = V + kvh * stride_kh
    # the first tile is aligned down, so every tile holds at least one visible key: no row of -inf scores
    for start in range((lo // BLOCK_N) * BLOCK_N, ctx, BLOCK_N):
        pos = start + tl.arange(0, BLOCK_N)
        valid = (pos < ctx) & (pos >= lo)
        block = tl.load(block_tables + b * stride_bt + pos // BLOCK_SIZE, mask=valid, other=0)
        slot = block.to(tl.int64) * BLOCK_SIZE + pos % BLOCK_SIZE
        k = tl.load(k_base + slot[:, None] * stride_ks + d[None, :], mask=valid[:, None], other=0.0)
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        s = s * scale
        if HAS_SOFTCAP:  # softcap * tanh(s / softcap), tanh through exp (1 - 2 / (e^2x + 1))
            s = softcap * (1.0 - 2.0 / (tl.exp(2.0 * s / softcap) + 1.0))
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        l_sum = l_sum * alpha + tl.sum(p, 1)
        v = tl.load(v_base + slot[:, None] * stride_ks + d[None, :], mask=valid[:, None], other=0.0)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    # rows with no context (padding of a captured batch) write zeros, not 0 / 0
    out = acc / tl.where(l_sum > 0, l_sum, 1.0)[:, None]
    tl.store(O + head[:, None] * stride_oh + row * stride_on + d[None, :], out.to(O.dtype.element_ty),
             mask=(r < REP)[:, None])


def paged_decode(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, out: torch.Tensor, rows: torch.Tensor,
                 block_tables: torch.Tensor, context_lens: torch.Tensor, block_size: int, scale: float,
                 softcap: float | None, window: int | None) -> None:
    """Attention for one query token per sequence, written into `out`.

    q and out (H, N, D) hold the step's packed tokens (last dim contiguous); `rows` (B,) says which token is
    sequence b's query; k_pool, v_pool (Hkv, slots, D); block_tables (B, W) int32; context_lens (B,) int32,
    the keys each query sees including its own (0: a padding row, output zeros).
    """
    H, _, D = q.shape
    Hkv = k_pool.shape[0]
    rep = H // Hkv
    if q.stride(-1) != 1 or out.stride(-1) != 1 or k_pool.stride(-1) != 1:
        raise ValueError("paged_decode needs the last dimension contiguous")
    B = rows.shape[0]
    if B == 0:
        return
    _paged_decode_kernel[(B, Hkv)](
        q, k_pool, v_pool, out, rows, block_tables, context_lens,
        q.stride(0), q.stride(1), k_pool.stride(0), k_pool.stride(1), out.stride(0), out.stride(1),
        block_tables.stride(0),
        float(scale), float(softcap or 1.0), int(window or 0),
        REP=rep, REP_PAD=max(16, triton.next_power_of_2(rep)), D=D, BLOCK_SIZE=block_size,
        BLOCK_N=max(32, block_size), HAS_SOFTCAP=softcap is not None, HAS_WINDOW=window is not None,
        IEEE=q.dtype == torch.float32, num_warps=4)
