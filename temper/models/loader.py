"""Load models from GGUF files or HF safetensors folders, and save them back as HF folders.

A GGUF file is converted once into an HF-style folder (fp32 safetensors, config.json, tokenizer files) under
the user's cache dir, keyed by the file's sha256; later loads memory-map that folder in about a second instead
of parsing and dequantizing the GGUF again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from typing import TYPE_CHECKING

from temper.errors import ModelFormatError, ModelNotFoundError
from temper.models import CausalLM, ModelConfig, build_model
from temper.models.gguf_file import GGUF_MAGIC, config_from_gguf, iter_tensors, open_gguf
from temper.quant.config import QuantConfig
from temper.quant.linear import QuantEmbedding, QuantLinear
from temper.quant.model import install_quantized_modules, quantize_model

if TYPE_CHECKING:
    from temper.tokenizer import Tokenizer

log = logging.getLogger(__name__)
CONVERTED_FORMAT = 2  # bump when the converted folder's layout changes


@dataclass
class LoadedModel:
    """A model with its tokenizer, and where and how fast it came from."""

    model: CausalLM
    tokenizer: Tokenizer
    config: ModelConfig
    source: Path
    load_seconds: float


def cache_dir() -> Path:
    """Where converted models live: $TEMPER_CACHE_DIR, else $XDG_CACHE_HOME/temper, else ~/.cache/temper."""
    if os.environ.get("TEMPER_CACHE_DIR"):
        return Path(os.environ["TEMPER_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "temper"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def load(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
         use_cache: bool = True, quantization: str | QuantConfig | None = None) -> LoadedModel:
    """Load a GGUF file or an HF folder onto `device` in `dtype` (resolve registry names first).

    Args:
        quantization: None loads the weights as stored: a temper-quantized folder stays quantized, a GGUF file is
            dequantized to `dtype`. "gguf" keeps a GGUF file's 4- and 8-bit blocks as int4/int8 layers (see
            `temper.quant.gguf`). "int8", "int4" or a `QuantConfig` quantize float weights at load (round to
            nearest); calibrated int4 needs `temper quantize` ahead of time.
    """
    from temper.tokenizer import Tokenizer

    start = time.perf_counter()
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"{path} does not exist")
    if quantization == "gguf":
        if path.is_dir():
            raise ValueError(f"quantization 'gguf' keeps a GGUF file's blocks, but {path} is a folder")
        if use_cache:
            folder = converted_folder(path, keep_quantized=True)
            model, config = load_pretrained_weights(folder, device, dtype)
            tokenizer = Tokenizer.from_pretrained(folder)
        else:
            model, config, tokenizer = load_gguf(path, device, dtype, keep_quantized=True)
    elif path.is_dir():
        model, config = load_pretrained_weights(path, device, dtype)
        tokenizer = Tokenizer.from_pretrained(path)
    elif use_cache:
        folder = converted_folder(path)
        model, config = load_pretrained_weights(folder, device, dtype)
        tokenizer = Tokenizer.from_pretrained(folder)
    else:
        model, config, tokenizer = load_gguf(path, device, dtype)
    if quantization not in (None, "gguf"):
        quant = quantization if isinstance(quantization, QuantConfig) else QuantConfig.from_name(quantization)
        if getattr(model, "quant_config", None) is not None:
            raise ValueError(f"{path} is already quantized ({model.quant_config.method}); load it without "
                             "--quantization")
        quantize_model(model, quant)
    model.eval()
    return LoadedModel(model, tokenizer, config, path, time.perf_counter() - start)


def load_gguf(path: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              keep_quantized: bool = False) -> tuple[CausalLM, ModelConfig, Tokenizer]:
    """Parse a GGUF file directly (no cache): dequantized to `dtype`, or with its quantized blocks kept."""
    from temper.tokenizer import Tokenizer

    from tqdm import tqdm

    reader = open_gguf(path)
    config = config_from_gguf(reader)
    if keep_quantized:
        from temper.quant.gguf import quantized_state

        state = dict(quantized_state(reader, config))
    else:
        tensors = tqdm(iter_tensors(reader, config), total=len(reader.tensors), unit="tensor", leave=False,
                       desc=f"dequantizing {path.name}")
        state = {name: torch.from_numpy(w) for name, w in tensors}
    model = _materialize(config, state, device, dtype)
    if keep_quantized:
        model.quant_config = QuantConfig(method="gguf", group_size=32, head_bits=8)
    return model, config, Tokenizer.from_gguf(path, reader=reader)


def converted_folder(path: Path, keep_quantized: bool = False) -> Path:
    """The cached HF-style conversion of a GGUF file (float, or its quantized blocks kept), made on first use."""
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelFormatError(f"{path} is not a GGUF file or an HF folder")
    kind = "-blocks" if keep_quantized else ""
    folder = cache_dir() / "converted" / f"{file_sha256(path)[:32]}-v{CONVERTED_FORMAT}{kind}"
    if (folder / "config.json").exists():
        return folder
    log.warning("first use of %s%s: converting it once to %s", path.name,
                " with its quantized blocks" if keep_quantized else "", folder)
    model, config, tokenizer = load_gguf(path, keep_quantized=keep_quantized)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        save_pretrained(model, tokenizer, tmp, source=str(path))
        os.replace(tmp, folder)  # atomic: a concurrent loader sees a whole folder or none
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "config.json").exists():
            raise
    return folder


def read_config(folder: Path) -> ModelConfig:
    config, _ = read_configs(folder)
    return config


def read_configs(folder: Path) -> tuple[ModelConfig, QuantConfig | None]:
    """The model config of an HF folder, and its quantization config when temper quantized it."""
    try:
        raw = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise ModelFormatError(f"{folder} has no config.json: not an HF model folder") from None
    except json.JSONDecodeError as e:
        raise ModelFormatError(f"{folder}/config.json is not valid JSON: {e}") from None
    config = ModelConfig.from_hf(raw)
    meta = raw.get("temper", {})
    quant = QuantConfig.from_json(raw["quantization_config"]) if "quantization_config" in raw else None
    return config.replace(name=meta.get("name", config.name), license=meta.get("license", config.license)), quant


def load_pretrained_weights(folder: Path, device: str | torch.device = "cpu",
                            dtype: torch.dtype = torch.float32) -> tuple[CausalLM, ModelConfig]:
    """Model and config from an HF folder of safetensors (one file, or shards with an index)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config, quant = read_configs(folder)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        raise ModelFormatError(f"{folder} has no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        try:
            state.update(load_file(folder / name))
        except (SafetensorError, FileNotFoundError, OSError) as e:
            raise ModelFormatError(f"cannot read {folder / name}: {e}") from None
    model = _materialize(config, state, device, dtype)
    if quant is not None:
        model.quant_config = quant
    elif any(isinstance(m, QuantLinear) for m in model.modules()):
        raise ModelFormatError(f"{folder} holds quantized weights but its config.json has no quantization_config")
    return model, config


def _materialize(config: ModelConfig, state: dict[str, torch.Tensor], device: str | torch.device,
                 dtype: torch.dtype) -> CausalLM:
    """Build the model on the meta device and adopt the given tensors, so weights are never copied twice.

    Quantized tensors (`<module>.qweight`, `.scales`, `.zeros`) turn their modules into quantized ones and keep
    their own dtypes; float tensors are cast to `dtype`.
    """
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    tied = config.tie_word_embeddings
    if tied:
        state.pop("lm_head.weight", None)
    with torch.device("meta"):
        model = build_model(config)
    try:
        quantized = install_quantized_modules(model, state, tied)
    except ValueError as e:
        raise ModelFormatError(f"checkpoint does not match a {config.arch} model: {e}") from None
    reference = model.state_dict()
    expected = {k for k in reference if not (tied and k == "lm_head.weight")}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ModelFormatError(f"checkpoint does not match a {config.arch} model: "
                               f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, tensor in state.items():
        if tuple(reference[key].shape) != tuple(tensor.shape):
            raise ModelFormatError(f"{key} has shape {tuple(tensor.shape)}, the config implies "
                                   f"{tuple(reference[key].shape)}")
        is_codes = key.rpartition(".")[0] in quantized and key.endswith((".qweight", ".scales", ".zeros"))
        state[key] = tensor.to(device=device) if is_codes else tensor.to(device=device, dtype=dtype)
    float_tie = tied and "model.embed_tokens.weight" in state
    if float_tie:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, assign=True)
    if float_tie:
        model.lm_head.weight = model.model.embed_tokens.weight
    for m in model.modules():
        if isinstance(m, QuantEmbedding):
            m.dtype = dtype
    model.reset_buffers(device)
    return model


def save_pretrained(model: CausalLM, tokenizer: Tokenizer | None, folder: str | os.PathLike,
                    source: str = "") -> Path:
    """Write an HF-style folder (config.json, model.safetensors, tokenizer) that transformers can load."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    hf = config.to_hf()
    hf["temper"] = {"name": config.name, "license": config.license, "source": source}
    quant = getattr(model, "quant_config", None)
    if quant is not None:
        hf["quantization_config"] = quant.to_json()
    (folder / "config.json").write_text(json.dumps(hf, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder
