"""`temper plan`: parameter counts, weight and KV bytes, fit, speed and cost, checked against published numbers and
hand-computed formulas."""
from __future__ import annotations

import json
import math

import pytest

from temper import plan
from temper.cli import main
from temper.errors import TemperError
from temper.plan import Device, PlanConfig, WeightFormat

GiB = 2**30


def usable_a100_80gb() -> int:
    budget = 80e9 * 0.9
    return int(budget - GiB - 0.05 * budget)  # 1 GiB runtime + 5% activations


# ------------------------------------------------------------------------------------------------ parameters
@pytest.mark.parametrize("name, published", [
    ("llama-2-7b", 6_738_415_616), ("llama-2-70b", 68_976_648_192), ("llama-3-8b", 8_030_261_248),
    ("llama-2-13b", 13_015_864_320), ("mistral-7b", 7_241_732_096), ("qwen2-7b", 7_615_616_512),
])
def test_param_count_matches_the_published_checkpoint(name, published):
    cfg = plan.preset_config(name)
    counts = plan.count_params(cfg)
    assert counts.total == pytest.approx(published, rel=0.005)
    assert counts.total == cfg.num_params  # the breakdown agrees with ModelConfig's own count


def test_tied_embeddings_are_counted_once():
    counts = plan.count_params(plan.preset_config("smollm2-135m-instruct"))
    assert counts.head == 0 and counts.embed == 49152 * 576
    assert counts.total == pytest.approx(134.5e6, rel=0.005)


# ------------------------------------------------------------------------------------------------ weight bytes
def test_llama2_70b_fp16_is_about_138_gb_and_does_not_fit_one_a100():
    cfg = plan.preset_config("llama-2-70b")
    weights = plan.weight_bytes(cfg, WeightFormat(bits=16))
    assert weights.total == 2 * plan.count_params(cfg).total
    assert weights.total == pytest.approx(138e9, rel=0.005)
    p = plan.make_plan(cfg, WeightFormat(bits=16), plan.DEVICES["a100-80gb"], PlanConfig())
    assert not p.is_fit and p.num_seqs == 0 and p.decode == ()
    assert p.min_gpus == 3  # 138 GB does not fit 2 × 67.3 GB usable


def test_llama2_70b_int4_by_hand_fits_one_a100():
    cfg = plan.preset_config("llama-2-70b")
    d, ff, q, kv = 8192, 28672, 64 * 128, 8 * 128
    linear_per_layer = d * q + 2 * d * kv + q * d + 3 * d * ff
    linear = 80 * linear_per_layer
    assert linear % 128 == 0 and d % 128 == 0 and ff % 128 == 0  # every row splits into whole groups
    groups = linear // 128
    norms = (80 * 2 * d + d) * 2
    expected = linear // 2 + groups * (2 + 2) + 2 * (32000 * d * 2) + norms  # fp16 scale + fp16 zero per group
    weights = plan.weight_bytes(cfg, WeightFormat(bits=4, group_size=128))
    assert weights.total == expected
    assert 35e9 < expected < 38e9  # the textbook "35 GB of 4-bit weights", plus scales and 16-bit embeddings

    p = plan.make_plan(cfg, WeightFormat(bits=4), plan.DEVICES["a100-80gb"], PlanConfig(context_len=4096))
    assert p.usable_bytes == usable_a100_80gb()
    seq = 4096 * 327_680
    assert p.kv_seq_bytes == seq
    assert p.num_seqs == (usable_a100_80gb() - expected) // seq == 22
    assert p.is_fit and p.min_gpus == 1


def test_symmetric_int4_drops_the_zero_points_and_int8_adds_a_scale_per_row():
    assert plan.matrix_bytes(256, 512, 4, 128, is_symmetric=False) == 256 * 512 // 2 + 256 * 4 * 4
    assert plan.matrix_bytes(256, 512, 4, 128, is_symmetric=True) == 256 * 512 // 2 + 256 * 4 * 2
    assert plan.matrix_bytes(256, 576, 4, 128) == 256 * 576 // 2 + 256 * 9 * 4  # 576 = 4.5 x 128: groups of 64
    assert plan.matrix_bytes(256, 512, 8) == 256 * 512 + 256 * 4


