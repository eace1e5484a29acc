"""GGUF quantized blocks straight into temper's int4/int8 layouts, without a float copy of the 4-bit weights.

- Q4_0 (d; w = (q - 8) d), Q4_1 (d, m; w = q d + m) and Q4_K (super-blocks of 256 with 6-bit sub-block scales and
  mins; w = q d sc - dmin m) are 4-bit codes with one scale (and min) per 32 inputs: they become int4 group-32
  codes as they are; scales and zero points are rounded to bf16, the precision PyTorch's kernels compute with
  (see `temper.quant.tensors`).
- Q8_0 (int8 codes, one scale per 32) becomes int8 with one scale per row, the layout of the int8 kernel: the
  codes are re-rounded to the row's scale (at most half a step of it).
- Other types (Q5_0, Q6_K, ...) have no 4-bit equivalent: they are dequantized and re-quantized to int8 per row.
- Float tensors (norms) load as they are.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from temper.models.config import ModelConfig
from temper.models.gguf_file import hf_name, unpermute_rope
from temper.quant import tensors as qt

QK = 32  # values per block of Q4_0, Q4_1 and Q8_0, and per sub-block of Q4_K


def _blocks(data: np.ndarray, rows: int, block_bytes: int) -> np.ndarray:
    return np.ascontiguousarray(data).view(np.uint8).reshape(rows, -1, block_bytes)


def _f16(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view(np.float16)[..., 0].astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """16 bytes per block -> 32 codes: value j in the low nibble of byte j, value j + 16 in its high nibble."""
    return np.concatenate([qs & 15, qs >> 4], axis=-1)


def q4_0(data: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = _blocks(data, rows, 2 + QK // 2)
    d = _f16(b[..., 0:2])
    return _nibbles(b[..., 2:]).reshape(rows, -1), d, -8.0 * d


def q4_1(data: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = _blocks(data, rows, 4 + QK // 2)
    return _nibbles(b[..., 4:]).reshape(rows, -1), _f16(b[..., 0:2]), _f16(b[..., 2:4])


def q4_k(data: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from gguf.quants import Q4_K

    b = _blocks(data, rows, 2 + 2 + 12 + 128)
    nb = b.shape[1]
    d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
    sc, m = Q4_K.get_scale_min(b[..., 4:16].reshape(-1, 12))
    scale = d[..., None] * sc.reshape(rows, nb, 8).astype(np.float32)
    mins = -dmin[..., None] * m.reshape(rows, nb, 8).astype(np.float32)
    # 4 chunks of 32 bytes; sub-block 2i is chunk i's low nibbles, 2i + 1 its high nibbles
    qs = b[..., 16:].reshape(rows, nb, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 1, 2, 1)
    return (qs & 15).reshape(rows, -1), scale.reshape(rows, -1), mins.reshape(rows, -1)


def q8_0_per_row(data: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 -> int8 codes with one scale per row (re-rounded), and the row scales."""
    b = _blocks(data, rows, 2 + QK)
    d = _f16(b[..., 0:2])  # (rows, blocks)
    q = b[..., 2:].view(np.int8).astype(np.float32)
    w = q * d[..., None]
    scale = np.maximum(np.abs(w).reshape(rows, -1).max(axis=1) / 127.0, 1e-12)
    codes = np.clip(np.rint(w.reshape(rows, -1) / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale.astype(np.float32)


INT4_TYPES = {"Q4_0": q4_0, "Q4_1": q4_1, "Q4_K": q4_k}
FLOAT_TYPES = ("F32", "F16", "BF16")


def quantized_state(reader, config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of a checkpoint state dict in temper's quantized layout, straight from the GGUF blocks.

    Quantized matrices give `<module>.qweight` and `.scales` (and `.zeros` when asymmetric); float tensors give
    their usual names, as `temper.models.gguf_file.iter_tensors` does.
    """
    from temper.models.gguf_file import iter_tensors

    float_names = set()
    for t in reader.tensors:
        kind = t.tensor_type.name
        name = hf_name(t.name, config.family)
        if kind in FLOAT_TYPES or not name.endswith(".weight") or len(t.shape) != 2:
            float_names.add(t.name)
            continue
        rows = int(t.shape[1])
        heads = _rope_heads(t.name, config)
        base = name[: -len(".weight")]
        if kind in INT4_TYPES:
            codes, scale, mins = (_unpermute(a, heads) for a in INT4_TYPES[kind](t.data, rows))
            scale, mins = torch.from_numpy(scale), torch.from_numpy(mins)
            yield base + ".qweight", qt.pack_nibbles(torch.from_numpy(codes))
            yield base + ".scales", scale.to(torch.bfloat16)
            if kind != "Q4_0":  # Q4_0 is symmetric: min = -8 * scale, zero point 0
                yield base + ".zeros", (mins + 8.0 * scale).to(torch.bfloat16)
        elif kind == "Q8_0":
            codes, scale = q8_0_per_row(t.data, rows)
            yield base + ".qweight", torch.from_numpy(_unpermute(codes, heads))
            yield base + ".scales", torch.from_numpy(_unpermute(scale, heads))
        else:
            float_names.add(t.name)  # no 4-bit equivalent: int8 per row from the dequantized values below
    for name, w in iter_tensors(reader, config, only=float_names):
        if name.endswith(".weight") and w.ndim == 2:
            codes, scale = qt.quantize_int8(torch.from_numpy(w))
            yield name[: -len(".weight")] + ".qweight", codes
            yield name[: -len(".weight")] + ".scales", scale
        else:
            yield name, torch.from_numpy(w)


def _rope_heads(gguf_name: str, config: ModelConfig) -> int | None:
    """Heads to un-permute by (llama.cpp stores llama q/k rows interleaved for its rotary layout), or None."""
    if config.family != "llama":
        return None
    if gguf_name.endswith("attn_q.weight"):
        return config.num_heads
    if gguf_name.endswith("attn_k.weight"):
        return config.num_kv_heads
    return None


def _unpermute(a: np.ndarray, heads: int | None) -> np.ndarray:
    return a if heads is None else np.ascontiguousarray(unpermute_rope(a, heads))
