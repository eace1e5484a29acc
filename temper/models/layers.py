"""Building blocks shared by every architecture: norms, rotary embeddings, attention, gated MLPs, KV cache."""
from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from temper.models.config import ModelConfig
from temper.quant.linear import QuantLinear

if TYPE_CHECKING:
    from temper.models.attention import AttentionContext


def use_triton_ops(x: torch.Tensor) -> bool:
    """Fused Triton kernels (temper/models/triton_ops.py) for CUDA tensors outside autograd, where Triton is
    installed; TEMPER_TRITON_OPS=0 turns them off."""
    return x.is_cuda and _TRITON_OPS and not torch.is_grad_enabled()


_TRITON_OPS = importlib.util.find_spec("triton") is not None and os.environ.get("TEMPER_TRITON_OPS", "1") != "0"


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32. Gemma scales by (1 + weight) and casts after the product; Llama casts before."""

    def __init__(self, dim: int, eps: float, unit_offset: bool = False):
        super().__init__()
        self.eps = eps
        self.unit_offset = unit_offset
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_triton_ops(x) and x.shape[-1] <= 16384:
            from temper.models import triton_ops

            return triton_ops.rmsnorm(x, self.weight, self.eps, self.unit_offset)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.unit_offset:
            return (h * (1.0 + self.weight.float())).type_as(x)
        return self.weight * h.type_as(x)


def rope_inv_freq(dim: int, theta: float, scaling: dict | None) -> torch.Tensor:
    """Inverse frequencies of the rotary embedding, with linear or Llama-3 scaling."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if not scaling:
        return inv_freq
    factor = float(scaling["factor"])
    if scaling["rope_type"] == "linear":
        return inv_freq / factor
    # llama3: keep high frequencies, divide low ones by `factor`, interpolate in between
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_ctx = float(scaling["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rope_cos_sin(inv_freq: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin for `positions` (B, T), each (B, 1, T, D), computed in fp32 like transformers."""
    freqs = positions.float()[..., None] * inv_freq.to(positions.device)  # (B, T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) by the half-split convention of HF checkpoints (GGUF q/k are un-permuted at load)."""
    half = x.shape[-1] // 2
    if use_triton_ops(x) and half >= 8 and half & (half - 1) == 0:
        from temper.models import triton_ops

        return triton_ops.apply_rope(x, cos, sin)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


@dataclass
class KVCache:
    """A contiguous KV cache: slot `p` of a sequence holds the keys and values of its token at position `p`."""

    k: list[torch.Tensor]  # per layer (B, Hkv, max_len, D)
    v: list[torch.Tensor]

    @classmethod
    def allocate(cls, config: ModelConfig, batch_size: int, max_len: int, device: torch.device | str,
                 dtype: torch.dtype) -> KVCache:
        shape = (batch_size, config.num_kv_heads, max_len, config.head_dim)
        return cls(k=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)],
                   v=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)])

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]


class Attention(nn.Module):
    """Grouped-query attention with optional q/k/v biases, q/k norms, a sliding window and logit soft-capping."""

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.window = c.layer_window(layer)
        self.scale = (c.query_pre_attn_scalar or c.head_dim) ** -0.5
        self.softcap = c.attn_logit_softcapping
        self.layer = layer
        self.q_proj = nn.Linear(c.hidden_size, c.num_heads * c.head_dim, bias=c.attention_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.attention_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.attention_bias)
        self.o_proj = nn.Linear(c.num_heads * c.head_dim, c.hidden_size, bias=False)
        if c.family == "gemma3":
            self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps, unit_offset=True)
            self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps, unit_offset=True)
        else:
            self.q_norm = self.k_norm = None

        self.qkv: FusedLinear | None = None  # set by fuse_projections()

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], ctx: AttentionContext) -> torch.Tensor:
        B, T, _ = x.shape
        if self.qkv is not None:
            q, k, v = self.qkv(x)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, self.num_heads, self.head_dim)  # (B, T, H, D)
        k = k.view(B, T, self.num_kv_heads, self.head_dim)
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q.transpose(1, 2), *rope)  # (B, H, T, D)
        k = apply_rope(k.transpose(1, 2), *rope)
        out = ctx.attend(self, q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): SwiGLU with silu, GeGLU with tanh-approximated gelu."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.gelu = config.hidden_act == "gelu_tanh"
        self.gate_up: FusedLinear | None = None  # set by fuse_projections()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up is not None:
            g, u = self.gate_up(x)
            g = F.gelu(g, approximate="tanh") if self.gelu else F.silu(g)
            return self.down_proj(g.mul_(u))
        g = self.gate_proj(x)
        g = F.gelu(g, approximate="tanh") if self.gelu else F.silu(g)
        return self.down_proj(g * self.up_proj(x))


class FusedLinear:
    """Several plain linear layers that read the same input, run as one matmul (fewer, larger GEMMs: what the
    engine wants for small batches on CPU). The layers' weights become views of the stacked buffer, so memory is
    unchanged and state_dict() still shows each layer. Not an nn.Module: the layers stay where they are."""

    def __init__(self, linears: list[nn.Module]):
        self.linears = linears
        self.quantized: QuantLinear | None = None
        if isinstance(linears[0], QuantLinear):  # quantized layers fuse their codes (the originals become views)
            self.sizes = [m.out_features for m in linears]
            self.quantized = QuantLinear.fuse(linears)
        else:
            self._stack()

    def _stack(self) -> None:
        linears = self.linears
        self.sizes = [m.out_features for m in linears]
        with torch.no_grad():
            weight = torch.cat([m.weight for m in linears])
            self.bias = torch.cat([m.bias for m in linears]) if linears[0].bias is not None else None
            offset = 0
            for m, n in zip(linears, self.sizes):
                m.weight = nn.Parameter(weight[offset: offset + n], requires_grad=m.weight.requires_grad)
                if self.bias is not None:
                    m.bias = nn.Parameter(self.bias[offset: offset + n], requires_grad=m.bias.requires_grad)
                offset += n
        self.weight = weight
        self._params = [m.weight for m in linears]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.quantized is not None:
            return self.quantized(x).split(self.sizes, dim=-1)
        if any(m.weight is not p for m, p in zip(self.linears, self._params)):
            self._stack()  # a layer got a new weight tensor (load_state_dict(assign=True), a swap): restack
        return F.linear(x, self.weight, self.bias).split(self.sizes, dim=-1)

    @staticmethod
    def possible(linears: list[nn.Module]) -> bool:
        """Plain float nn.Linear layers of one dtype and device, or quantized layers of one scheme."""
        if isinstance(linears[0], QuantLinear):
            return QuantLinear.can_fuse(linears)
        return all(type(m) is nn.Linear for m in linears) and \
            len({(m.weight.dtype, m.weight.device) for m in linears}) == 1 and \
            all((m.bias is None) == (linears[0].bias is None) for m in linears)


def fuse_projections(model: nn.Module) -> int:
    """Fuse q/k/v and gate/up of every layer that allows it; returns how many groups were fused."""
    fused = 0
    for module in model.modules():
        if isinstance(module, Attention) and module.qkv is None and \
                FusedLinear.possible([module.q_proj, module.k_proj, module.v_proj]):
            module.qkv = FusedLinear([module.q_proj, module.k_proj, module.v_proj])
            fused += 1
        elif isinstance(module, GatedMLP) and module.gate_up is None and \
                FusedLinear.possible([module.gate_proj, module.up_proj]):
            module.gate_up = FusedLinear([module.gate_proj, module.up_proj])
            fused += 1
    return fused
