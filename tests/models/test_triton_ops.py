"""The fused Triton RMSNorm and rotary kernels equal the PyTorch layers they replace on CUDA.

On the CPU they run under Triton's interpreter (skipped where triton is not installed); `-m gpu` runs them
compiled on CUDA, in fp32 and bf16.
"""
from __future__ import annotations

import pytest
import torch

from tests.triton_support import DEVICES, interpreter_scalars  # noqa: F401  (sets TRITON_INTERPRET first)

pytest.importorskip("triton", reason="the fused kernels need the triton package (pip install triton)")

from temper.models import triton_ops
from temper.models.layers import RMSNorm, rope_cos_sin, rope_inv_freq
from temper.models.layers import apply_rope as torch_rope

CASES = [pytest.param(d.values[0], torch.float32, marks=d.marks) for d in DEVICES] + \
    [pytest.param("cuda", torch.bfloat16, marks=pytest.mark.gpu)]


def tolerance(dtype):
    return 1e-5 if dtype == torch.float32 else 1e-2


@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("unit_offset", [False, True])
@pytest.mark.parametrize("width", [64, 576, 4096])
@torch.no_grad()
def test_rmsnorm_matches_layer(device, dtype, unit_offset, width):
    norm = RMSNorm(width, 1e-5, unit_offset=unit_offset)
    norm.weight.normal_(0.5 if not unit_offset else 0.0, 0.3)
    x = torch.randn(3, 5, width) * 4
    expected = norm.double()(x.double())  # the layer's arithmetic in float64
    got = triton_ops.rmsnorm(x.to(device, dtype), norm.weight.to(device, dtype), 1e-5, unit_offset)
    assert got.shape == x.shape and got.dtype == dtype
    error = ((got.double().cpu() - expected).norm() / expected.norm()).item()
    assert error < tolerance(dtype), f"relative error {error:.2e}"


@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("head_dim", [16, 64, 128])
@torch.no_grad()
def test_rope_matches_layer(device, dtype, head_dim):
    B, T, H = 2, 7, 3
    positions = torch.randint(0, 4000, (B, T))
    cos, sin = rope_cos_sin(rope_inv_freq(head_dim, 10000.0, None), positions, torch.float64)
    x = torch.randn(B, T, H, head_dim).transpose(1, 2)  # (B, H, T, D) with the strides q and k arrive in
    expected = torch_rope(x.double(), cos, sin)
    got = triton_ops.apply_rope(x.to(device, dtype), cos.to(device, dtype), sin.to(device, dtype))
    assert got.shape == x.shape and got.dtype == dtype
    error = ((got.double().cpu() - expected).norm() / expected.norm()).item()
    assert error < tolerance(dtype), f"relative error {error:.2e}"
