"""GGUF blocks decoded into int4/int8 codes reproduce what gguf-py dequantizes; the default model loads that way."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from temper.quant import gguf as qg
from temper.quant.linear import QuantLinear
from tests.helpers import assert_close

BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q4_K": 144, "Q8_0": 34}
VALUES_PER_BLOCK = {"Q4_0": 32, "Q4_1": 32, "Q4_K": 256, "Q8_0": 32}
SCALE_OFFSETS = {"Q4_0": [0], "Q4_1": [0, 2], "Q4_K": [0, 2], "Q8_0": [0]}  # fp16 fields of each block


def random_blocks(kind: str, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Random bytes in the block layout of `kind`, with finite fp16 scales (what a real file holds)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(rows, cols // VALUES_PER_BLOCK[kind], BLOCK_BYTES[kind]), dtype=np.uint8)
    for off in SCALE_OFFSETS[kind]:
        d = rng.uniform(0.001, 0.05, size=blocks.shape[:2]).astype(np.float16)
        blocks[..., off: off + 2] = d[..., None].view(np.uint8).reshape(*blocks.shape[:2], 2)
    return blocks.reshape(rows, -1)


def reference(kind: str, data: np.ndarray) -> torch.Tensor:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    return torch.from_numpy(dequantize(data, GGMLQuantizationType[kind]).astype(np.float32))


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q4_K"])
def test_int4_blocks_decode_to_what_gguf_dequantizes(kind):
    data = random_blocks(kind, 64, 512)
    codes, scale, mins = (torch.from_numpy(np.asarray(a)) for a in qg.INT4_TYPES[kind](data, 64))
    assert codes.shape == (64, 512) and codes.max() <= 15 and scale.shape == (64, 512 // 32)
    ours = (codes.float().reshape(64, -1, 32) * scale[..., None] + mins[..., None]).reshape(64, 512)
    assert_close(ours, reference(kind, data), atol=1e-6, what=kind)


def test_q8_0_becomes_int8_per_row_within_half_a_step():
    data = random_blocks("Q8_0", 64, 512)
    codes, scale = qg.q8_0_per_row(data, 64)
    ours = torch.from_numpy(codes).float() * torch.from_numpy(scale)[:, None]
    ref = reference("Q8_0", data)
    assert ((ours - ref).abs() <= torch.from_numpy(scale)[:, None] / 2 + 1e-7).all()


def test_default_model_loads_its_gguf_blocks_as_int4(smollm2_path):
    from temper.models.loader import load
    from temper.quant.model import weight_bytes

    quantized = load(smollm2_path, quantization="gguf")
    reference_model = load(smollm2_path)
    model = quantized.model
    linears = [m for m in model.model.layers.modules() if isinstance(m, QuantLinear)]
    assert len(linears) == 7 * model.config.num_layers
    assert all(m.bits == 4 and m.group_size == 32 and m.layout == "int4-cpu-kernel" for m in linears)
    assert weight_bytes(model) < 0.2 * weight_bytes(reference_model.model)
    # the same weights as the float conversion, up to the bf16 rounding of the scales and zero points
    for name in ("self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"):
        ours = model.model.layers[3].get_submodule(name).dequantize()
        ref = reference_model.model.model.layers[3].get_submodule(name).weight
        assert_close(ours, ref, atol=2 ** -8 * ref.abs().max().item(), what=name)
    ids = torch.tensor([quantized.tokenizer.encode("The capital of France is Paris. The capital of Italy is")])
    with torch.no_grad():
        ours, ref = model(ids)[0].float(), reference_model.model(ids)[0]
    kl = torch.nn.functional.kl_div(ours.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="none")
    print(f"KL(float || gguf int4) per token: mean {kl.sum(-1).mean():.5f}, max {kl.sum(-1).max():.5f}")
    assert kl.sum(-1).max() < 0.02
    assert (ours.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9
