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
from temper.quant.gptq import _first_block_inputs, gptq_quantize_layer, quantize_model_gptq
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


@pytest.mark.parametrize("act_order", [False, True])
def test_lazy_batch_updates_give_the_same_codes(act_order):
    linear, x = layer_and_inputs()
    H = 2 * x.double().T @ x.double() / x.shape[0]
    immediate = gptq_quantize_layer(linear.weight, H, 32, False, block_size=256, act_order=act_order)
    for block_size in (16, 48):  # 48: groups straddle blocks, so some grids are fitted ahead of the lazy update
        lazy = gptq_quantize_layer(linear.weight, H, 32, False, block_size=block_size, act_order=act_order)
        assert (lazy[0] != immediate[0]).float().mean() < 1e-3
        torch.testing.assert_close(lazy[1], immediate[1])


def tiny_model(arch: str = "llama") -> nn.Module:
    """2 random blocks; Gemma 3's are a sliding-window layer with its own rope base and a global one."""
    torch.manual_seed(0)
    gemma = dict(layer_types=("sliding", "full"), sliding_window=16, rope_theta=1e6, rope_local_theta=1e4,
                 hidden_act="gelu_tanh", query_pre_attn_scalar=32, tie_word_embeddings=True)
    config = ModelConfig(arch=arch, vocab_size=256, hidden_size=128, intermediate_size=256, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=32, **(gemma if arch == "gemma3" else {}))
    model = build_model(config).eval()
    model.reset_buffers("cpu")
    return model


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_recorded_block_inputs_replay_the_forward_pass(arch):
    model = tiny_model(arch)
    samples = torch.randint(0, 256, (6, 40), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.no_grad():
        batches = _first_block_inputs(model, samples, batch_size=4)
        assert [b.h.shape[0] for b in batches] == [4, 2]
        for b, start in zip(batches, (0, 4)):
            h = b.h
            for index, layer in enumerate(model.model.layers):
                h = layer(h, b.ropes[index], b.ctx)
            expected = model(torch.tensor(samples[start: start + 4]))
            assert torch.equal(model.logits(model.model.norm(h)), expected)
    if arch == "gemma3":  # the global layer got the global rope, not the first (sliding) layer's
        assert not torch.equal(batches[0].ropes[0][0], batches[0].ropes[1][0])


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_quantize_model_gptq_is_closer_to_float_than_rtn(arch, symmetric):
    model = tiny_model(arch)
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
                                             "damp": 0.01, "act_order": True}
    with torch.no_grad():
        out_gptq, out_rtn = gptq(x), rtn(x)
    assert torch.isfinite(out_gptq).all()
    err_gptq, err_rtn = ((out_gptq - ref) ** 2).mean().item(), ((out_rtn - ref) ** 2).mean().item()
    print(f"{arch} symmetric={symmetric}: mean squared logit error GPTQ {err_gptq:.3g}, RTN {err_rtn:.3g}")
    assert err_gptq < 0.8 * err_rtn


def test_quantize_model_gptq_head_bits_and_method():
    model = tiny_model()
    samples = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1)).tolist()
    with pytest.raises(ValueError, match="int4-gptq"):
        quantize_model_gptq(model, QuantConfig("int4-rtn", 32), samples, progress=False)
    quantize_model_gptq(model, QuantConfig("int4-gptq", 32, head_bits=8), samples, progress=False)
    assert isinstance(model.model.embed_tokens, QuantEmbedding) and model.model.embed_tokens.bits == 8
    assert torch.isfinite(model(torch.tensor(samples))).all()


@pytest.mark.slow
def test_gptq_beats_rtn_on_smollm2_perplexity():
    from temper.models.loader import load
    from temper.models.registry import resolve
    from temper.quant.corpus import calibration_samples, corpus_available, heldout_ids, perplexity

    if not corpus_available():
        pytest.skip("the Python docs corpus is not installed (apt-get install python3.11-doc)")
    loaded = load(resolve("smollm2-135m-instruct"))
    ids = heldout_ids(loaded.tokenizer, 4096)
    samples = calibration_samples(loaded.tokenizer, num_samples=16, seq_len=512)
    fp32 = perplexity(loaded.model, ids)
    rtn = perplexity(quantize_model(copy.deepcopy(loaded.model), QuantConfig("int4-rtn", 128, head_bits=0)), ids)
    gptq_model = quantize_model_gptq(loaded.model, QuantConfig("int4-gptq", 128, head_bits=0), samples)
    gptq = perplexity(gptq_model, ids)
    print(f"SmolLM2-135M held-out perplexity, int4 g128 asymmetric: fp32 {fp32:.3f}, RTN {rtn:.3f}, GPTQ {gptq:.3f}")
    assert gptq < rtn - 0.5 * (rtn - fp32)  # GPTQ removes at least half of RTN's loss
