"""`temper align STAGE --config recipe.yaml` on a tiny model folder: writes the model, metrics and curves;
bad recipes fail with a message that says what to change."""
from __future__ import annotations

import json

import pytest

from temper.align.data import write_jsonl
from temper.align.recipe import RecipeError, read_recipe
from temper.cli import main
from temper.models.loader import save_pretrained
from tests.align.conftest import tiny_model
from tests.align.test_preference_rl import PAIRS
from tests.align.test_trainer import CHATS


@pytest.fixture
def model_dir(tokenizer, tmp_path):
    return save_pretrained(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "tiny")


def test_sft_then_dpo_from_recipes(model_dir, tmp_path, capsys):
    write_jsonl([{"messages": c} for c in CHATS], tmp_path / "chat.jsonl")
    write_jsonl(PAIRS, tmp_path / "pairs.jsonl")
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(f"model: {model_dir}\ntrain_data: {tmp_path / 'chat.jsonl'}\nlearning_rate: 1.0e-3\n"
                      "batch_size: 2\nmax_len: 128\nlora: {r: 4}\n")
    out = tmp_path / "sft"
    assert main(["align", "sft", "-c", str(recipe), "-o", str(out), "--max-steps", "2", "--set", "lora.r=2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["output_dir"] == str(out)
    assert json.loads((out / "config.json").read_text())["lora"]["r"] == 2  # --set reached into the mapping
    for name in ("model/model.safetensors", "metrics.jsonl", "curves.png", "checkpoints"):
        assert (out / name).exists(), name
    # the next stage starts from the folder the last one wrote
    assert main(["align", "dpo", "-m", str(out / "model"), "-o", str(tmp_path / "dpo"), "--max-steps", "1",
                 "--set", f"train_data={tmp_path / 'pairs.jsonl'}", "--set", "lora={r: 2}"]) == 0
    assert (tmp_path / "dpo" / "model" / "model.safetensors").exists()


def test_bad_recipes_explain_themselves(model_dir, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {model_dir}\nlearning_rte: 1.0e-3\ntrain_data: x.jsonl\n")
    assert main(["align", "sft", "-c", str(recipe)]) == 2
    assert "unknown recipe key(s) for sft: learning_rte" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert main(["align", "sft", "-m", str(model_dir), "--set", f"train_data={bad}"]) == 2
    assert "line 1" in capsys.readouterr().err
    with pytest.raises(RecipeError, match="key=value"):
        read_recipe(None, ["oops"])
    assert main(["align", "dpo", "-m", str(model_dir), "--set", "train_data=x.jsonl", "--set", "loss_type=nope"]) == 2
    assert "loss_type must be one of" in capsys.readouterr().err
