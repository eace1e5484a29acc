"""What was measured, where and with what: the model's identity, the machine, the versions, the time.

A result set names its model by the sha256 of the weight files (a registered name resolves to its packaged
file), so two result sets for "the same model" can be told apart when their weights differ. A model folder that
temper wrote says how it was made: `quantization_config` in config.json (temper quantize) and `temper.json`
(written by `temper pipeline` beside a model it made: base model, recipe stages and their data, licence).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PROVENANCE_FILE = "temper.json"  # in a model folder: {"base_model", "license", "recipe": {...}}
_HASH_CACHE: dict[tuple[str, int, float], str] = {}


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def sha256_files(paths: list[Path]) -> str:
    """One digest over the files in order (name and bytes of each); cached per (path, size, mtime)."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime)
        if key not in _HASH_CACHE:
            f = hashlib.sha256()
            with p.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    f.update(block)
            _HASH_CACHE[key] = f.hexdigest()
        h.update(p.name.encode() + b"\0" + _HASH_CACHE[key].encode())
    return h.hexdigest()


def weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.gguf")) or sorted(path.glob("*.bin"))
    return files


def model_identity(model: str, quantization: str | None = None) -> dict[str, Any]:
    """Identity of a registered name or a model folder/file (no weights are loaded)."""
    from temper.models.registry import REGISTRY, resolve

    spec = REGISTRY.get(model)
    path = Path(resolve(model))
    ident: dict[str, Any] = {"name": model, "path": str(path), "sha256": None, "architecture": None,
                             "parameters": None, "weight_bytes": None, "dtype": None, "quantization": None,
                             "recipe": None, "base_model": None, "license": None}
    files = weight_files(path)
    if files:
        ident["sha256"] = sha256_files(files)
        ident["weight_bytes"] = sum(f.stat().st_size for f in files)
    if spec is not None:
        ident.update(architecture=spec.architecture, license=spec.license, base_model=spec.description)
        if path.suffix == ".gguf":
            ident["dtype"] = "float32 (dequantized from the GGUF at load)" if quantization != "gguf" else "gguf"
    config = path / "config.json" if path.is_dir() else None
    if config is not None and config.exists():
        cfg = json.loads(config.read_text())
        ident["architecture"] = ident["architecture"] or (cfg.get("model_type") or "").lower() or None
        ident["dtype"] = cfg.get("torch_dtype") or ident["dtype"]
        if q := cfg.get("quantization_config"):
            ident["quantization"] = {k: q.get(k) for k in ("method", "bits", "group_size", "symmetric", "head_bits")
                                     if k in q} or q
    if quantization and ident["quantization"] is None:
        ident["quantization"] = {"method": quantization, "at_load": True}
    prov = path / PROVENANCE_FILE if path.is_dir() else None
    if prov is not None and prov.exists():
        data = json.loads(prov.read_text())
        for key in ("base_model", "license", "recipe"):
            if data.get(key) is not None:
                ident[key] = data[key]
    return ident


def count_parameters(model) -> int:
    """Parameters of a loaded model as the float model has them (a quantized layer counts its logical weight)."""
    from temper.quant.linear import QuantLinear

    total = 0
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, QuantLinear):
            if id(module) not in seen:
                total += module.in_features * module.out_features
                seen.add(id(module))
            continue
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                total += p.numel()
                seen.add(id(p))
    return total


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"hostname": platform.node(), "platform": platform.platform(), "cpu": cpu,
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_gib": round(mem, 1) if mem else None, "gpu": gpu}


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if not commit:
        return None
    return commit + ("+dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {"python": sys.version.split()[0], "commit": git_commit()}
    for pkg in ("temper", "torch", "tokenizers", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
