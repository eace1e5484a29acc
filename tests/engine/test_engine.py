"""The engine's greedy output equals the plain forward loop token for token, however it batches."""
from __future__ import annotations

import pytest

from temper.engine.config import EngineConfig
from temper.engine.llm_engine import LLMEngine
from temper.engine.sampling_params import SamplingParams
from temper.errors import ContextLengthExceededError
from temper.generation import generate_ids
from temper.models.loader import load
from temper.models.registry import resolve

QUESTIONS = ["What is the capital of France?", "Name three colors.", "What is 2+2?",
             "Write a haiku about the sea.", "Who wrote Hamlet?", "Give me a synonym for happy."]
SYSTEM = ("You are a careful assistant. Answer briefly and precisely. " * 12).strip()
MAX_TOKENS = 24

@pytest.fixture(scope="module")
def smollm2():
    return load(resolve("smollm2-135m-instruct"))

@pytest.fixture(scope="module")
def prompts(smollm2):
    tok = smollm2.tokenizer
    return [tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
                                    tokenize=True) for q in QUESTIONS]

@pytest.fixture(scope="module")
def reference(smollm2, prompts):
    """Greedy tokens of the plain loop (contiguous KV cache, one sequence at a time)."""
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)
    return [list(generate_ids(smollm2.model, p, params, smollm2.tokenizer.eos_token_ids)) for p in prompts]

def run(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
    ids = [engine.add_request(p, params) for p in prompts]
    done = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    # the loop's outputs stop before the end-of-sequence token; the engine's include it
    eos = engine.tokenizer.eos_token_ids
    return [[t for t in done[i].outputs[0].token_ids if t not in eos] for i in ids]

def engine(smollm2, **options) -> LLMEngine:
    options = {"kv_cache_memory": 64 << 20, "max_model_len": 512, **options}
    return LLMEngine(smollm2.model, smollm2.tokenizer, EngineConfig(**options))

GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)

def test_single_requests_match_loop(smollm2, prompts, reference):
    e = engine(smollm2, enable_prefix_caching=False)
    for p, ref in zip(prompts[:2], reference[:2]):
        assert run(e, [p], GREEDY) == [ref]

def test_mixed_batch_with_prefix_hits_matches_loop(smollm2, prompts, reference):
    e = engine(smollm2)
    assert run(e, prompts, GREEDY) == reference
    again = run(e, prompts, GREEDY)  # the shared system prompt and each prompt are now cached
    assert again == reference
    assert e.stats().prefix_hit_rate > 0.4

def test_chunked_prefill_matches_loop(smollm2, prompts, reference):
    e = engine(smollm2, max_num_batched_tokens=16, enable_prefix_caching=False)
    assert run(e, prompts, GREEDY) == reference

def test_preemption_and_resume_match_loop(smollm2, prompts, reference):
    # 36 blocks of 16 tokens: all six prompts (~150 tokens each) cannot grow at once
    e = engine(smollm2, kv_cache_memory=36 * 16 * 46080, max_model_len=256)
    assert run(e, prompts, GREEDY) == reference
    assert e.stats().num_preemptions > 0

def test_seeded_sampling_is_batch_independent(smollm2, prompts):
    params = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, max_tokens=16)
    alone = run(engine(smollm2), [prompts[0]], params)[0]
    mixed = run(engine(smollm2), [prompts[3], prompts[0], prompts[1]], params)[1]
    assert alone == mixed

def test_n_samples_share_the_prompt(smollm2, prompts):
    e = engine(smollm2)
    rid = e.add_request(prompts[0], SamplingParams(n=3, temperature=1.0, seed=5, max_tokens=12))
    outs = []
    while e.has_unfinished_requests():
        outs += [o for o in e.step() if o.finished]
    (out,) = outs
    assert out.request_id == rid and [o.index for o in out.outputs] == [0, 1, 2]
    assert len({tuple(o.token_ids) for o in out.outputs}) > 1  # independent samples
    assert e.block_manager.stats.copies >= 1  # the shared partial block was copied on write

def test_stop_string_is_trimmed(smollm2, prompts, reference):
    e = engine(smollm2)
    ids = e.add_request(prompts[0], SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, stop=("Paris",)))
    final = None
    while e.has_unfinished_requests():
        final = next((o for o in e.step() if o.finished), final)
    text = final.outputs[0].text
    assert final.request_id == ids and "Paris" not in text and text.endswith("is ")
    assert final.outputs[0].finish_reason == "stop" and final.outputs[0].stop_reason == "Paris"

def test_context_length_error(smollm2, prompts):
    e = engine(smollm2, max_model_len=160)
    with pytest.raises(ContextLengthExceededError, match="maximum context length is 160"):
        e.add_request(prompts[0], SamplingParams(max_tokens=100))

def test_abort_frees_blocks(smollm2, prompts):
    e = engine(smollm2, enable_prefix_caching=False)
    free = e.block_manager.num_free_blocks
    rid = e.add_request(prompts[0], GREEDY)
    e.step()
    assert e.block_manager.num_free_blocks < free
    e.abort(rid)
    assert e.block_manager.num_free_blocks == free and not e.has_unfinished_requests()


def test_prompt_logprobs_across_chunks(smollm2, prompts):
    """Prompt logprobs computed in 16-token chunks equal log_softmax of one dense forward."""
    import torch

    prompt = prompts[0]
    e = engine(smollm2, max_num_batched_tokens=16, enable_prefix_caching=False)
    rid = e.add_request(prompt, SamplingParams(max_tokens=1, prompt_logprobs=2))
    final = None
    while e.has_unfinished_requests():
        final = next((o for o in e.step() if o.finished), final)
    lps = final.prompt_logprobs
    assert final.request_id == rid and len(lps) == len(prompt) and lps[0] is None
    with torch.no_grad():
        dense = torch.log_softmax(smollm2.model(torch.tensor([prompt]))[0].float(), dim=-1)
    for p in (1, 15, 16, 17, len(prompt) - 1):
        assert abs(lps[p].logprob - dense[p - 1, prompt[p]].item()) < 1e-4
        assert len(lps[p].top) == 2 and lps[p].top[0][0] == int(dense[p - 1].argmax())


def test_bad_logit_bias_is_rejected_at_the_door(smollm2, prompts):
    e = engine(smollm2)
    with pytest.raises(ValueError, match="logit_bias"):
        e.add_request(prompts[0], SamplingParams(logit_bias={10**6: 5.0}))


def test_json_schema_output_parses(smollm2):
    import json

    from temper.engine.sampling_params import StructuredOutput

    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"]}
    e = engine(smollm2)
    tok = smollm2.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "Describe Paris as JSON."}], tokenize=True)
    params = SamplingParams(n=3, temperature=1.0, seed=3, max_tokens=60, structured=StructuredOutput(json_schema=schema))
    e.add_request(ids, params)
    final = None
    while e.has_unfinished_requests():
        final = next((o for o in e.step() if o.finished), final)
    for out in final.outputs:
        assert out.finish_reason == "stop", out.text
        value = json.loads(out.text)
        assert isinstance(value["city"], str) and isinstance(value["population"], int)
