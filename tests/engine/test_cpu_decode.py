"""The whole decode step in one C call (temper/engine/cpu_decode.py, attention/cpu_decode.c) against the model's own
forward, for fp32, int8 and int4 weights, and the engine's greedy output through it against the plain loop."""
from __future__ import annotations

import logging
import random
from dataclasses import replace

import pytest
import torch
from torch import nn

from temper.engine.attention import PagedKVCache, cpu_kernel_available
from temper.engine.config import EngineConfig
from temper.engine.cpu_decode import CpuDecoder, linear_forward, unsupported
from temper.engine.llm_engine import LLMEngine
from temper.models import build_model
from temper.quant.config import QuantConfig
from temper.quant.linear import QuantLinear, TiedQuantHead
from temper.quant.model import quantize_model
from tests.engine import paged_reference
from tests.engine.paged_reference import check_engine_matches_loop, word_tokenizer
from tests.engine.test_paged_attention import CONFIGS

pytestmark = pytest.mark.skipif(not cpu_kernel_available()[0], reason="no C compiler for the CPU kernels")

VARIANTS = {  # Llama-family shapes the C forward covers
    "llama": CONFIGS["llama"],
    "qwen2-bias": replace(CONFIGS["llama"], arch="qwen2", attention_bias=True),
    "mistral-window": replace(CONFIGS["llama"], arch="mistral", sliding_window=5, layer_types=("sliding", "full")),
}


