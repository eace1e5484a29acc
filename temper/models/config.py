"""One `ModelConfig` for every architecture, read from GGUF metadata or an HF `config.json`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from temper.errors import ModelFormatError, UnsupportedArchitectureError

# HF `model_type` / GGUF `general.architecture` -> our architecture family.
ARCH_FAMILIES = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "gemma3": "gemma3", "gemma3_text": "gemma3"}
ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and options of a decoder-only transformer."""

    arch: str  # HF model_type: llama, mistral, qwen2, gemma3_text
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0  # base of the rotary embedding on full-attention layers
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "linear"|"llama3", "factor": ..., ...}
    rope_local_theta: float | None = None  # base on sliding-window layers (Gemma 3); None: same as rope_theta
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v projections carry a bias (Qwen2)
    hidden_act: str = "silu"  # silu (SwiGLU) or gelu_tanh (GeGLU)
    sliding_window: int | None = None
    # One entry per layer: "full" or "sliding". Empty means every layer is "full".
    layer_types: tuple[str, ...] = ()
    query_pre_attn_scalar: float | None = None  # attention scale is this**-0.5 (Gemma); None: head_dim**-0.5
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    name: str = ""
    license: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # metadata kept for save_pretrained

    def __post_init__(self) -> None:
        if self.arch not in ARCH_FAMILIES:
            raise UnsupportedArchitectureError(
                f"architecture {self.arch!r} is not supported; supported: {', '.join(sorted(ARCH_FAMILIES))}")
        if self.hidden_act not in ("silu", "gelu_tanh"):
            raise UnsupportedArchitectureError(f"activation {self.hidden_act!r} is not supported (silu, gelu_tanh)")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                     "head_dim", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ModelFormatError(f"model config: {name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ModelFormatError(
                f"model config: num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ModelFormatError(f"model config: {len(self.layer_types)} layer types for {self.num_layers} layers")
        if any(t not in ("full", "sliding") for t in self.layer_types):
            raise ModelFormatError(f"model config: layer types must be 'full' or 'sliding', got {self.layer_types}")
        if "sliding" in self.layer_types and not self.sliding_window:
            raise ModelFormatError("model config: sliding layers need a sliding_window")
        rope_type = (self.rope_scaling or {}).get("rope_type", "default")
        if rope_type not in ROPE_TYPES:
            raise UnsupportedArchitectureError(f"rope scaling {rope_type!r} is not supported ({', '.join(ROPE_TYPES)})")

    @property
    def family(self) -> str:
        """The implementation that runs this config: "llama" or "gemma3"."""
        return ARCH_FAMILIES[self.arch]

    def layer_window(self, layer: int) -> int | None:
        """The sliding window of a layer, or None when it attends to the whole context."""
        if self.layer_types and self.layer_types[layer] == "sliding":
            return self.sliding_window
        return None

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @property
    def num_params(self) -> int:
        """Parameter count (tied embeddings counted once)."""
        d, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attn = d * q + 2 * d * kv + q * d + (q + 2 * kv if self.attention_bias else 0)
        norms = (4 if self.family == "gemma3" else 2) * d + (2 * self.head_dim if self.family == "gemma3" else 0)
        layer = attn + 3 * d * self.intermediate_size + norms
        embed = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + embed + d

    # ---------------------------------------------------------------- HF config.json
    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> ModelConfig:
        """Build from a transformers `config.json` dict (llama, mistral, qwen2, gemma3_text, gemma3)."""
        if cfg.get("model_type") == "gemma3" and "text_config" in cfg:
            cfg = {**cfg["text_config"], "model_type": "gemma3_text"}
        arch = cfg.get("model_type")
        if arch not in ARCH_FAMILIES:
            raise UnsupportedArchitectureError(
                f"model_type {arch!r} is not supported; supported: {', '.join(sorted(ARCH_FAMILIES))}")
        try:
            num_heads = cfg["num_attention_heads"]
            hidden = cfg["hidden_size"]
            head_dim = cfg.get("head_dim") or hidden // num_heads
            theta, scaling, local_theta = _hf_rope(cfg)
            is_gemma = ARCH_FAMILIES[arch] == "gemma3"
            window = cfg.get("sliding_window")
            if arch == "qwen2" and not cfg.get("use_sliding_window", False):
                window = None
            layer_types = _hf_layer_types(cfg, window)
            act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "silu"
            return cls(
                arch=arch, vocab_size=cfg["vocab_size"], hidden_size=hidden,
                intermediate_size=cfg["intermediate_size"], num_layers=cfg["num_hidden_layers"],
                num_heads=num_heads, num_kv_heads=cfg.get("num_key_value_heads") or num_heads, head_dim=head_dim,
                rms_norm_eps=cfg.get("rms_norm_eps", 1e-6 if is_gemma else 1e-5), rope_theta=theta,
                rope_scaling=scaling, rope_local_theta=local_theta,
                max_position_embeddings=cfg.get("max_position_embeddings", 4096),
                tie_word_embeddings=cfg.get("tie_word_embeddings", is_gemma),
                attention_bias=cfg.get("attention_bias", arch == "qwen2"),
                hidden_act="gelu_tanh" if act.startswith("gelu") else act,
                sliding_window=window if layer_types and "sliding" in layer_types else None,
                layer_types=layer_types,
                query_pre_attn_scalar=cfg.get("query_pre_attn_scalar") if is_gemma else None,
                attn_logit_softcapping=cfg.get("attn_logit_softcapping"),
                final_logit_softcapping=cfg.get("final_logit_softcapping"),
                bos_token_id=cfg.get("bos_token_id"), eos_token_id=_first(cfg.get("eos_token_id")),
                name=cfg.get("_name_or_path", ""),
            )
        except KeyError as e:
            raise ModelFormatError(f"config.json lacks the field {e.args[0]!r}") from None

    def to_hf(self) -> dict[str, Any]:
        """A transformers `config.json` dict that `AutoModelForCausalLM` loads."""
        cfg: dict[str, Any] = {
            "model_type": self.arch, "architectures": [_HF_CLASSES[self.arch]],
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim, "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings, "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id, "torch_dtype": "float32",
        }
        rope = {"rope_type": "default", "rope_theta": self.rope_theta, **(self.rope_scaling or {})}
        if self.family == "gemma3":
            local = {"rope_type": "default", "rope_theta": self.rope_local_theta or self.rope_theta}
            cfg.update(hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=self.query_pre_attn_scalar,
                       sliding_window=self.sliding_window, attn_logit_softcapping=self.attn_logit_softcapping,
                       final_logit_softcapping=self.final_logit_softcapping,
                       layer_types=[f"{t}_attention" if t == "sliding" else "full_attention"
                                    for t in self.layer_types] or None,
                       rope_parameters={"full_attention": rope, "sliding_attention": local},
                       # older transformers read these flat fields
                       rope_theta=self.rope_theta, rope_local_base_freq=local["rope_theta"])
        else:
            cfg.update(hidden_act=self.hidden_act, attention_bias=self.attention_bias, mlp_bias=False,
                       rope_theta=self.rope_theta, rope_scaling=self.rope_scaling, rope_parameters=rope)
            if self.arch in ("mistral", "qwen2"):
                cfg["sliding_window"] = self.sliding_window
                if self.arch == "qwen2":
                    cfg["use_sliding_window"] = self.sliding_window is not None
        return cfg


_HF_CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
               "gemma3_text": "Gemma3ForCausalLM", "gemma3": "Gemma3ForCausalLM"}


