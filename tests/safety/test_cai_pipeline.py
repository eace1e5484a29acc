"""`temper align cai` end to end on a tiny random model: SL-CAI, RLAIF with the policy as feedback model,
DPO, the before/after measurement with the real safety judges and guard, and a model the server can load."""
from __future__ import annotations

import json

import torch

from temper.align.cai import CAIConfig, run_cai
from temper.models.loader import converted_folder, load, save_pretrained
from temper.models.registry import resolve
from temper.safety.judges import SafetyJudge
from temper.tokenizer import Tokenizer
from tests.align.conftest import tiny_model


def test_cai_pipeline_on_a_tiny_model(tmp_path, guard_models):
    tok = Tokenizer.from_pretrained(converted_folder(resolve("smollm2-135m-instruct")))
    base = tmp_path / "base"
    model = tiny_model(tok.vocab_size, max_positions=2048)
    blank = [i for i in range(tok.vocab_size) if not tok.decode([i]).strip()]  # special and whitespace tokens
    with torch.no_grad():  # none of them wins the argmax: the random model writes (meaningless) text
        model.model.embed_tokens.weight[blank] = 0.0
    save_pretrained(model, tok, base)
    config = CAIConfig(
        model=str(base), output_dir=str(tmp_path / "cai"), kv_cache_memory=64 << 20, max_model_len=2048,
        red_team_prompts=4, rounds=2, reply_tokens=6, critique_tokens=4, revision_tokens=6, helpful_prompts=4,
        edgy_prompts=2, helpful_tokens=6, filter_revisions=False, sft={"max_steps": 1, "batch_size": 2},
        preference_prompts=3, contrast_prompts=3, sample_tokens=4, feedback="policy", feedback_probes=["policy"],
        probe_items=3,
        min_confidence=0.0, dpo={"max_steps": 1, "batch_size": 2},
        eval={"harmful": 3, "benign": 2, "max_tokens": 4, "verifiable": False, "guard": True})
    summary = run_cai(config, judge=SafetyJudge(guard_models))

    out = tmp_path / "cai"
    records = [json.loads(line) for line in (out / "sl" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(len(r["rounds"]) == 2 for r in records)
    assert {r["rounds"][0]["principle"] for r in records} <= {
        "harmless", "dangerous-capabilities", "honest-and-caring", "law-and-rights", "helpful-when-safe"}
    sl = summary["stages"]["sl_data"]
    assert sl["revisions"] == 4 and sl["revisions_kept"] == 4  # unfiltered: every non-empty revision
    rl = summary["stages"]["rl_data"]
    assert rl["items"] >= 1 and rl["pairs"] == rl["items"] + rl["contrast_pairs"]  # min_confidence 0: all train
    assert "policy" in rl["probes"]
    assert summary["final_model"] == str(out / "rl" / "model")
    assert set(summary["eval"]) == {"base", "sl-cai", "rl-cai"}
    for row in summary["eval"].values():
        assert row["harmful_compliance"]["n"] == 3 and row["over_refusal"]["n"] > 0
        assert "guard_harmful_compliance" in row
    assert (out / "eval" / "table.md").read_text().count("\n") == 5  # header, rule, three models

    # the final model loads like any other (what `temper serve --model` does) and differs from the base
    final, start = load(summary["final_model"]), load(str(base))
    changed = [n for n, p in final.model.state_dict().items()
               if not torch.equal(p, start.model.state_dict()[n])]
    assert changed
