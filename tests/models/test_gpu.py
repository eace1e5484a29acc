"""The packaged models on CUDA in bf16/fp16 against fp32 on the CPU (run with -m gpu on a machine with a GPU)."""
from __future__ import annotations

import pytest
import torch

from temper.generation import SamplingParams, generate_ids
from temper.models.loader import load
from temper.models.registry import resolve


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma3-270m"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@torch.no_grad()
def test_cuda_logits_close_to_cpu(name, dtype):
    path = resolve(name)
    cpu = load(path)
    gpu = load(path, device="cuda", dtype=dtype)
    ids = torch.randint(10, 30000, (2, 600), generator=torch.Generator().manual_seed(0))
    expected = cpu.model(ids).float()
    actual = gpu.model(ids.cuda()).float().cpu()
    # compare next-token distributions: top-1 agreement and max probability difference
    agree = (actual.argmax(-1) == expected.argmax(-1)).float().mean().item()
    prob_diff = (actual.softmax(-1) - expected.softmax(-1)).abs().max().item()
    print(f"{name} {dtype}: top-1 agreement {agree:.3f}, max prob diff {prob_diff:.3g}")
    assert agree > (0.999 if dtype == torch.float32 else 0.9)
    assert prob_diff < (1e-3 if dtype == torch.float32 else 0.15)


@pytest.mark.gpu
def test_cuda_generation_answers_paris():
    loaded = load(resolve("smollm2-135m-instruct"), device="cuda", dtype=torch.bfloat16)
    tok = loaded.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], tokenize=True)
    out = list(generate_ids(loaded.model, ids, SamplingParams(max_tokens=24, temperature=0.0), tok.eos_token_ids))
    assert "Paris" in tok.decode(out)


@pytest.mark.gpu
@torch.no_grad()
def test_cuda_engine_greedy_equals_plain_loop_on_packaged_model():
    """The engine on CUDA (Triton attention, captured decode graphs, a mixed batch) against the plain forward loop,
    token for token, with the real default model in fp32."""
    from temper.engine.llm import LLM

    loaded = load(resolve("smollm2-135m-instruct"), device="cuda", dtype=torch.float32)
    tok = loaded.tokenizer
    questions = ["What is the capital of France?", "Write a haiku about the sea.",
                 "List three prime numbers.", "Explain what a hash table is in one paragraph."]
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True) for q in questions]
    params = SamplingParams(max_tokens=32, temperature=0.0)
    expected = [list(generate_ids(loaded.model, ids, params, tok.eos_token_ids)) for ids in prompts]
    llm = LLM.from_loaded(loaded, "smollm2-135m-instruct")
    outs = llm.generate(prompts, params, use_tqdm=False)
    actual = [[t for t in o.outputs[0].token_ids if t not in tok.eos_token_ids] for o in outs]
    assert actual == expected