def test_head_bits_store_embedding_and_head_in_int8_or_int4():
    cfg = plan.preset_config("llama-3-8b")
    plain = plan.weight_bytes(cfg, WeightFormat(bits=4))
    int8 = plan.weight_bytes(cfg, WeightFormat(bits=4, head_bits=8))
    int4 = plan.weight_bytes(cfg, WeightFormat(bits=4, head_bits=4))
    assert plain.embed == plain.head == 128256 * 4096 * 2
    assert int8.embed == int8.head == 128256 * 4096 + 128256 * 4
    assert int4.embed == int4.head == 128256 * 4096 // 2 + 128256 * (4096 // 128) * 4
    assert int8.linear == plain.linear == int4.linear


# ------------------------------------------------------------------------------------------------ KV cache
@pytest.mark.parametrize("name, per_token", [
    ("llama-2-70b", 2 * 80 * 8 * 128 * 2),  # GQA: 8 KV heads, 327,680 B
    ("llama-2-7b", 2 * 32 * 32 * 128 * 2),  # MHA: 524,288 B
    ("smollm2-135m-instruct", 2 * 30 * 3 * 64 * 2),  # our default model: 23,040 B
])
def test_kv_bytes_per_token(name, per_token):
    assert plan.kv_bytes_per_token(plan.preset_config(name)) == per_token
    assert plan.kv_bytes_per_token(plan.preset_config(name), "fp8") == per_token // 2


def test_sliding_window_layers_hold_only_their_window():
    gemma = plan.preset_config("gemma3-270m")  # 15 layers of 18 slide over 512 tokens
    slot = 2 * 1 * 256 * 2
    assert plan.kv_bytes_per_seq(gemma, 4096) == (3 * 4096 + 15 * 512) * slot
    assert plan.kv_bytes_per_seq(gemma, 100) == 18 * 100 * slot
    free = 10**9
    assert plan.max_context_by_memory(gemma, free) == (free - 15 * 512 * slot) // (3 * slot)
    assert plan.max_context_by_memory(gemma, 18 * 100 * slot) == 100

    mistral = plan.preset_config("mistral-7b")  # every layer slides over 4096 tokens
    assert plan.kv_bytes_per_seq(mistral, 32768) == plan.kv_bytes_per_seq(mistral, 4096)
    assert plan.max_context_by_memory(mistral, 10**12) is None
    assert plan.max_context_by_memory(mistral, 32 * 1000 * (2 * 8 * 128 * 2)) == 1000


def _packaged_config(name: str):
    from temper.models.registry import resolve

    try:
        path = resolve(name)
    except TemperError as e:
        pytest.skip(f"{name} is not installed: {e}")
    return plan.load_model_config(str(path))  # the .gguf path: config from the GGUF metadata


# NOTE: gguf's reader parses the whole vocabulary: about 4 s for SmolLM2, 20 s for Gemma 3's 262k tokens
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", pytest.param("gemma3-270m", marks=pytest.mark.slow)])
def test_packaged_model_preset_agrees_with_its_gguf(name):
    preset, gguf = plan.preset_config(name), _packaged_config(name)
    shape = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
             "tie_word_embeddings", "attention_bias", "sliding_window", "layer_types", "max_position_embeddings")
    assert {f: getattr(preset, f) for f in shape} == {f: getattr(gguf, f) for f in shape}
    assert plan.count_params(preset) == plan.count_params(gguf)
    assert plan.kv_bytes_per_seq(preset, 4096) == plan.kv_bytes_per_seq(gguf, 4096)


# ------------------------------------------------------------------------------------------------ speed and cost
def test_decode_batch_one_is_memory_bound_and_costed_by_formula():
    cfg, device, pc = plan.preset_config("llama-2-70b"), plan.DEVICES["a100-80gb"], PlanConfig()
    p = plan.make_plan(cfg, WeightFormat(bits=4), device, pc)
    one, full = p.decode
    assert (one.batch, full.batch) == (1, 22)
    read = p.weights.total - p.weights.embed + p.kv_seq_bytes  # untied: the embedding table is only gathered
    expected_tps = 1 / (read / (2039e9 * 0.8))
    assert one.bound == "memory" and one.tokens_per_s == pytest.approx(expected_tps)
    assert one.cost_per_million == pytest.approx(1.80 / (expected_tps * 3600) * 1e6)
    assert plan.cost_per_million(2.0, 1000.0) == pytest.approx(2.0 / 3.6e6 * 1e6)
    assert full.tokens_per_s > one.tokens_per_s and full.cost_per_million < one.cost_per_million


