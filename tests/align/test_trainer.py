"""The shared training loop and SFT on tiny models: masking, packing, accumulation, resume, LoRA."""
from __future__ import annotations

import torch

from temper.align.batching import collate, encode_chat, pack, unpacked
from temper.align.lora import LoraConfig, adapters_disabled, apply_lora, merge_lora
from temper.align.policy import token_logps
from temper.align.sft import SFTConfig, SFTTrainer
from tests.align.conftest import tiny_model

CHATS = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Count to {i}."},
          {"role": "assistant", "content": " ".join(str(k) for k in range(1, i + 2))},
          {"role": "user", "content": "Thanks"}, {"role": "assistant", "content": f"You're welcome {i}."}]
         for i in range(12)]


def test_loss_only_on_assistant_tokens(tokenizer):
    ex = encode_chat(tokenizer, CHATS[2])
    assert tokenizer.decode(ex.ids) == tokenizer.apply_chat_template(CHATS[2], add_generation_prompt=False)
    targets = tokenizer.decode([i for i, m in zip(ex.ids, ex.loss_mask) if m])
    assert targets == "1 2 3<|im_end|>\nYou're welcome 2.<|im_end|>\n"  # replies and their end-of-turn markers
    context = tokenizer.decode([i for i, m in zip(ex.ids, ex.loss_mask) if not m])
    assert "Count to 2." in context and "1 2 3" not in context


def test_packed_rows_equal_separate_forwards(tokenizer):
    for family in ("llama", "gemma3"):  # gemma3: sliding windows by position within each example
        model = tiny_model(tokenizer.vocab_size, family=family).eval()
        examples = [encode_chat(tokenizer, c) for c in CHATS[:5]]
        packed = collate(pack(examples, 512), pad_id=0)
        assert packed.input_ids.shape[0] == 1  # all five in one row
        alone = collate(unpacked(examples), pad_id=0)
        with torch.no_grad():
            a = token_logps(model, packed).logps[packed.target_mask]
            b = token_logps(model, alone).logps[alone.target_mask]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert packed.num_targets == sum(e.num_targets for e in examples)


def _trainer(tokenizer, tmp_path, seed=0, **overrides):
    model = tiny_model(tokenizer.vocab_size, seed=seed)
    settings = dict(output_dir=str(tmp_path), batch_size=2, max_len=128, learning_rate=1e-2, max_steps=3,
                    save_model=False, packing=False, max_grad_norm=None) | overrides
    return SFTTrainer(model, tokenizer, SFTConfig(**settings), CHATS)


def _params(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def test_every_trainable_parameter_changes(tokenizer, tmp_path):
    for overrides, steps in (({}, 1), ({"lora": {"r": 4}}, 2)):  # LoRA's A moves once B is nonzero: 2 steps
        trainer = _trainer(tokenizer, tmp_path / str(steps), max_steps=steps, **overrides)
        before = _params(trainer)
        trainer.train()
        after = _params(trainer)
        assert before and before.keys() == after.keys()
        unchanged = [n for n in before if torch.equal(before[n], after[n])]
        assert not unchanged, unchanged


def test_gradient_accumulation_equals_the_larger_batch(tokenizer, tmp_path):
    big = _trainer(tokenizer, tmp_path / "big", batch_size=4, grad_accum=1, max_steps=2)
    small = _trainer(tokenizer, tmp_path / "small", batch_size=1, grad_accum=4, max_steps=2)
    assert big.step_items(1) == small.step_items(1)
    big.train()
    small.train()
    a, b = _params(big), _params(small)
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=2e-6, rtol=0, msg=n)


def test_resume_reproduces_the_uninterrupted_run(tokenizer, tmp_path):
    straight = _trainer(tokenizer, tmp_path / "a", max_steps=4, lora={"r": 4, "dropout": 0.1}, save_every=2,
                        keep_checkpoints=5)
    straight.train()
    resumed = _trainer(tokenizer, tmp_path / "b", max_steps=4, lora={"r": 4, "dropout": 0.1},
                       resume=str(tmp_path / "a" / "checkpoints" / "step-000002.pt"))
    resumed.train()
    a, b = _params(straight), _params(resumed)
    for n in a:
        assert torch.equal(a[n], b[n]), n  # dropout masks and data order replay exactly


def test_lora_merge_and_disable(tokenizer):
    model = tiny_model(tokenizer.vocab_size).eval()
    batch = collate(unpacked([encode_chat(tokenizer, c) for c in CHATS[:3]]), pad_id=0)
    with torch.no_grad():
        base = token_logps(model, batch).logps
        apply_lora(model, LoraConfig(r=4, alpha=8))
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a trained adapter
        adapted = token_logps(model, batch).logps
        with adapters_disabled(model):
            torch.testing.assert_close(token_logps(model, batch).logps, base, atol=0, rtol=0)
        assert (adapted - base).abs().max() > 1e-3
        assert merge_lora(model) == 14  # q k v o gate up down, 2 layers
        torch.testing.assert_close(token_logps(model, batch).logps, adapted, atol=1e-5, rtol=0)


def test_sft_learns_and_writes_its_outputs(tokenizer, tmp_path):
    trainer = _trainer(tokenizer, tmp_path, max_steps=12, save_model=True, lora={"r": 8}, learning_rate=2e-2)
    trainer.eval_rows = trainer.rows[:4]
    first = trainer.run_eval()["eval_loss"]
    trainer.train()
    assert trainer.run_eval()["eval_loss"] < first - 0.5
    for name in ("metrics.jsonl", "curves.png", "config.json", "model/model.safetensors", "model/config.json"):
        assert (tmp_path / name).exists(), name
    from temper.models.loader import load

    loaded = load(tmp_path / "model")  # the merged model, as `temper serve --model` loads it
    batch = collate(trainer.eval_rows, pad_id=0)
    with torch.no_grad():
        torch.testing.assert_close(token_logps(loaded.model, batch).logps, token_logps(trainer.model, batch).logps,
                                   atol=1e-5, rtol=0)


def test_trainable_token_rows(tokenizer, tmp_path):
    """LoRA plus trained embedding rows of the turn markers: the rows move, the reference (adapters off) is the
    base, and merging gives the adapted logits."""
    trainer = _trainer(tokenizer, tmp_path, max_steps=2, lora={"r": 4, "trainable_tokens": ["<|im_end|>"]})
    batch = collate(trainer.rows[:3], pad_id=0)
    with torch.no_grad():
        base = token_logps(trainer.model, batch).logps
    trainer.train()
    rows = trainer.model.model.embed_tokens.rows
    assert rows.ids.tolist() == [tokenizer.token_to_id("<|im_end|>")] and rows.delta.abs().sum() > 0
    assert trainer.model.lm_head.rows is rows  # tied head: the same rows
    with torch.no_grad():
        adapted = token_logps(trainer.model, batch).logps
        with adapters_disabled(trainer.model):
            torch.testing.assert_close(token_logps(trainer.model, batch).logps, base, atol=1e-6, rtol=0)
        merge_lora(trainer.model)
        assert trainer.model.lm_head.weight is trainer.model.model.embed_tokens.weight  # still tied
        torch.testing.assert_close(token_logps(trainer.model, batch).logps, adapted, atol=1e-5, rtol=0)
