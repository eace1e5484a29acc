"""The offline LLM API: mixed prompt kinds, outputs in prompt order."""
from __future__ import annotations

from temper.engine.llm import LLM
from temper.engine.sampling_params import SamplingParams


def test_generate_keeps_prompt_order():
    llm = LLM("smollm2-135m-instruct", kv_cache_memory=64 << 20, max_model_len=512)
    prompts = [[{"role": "user", "content": "What is the capital of France?"}], "One, two, three,",
               llm.tokenizer.encode("The sky is")]
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=12), use_tqdm=False)
    assert [o.prompt_token_ids for o in outs] == [llm.encode(p) for p in prompts]
    assert "Paris" in outs[0].outputs[0].text
    assert all(o.finished and o.outputs[0].token_ids for o in outs)
