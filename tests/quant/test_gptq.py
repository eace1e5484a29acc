"""GPTQ: lower output error than round-to-nearest on correlated inputs, RTN itself when inputs are white, and
sequential quantization of a whole (tiny, random) model."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from temper.models import ModelConfig, build_model
from temper.quant import QuantEmbedding, QuantLinear
from temper.quant.config import QuantConfig
from temper.quant.gptq import gptq_quantize_layer, quantize_model_gptq
from temper.quant.model import block_linears, quantize_model
from temper.quant.tensors import dequantize_int4


def layer_and_inputs(N: int = 64, K: int = 256, n: int = 1024) -> tuple[nn.Linear, torch.Tensor]:
    """A random layer and correlated inputs X = Z A (a random mixing A), as real activations are."""
    g = torch.Generator().manual_seed(0)
    linear = nn.Linear(K, N, bias=False)
    linear.weight.data = torch.randn(N, K, generator=g) * 0.05
    x = torch.randn(n, K, generator=g) @ (torch.randn(K, K, generator=g) / K ** 0.5)
    return linear, x


def output_error(x: torch.Tensor, w: torch.Tensor, wq: torch.Tensor) -> float:
    return (x @ w.T - x @ wq.T).norm().item()


def gptq_weight(linear: nn.Linear, H: torch.Tensor, group: int, symmetric: bool, **kw) -> torch.Tensor:
    """GPTQ's codes installed in a QuantLinear (fp16 scales, as stored) and dequantized back."""
    codes, scale, mins = gptq_quantize_layer(linear.weight, H, group, symmetric, **kw)
    assert codes.dtype == torch.uint8 and codes.shape == linear.weight.shape and int(codes.max()) <= 15
    assert scale.shape == mins.shape == (linear.out_features, linear.in_features // group)
    q = QuantLinear(linear.in_features, linear.out_features, 4, group, symmetric)
    q.set_codes(codes, scale, mins)
    assert torch.equal(q.dequantize(), dequantize_int4(codes, scale, mins))  # the grid was exact in fp16
    return q.dequantize()


@pytest.mark.parametrize("group", [32, 128])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_on_correlated_inputs(group, symmetric, act_order):
    linear, x = layer_and_inputs()
    H = 2 * x.double().T @ x.double() / x.shape[0]
    w = linear.weight.detach()
    rtn = output_error(x, w, QuantLinear.from_float(linear, 4, group, symmetric).dequantize())
    gptq = output_error(x, w, gptq_weight(linear, H, group, symmetric, act_order=act_order))
    print(f"g{group} symmetric={symmetric} act_order={act_order}: |X(W - Wq)^T| GPTQ {gptq:.3f}, RTN {rtn:.3f}")
    assert gptq < 0.8 * rtn


@pytest.mark.parametrize("symmetric", [False, True])
def test_gptq_with_white_inputs_is_rtn(symmetric):
    linear, x = layer_and_inputs()
    w = linear.weight.detach()
    rtn = output_error(x, w, QuantLinear.from_float(linear, 4, 64, symmetric).dequantize())
    gptq = output_error(x, w, gptq_weight(linear, torch.eye(w.shape[1]), 64, symmetric))
    assert abs(gptq - rtn) < 0.05 * rtn


def test_dead_inputs_get_zero_weight_and_do_not_break():
    linear, x = layer_and_inputs()
    x[:, :40] = 0  # inputs that are never active: their columns of H are 0
    H = 2 * x.double().T @ x.double() / x.shape[0]
    wq = gptq_weight(linear, H, 32, False)
    assert torch.isfinite(wq).all()
    assert output_error(x, linear.weight.detach(), wq) < 0.8 * output_error(
        x, linear.weight.detach(), QuantLinear.from_float(linear, 4, 32, False).dequantize())


def tiny_llama() -> nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(arch="llama", vocab_size=256, hidden_size=128, intermediate_size=256, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=32)
    model = build_model(config).eval()
    model.reset_buffers("cpu")
    return model


@pytest.mark.parametrize("symmetric", [False, True])
def test_quantize_model_gptq_is_closer_to_float_than_rtn(symmetric):
    model = tiny_llama()
    samples = torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(1)).tolist()
    x = torch.tensor(samples)
    with torch.no_grad():
        ref = model(x)
    rtn = quantize_model(copy.deepcopy(model), QuantConfig("int4-rtn", 32, symmetric, head_bits=0))
    config = QuantConfig("int4-gptq", 32, symmetric, head_bits=0, calibration={"corpus": "random", "seed": 1})
    gptq = quantize_model_gptq(copy.deepcopy(model), config, samples, progress=False)

    assert all(isinstance(gptq.get_submodule(name), QuantLinear) for name, _ in block_linears(model))
    assert not list(block_linears(gptq))
    assert gptq.quant_config.calibration == {"corpus": "random", "seed": 1, "num_samples": 8, "seq_len": 64,
                                             "damp": 0.01, "act_order": False}
    with torch.no_grad():
        out_gptq, out_rtn = gptq(x), rtn(x)
    assert torch.isfinite(out_gptq).all()
    err_gptq, err_rtn = ((out_gptq - ref) ** 2).mean().item(), ((out_rtn - ref) ** 2).mean().item()
    print(f"symmetric={symmetric}: mean squared logit error GPTQ {err_gptq:.3g}, RTN {err_rtn:.3g}")
    assert err_gptq < 0.8 * err_rtn


def test_quantize_model_gptq_head_bits_and_method():
    model = tiny_llama()
    samples = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1)).tolist()
    with pytest.raises(ValueError, match="int4-gptq"):
        quantize_model_gptq(model, QuantConfig("int4-rtn", 32), samples, progress=False)
    quantize_model_gptq(model, QuantConfig("int4-gptq", 32, head_bits=8), samples, progress=False)
    assert isinstance(model.model.embed_tokens, QuantEmbedding) and model.model.embed_tokens.bits == 8
    assert torch.isfinite(model(torch.tensor(samples))).all()