def _first(x: Any) -> Any:
    return x[0] if isinstance(x, list) and x else x


def _hf_rope(cfg: dict[str, Any]) -> tuple[float, dict[str, Any] | None, float | None]:
    """(theta, scaling, local theta) from either the v5 `rope_parameters` or the older flat fields."""
    params = cfg.get("rope_parameters")
    local_theta = cfg.get("rope_local_base_freq")
    if params and "full_attention" in params:  # per layer type (Gemma 3, transformers v5)
        local_theta = params.get("sliding_attention", {}).get("rope_theta", local_theta)
        params = params["full_attention"]
    if params:
        theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    else:
        theta = cfg.get("rope_theta", 10000.0)
        scaling = dict(cfg.get("rope_scaling") or {})
    if "type" in scaling and "rope_type" not in scaling:
        scaling["rope_type"] = scaling.pop("type")
    if scaling.get("rope_type", "default") == "default":
        scaling = None
    if ARCH_FAMILIES.get(cfg.get("model_type", "")) == "gemma3" and local_theta is None:
        local_theta = 10000.0
    return float(theta), scaling, None if local_theta is None else float(local_theta)


def _hf_layer_types(cfg: dict[str, Any], window: int | None) -> tuple[str, ...]:
    n = cfg["num_hidden_layers"]
    if cfg.get("layer_types"):
        types = tuple("sliding" if t == "sliding_attention" else "full" for t in cfg["layer_types"])
        return types if "sliding" in types else ()
    if ARCH_FAMILIES[cfg["model_type"]] == "gemma3":
        pattern = cfg.get("sliding_window_pattern", 6)
        return tuple("sliding" if (i + 1) % pattern else "full" for i in range(n))
    return ("sliding",) * n if window else ()
