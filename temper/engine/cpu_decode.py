"""A decode step of a Llama-family or Gemma 3 model in one C call on the CPU (attention/cpu_decode.c), for small
batches.

A PyTorch decode step of SmolLM2 at batch 1 is ~900 small operators, and MKL's fp32 matrix-vector product streams
weights at ~12 GB/s on a 2-core EPYC that reads 27-31 GB/s: the step took 60-70 ms against a bandwidth floor of
~18 ms. The C forward reads each weight row once for all of the step's sequences, shares rows among OpenMP
threads, attends with the paged kernel of cpu_kernels.c and returns only the logits. The model runner uses it for
decode-only steps of up to `EngineConfig.cpu_decode_max_batch` sequences on the `cpu` attention backend; larger
batches, prefill chunks and models it does not cover (`unsupported` says why) keep the PyTorch path.

Weights: fp32 linears are read where they are (live: a trainer's in-place updates are seen); int4 layers
(`QuantLinear`, groups of a multiple of 32) are repacked once into blocks of 32 inputs and dotted with activations
quantized to int8 per block, as llama.cpp does for Q4_1 (a copy of the codes: half a byte per weight, plus an
fp32 scale and min per group); int8 layers read their codes with a scale per row.
"""
from __future__ import annotations

import ctypes
import logging

import torch
from torch import nn

from temper.engine.attention.cpu_paged import load_library
from temper.engine.attention.triton_paged import padded_tables
from temper.models.gemma3 import Gemma3Block
from temper.models.layers import RMSNorm, rope_cos_sin
from temper.models.llama import LlamaBlock
from temper.quant.linear import QuantLinear, TiedQuantHead

log = logging.getLogger(__name__)

F32, Q4, I8 = 0, 1, 2
_KIND_NAMES = {F32: "fp32", Q4: "int4", I8: "int8"}
_ptr, _i32 = ctypes.c_void_p, ctypes.c_int32


class _Linear(ctypes.Structure):
    _fields_ = [("kind", _i32), ("out_features", _i32), ("in_features", _i32), ("group_size", _i32),
                ("w", _ptr), ("q", _ptr), ("scale", _ptr), ("min", _ptr), ("bias", _ptr)]


class _Layer(ctypes.Structure):
    _fields_ = [("attn_norm", _ptr), ("ffn_norm", _ptr), *((n, _Linear) for n in
                ("q", "k", "v", "o", "gate", "up", "down")), ("k_pool", _ptr), ("v_pool", _ptr), ("window", _i32),
                ("local_rope", _i32), ("q_norm", _ptr), ("k_norm", _ptr), ("post_attn_norm", _ptr),
                ("post_ffn_norm", _ptr)]


class _Model(ctypes.Structure):
    _fields_ = [*((n, _i32) for n in ("num_layers", "hidden", "num_heads", "num_kv_heads", "head_dim",
                                      "intermediate", "vocab", "block_size")),
                ("pool_head_stride", ctypes.c_int64), ("eps", ctypes.c_float), ("attn_scale", ctypes.c_float),
                ("final_norm", _ptr), ("head", _Linear), ("layers", ctypes.POINTER(_Layer)),
                ("norm_offset", ctypes.c_float), ("attn_softcap", ctypes.c_float), ("final_softcap", ctypes.c_float),
                ("gelu", _i32)]


