"""Recipe data specs: offline sources with their filters, and the verifiable split kept apart."""
from __future__ import annotations

import pytest

from temper.align import verifiable as V
from temper.align.recipe import RecipeError, build_config, load_data


def test_chat_sources_first_turn_and_unique_prompts():
    pytest.importorskip("chatterbot_corpus", reason="pip install --no-deps chatterbot-corpus==1.3.3")
    records = load_data({"source": "chatterbot", "first_turn": True, "unique_prompts": True}, "chat")
    assert all(r.messages[-1]["role"] == "assistant" and len(r.messages) == 2 for r in records)
    firsts = [r.messages[0]["content"].strip().lower() for r in records]
    assert len(firsts) == len(set(firsts))
    assert len(load_data({"source": "chatterbot", "first_turn": True, "unique_prompts": True, "skip": 5,
                          "limit": 7}, "chat")) == 7


def test_verifiable_prompts_never_leak_heldout_types():
    train = load_data({"source": "verifiable", "split": "train"}, "prompt")
    heldout = load_data({"source": "verifiable", "split": "heldout"}, "prompt")
    assert train and heldout
    assert not {t for r in train for t in r.extra["instruction_ids"]} & V.HELDOUT_TYPES
    assert {t for r in heldout for t in r.extra["instruction_ids"]} <= V.HELDOUT_TYPES
    with pytest.raises(RecipeError, match="split must be train or heldout"):
        load_data({"source": "verifiable", "split": "all"}, "prompt")


def test_unknown_sources_and_settings():
    with pytest.raises(RecipeError, match="unknown data source"):
        load_data({"source": "hub"}, "chat")
    with pytest.raises(RecipeError, match="group_size must be >= 2"):
        build_config("grpo", {"group_size": 1})
