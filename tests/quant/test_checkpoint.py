"""Quantized checkpoints: save, load (without float copies of the weights), same logits; the CLI end to end."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from temper.models import ModelConfig, build_model
from temper.models.loader import load, load_pretrained_weights, save_pretrained
from temper.quant import QuantEmbedding, QuantLinear, TiedQuantHead
from temper.quant.config import QuantConfig
from temper.quant.model import quantize_model, weight_bytes

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
            head_dim=16, max_position_embeddings=64)
CONFIGS = {
    "llama-tied": ModelConfig(arch="llama", tie_word_embeddings=True, **TINY),
    "qwen2-bias": ModelConfig(arch="qwen2", attention_bias=True, **TINY),
    "gemma3": ModelConfig(arch="gemma3_text", hidden_act="gelu_tanh", sliding_window=6,
                          layer_types=("sliding", "full"), query_pre_attn_scalar=16, tie_word_embeddings=True,
                          **TINY),
}
RECIPES = [QuantConfig("int8", head_bits=0), QuantConfig("int4-rtn", 32, head_bits=8),
           QuantConfig("int4-rtn", 64, symmetric=True, head_bits=4)]


def random_model(config: ModelConfig) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(config).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: f"{r.method}-g{r.group_size}-head{r.head_bits}")
@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_save_load_gives_the_same_logits(tmp_path, name, recipe):
    model = random_model(CONFIGS[name])
    ids = torch.randint(0, 128, (2, 12))
    float_logits = model(ids)
    quantize_model(model, recipe)
    logits = model(ids)
    cosine = torch.nn.functional.cosine_similarity(logits.flatten(), float_logits.flatten(), dim=0)
    assert cosine > 0.9  # quantized (4-bit random weights), not broken
    save_pretrained(model, None, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved["method"] == recipe.method and saved["head_bits"] == recipe.head_bits
    loaded, _ = load_pretrained_weights(tmp_path)
    assert torch.equal(loaded(ids), logits)
    assert loaded.quant_config == recipe
    # no float copy of any quantized weight: the only float parameters are norms, biases and a float head
    biggest = max(p.numel() for n, p in loaded.named_parameters() if "embed" not in n and "lm_head" not in n)
    assert biggest <= 64 * 4
    linears = [m for m in loaded.model.layers.modules() if isinstance(m, QuantLinear)]
    assert len(linears) == 7 * 2 and all(m.bits == recipe.bits for m in linears)
    if recipe.head_bits:
        assert isinstance(loaded.model.embed_tokens, QuantEmbedding)
        assert isinstance(loaded.lm_head, TiedQuantHead if loaded.config.tie_word_embeddings else QuantLinear)
    assert weight_bytes(loaded) == weight_bytes(model)


def test_a_quantized_folder_without_its_config_is_refused(tmp_path):
    from temper.errors import ModelFormatError

    model = quantize_model(random_model(CONFIGS["llama-tied"]), QuantConfig("int8"))
    save_pretrained(model, None, tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["quantization_config"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelFormatError, match="no quantization_config"):
        load_pretrained_weights(tmp_path)
    raw["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelFormatError, match="not one temper reads"):
        load_pretrained_weights(tmp_path)


def test_recipe_validation():
    with pytest.raises(ValueError, match="group-size"):
        QuantConfig("int4-rtn", group_size=48)
    with pytest.raises(ValueError, match="method"):
        QuantConfig("int3")
    with pytest.raises(ValueError, match="head-bits"):
        QuantConfig("int8", head_bits=2)


def test_quantize_cli_then_generate(tmp_path, smollm2_path, capsys):
    from temper.cli import main

    out = tmp_path / "smollm2-int8"
    assert main(["quantize", str(smollm2_path), "--method", "int8", "-o", str(out)]) == 0
    report = capsys.readouterr().out
    assert "int8" in report and "MB ->" in report
    assert main(["quantize", str(smollm2_path), "--method", "int8", "-o", str(out)]) == 2  # not over a folder
    assert "--force" in capsys.readouterr().err
    assert main(["generate", "--model", str(out), "--temperature", "0", "--max-tokens", "12",
                 "What is the capital of France?"]) == 0
    assert "Paris" in capsys.readouterr().out
    loaded = load(out)
    assert loaded.model.quant_config.method == "int8"
    assert main(["generate", "--model", str(out), "--quantization", "int4", "hi"]) == 2
    assert "already quantized" in capsys.readouterr().err