def test_large_batches_turn_compute_bound():
    cfg = plan.preset_config("smollm2-135m-instruct")
    slow_chip = Device("slow", memory_gb=80, bandwidth_gbs=3000, tflops=1)
    d = plan.decode(cfg, plan.weight_bytes(cfg, WeightFormat(16)), slow_chip, PlanConfig(context_len=128), 512)
    assert d.bound == "compute" and d.cost_per_million is None
    flops = 512 * plan.flops_per_token(cfg, plan.held_tokens(cfg, 128))
    assert d.tokens_per_s == pytest.approx(512 / (flops / (1e12 * 0.5)))


def test_tensor_parallel_adds_memory_and_bandwidth():
    cfg, device = plan.preset_config("llama-2-70b"), plan.DEVICES["a100-80gb"]
    one = plan.make_plan(cfg, WeightFormat(16), device, PlanConfig(num_gpus=1))
    four = plan.make_plan(cfg, WeightFormat(16), device, PlanConfig(num_gpus=4))
    assert four.usable_bytes == pytest.approx(4 * one.usable_bytes, abs=4)
    assert four.is_fit and four.decode[0].cost_per_million is not None


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("make, flag", [
    (lambda: PlanConfig(context_len=-1), "--context-len"),
    (lambda: PlanConfig(gpu_memory_utilization=1.5), "--gpu-memory-utilization"),
    (lambda: PlanConfig(kv_dtype="fp4"), "--kv-dtype"),
    (lambda: WeightFormat(bits=3), "--bits"),
    (lambda: WeightFormat(bits=4, group_size=0), "--group-size"),
    (lambda: Device("x", memory_gb=-1, bandwidth_gbs=1, tflops=1), "--memory-gb"),
    (lambda: plan.pick_device(None, memory_gb=40), "--bandwidth-gbs"),
    (lambda: plan.pick_device("tpu"), "a100-80gb"),
])
def test_bad_settings_name_the_flag(make, flag):
    with pytest.raises(ValueError, match=flag):
        make()


def test_config_json_file_and_folder(tmp_path):
    raw = plan.preset_config("llama-2-7b").to_hf()
    (tmp_path / "config.json").write_text(json.dumps(raw))
    for spec in (tmp_path, tmp_path / "config.json"):
        assert plan.count_params(plan.load_model_config(str(spec))).total == 6_738_415_616
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TemperError, match="not valid JSON"):
        plan.load_model_config(str(tmp_path / "bad.json"))


# ------------------------------------------------------------------------------------------------ the command
def test_cli_textbook_case(capsys):
    assert main(["plan", "--model", "llama-2-70b", "--bits", "4", "--gpu", "a100-80gb"]) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last.startswith("fits: yes") and "22 sequences of 4096 tokens" in last, out
    assert "327,680 B/token" in out and "per M output tokens" in out


def test_cli_table_over_all_bit_widths(capsys):
    assert main(["plan", "--model", "llama-2-70b", "--gpu", "a100-80gb"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[2:6]] == ["fp32", "fp16", "int8", "int4"]
    assert lines[-1].startswith("fits: yes")


def test_cli_json(capsys):
    assert main(["plan", "-m", "llama-2-70b", "--bits", "16", "--gpu", "a100-80gb", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (p,) = out["plans"]
    assert p["is_fit"] is False and p["min_gpus"] == 3 and p["weight_bytes"] == 2 * out["model"]["params"]
    assert out["model"]["kv_bytes_per_token"] == 327_680 and out["device"]["name"] == "a100-80gb"


def test_cli_custom_device_without_price(capsys):
    argv = ["plan", "-m", "llama-3-8b", "--bits", "8", "--memory-gb", "16", "--bandwidth-gbs", "100", "--tflops", "10"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 × custom: 16 GB" in out and "n/a per M output tokens" in out


def test_cli_unknown_preset_names_the_known_ones(capsys):
    assert main(["plan", "--model", "llama-9-1t"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'llama-9-1t'" in err and "llama-2-70b" in err and "smollm2-135m-instruct" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_negative_number_is_a_one_line_error(capsys):
    assert main(["plan", "--context-len", "-5"]) == 2
    assert "--context-len must be >= 1" in capsys.readouterr().err


def test_every_preset_plans_on_every_device():
    for name in plan.MODEL_PRESETS:
        cfg = plan.preset_config(name)
        for device in plan.DEVICES.values():
            for bits in plan.BITS:
                p = plan.make_plan(cfg, WeightFormat(bits), device, PlanConfig())
                assert p.num_seqs == max(p.kv_free_bytes, 0) // p.kv_seq_bytes
                assert all(math.isfinite(d.tokens_per_s) and d.tokens_per_s > 0 for d in p.decode)
