"""Quantized drop-in replacements for nn.Linear and nn.Embedding.

A `QuantLinear` keeps its weights in the fastest layout its device has (PyTorch's packed CPU kernels for int8 and
int4, else codes that are dequantized before a matmul) and shows the portable checkpoint layout to
`state_dict()` / `load_state_dict()`, so saving and loading never depend on the device that ran the model.

Which path a call takes:
- CPU, up to `kernel_max_rows` rows: `_weight_int8pack_mm` / `_weight_int4pack_mm_for_cpu` on bf16 activations
  (the kernels' fast path; fp32 inputs take a slow reference loop in them). This is decode and most prefill.
- more rows, autograd through the input (QLoRA training), or another device: dequantize the weight to the
  input's dtype and run one dense matmul.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from temper.quant import tensors as qt

# Above this many rows a dense GEMM on the dequantized weight beats the packed kernels, dequantization included.
# Rough crossovers from a one-off microbenchmark (AMD EPYC, 2 cores, PyTorch 2.13; 3072x576 and 4096x4096
# layers at 1-256 rows): unpacking int4 codes costs about as much as the kernel's deficit up to ~512 rows,
# int8 dequantization is cheap. Not swept systematically: a benchmark of it is still to be written.
KERNEL_MAX_ROWS = {8: 256, 4: 1024}


class QuantLinear(nn.Module):
    """y = x W^T + b with W stored as int8 (per output channel) or int4 (group-wise, symmetric or not).

    Build one with `QuantLinear.from_float(linear, bits, group_size, symmetric)`, from precomputed codes with
    `from_codes`, or on the meta device and fill it with `load_state_dict` (how checkpoints load).
    """

    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int = 0,
                 symmetric: bool = False, bias: bool = False, device: torch.device | str | None = None):
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        if bits == 4 and (group_size <= 0 or in_features % group_size):
            raise ValueError(f"int4 needs a group size that divides in_features ({in_features}), got {group_size}")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = bits, group_size if bits == 4 else 0
        self.symmetric = True if bits == 8 else symmetric
        self.kernel_max_rows = KERNEL_MAX_ROWS[bits]
        self.bias = nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False) if bias else None
        self._runtime: dict[str, torch.Tensor] = {}
        self.layout = ""
        device = torch.device(device or "cpu")
        self._set_portable({k: torch.zeros(shape, dtype=dtype, device=device)
                            for k, (shape, dtype) in self._portable_specs().items()})

    # ---- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_float(cls, linear: nn.Linear, bits: int, group_size: int = 128, symmetric: bool = False) -> QuantLinear:
        """Round-to-nearest quantization of a float linear layer."""
        w = linear.weight.detach()
        m = cls(linear.in_features, linear.out_features, bits, group_size, symmetric, linear.bias is not None,
                device="meta")
        if bits == 8:
            q, scale = qt.quantize_int8(w)
            m._set_portable({"qweight": q, "scales": scale})
        else:
            q, scale, mins = qt.quantize_int4(w, group_size, symmetric)
            m.set_codes(q, scale, mins)
        if linear.bias is not None:
            m.bias = nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
        return m

    def set_codes(self, codes: torch.Tensor, scale: torch.Tensor, mins: torch.Tensor | None = None) -> None:
        """Install int4 codes (N, K) in [0, 15] with scales and mins (N, K // G) (w = q * scale + min), or int8
        codes (N, K) with row scales. Grids from `temper.quant.tensors` are bf16-exact; others get snapped."""
        if self.bits == 8:
            self._set_portable({"qweight": codes.to(torch.int8), "scales": qt.to_bf16_grid(scale.float())})
            return
        scale = scale.float()
        zero = torch.zeros_like(scale) if mins is None else mins.float() + 8.0 * scale
        tensors = {"qweight": qt.pack_nibbles(codes), "scales": scale.to(torch.bfloat16)}
        if not self.symmetric:
            tensors["zeros"] = zero.to(torch.bfloat16)
        self._set_portable(tensors)

    # ---- portable <-> runtime layouts --------------------------------------------------------------------
    def _portable_specs(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        N, K = self.out_features, self.in_features
        if self.bits == 8:
            return {"qweight": ((N, K), torch.int8), "scales": ((N,), torch.float32)}
        specs = {"qweight": ((N, K // 2), torch.uint8), "scales": ((N, K // self.group_size), torch.bfloat16)}
        if not self.symmetric:
            specs["zeros"] = ((N, K // self.group_size), torch.bfloat16)
        return specs

    def _set_portable(self, t: dict[str, torch.Tensor]) -> None:
        """Take portable tensors and keep them in the layout that is fastest on their device."""
        device = t["qweight"].device
        if self.bits == 8:
            q, scale = t["qweight"].to(torch.int8).contiguous(), t["scales"].float().contiguous()
            self._runtime = {"qweight": q, "scales": scale}
            if device.type == "cpu":
                self._runtime["scales_bf16"] = scale.to(torch.bfloat16)
                self.layout = "int8-cpu-kernel"
            else:
                self.layout = "int8-dequant"
            return
        scale = t["scales"].to(torch.bfloat16).contiguous()
        zero = torch.zeros_like(scale) if self.symmetric else t["zeros"].to(torch.bfloat16).contiguous()
        if device.type == "cpu" and qt.can_pack_int4_cpu(self.out_features, self.in_features, self.group_size):
            codes = qt.unpack_nibbles(t["qweight"])
            self._runtime = {"packed": qt.pack_int4_cpu(codes), "sz": qt.scales_and_zeros(scale, zero)}
            self.layout = "int4-cpu-kernel"
        else:
            self._runtime = {"qweight": t["qweight"].contiguous(), "scales": scale, "zeros": zero}
            self.layout = "int4-dequant"

    def _scales_zeros(self) -> tuple[torch.Tensor, torch.Tensor]:
        """int4 scales and zero points (N, K // G) as bf16."""
        r = self._runtime
        if self.layout == "int4-cpu-kernel":
            return r["sz"][..., 0].t(), r["sz"][..., 1].t()
        return r["scales"], r["zeros"]

    def portable(self) -> dict[str, torch.Tensor]:
        """The checkpoint tensors (see `temper.quant.tensors` for the layout)."""
        r = self._runtime
        if self.bits == 8:
            return {"qweight": r["qweight"], "scales": r["scales"]}
        scale, zero = self._scales_zeros()
        packed = qt.pack_nibbles(qt.unpack_int4_cpu(r["packed"])) if self.layout == "int4-cpu-kernel" \
            else r["qweight"]
        out = {"qweight": packed, "scales": scale.contiguous()}
        if not self.symmetric:
            out["zeros"] = zero.contiguous()
        return out

    def codes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(codes (N, K), scales, mins) in fp32, as the forward pass uses them (w = q * scale + min)."""
        r = self._runtime
        if self.bits == 8:
            return r["qweight"], r["scales"], torch.zeros_like(r["scales"])
        scale, zero = (t.float() for t in self._scales_zeros())
        codes = qt.unpack_int4_cpu(r["packed"]) if self.layout == "int4-cpu-kernel" else qt.unpack_nibbles(r["qweight"])
        return codes, scale, zero - 8.0 * scale

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight (N, K) this layer computes with."""
        if self.bits == 8:
            return qt.dequantize_int8(self._runtime["qweight"], self._runtime["scales"], dtype)
        codes, scale, mins = self.codes()
        return qt.dequantize_int4(codes, scale, mins, dtype)

    # ---- compute -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if self.layout.endswith("cpu-kernel") and rows <= self.kernel_max_rows and \
                not (x.requires_grad and torch.is_grad_enabled()):
            y = self._kernel(x.reshape(rows, self.in_features).to(torch.bfloat16)).to(x.dtype)
            y = y.reshape(*x.shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias.to(y.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantize(x.dtype), bias)

    def _kernel(self, x: torch.Tensor) -> torch.Tensor:
        r = self._runtime
        if self.bits == 8:
            return torch.ops.aten._weight_int8pack_mm(x, r["qweight"], r["scales_bf16"])
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, r["packed"], self.group_size, r["sz"].contiguous())

    def rows(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Rows `ids` of the float weight, without dequantizing the rest (an embedding lookup)."""
        r, flat = self._runtime, ids.reshape(-1)
        if self.bits == 8:
            return (r["qweight"][flat].to(dtype) * r["scales"][flat].to(dtype)[:, None]).reshape(
                *ids.shape, self.in_features)
        K = self.in_features
        if self.layout == "int4-cpu-kernel":
            blocks = r["packed"].reshape(-1, 64 * K // 2)[flat // 64].reshape(-1, K // 2)  # 64 rows per id
            codes = qt.unpack_int4_cpu(blocks).reshape(flat.numel(), 64, K)
            codes = codes[torch.arange(flat.numel(), device=flat.device), flat % 64]
        else:
            codes = qt.unpack_nibbles(r["qweight"][flat])
        scale, zero = (t[flat].float() for t in self._scales_zeros())
        out = qt.dequantize_int4(codes, scale, zero - 8.0 * scale, dtype)
        return out.reshape(*ids.shape, K)

    def weight_bytes(self) -> int:
        """Bytes the weight takes in memory now (codes and scales; not the bias)."""
        return sum(t.numel() * t.element_size() for t in self._runtime.values())

    # ---- nn.Module plumbing: the portable tensors are the state ------------------------------------------
    def _apply(self, fn, recurse=True):
        moved = {k: fn(v) for k, v in self.portable().items()}
        if self.bias is not None:
            self.bias = nn.Parameter(fn(self.bias.data), requires_grad=False)
        self._set_portable(moved)
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for name, t in self.portable().items():
            destination[prefix + name] = t
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        specs = self._portable_specs()
        if self.bias is not None:
            specs["bias"] = ((self.out_features,), torch.float32)
        got = {}
        for name, (shape, _) in specs.items():
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
            elif tuple(state_dict[key].shape) != shape:
                error_msgs.append(f"size mismatch for {key}: checkpoint {tuple(state_dict[key].shape)}, "
                                  f"expected {shape}")
            else:
                got[name] = state_dict[key]
        if strict:
            unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and "." not in k[len(prefix):]
                                   and k[len(prefix):] not in specs)
        if len(got) == len(specs):
            if "bias" in got:
                self.bias = nn.Parameter(got.pop("bias").float(), requires_grad=False)
            self._set_portable(got)

    def extra_repr(self) -> str:
        scheme = "int8" if self.bits == 8 else \
            f"int4 g{self.group_size} {'sym' if self.symmetric else 'asym'}"
        return f"in_features={self.in_features}, out_features={self.out_features}, {scheme}, {self.layout}"

    @classmethod
    def fuse(cls, layers: list[QuantLinear]) -> QuantLinear:
        """One layer computing all of `layers` (same input, same scheme), outputs concatenated."""
        first = layers[0]
        fused = cls(first.in_features, sum(m.out_features for m in layers), first.bits, first.group_size,
                    first.symmetric, first.bias is not None, device="meta")
        fused.layout, fused.kernel_max_rows = first.layout, first.kernel_max_rows
        dims = {"packed": 0, "sz": 1, "qweight": 0, "scales": 0, "scales_bf16": 0, "zeros": 0}
        fused._runtime = {k: torch.cat([m._runtime[k] for m in layers], dim=dims[k]) for k in first._runtime}
        if first.bias is not None:
            fused.bias = nn.Parameter(torch.cat([m.bias for m in layers]), requires_grad=False)
        offset = 0  # the layers become views of the fused tensors: memory stays as it was, state_dict unchanged
        for m in layers:
            n = m.out_features
            m._runtime = {k: v.narrow(dims[k], offset, n) for k, v in fused._runtime.items()}
            if m.bias is not None:
                m.bias = nn.Parameter(fused.bias[offset: offset + n], requires_grad=False)
            offset += n
        return fused

    @staticmethod
    def can_fuse(layers: list[nn.Module]) -> bool:
        first = layers[0]
        return all(isinstance(m, QuantLinear) for m in layers) and all(
            (m.bits, m.group_size, m.symmetric, m.layout, m.in_features, m.bias is None) ==
            (first.bits, first.group_size, first.symmetric, first.layout, first.in_features, first.bias is None)
            for m in layers) and (first.layout != "int4-cpu-kernel" or all(m.out_features % 64 == 0 for m in layers))


class QuantEmbedding(QuantLinear):
    """An embedding table stored like a QuantLinear (vocab rows, hidden columns); forward looks rows up.

    When the model ties its head to the embedding, the head is a `TiedQuantHead` over this same table.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int, group_size: int = 0,
                 symmetric: bool = False, device: torch.device | str | None = None):
        super().__init__(embedding_dim, num_embeddings, bits, group_size, symmetric, False, device)
        self.dtype = torch.float32

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, bits: int, group_size: int = 128,
                       symmetric: bool = False) -> QuantEmbedding:
        q = QuantLinear.from_float(_as_linear(emb.weight), bits, group_size, symmetric)
        m = cls(emb.num_embeddings, emb.embedding_dim, bits, group_size, symmetric, device="meta")
        m.dtype = emb.weight.dtype
        m._set_portable(q.portable())
        return m

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.rows(ids, self.dtype)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return QuantLinear.forward(self, x)


class TiedQuantHead(nn.Module):
    """The output projection of a tied model: x @ table^T over a QuantEmbedding it does not own (no state)."""

    def __init__(self, embedding: QuantEmbedding):
        super().__init__()
        self._embedding = [embedding]  # a list: not a submodule, so the table is saved once, as the embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._embedding[0].linear(x)


def _as_linear(weight: torch.Tensor) -> nn.Linear:
    """A bias-free nn.Linear view of a (N, K) weight, without copying it."""
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    lin.weight = nn.Parameter(weight.detach(), requires_grad=False)
    return lin
