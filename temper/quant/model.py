"""Quantizing a whole model: which layers, module swaps, and rebuilding quantized modules from a checkpoint."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import torch
from torch import nn

from temper.quant.config import QuantConfig
from temper.quant.linear import QuantEmbedding, QuantLinear, TiedQuantHead
from temper.quant.tensors import effective_group_size

log = logging.getLogger(__name__)
EMBEDDING, HEAD = "model.embed_tokens", "lm_head"


def block_linears(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    """The float linear layers of the transformer blocks (attention and MLP projections), by qualified name."""
    for name, module in model.named_modules():
        if name.startswith("model.layers.") and type(module) is nn.Linear:
            yield name, module


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def quantize_model(model: nn.Module, config: QuantConfig,
                   quantize_layer: Callable[[str, nn.Linear, int], QuantLinear] | None = None) -> nn.Module:
    """Swap the model's block linears (and head/embedding per `config.head_bits`) for quantized ones, in place.

    Args:
        quantize_layer: (name, linear, group size) -> QuantLinear for calibrated methods; default round-to-nearest.
    Returns:
        the model, with `model.quant_config` set.
    """
    bits = config.bits
    for name, linear in list(block_linears(model)):
        group = effective_group_size(linear.in_features, config.group_size) if bits == 4 else 0
        if quantize_layer is not None:
            q = quantize_layer(name, linear, group)
        else:
            q = QuantLinear.from_float(linear, bits, group, config.symmetric)
        set_module(model, name, q)
    if config.head_bits:
        quantize_head(model, config.head_bits, config.group_size, config.symmetric)
    model.quant_config = config
    return model


def quantize_head(model: nn.Module, bits: int, group_size: int, symmetric: bool) -> None:
    """Quantize the output head and the input embedding; a tied pair becomes one table (saved once)."""
    emb: nn.Embedding = model.get_submodule(EMBEDDING)
    group = effective_group_size(emb.embedding_dim, group_size) if bits == 4 else 0
    tied = model.lm_head.weight is emb.weight
    qemb = QuantEmbedding.from_embedding(emb, bits, group, symmetric)
    set_module(model, EMBEDDING, qemb)
    if tied:
        model.lm_head = TiedQuantHead(qemb)
    else:
        model.lm_head = QuantLinear.from_float(model.lm_head, bits, group, symmetric)


def install_quantized_modules(model: nn.Module, state: dict[str, torch.Tensor], tied: bool) -> set[str]:
    """On a meta model, replace every module whose weights `state` holds quantized (a `.qweight`) with an empty
    quantized module of the scheme those tensors imply, ready for `load_state_dict`. Returns their names.

    The scheme comes from the tensors themselves (int8 codes: int8 per row; uint8: int4 with group
    K // scales.shape[1], asymmetric when zeros are there), so a checkpoint may mix schemes, as GGUF files do.
    """
    names = {k[: -len(".qweight")] for k in state if k.endswith(".qweight")}
    for name in sorted(names):
        q, scales = state[name + ".qweight"], state[name + ".scales"]
        bits = 8 if q.dtype == torch.int8 else 4
        in_features = q.shape[1] * (1 if bits == 8 else 2)
        group = in_features // scales.shape[1] if bits == 4 else 0
        symmetric = name + ".zeros" not in state
        if name == EMBEDDING:
            module = QuantEmbedding(q.shape[0], in_features, bits, group, symmetric, device="meta")
            set_module(model, name, module)
            if tied:
                model.lm_head = TiedQuantHead(module)
            continue
        old = model.get_submodule(name)
        bias = name + ".bias" in state
        if not isinstance(old, nn.Linear) or (old.out_features, old.in_features) != (q.shape[0], in_features):
            raise ValueError(f"{name}: a quantized weight of shape ({q.shape[0]}, {in_features}) does not fit {old}")
        set_module(model, name, QuantLinear(in_features, q.shape[0], bits, group, symmetric, bias, device="meta"))
    return names


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all weights as stored now: float parameters plus quantized codes and scales, each counted once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    for m in model.modules():
        if isinstance(m, QuantLinear):
            total += m.weight_bytes()
    return total
