"""Reading GGUF files: validation, config from metadata, and tensors dequantized into HF names and layouts."""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from temper.errors import ModelFormatError, UnsupportedArchitectureError
from temper.models.config import ARCH_FAMILIES, ModelConfig

GGUF_MAGIC = b"GGUF"

# GGUF tensor name (after "blk.N.") -> HF name (after "model.layers.N."), per family.
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_FFN_NORM = {"llama": "post_attention_layernorm", "gemma3": "pre_feedforward_layernorm"}
_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                 "output.weight": "lm_head.weight"}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
# llama.cpp hard-codes Gemma 3's layout: every 6th layer is global, local layers use rope base 10000.
_GEMMA3_SLIDING_PATTERN = 6
_GEMMA3_LOCAL_ROPE_BASE = 10000.0


def open_gguf(path: str | os.PathLike):
    """A `gguf.GGUFReader` for `path`, or a `ModelFormatError` that says what is wrong with the file."""
    import gguf

    path = Path(path)
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFormatError(f"{path} is not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, OverflowError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path} is truncated or corrupt: {e}") from None
    size = path.stat().st_size
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size or not reader.tensors:
        raise ModelFormatError(f"{path} is truncated: its tensors need {end} bytes but the file has {size}")
    return reader


def metadata(reader, key: str, default: Any = None) -> Any:
    """A scalar or string metadata value (not for the big token arrays)."""
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def config_from_gguf(reader) -> ModelConfig:
    """ModelConfig from GGUF metadata (llama, mistral, qwen2, gemma3)."""
    arch = metadata(reader, "general.architecture")
    if arch not in ARCH_FAMILIES:
        raise UnsupportedArchitectureError(
            f"GGUF architecture {arch!r} is not supported; supported: {', '.join(sorted(ARCH_FAMILIES))}")

    def get(key: str, default: Any = None) -> Any:
        return metadata(reader, f"{arch}.{key}", default)

    names = {t.name for t in reader.tensors}
    num_heads, hidden, n_layers = get("attention.head_count"), get("embedding_length"), get("block_count")
    if None in (num_heads, hidden, n_layers):
        raise ModelFormatError(f"GGUF metadata lacks {arch}.attention.head_count/embedding_length/block_count")
    head_dim = get("attention.key_length") or hidden // num_heads
    vocab = get("vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data)
    scaling = None
    scale_type = get("rope.scaling.type")
    if scale_type == "linear":
        scaling = {"rope_type": "linear", "factor": get("rope.scaling.factor")}
    elif scale_type not in (None, "none"):
        raise UnsupportedArchitectureError(f"GGUF rope scaling {scale_type!r} is not supported")
    is_gemma = ARCH_FAMILIES[arch] == "gemma3"
    window = get("attention.sliding_window")
    if is_gemma:
        layer_types = tuple("sliding" if (i + 1) % _GEMMA3_SLIDING_PATTERN else "full" for i in range(n_layers))
    else:
        layer_types = ("sliding",) * n_layers if window else ()
    return ModelConfig(
        arch="gemma3_text" if is_gemma else arch, vocab_size=vocab, hidden_size=hidden,
        intermediate_size=get("feed_forward_length"), num_layers=n_layers, num_heads=num_heads,
        num_kv_heads=get("attention.head_count_kv") or num_heads, head_dim=head_dim,
        rms_norm_eps=get("attention.layer_norm_rms_epsilon", 1e-6 if is_gemma else 1e-5),
        rope_theta=get("rope.freq_base", 1e6 if is_gemma else 10000.0), rope_scaling=scaling,
        rope_local_theta=_GEMMA3_LOCAL_ROPE_BASE if is_gemma else None,
        max_position_embeddings=get("context_length", 4096),
        tie_word_embeddings="output.weight" not in names, attention_bias="blk.0.attn_q.bias" in names,
        hidden_act="gelu_tanh" if is_gemma else "silu", sliding_window=window if layer_types else None,
        layer_types=layer_types, query_pre_attn_scalar=head_dim if is_gemma else None,
        final_logit_softcapping=get("final_logit_softcapping"), attn_logit_softcapping=get("attn_logit_softcapping"),
        bos_token_id=metadata(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=metadata(reader, "tokenizer.ggml.eos_token_id"),
        name=metadata(reader, "general.name", ""), license=metadata(reader, "general.license", ""),
    )


def hf_name(gguf_name: str, family: str) -> str:
    """The HF checkpoint name of a GGUF tensor."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _BLOCK_RE.fullmatch(gguf_name)
    if m is None:
        raise ModelFormatError(f"unexpected GGUF tensor {gguf_name!r}")
    layer, part, kind = m.groups()
    name = _FFN_NORM[family] if part == "ffn_norm" else _LAYER_NAMES.get(part)
    if name is None:
        raise ModelFormatError(f"unexpected GGUF tensor {gguf_name!r}")
    return f"model.layers.{layer}.{name}.{kind}"


def unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's interleaved q/k row order, back to HF's half-split rotary layout."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def iter_tensors(reader, config: ModelConfig, only: set[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, fp32 array in HF layout) for each tensor (or those named in `only`): dequantized, q/k
    un-permuted, Gemma norms un-offset."""
    from gguf.quants import dequantize

    is_llama = config.family == "llama"
    for t in reader.tensors:
        if only is not None and t.name not in only:
            continue
        name = hf_name(t.name, config.family)
        try:
            w = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        except NotImplementedError as e:
            raise ModelFormatError(f"GGUF tensor {t.name} has an unsupported type {t.tensor_type.name}: {e}") from None
        if is_llama and t.name.endswith(("attn_q.weight", "attn_q.bias")):
            w = unpermute_rope(w, config.num_heads)
        elif is_llama and t.name.endswith(("attn_k.weight", "attn_k.bias")):
            w = unpermute_rope(w, config.num_kv_heads)
        elif config.family == "gemma3" and name.endswith("norm.weight"):
            w = w - 1.0  # llama.cpp stores Gemma's (1 + w) norm scale
        yield name, w if w.flags.writeable else w.copy()
