"""The stage evaluation runs end to end on a tiny model folder, and its end-of-turn rule is strict."""
from __future__ import annotations

from temper.align import verifiable as V
from temper.align.evaluate import ended_properly, evaluate, table
from temper.models.loader import save_pretrained
from tests.align.conftest import tiny_model
from tests.align.test_trainer import CHATS


def test_ended_properly():
    assert ended_properly("Paris is the capital of France.", "stop")
    assert not ended_properly("Paris is the capital of France.", "length")
    assert not ended_properly("Paris.\nUser: and Spain?\nModel: Madrid.", "stop")  # invented the next turn
    assert not ended_properly("Paris.\n\nQ: What about Spain?", "stop")


def test_evaluate_a_model_folder(tokenizer, tmp_path):
    folder = save_pretrained(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "tiny")
    result = evaluate(str(folder), max_tokens=4, loss_records=[{"messages": c} for c in CHATS[:2]],
                      prompts=V.build_prompts(per_type=1))
    assert result["n_heldout"] and result["n_train_types"]
    assert 0.0 <= result["heldout_strict"] <= 1.0 and result["heldout_loss"] > 0
    assert len(result["samples"]) == result["n_heldout"] + result["n_train_types"]
    result["name"] = "tiny"
    assert "| tiny |" in table([result])


def test_verifiable_pairs_from_a_model(tokenizer, tmp_path):
    from temper.align.pairs import verifiable_pairs

    folder = save_pretrained(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "tiny")
    pairs, stats = verifiable_pairs(str(folder), num_prompts=4, samples=2, max_tokens=4, min_gap=0.0)
    assert stats["prompts"] == 4 and len(pairs) == 4  # min_gap 0: every prompt makes a pair
    heldout = {p.key for p in V.split_prompts(V.build_prompts())[1]}
    for pair in pairs:
        assert pair.extra["key"] not in heldout
        assert pair.extra["chosen_reward"] >= pair.extra["rejected_reward"]
