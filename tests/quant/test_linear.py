"""Quantized layers: error bounds of each scheme, packed kernels against dequantize-then-matmul, layouts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from temper.quant import QuantEmbedding, QuantLinear
from temper.quant import tensors as qt
from tests.helpers import assert_close

SCHEMES = [(8, 0, True), (4, 32, False), (4, 64, True), (4, 128, False), (4, 256, True)]


def weight(N: int = 128, K: int = 512, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=g) * 0.05
    w[:, 7] *= 20  # an outlier column, as real checkpoints have
    return w


def test_int8_error_is_at_most_half_a_step():
    w = weight()
    q, scale = qt.quantize_int8(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    err = (qt.dequantize_int8(q, scale) - w).abs()
    assert (err <= scale[:, None] / 2 + 1e-7).all()


@pytest.mark.parametrize("group", [32, 64, 128, 256])
@pytest.mark.parametrize("symmetric", [False, True])
def test_int4_error_is_at_most_half_a_step(group, symmetric):
    w = weight()
    codes, scale, mins = qt.quantize_int4(w, group, symmetric)
    assert codes.dtype == torch.uint8 and codes.max() <= 15
    err = (qt.dequantize_int4(codes, scale, mins) - w).abs().reshape(w.shape[0], -1, group)
    # half a step, plus what snapping the scale and zero point to bf16 moves the grid ends (2^-9 relative)
    assert (err <= scale[..., None] * (0.5 + 0.04)).all()
    zero = mins + 8 * scale
    assert torch.equal(zero, zero.bfloat16().float()) and torch.equal(scale, scale.bfloat16().float())
    if symmetric:
        torch.testing.assert_close(mins, -8 * scale)


def test_effective_group_size():
    assert qt.effective_group_size(1536, 128) == 128
    assert qt.effective_group_size(576, 128) == 64  # SmolLM2's hidden size
    assert qt.effective_group_size(576, 256) == 64
    assert qt.effective_group_size(96, 64) == 32
    assert qt.effective_group_size(100, 32) == 25  # no kernel size divides: the portable path


@pytest.mark.parametrize("N,K", [(64, 32), (128, 576), (960, 576), (192, 1536)])
def test_cpu_packing_matches_aten(N, K):
    codes = torch.randint(0, 16, (N, K), dtype=torch.uint8)
    aten = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.int(), 1)
    assert torch.equal(qt.pack_int4_cpu(codes), aten)
    assert torch.equal(qt.unpack_int4_cpu(aten), codes)
    assert torch.equal(qt.unpack_nibbles(qt.pack_nibbles(codes)), codes)


@pytest.mark.parametrize("bits,group,symmetric", SCHEMES)
@pytest.mark.parametrize("rows", [1, 5, 16, 200])
def test_forward_matches_dequantized_matmul(bits, group, symmetric, rows):
    torch.manual_seed(1)
    lin = nn.Linear(512, 192, bias=True)
    lin.weight.data = weight(192, 512)
    q = QuantLinear.from_float(lin, bits, group or 128, symmetric)
    assert q.layout == ("int8-cpu-kernel" if bits == 8 else "int4-cpu-kernel")
    x = torch.randn(rows, 512)
    expected = x @ q.dequantize().t() + lin.bias
    # the kernels take bf16 activations (their fast path) and accumulate in fp32: about 3 significant digits
    tol = 2e-2 * expected.abs().max().item()
    assert_close(q(x), expected, atol=tol, what=f"int{bits} g{group} sym={symmetric} rows={rows}")
    assert_close(q(x.reshape(1, rows, 512)), expected[None], atol=tol, what="3-D input")
    q.kernel_max_rows = 0  # the dequantize-then-matmul path (large prefills, other devices): fp32 throughout
    assert_close(q(x), expected, atol=1e-4, what="dequantized path")


def test_portable_layout_when_the_kernel_cannot_take_the_shape():
    lin = nn.Linear(96, 100)  # 100 rows: not a multiple of the kernel's 64-row tiles
    q = QuantLinear.from_float(lin, 4, 32)
    assert q.layout == "int4-dequant"
    x = torch.randn(3, 96)
    assert_close(q(x), x @ q.dequantize().t() + lin.bias, atol=1e-5, what="portable int4")


@pytest.mark.parametrize("bits,group,symmetric", SCHEMES)
def test_state_dict_round_trip(bits, group, symmetric):
    lin = nn.Linear(512, 128, bias=True)
    q = QuantLinear.from_float(lin, bits, group or 128, symmetric)
    state = q.state_dict()
    assert ("zeros" in state) == (bits == 4 and not symmetric)
    fresh = QuantLinear(512, 128, bits, group, symmetric, bias=True, device="meta")
    fresh.load_state_dict(state, assign=True)
    assert torch.equal(fresh.dequantize(), q.dequantize()) and torch.equal(fresh.bias, q.bias)
    x = torch.randn(4, 512)
    assert torch.equal(fresh(x), q(x))
    with pytest.raises(RuntimeError, match="size mismatch"):
        QuantLinear(512, 64, bits, group, symmetric, bias=True).load_state_dict(state)


def test_fused_layers_compute_what_the_separate_ones_do():
    layers = [QuantLinear.from_float(nn.Linear(576, n, bias=False), 4, 64) for n in (576, 192, 192)]
    x = torch.randn(3, 576)
    separate = [m(x) for m in layers]
    states = [m.state_dict() for m in layers]
    fused = QuantLinear.fuse(layers)
    for out, ref in zip(fused(x).split([576, 192, 192], dim=-1), separate):
        assert torch.equal(out, ref)
    for m, state in zip(layers, states):  # the originals are views of the fused codes now: same state
        assert all(torch.equal(m.state_dict()[k], v) for k, v in state.items())
    assert sum(m.weight_bytes() for m in layers) == fused.weight_bytes()


@pytest.mark.parametrize("bits,group", [(8, 0), (4, 32), (4, 64)])
def test_embedding_rows_equal_the_dequantized_table(bits, group):
    emb = nn.Embedding(320, 128)
    q = QuantEmbedding.from_embedding(emb, bits, group or 128)
    ids = torch.tensor([[0, 63, 64, 65, 319], [5, 5, 127, 128, 200]])
    assert torch.equal(q(ids), q.dequantize()[ids])
    assert (q(ids) - emb.weight[ids]).abs().max() < 0.5  # and close to the float table


def test_to_keeps_the_weights():
    q = QuantLinear.from_float(nn.Linear(256, 128), 4, 32)
    before = q.dequantize()
    q.to("cpu").to(torch.float32)
    assert torch.equal(q.dequantize(), before)


def test_training_through_a_quantized_layer_reaches_the_input():
    q = QuantLinear.from_float(nn.Linear(256, 128), 4, 32)
    x = torch.randn(2, 256, requires_grad=True)
    q(x).sum().backward()
    assert_close(x.grad, q.dequantize().sum(0).expand(2, -1), atol=1e-4, what="input gradient")