def random_model(config, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(config)
    model.reset_buffers()
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    return model.eval()


class Int8Blocks(nn.Module):
    """An int4 layer in fp32 math with its input rounded as the C forward rounds it: w = code * scale + min, the
    code part dotted with the input rounded to int8 per block of 32 (scale max|x| / 127), the min part with the
    exact input."""

    def __init__(self, layer: QuantLinear):
        super().__init__()
        codes, scale, mins = layer.codes()
        G = layer.group_size
        self.scaled = codes.float() * scale.repeat_interleave(G, 1)
        self.mins = mins.repeat_interleave(G, 1)
        self.bias = None if layer.bias is None else layer.bias.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x.reshape(*x.shape[:-1], -1, 32)
        d = blocks.abs().amax(-1, keepdim=True) / 127.0
        inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
        rounded = ((blocks * inv).round() * d).reshape(x.shape)
        return nn.functional.linear(rounded, self.scaled, self.bias) + x @ self.mins.T


def dequantized_copy(model: nn.Module, simulate_int8_inputs: bool = False) -> nn.Module:
    """The same model with every quantized block linear in fp32 math on its dequantized weight (int4 ones as
    `Int8Blocks` when `simulate_int8_inputs`)."""
    import copy

    ref = copy.deepcopy(model)
    for name, m in list(ref.named_modules()):
        if isinstance(m, QuantLinear) and name.startswith("model.layers."):
            if simulate_int8_inputs and m.bits == 4:
                lin = Int8Blocks(m)
            else:
                lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
                lin.weight.data = m.dequantize()
                if m.bias is not None:
                    lin.bias.data = m.bias.data.float().clone()
            parent, _, child = name.rpartition(".")
            setattr(ref.get_submodule(parent), child, lin)
    return ref


def decoder_for(model: nn.Module, B: int, T: int, block_size: int = 4) -> tuple[CpuDecoder, list[list[int]]]:
    """A decoder over a pool with room for B sequences of T tokens, their blocks scattered over it."""
    blocks = -(-T // block_size)
    cache = PagedKVCache.allocate(model.config, B * blocks + 3, block_size, "cpu", torch.float32)
    free = list(range(B * blocks + 3))
    random.Random(0).shuffle(free)
    return CpuDecoder(model, cache, block_size), [[free.pop() for _ in range(blocks)] for _ in range(B)]


def decode_all_positions(model: nn.Module, seqs: list[list[int]], decoder=None, tables=None) -> torch.Tensor:
    """Logits (B, T, V) of every position, each token fed as one C decode step (all sequences in lockstep)."""
    B, T = len(seqs), len(seqs[0])
    if decoder is None:
        decoder, tables = decoder_for(model, B, T)
    return torch.stack([decoder.decode([s[t] for s in seqs], [t] * B, tables) for t in range(T)], dim=1)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_fp32_decode_equals_the_dense_forward(name):
    model = random_model(VARIANTS[name])
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (3, 23), generator=gen)
    expected = model(ids)
    got = decode_all_positions(model, ids.tolist())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits,group,bias", [(4, 32, False), (4, 64, True), (4, 128, False), (8, 0, True)])
def test_quantized_linear_equals_fp32_math_on_the_same_weights(bits, group, bias):
    """int4 rows are dotted with the input rounded to int8 per block of 32 (llama.cpp's Q4_1 x Q8_1 scheme), their
    mins with the exact input; int8 rows with the fp32 input. Simulated in fp32 on the dequantized weights, the
    outputs agree to float rounding."""
    gen = torch.Generator().manual_seed(bits + group)
    dense = nn.Linear(256, 96, bias=bias)
    dense.weight.data = torch.randn(96, 256, generator=gen) * 0.1
    layer = QuantLinear.from_float(dense, bits, group)
    x = torch.randn(3, 256, generator=gen)
    x[1, :32] = 0.0  # an all-zero block (scale 0)
    expected = Int8Blocks(layer)(x) if bits == 4 else nn.functional.linear(x, layer.dequantize(), layer.bias)
    torch.testing.assert_close(linear_forward(layer, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method,group,head_bits", [("int4-rtn", 32, 0), ("int4-rtn", 64, 8), ("int8", 0, 4)])
def test_quantized_decode_stays_close_to_fp32_math(method, group, head_bits):
    """The whole step on quantized weights against fp32 math on the same (dequantized) weights: the int8 rounding
    of int4 inputs costs a few percent of the logits on these random weights, whose activations are far rougher
    than a trained model's, and almost no greedy choices; int8 layers alone cost nothing."""
    model = random_model(VARIANTS["qwen2-bias"])
    quantize_model(model, QuantConfig(method=method, group_size=group or 128, head_bits=head_bits))
    ids = torch.randint(0, model.config.vocab_size, (2, 19), generator=torch.Generator().manual_seed(2))
    got = decode_all_positions(model, ids.tolist())
    with torch.no_grad():
        reference = dequantized_copy(model)
        head = model.lm_head._embedding[0] if isinstance(model.lm_head, TiedQuantHead) else model.lm_head
        if isinstance(head, QuantLinear):  # the head in fp32 math too (its torch kernel rounds inputs to bf16)
            reference.lm_head = nn.Linear(head.in_features, head.out_features, bias=False)
            reference.lm_head.weight.data = head.dequantize()
        expected = reference(ids)
    error = ((got - expected).norm() / expected.norm()).item()
    assert error < (5e-2 if method.startswith("int4") or head_bits == 4 else 1e-5), f"relative error {error:.2e}"
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize("name", ["llama", "qwen2-bias", "mistral-window", "gemma3-window"])
def test_engine_greedy_through_the_c_forward_equals_the_loop(name, monkeypatch):
    """Chunked prefill, preemption and prefix hits, with the small decode-only steps in C (and the larger ones on
    the torch path): token for token the plain loop's output."""
    if name in VARIANTS:  # paged_reference.MODELS has gemma3-window (11-token window) already
        monkeypatch.setitem(paged_reference.MODELS, name, replace(VARIANTS[name], vocab_size=128))
    engine = check_engine_matches_loop(name, "cpu", "cpu")
    assert engine.runner.cpu_decoder is not None and engine.runner.cpu_decode_steps > 0


def test_unsupported_models_keep_the_torch_path(caplog):
    class Wrapped(nn.Module):  # as an adapter wraps a layer
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    llama = random_model(CONFIGS["llama"])
    llama.model.layers[1].mlp.up_proj = Wrapped(llama.model.layers[1].mlp.up_proj)
    assert "Wrapped" in unsupported(llama)
    with pytest.raises(ValueError, match="Wrapped"):
        CpuDecoder(llama, None, 4)
    with caplog.at_level(logging.INFO, logger="temper.engine.model_runner"):
        engine = LLMEngine(llama, word_tokenizer(), EngineConfig(kv_cache_memory=1 << 20, max_model_len=64))
    assert engine.runner.backend == "cpu" and engine.runner.cpu_decoder is None
    assert "stay on the PyTorch path: a Wrapped layer" in caplog.text
    assert "fp32" in unsupported(random_model(CONFIGS["gemma3-window"]).to(torch.bfloat16))
    off = LLMEngine(random_model(CONFIGS["llama"]), word_tokenizer(),
                    EngineConfig(kv_cache_memory=1 << 20, max_model_len=64, cpu_decode_max_batch=0))
    assert off.runner.cpu_decoder is None
    with pytest.raises(ValueError, match="cpu_decode_max_batch"):
        EngineConfig(cpu_decode_max_batch=-1)


def test_replaced_weights_are_picked_up():
    """The structs point at the model's tensors; a step after a layer got a new weight tensor rebuilds them (a
    stale pointer would read freed memory)."""
    model = random_model(CONFIGS["llama"])
    seqs = [[5, 9, 2, 7, 11, 3]]
    decoder, tables = decoder_for(model, 1, len(seqs[0]))
    before = decode_all_positions(model, seqs, decoder, tables)
    mlp = model.model.layers[0].mlp
    mlp.down_proj.weight = nn.Parameter(torch.randn_like(mlp.down_proj.weight))
    after = decode_all_positions(model, seqs, decoder, tables)
    torch.testing.assert_close(after, model(torch.tensor(seqs)), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("name", ["gemma3-window", "softcap"])
def test_gemma3_decode_equals_the_dense_forward(name):
    """Sandwich norms, q/k norms, GeGLU, scaled embeddings, local rotary frequencies on the sliding-window layers
    (a 7-token window over 23 positions), attention soft-capping."""
    model = random_model(CONFIGS[name])
    assert unsupported(model) is None
    ids = torch.randint(0, model.config.vocab_size, (2, 23), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(decode_all_positions(model, ids.tolist()), model(ids), rtol=1e-4, atol=1e-4)
