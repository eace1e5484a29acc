"""Weight-only quantization of 2-D weights (out_features N, in_features K): the formats as pure tensor functions.

Two schemes, both "weight-only": activations stay in floating point.

- int8, per output channel: `w[n, k] ~= q[n, k] * scale[n]`, q in [-127, 127] (symmetric).
- int4, group-wise along K: each run of `group_size` inputs of a row has its own `scale` and `min`, and
  `w[n, k] ~= q[n, k] * scale[n, g] + min[n, g]`, q in [0, 15]. Symmetric grids are the special case
  `min = -8 * scale` (q - 8 in [-8, 7]); asymmetric grids fit min and max of each group (as GGUF's Q4_1).

Scales and zero points are bf16 values: what PyTorch's int4 and int8 kernels compute with. The grids are
snapped to bf16 *before* codes are chosen, so the codes are optimal for the scales the kernels will use, and
the checkpoint, the CPU kernel and the dequantizing path all hold exactly the same numbers.

Portable (checkpoint) layout of int4: `qweight` (N, K // 2) uint8, code of column 2i in the low nibble of byte i
and column 2i + 1 in the high nibble; `scales` (N, K // G) bf16; `zeros` (N, K // G) bf16 with
`w = (q - 8) * scale + zero` (zero = min + 8 * scale; symmetric checkpoints have no zeros). int8: `qweight`
(N, K) int8 and `scales` (N,) fp32 holding bf16 values.

PyTorch's CPU int4 kernel (`_weight_int4pack_mm_for_cpu`) wants its own tiling; `pack_int4_cpu` writes it
directly (no int32 copy of the codes) and `unpack_int4_cpu` reads it back, so a checkpoint can be saved from
a model that runs on the fast kernel.
"""
from __future__ import annotations

import numpy as np
import torch

INT4_GROUP_SIZES = (32, 64, 128, 256)  # what the CPU kernel accepts; the portable path takes any divisor of K
CPU_PACK_ROWS = 64  # the CPU kernel tiles rows in blocks of 64


def effective_group_size(in_features: int, group_size: int) -> int:
    """`group_size`, or when it does not divide `in_features`, the largest kernel group size below it that does
    (SmolLM2's 576-wide inputs take groups of 64 when 128 is asked), else the largest divisor below it."""
    if in_features % group_size == 0:
        return group_size
    for g in sorted(INT4_GROUP_SIZES, reverse=True):
        if g < group_size and in_features % g == 0:
            return g
    return max(d for d in range(1, group_size + 1) if in_features % d == 0)


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: codes (N, K) int8 and scales (N,) fp32."""
    w = w.float()
    scale = to_bf16_grid(w.abs().amax(dim=1) / 127.0)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def to_bf16_grid(scale: torch.Tensor) -> torch.Tensor:
    """Positive scales rounded to bf16 values (kept in fp32): the kernels multiply by bf16 scales."""
    return scale.clamp(min=1e-30).to(torch.bfloat16).float().clamp(min=torch.finfo(torch.bfloat16).tiny)


def snap_int4_grid(scale: torch.Tensor, mins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, min) moved to the nearest grid whose scale and zero point (min + 8 * scale) are bf16 values."""
    scale = to_bf16_grid(scale.float())
    zero = (mins.float() + 8.0 * scale).to(torch.bfloat16).float()
    return scale, zero - 8.0 * scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.to(dtype) * scale.to(dtype)[:, None])


