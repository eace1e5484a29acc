"""DPO, the reward model, GRPO and PPO end to end on tiny models with a real tokenizer and the real engine."""
from __future__ import annotations

import json
import math

import pytest
import torch

from temper.align.data import PreferenceRecord, PromptRecord
from temper.align.dpo import DPOConfig, DPOTrainer
from temper.align.grpo import GRPOConfig, GRPOTrainer
from temper.align.ppo import PPOConfig, PPOTrainer
from temper.align.reward import RewardConfig, RewardModel, RewardTrainer
from temper.align.rollout import generate
from temper.engine.sampling_params import SamplingParams
from tests.align.conftest import tiny_model

PAIRS = [PreferenceRecord([{"role": "user", "content": f"Is {i} even?"}],
                          "Yes, it is even." if i % 2 == 0 else "No, it is odd.",
                          "Banana banana banana banana.") for i in range(16)]
PROMPTS = [PromptRecord([{"role": "user", "content": f"Say something about {w}."}])
           for w in ("cats", "rain", "tea", "maps", "snow", "bread")]


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge", "length_normalized"])
def test_dpo_starts_at_the_reference_and_learns(tokenizer, tmp_path, loss_type):
    model = tiny_model(tokenizer.vocab_size)
    config = DPOConfig(output_dir=str(tmp_path), loss_type=loss_type, beta=0.5, batch_size=4, max_steps=6,
                       learning_rate=5e-3, lora={"r": 8}, save_model=False)
    trainer = DPOTrainer(model, tokenizer, config, PAIRS, PAIRS[:8])
    assert (tmp_path / "reference_logps_train.pt").exists()
    start = trainer.run_eval()
    assert start["eval_margin"] == pytest.approx(0.0, abs=1e-5)  # LoRA B = 0: the policy is the reference
    if loss_type == "sigmoid":
        assert start["eval_loss"] == pytest.approx(math.log(2), abs=1e-5)
    trainer.train()
    end = trainer.run_eval()
    assert end["eval_margin"] > 0.05 and end["eval_accuracy"] >= 0.75
    # the cached reference log-probs are reused, not recomputed
    again = DPOTrainer(tiny_model(tokenizer.vocab_size, seed=5), tokenizer, config, PAIRS)
    torch.testing.assert_close(again.ref, trainer.ref)


def test_reward_model_learns_and_round_trips(tokenizer, tmp_path):
    model = tiny_model(tokenizer.vocab_size)
    config = RewardConfig(output_dir=str(tmp_path), batch_size=4, max_steps=15, learning_rate=1e-2)
    trainer = RewardTrainer(model, tokenizer, config, PAIRS, PAIRS[8:])
    trainer.train()
    assert trainer.run_eval()["eval_accuracy"] == 1.0
    rm = RewardModel.load(tmp_path / "model")
    prompt = [{"role": "user", "content": "Is 4 even?"}]
    good, bad = rm.score(tokenizer, prompt, ["Yes, it is even.", "Banana banana banana banana."])
    assert good > bad
    with torch.no_grad():
        trained = trainer.reward_model.score(tokenizer, prompt, ["Yes, it is even."])
    assert trained[0] == pytest.approx(good, abs=1e-4)


def short_reward(record, completions):
    """Reward short replies that end their turn: a signal a tiny random model can learn in a few steps."""
    return [(1.0 if c.ended_turn else 0.0) - len(c.token_ids) / 16 for c in completions]


def test_rollouts_use_the_live_weights(tokenizer):
    model = tiny_model(tokenizer.vocab_size).train()
    ids = [tokenizer.encode("hello there")]
    params = [SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)]
    first = generate(model, tokenizer, ids, params, kv_cache_memory=4 * 2**20)[0][0].token_ids
    q = model.model.layers[0].self_attn.q_proj
    weight = q.weight
    with torch.no_grad():
        model.lm_head.weight[first[0]] *= -50.0  # in place (its logit flips sign): the engine must see it
    second = generate(model, tokenizer, ids, params, kv_cache_memory=4 * 2**20)[0][0].token_ids
    assert second[0] != first[0]
    assert q.weight is weight and model.model.layers[0].self_attn.qkv is None  # not fused, same tensor
    assert model.training


def test_grpo_runs_and_logs(tokenizer, tmp_path):
    model = tiny_model(tokenizer.vocab_size)
    config = GRPOConfig(output_dir=str(tmp_path), group_size=4, batch_size=2, max_steps=3, max_new_tokens=12,
                        learning_rate=1e-2, lora={"r": 8}, kv_cache_memory=8 * 2**20, save_model=False)
    trainer = GRPOTrainer(model, tokenizer, config, PROMPTS, reward_fn=short_reward, eval_prompts=PROMPTS[:2])
    result = trainer.train()
    rows = [r for r in read(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert len(rows) == 3
    for key in ("loss", "reward", "kl", "clipfrac", "ended_turn", "completion_len", "grad_norm"):
        assert key in rows[0], key
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first rollout's policy is the reference
    assert "eval_reward" in result["eval"]
    # the same seed replays the same rollouts (what exact resume relies on)
    again = GRPOTrainer(tiny_model(tokenizer.vocab_size), tokenizer, config, PROMPTS, reward_fn=short_reward)
    again.before_step(0, again.step_items(0))
    fresh = GRPOTrainer(tiny_model(tokenizer.vocab_size), tokenizer, config, PROMPTS, reward_fn=short_reward)
    fresh.before_step(0, fresh.step_items(0))
    assert [c.token_ids for g in again.groups.values() for c in g.completions] == \
        [c.token_ids for g in fresh.groups.values() for c in g.completions]


def test_ppo_runs_and_logs(tokenizer, tmp_path):
    model = tiny_model(tokenizer.vocab_size)
    config = PPOConfig(output_dir=str(tmp_path), batch_size=2, max_steps=2, max_new_tokens=10, learning_rate=1e-2,
                       ppo_epochs=2, kv_cache_memory=8 * 2**20, save_model=False)  # full fine-tuning: a ref copy
    trainer = PPOTrainer(model, tokenizer, config, PROMPTS, reward_fn=short_reward)
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    before = {n: p.detach().clone() for n, p in trainer.value_head.named_parameters()}
    trainer.train()
    rows = [r for r in read(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    for key in ("reward", "kl", "kl_coef", "entropy", "clipfrac", "policy_loss", "value_loss", "approx_kl"):
        assert key in rows[-1], key
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert rows[0]["entropy"] > 0
    assert any(not torch.equal(before[n], p) for n, p in trainer.value_head.named_parameters())
