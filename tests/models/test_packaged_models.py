"""The packaged models against transformers on the same GGUF weights (slow: transformers loads in 25-65 s)."""
from __future__ import annotations

import pytest
import torch

from temper.models.gguf_file import config_from_gguf, iter_tensors, open_gguf
from temper.models.loader import _materialize
from temper.models.registry import resolve
from tests.helpers import compare_padded_batch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers' GGUF loading needs it

# prompt lengths: short, medium, and past Gemma 3's 512-token sliding window
LENGTHS = [3, 37, 700]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma3-270m"])
@torch.no_grad()
def test_logits_equal_transformers(name):
    path = resolve(name)
    reader = open_gguf(path)
    config = config_from_gguf(reader)
    ours = _materialize(config, {k: torch.from_numpy(v) for k, v in iter_tensors(reader, config)}, "cpu",
                        torch.float32).eval()
    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, 40000, (n,), generator=g) for n in LENGTHS]
    compare_padded_batch(ours, hf, prompts, atol=1e-3, what=name)