def _float_ok(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()


def _linear_problem(m: nn.Module) -> str | None:
    if type(m) is nn.Linear:
        if not _float_ok(m.weight) or (m.bias is not None and not _float_ok(m.bias)):
            return "a linear layer is not a contiguous fp32 CPU tensor"
        return None
    if isinstance(m, QuantLinear):
        if m.bits == 4 and m.group_size % 32:
            return f"int4 groups of {m.group_size} (the C forward takes multiples of 32)"
        return None
    if isinstance(m, TiedQuantHead):
        return _linear_problem(m._embedding[0])
    return f"a {type(m).__name__} layer (adapters and other wrappers keep the PyTorch path)"


def _norms(layer: nn.Module) -> dict[str, RMSNorm | None]:
    """The block's norms by their place in the C struct (Gemma 3's extra ones None for Llama)."""
    a = layer.self_attn
    if type(layer) is Gemma3Block:
        return {"attn_norm": layer.input_layernorm, "ffn_norm": layer.pre_feedforward_layernorm,
                "post_attn_norm": layer.post_attention_layernorm, "post_ffn_norm": layer.post_feedforward_layernorm,
                "q_norm": a.q_norm, "k_norm": a.k_norm}
    return {"attn_norm": layer.input_layernorm, "ffn_norm": layer.post_attention_layernorm, "post_attn_norm": None,
            "post_ffn_norm": None, "q_norm": None, "k_norm": None}


def unsupported(model: nn.Module) -> str | None:
    """Why the C forward cannot run this model (None when it can): pre-norm Llama-family blocks with SwiGLU, or
    Gemma 3 blocks (sandwich norms, q/k norms, GeGLU, local rotary frequencies on sliding-window layers), fp32 on
    the CPU, with plain or quantized linear layers."""
    c = getattr(model, "config", None)
    if c is None or not hasattr(model, "model"):
        return "not a temper CausalLM"
    if c.head_dim % 2 or model.dtype != torch.float32 or model.device.type != "cpu":
        return "not an fp32 model on the CPU"
    block = Gemma3Block if c.family == "gemma3" else LlamaBlock
    offset = block is Gemma3Block
    for layer in model.model.layers:
        if type(layer) is not block:
            return f"a {type(layer).__name__} block"
        a, mlp = layer.self_attn, layer.mlp
        if (a.q_norm is not None) != (block is Gemma3Block):
            return "query/key norms on a Llama-family block"
        for m in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            if (why := _linear_problem(m)) is not None:
                return why
        for norm in _norms(layer).values():
            if norm is not None and (not _float_ok(norm.weight) or norm.unit_offset != offset):
                return "a norm that is not an fp32 RMSNorm of the family's kind"
    if model.model.norm.unit_offset != offset:
        return "a final norm that is not of the family's kind"
    return _linear_problem(model.lm_head)


def _block_pairs(codes: torch.Tensor) -> torch.Tensor:
    """int4 codes (N, K) in [0, 15] -> (N, ceil(K / 64), 32) bytes: byte i of pair p holds input i of block 2p in
    its low nibble and input i of block 2p + 1 in its high one (zero past the last block)."""
    N, K = codes.shape
    pairs = -(-K // 64)
    c = torch.zeros(N, pairs * 64, dtype=torch.uint8)
    c[:, :K] = codes.to(torch.uint8)
    c = c.reshape(N, pairs, 2, 32)
    return (c[:, :, 0] | (c[:, :, 1] << 4)).contiguous()


def linear_struct(m: nn.Module, keep: list[torch.Tensor]) -> _Linear:
    """The C view of a linear layer: an fp32 nn.Linear's own tensors, or a quantized layer's codes in the C
    layout (new tensors, appended to `keep`, which must outlive the struct)."""
    if isinstance(m, TiedQuantHead):
        m = m._embedding[0]
    if type(m) is nn.Linear:
        bias = m.bias.data_ptr() if m.bias is not None else None
        return _Linear(F32, m.out_features, m.in_features, 0, m.weight.data_ptr(), None, None, None, bias)
    bias = None
    if m.bias is not None:
        keep.append(b := m.bias.detach().float().contiguous())
        bias = b.data_ptr()
    if m.bits == 8:
        codes, scales, _ = m.codes()
        codes, scales = codes.to(torch.int8).contiguous(), scales.float().contiguous()
        keep += [codes, scales]
        return _Linear(I8, m.out_features, m.in_features, 0, None, codes.data_ptr(), scales.data_ptr(), None, bias)
    codes, scales, mins = m.codes()
    blocks, scales, mins = _block_pairs(codes), scales.float().contiguous(), mins.float().contiguous()
    keep += [blocks, scales, mins]
    return _Linear(Q4, m.out_features, m.in_features, m.group_size, None, blocks.data_ptr(), scales.data_ptr(),
                   mins.data_ptr(), bias)


@torch.inference_mode()
def linear_forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x (B, K) through one layer as the C forward computes it (for tests and measurements)."""
    if (why := _linear_problem(m)) is not None:
        raise ValueError(f"the C forward does not take this layer: {why}")
    keep: list[torch.Tensor] = []
    struct = linear_struct(m, keep)
    x = x.float().contiguous()
    y = torch.empty(x.shape[0], struct.out_features)
    lib = load_library()
    lib.linear_forward.argtypes = [ctypes.POINTER(_Linear), _i32, _ptr, _ptr]
    if lib.linear_forward(ctypes.byref(struct), x.shape[0], x.data_ptr(), y.data_ptr()) != 0:
        raise MemoryError("the C linear could not allocate its scratch buffers")
    return y


class CpuDecoder:
    """The model's weights and the KV pool as C structs, and `decode` for one step of decode-only sequences."""

    def __init__(self, model: nn.Module, cache, block_size: int):
        why = unsupported(model)
        if why is not None:
            raise ValueError(f"the C decode forward does not support this model: {why}")
        self.model, self.cache, self.block_size = model, cache, block_size
        self.lib = load_library()
        self.lib.decode_forward.argtypes = [ctypes.POINTER(_Model), _i32, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr,
                                            ctypes.c_int64, _ptr, _ptr]
        self.lib.decode_forward.restype = ctypes.c_int
        self._build()

    # ---- weights as structs -------------------------------------------------------------------------------
    def _watch_list(self) -> list[tuple[dict, str, object]]:
        """(dict, key, object) for every module and tensor the structs point into: a step checks that each dict
        still holds that very object (a dict lookup each, ~30 us a step for SmolLM2; walking the modules through
        nn.Module.__getattr__ took ~1 ms). A quantized layer's codes are copied at build time, so replacing the
        layer is caught, refilling it in place (load_state_dict) is not."""
        watch: list[tuple[dict, str, object]] = []

        def linear(parent: nn.Module, name: str) -> None:
            m = parent._modules[name]
            watch.append((parent._modules, name, m))
            if type(m) is nn.Linear:
                watch.extend((m._parameters, k, m._parameters[k]) for k in ("weight", "bias"))

        for layer in self.model.model.layers:
            a, mlp = layer.self_attn, layer.mlp
            for norm in _norms(layer).values():
                if norm is not None:
                    watch.append((norm._parameters, "weight", norm._parameters["weight"]))
            watch.extend((parent._modules, name, m) for parent in (layer, a) for name, m in parent._modules.items()
                         if isinstance(m, RMSNorm))
            for parent, names in ((a, ("q_proj", "k_proj", "v_proj", "o_proj")),
                                  (mlp, ("gate_proj", "up_proj", "down_proj"))):
                for name in names:
                    linear(parent, name)
        norm = self.model.model.norm
        watch.append((norm._parameters, "weight", norm._parameters["weight"]))
        linear(self.model, "lm_head")
        return watch

    def _linear(self, m: nn.Module) -> _Linear:
        return linear_struct(m, self._keep)

    def _build(self) -> None:
        model, c = self.model, self.model.config
        self._keep: list[torch.Tensor] = []
        self._layers = (_Layer * c.num_layers)()
        for i, layer in enumerate(model.model.layers):
            a, mlp = layer.self_attn, layer.mlp
            L = self._layers[i]
            for name, norm in _norms(layer).items():
                setattr(L, name, None if norm is None else norm.weight.data_ptr())
            for name, m in (("q", a.q_proj), ("k", a.k_proj), ("v", a.v_proj), ("o", a.o_proj),
                            ("gate", mlp.gate_proj), ("up", mlp.up_proj), ("down", mlp.down_proj)):
                setattr(L, name, self._linear(m))
            L.k_pool, L.v_pool = self.cache.k[i].data_ptr(), self.cache.v[i].data_ptr()
            L.window = int(a.window or 0)
            L.local_rope = int(a.window is not None)
        pool = self.cache.k[0]
        self._struct = _Model(c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
                              c.intermediate_size, c.vocab_size, self.block_size, pool.stride(0), c.rms_norm_eps,
                              model.model.layers[0].self_attn.scale, model.model.norm.weight.data_ptr(),
                              self._linear(model.lm_head), self._layers, float(c.family == "gemma3"),
                              float(c.attn_logit_softcapping or 0.0), float(c.final_logit_softcapping or 0.0),
                              int(c.hidden_act == "gelu_tanh"))
        self._watch = self._watch_list()
        kinds = {_KIND_NAMES[L.kind] for layer in self._layers for L in (layer.q, layer.o, layer.gate, layer.down)}
        log.info("C decode forward ready: %s block weights, %s head", "/".join(sorted(kinds)),
                 _KIND_NAMES[self._struct.head.kind])

    # ---- a step -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, ids: list[int], positions: list[int], block_tables: list[list[int]]) -> torch.Tensor:
        """fp32 logits (B, V) of one new token per sequence at `positions`; writes its keys and values."""
        if not all(d.get(k) is obj for d, k, obj in self._watch):
            log.info("model tensors were replaced; rebuilding the C decode structs")
            self._build()
        model, bs = self.model, self.block_size
        B = len(ids)
        h = model.model.embed_tokens(torch.tensor(ids)).float()
        if model.embed_scale is not None:
            h = h * torch.tensor(model.embed_scale, dtype=h.dtype)
        h = h.contiguous()
        pos = torch.tensor(positions)
        cos, sin = (t.reshape(B, -1).contiguous() for t in rope_cos_sin(model.inv_freq, pos[None], torch.float32))
        cos_local, sin_local = (cos, sin) if model.config.rope_local_theta is None else (
            t.reshape(B, -1).contiguous() for t in rope_cos_sin(model.inv_freq_local, pos[None], torch.float32))
        slots = torch.tensor([t[p // bs] * bs + p % bs for t, p in zip(block_tables, positions)], dtype=torch.int64)
        tables = padded_tables(block_tables)
        ctx_lens = (pos + 1).to(torch.int32)
        logits = torch.empty(B, model.config.vocab_size)
        status = self.lib.decode_forward(ctypes.byref(self._struct), B, h.data_ptr(), cos.data_ptr(), sin.data_ptr(),
                                         cos_local.data_ptr(), sin_local.data_ptr(), slots.data_ptr(), tables.data_ptr(), tables.shape[1], ctx_lens.data_ptr(),
                                         logits.data_ptr())
        if status != 0:
            raise MemoryError("the C decode forward could not allocate its scratch buffers")
        return logits
