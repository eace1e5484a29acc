"""Fused Triton kernels for the small per-layer ops of a decode step on CUDA: RMSNorm and rotary embedding.

At batch 1 a decode step of an 8B model is ~1,200 kernels, and two thirds of them are the elementwise pieces
of RMSNorm (cast, square, mean, rsqrt, two products, cast back) and of the rotation (halves, negation, concat,
two products, sum), each a few microseconds of launch and tail for a few kilobytes. One kernel each does the
same arithmetic in fp32 and rounds once. Used by the layers on CUDA tensors where Triton is installed; the CPU
path is unchanged (tests run these kernels under Triton's interpreter against the PyTorch versions).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rmsnorm_kernel(X, W, Y, stride_x, stride_y, n, eps, UNIT_OFFSET: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    h = x * tl.rsqrt(tl.sum(x * x, 0) / n + eps)
    w = tl.load(W + cols, mask=mask, other=0.0)
    if UNIT_OFFSET:  # Gemma: (h * (1 + w)) in fp32, then cast
        y = h * (1.0 + w.to(tl.float32))
    else:  # Llama: cast h first, then the product in the weight's dtype (rounded once, as PyTorch does)
        y = w.to(tl.float32) * h.to(Y.dtype.element_ty).to(tl.float32)
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float, unit_offset: bool) -> torch.Tensor:
    n = x.shape[-1]
    x2 = x.reshape(-1, n)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    y = torch.empty(x2.shape, dtype=x.dtype if unit_offset else torch.promote_types(x.dtype, weight.dtype),
                    device=x.device)
    if x2.shape[0]:
        _rmsnorm_kernel[(x2.shape[0],)](x2, weight, y, x2.stride(0), y.stride(0), n, float(eps),
                                        UNIT_OFFSET=unit_offset, BLOCK=triton.next_power_of_2(n), num_warps=8)
    return y.view(*x.shape[:-1], n)


@triton.jit
def _rope_kernel(X, COS, SIN, Y, H, T, sxb, sxh, sxt, scb, sct, syb, syh, syt, HALF: tl.constexpr):
    pid = tl.program_id(0)  # one (b, h, t) row of D = 2 * HALF values
    t = pid % T
    h = (pid // T) % H
    b = pid // (T * H)
    d = tl.arange(0, HALF)
    x_row = X + b * sxb + h * sxh + t * sxt
    x1 = tl.load(x_row + d).to(tl.float32)
    x2 = tl.load(x_row + HALF + d).to(tl.float32)
    c_row = b * scb + t * sct
    c1 = tl.load(COS + c_row + d).to(tl.float32)
    c2 = tl.load(COS + c_row + HALF + d).to(tl.float32)
    s1 = tl.load(SIN + c_row + d).to(tl.float32)
    s2 = tl.load(SIN + c_row + HALF + d).to(tl.float32)
    y_row = Y + b * syb + h * syh + t * syt
    tl.store(y_row + d, (x1 * c1 - x2 * s1).to(Y.dtype.element_ty))
    tl.store(y_row + HALF + d, (x2 * c2 + x1 * s2).to(Y.dtype.element_ty))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) of any strides with a contiguous last dim; cos, sin (B, 1, T, D) -> (B, H, T, D)."""
    B, H, T, D = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    cos, sin = cos.expand(B, 1, T, D), sin.expand(B, 1, T, D)
    if cos.stride(-1) != 1 or cos.stride() != sin.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    y = torch.empty(B, T, H, D, dtype=x.dtype, device=x.device).transpose(1, 2)  # the layout q/k arrive in
    if x.numel():
        _rope_kernel[(B * H * T,)](x, cos, sin, y, H, T, x.stride(0), x.stride(1), x.stride(2), cos.stride(0),
                                   cos.stride(2), y.stride(0), y.stride(1), y.stride(2), HALF=D // 2, num_warps=1)
    return y