def int4_grid(w: torch.Tensor, group_size: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest scale and min per group (N, K // G) for weights (N, K), in fp32.

    Symmetric: scale = 2 * absmax / 15 and min = -8 * scale (GPTQ's convention: the grid is centred on 0
    and reaches -8 * scale, the largest positive code reaches 7 * scale). Asymmetric: the group's min and max
    are the ends of the grid, so that 16 levels span the range. Both are snapped to bf16 (`snap_int4_grid`).
    """
    N, K = w.shape
    g = w.float().reshape(N, K // group_size, group_size)
    if symmetric:
        scale = to_bf16_grid(g.abs().amax(dim=-1) * (2.0 / 15.0))
        return scale, -8.0 * scale
    lo, hi = g.amin(dim=-1), g.amax(dim=-1)
    return snap_int4_grid((hi - lo) / 15.0, lo)


def quantize_int4_with(w: torch.Tensor, scale: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
    """Codes (N, K) uint8 in [0, 15] of weights on a given grid (scale, min per group)."""
    N, K = w.shape
    G = K // scale.shape[1]
    g = w.float().reshape(N, K // G, G)
    q = torch.round((g - mins.float()[..., None]) / scale.float()[..., None]).clamp_(0, 15)
    return q.to(torch.uint8).reshape(N, K)


def quantize_int4(w: torch.Tensor, group_size: int, symmetric: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest group-wise int4: codes (N, K) uint8, scales and mins (N, K // G) fp32."""
    K = w.shape[1]
    if K % group_size:
        raise ValueError(f"in_features {K} is not a multiple of the group size {group_size}")
    scale, mins = int4_grid(w, group_size, symmetric)
    return quantize_int4_with(w, scale, mins), scale, mins


def dequantize_int4(codes: torch.Tensor, scale: torch.Tensor, mins: torch.Tensor,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Weights (N, K) from codes (N, K) and per-group scales and mins (N, K // G)."""
    N, K = codes.shape
    G = K // scale.shape[1]
    g = codes.to(dtype).reshape(N, K // G, G)
    return (g * scale.to(dtype)[..., None] + mins.to(dtype)[..., None]).reshape(N, K)


# NOTE: nibble shuffling runs in numpy on CPU tensors: PyTorch's uint8 shifts and strided copies are about 10x
# slower there (loading the default model's 210 matrices: seconds instead of a fraction of one).
def _on_cpu(t: torch.Tensor) -> bool:
    return t.device.type == "cpu"


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) codes in [0, 15] -> (N, K // 2) uint8, even columns in the low nibbles (the portable layout)."""
    c = codes.to(torch.uint8)
    if _on_cpu(c):
        n = c.numpy()
        return torch.from_numpy(n[:, 0::2] | (n[:, 1::2] << 4))
    return c[:, 0::2] | (c[:, 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """(N, K // 2) uint8 -> (N, K) codes: the inverse of `pack_nibbles`."""
    if _on_cpu(packed):
        n = packed.numpy()
        return torch.from_numpy(np.stack([n & 15, n >> 4], axis=-1).reshape(n.shape[0], -1))
    return torch.stack([packed & 15, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


def can_pack_int4_cpu(out_features: int, in_features: int, group_size: int) -> bool:
    """Whether the CPU kernel takes this shape and group size."""
    return out_features % CPU_PACK_ROWS == 0 and in_features % group_size == 0 and group_size in INT4_GROUP_SIZES


def pack_int4_cpu(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) codes -> the tiling of `_convert_weight_to_int4pack_for_cpu`, (N, K // 2) uint8.

    Within each block of 64 rows, byte [h, k, r] (h in 0..1, k < K, r < 16) holds row 32h + r in its low nibble
    and row 32h + 16 + r in its high nibble, column k. Equal to the aten op (tested), without its int32 input.
    """
    N, K = codes.shape
    v = codes.to(torch.uint8).numpy().reshape(N // 64, 2, 2, 16, K).transpose(0, 1, 2, 4, 3)  # (blk, h, nib, K, 16)
    return torch.from_numpy(np.ascontiguousarray(v[:, :, 0] | (v[:, :, 1] << 4)).reshape(N, K // 2))


def unpack_int4_cpu(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of `pack_int4_cpu`: (N, K // 2) tiled bytes -> (N, K) codes."""
    N, K = packed.shape[0], packed.shape[1] * 2
    b = packed.contiguous().numpy().reshape(N // 64, 2, K, 16)
    v = np.stack([b & 15, b >> 4], axis=2)  # (blk, h, nibble, K, 16)
    return torch.from_numpy(np.ascontiguousarray(v.transpose(0, 1, 2, 4, 3)).reshape(N, K))


def scales_and_zeros(scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The CPU kernel's (K // G, N, 2) bf16 table from per-group scales and zero points (N, K // G)."""
    return torch.stack([scale.t(), zero.t()], dim=-1).to(torch.bfloat16).contiguous()
