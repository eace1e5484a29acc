"""The official openai SDK against `temper serve`'s app on loopback, with the default model behind it."""
from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(smol_server):
    return openai.OpenAI(base_url=f"{smol_server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def aclient(smol_server):
    return openai.AsyncOpenAI(base_url=f"{smol_server.url}/v1", api_key="unused", max_retries=0)


def test_models(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL, "all-minilm-l6-v2"]
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_greedy_matches_the_engine(client, smol_server, smollm2_loaded):
    """The server's answer is the engine's greedy output for the chat-templated prompt, token for token."""
    from temper.engine.sampling_params import SamplingParams
    from temper.generation import generate_ids

    r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12, temperature=0)
    choice = r.choices[0]
    tok = smollm2_loaded.tokenizer
    ids = tok.apply_chat_template(QUESTION, tokenize=True)
    expected = list(generate_ids(smollm2_loaded.model, ids, SamplingParams(max_tokens=12, temperature=0),
                                 tok.eos_token_ids))
    assert choice.message.content == tok.decode(expected, skip_special_tokens=True)
    assert "Paris" in choice.message.content
    stopped = len(expected) < 12  # the plain loop does not yield the end-of-turn token; usage counts it
    assert choice.finish_reason == ("stop" if stopped else "length")
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == len(expected) + stopped
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")


def test_completion_n_stop_and_logprobs(client):
    r = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0,
                                  stop=[" 8"], logprobs=3)
    c = r.choices[0]
    assert c.text.strip().startswith("5, 6, 7") and "8" not in c.text
    assert c.finish_reason == "stop"
    lp = c.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) <= 3 and logprob <= 0
        assert max(top.values()) == pytest.approx(logprob, abs=1e-5)  # greedy: the sampled token is the top one
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, n=3, temperature=1.0,
                                  seed=1)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert len({c.text for c in r.choices}) > 1  # one seed, but each sample draws its own stream
    assert 3 <= r.usage.completion_tokens <= 24 and r.usage.prompt_tokens == 4  # the prompt is counted once


def test_completion_batch_prompts_and_echo(client):
    r = client.completions.create(model=MODEL, prompt=["The sky is", "Water is"], max_tokens=4, temperature=0,
                                  n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text == r.choices[1].text  # greedy: the samples agree
    r = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=3, temperature=0, echo=True,
                                  logprobs=1)
    c = r.choices[0]
    assert c.text.startswith("The sky is") and len(c.text) > len("The sky is")
    assert c.logprobs.token_logprobs[0] is None and all(x is not None for x in c.logprobs.token_logprobs[1:])
    assert len(c.logprobs.tokens) == r.usage.prompt_tokens + r.usage.completion_tokens
    # echo with max_tokens=0 scores the prompt (perplexity)
    r = client.completions.create(model=MODEL, prompt="The sky is blue", max_tokens=0, echo=True, logprobs=0)
    assert r.choices[0].text == "The sky is blue" and r.usage.completion_tokens == 0
    assert len(r.choices[0].logprobs.token_logprobs) == r.usage.prompt_tokens


def test_seed_reproducible(client):
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "Write a word."}], max_tokens=16,
                  temperature=1.0, seed=1234)
    a = client.chat.completions.create(**kwargs).choices[0].message.content
    b = client.chat.completions.create(**kwargs).choices[0].message.content
    c = client.chat.completions.create(**{**kwargs, "seed": 4321}).choices[0].message.content
    assert a == b
    assert a != c  # 16 tokens at temperature 1: another seed gives another text


def test_chat_stream_with_usage_and_logprobs(client):
    stream = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=10, temperature=0,
                                            stream=True, stream_options={"include_usage": True}, logprobs=True,
                                            top_logprobs=2)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    full = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=10, temperature=0)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[0].finish_reason
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    # usage counts the end-of-turn token; logprobs leave it out like the text does
    assert len(tokens) == full.usage.completion_tokens - (full.choices[0].finish_reason == "stop")
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob for t in tokens)
    assert "".join(t.token for t in tokens) == text
    assert all(bytes(t.bytes) == t.token.encode() for t in tokens)


def test_chat_stream_n2(client):
    stream = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=6, temperature=0.8,
                                            n=2, seed=5, stream=True)
    texts, finished = {0: "", 1: ""}, {}
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                assert c.index not in finished
                finished[c.index] = c.finish_reason
    assert set(finished) == {0, 1} and all(texts.values())


def test_json_schema_output_validates(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"},
                                               "country": {"type": "string", "enum": ["France", "Spain"]}},
              "required": ["city", "population", "country"], "additionalProperties": False}
    for seed in range(3):
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Describe Paris as JSON."}], max_tokens=60,
            temperature=0.7, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    ask = 'Return a JSON object with the keys "name" and "age" for Alice, who is 30.'
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": ask}],
                                       max_tokens=100, temperature=0, response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_async_client_concurrent_streams(aclient):
    async def one(i: int) -> str:
        stream = await aclient.completions.create(model=MODEL, prompt=f"Count: {i},", max_tokens=5,
                                                  temperature=0, stream=True)
        return "".join([c.choices[0].text async for c in stream if c.choices])

    async def main():
        texts = await asyncio.gather(*(one(i) for i in range(6)))
        ref = await aclient.completions.create(model=MODEL, prompt="Count: 3,", max_tokens=5, temperature=0)
        return texts, ref
    texts, ref = asyncio.run(main())
    assert texts[3] == ref.choices[0].text  # batched with others, greedy gives the same text


def test_embeddings(client, embedder):
    texts = ["How do I reset my password?", "I forgot my password, how do I change it?", "Paris is in France."]
    r = client.embeddings.create(model="all-minilm-l6-v2", input=texts)
    vectors = np.array([d.embedding for d in r.data])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(vectors, embedder.embed(texts).numpy(), atol=1e-6)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    assert r.usage.prompt_tokens == sum(embedder.count_tokens(texts))
    raw = client.embeddings.with_raw_response.create(model="all-minilm-l6-v2", input="hello",
                                                     encoding_format="base64")
    payload = json.loads(raw.content)["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(payload), dtype=np.float32)
    np.testing.assert_allclose(decoded, embedder.embed(["hello"]).numpy()[0], atol=1e-6)


def test_sdk_error_types(client, smol_server):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=5)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-9", messages=QUESTION)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="hello " * 100, max_tokens=8190)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=QUESTION, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}})
    assert e.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=QUESTION, logit_bias={"999999": 5})
    # raw HTTP: malformed JSON and wrong types get 400 bodies in OpenAI's shape
    for body in (b"{not json", b'{"prompt": 5, "model": "x"}', b"[]", b""):
        r = httpx.post(f"{smol_server.url}/v1/completions", content=body,
                       headers={"content-type": "application/json"})
        assert r.status_code == 400, body
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(f"{smol_server.url}/v1/nothing").json()["error"]["type"] == "not_found_error"
    # and it keeps serving
    assert client.completions.create(model=MODEL, prompt="Hi", max_tokens=2).choices


def test_tokenize_detokenize_health_metrics(smol_server, smollm2_loaded):
    url = smol_server.url
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    ids = httpx.post(f"{url}/tokenize", json={"prompt": "Hello world"}).json()
    assert ids["tokens"] == smollm2_loaded.tokenizer.encode("Hello world") and ids["count"] == len(ids["tokens"])
    chat = httpx.post(f"{url}/tokenize", json={"messages": QUESTION}).json()
    assert chat["tokens"] == smollm2_loaded.tokenizer.apply_chat_template(QUESTION, tokenize=True)
    assert httpx.post(f"{url}/detokenize", json={"tokens": ids["tokens"]}).json() == {"prompt": "Hello world"}
    assert httpx.post(f"{url}/detokenize", json={"tokens": [10**9]}).status_code == 400
    text = httpx.get(f"{url}/metrics").text
    for name in ("temper_time_to_first_token_seconds_bucket", "temper_time_per_output_token_seconds_bucket",
                 "temper_e2e_request_latency_seconds_bucket", "temper_num_requests_running",
                 "temper_num_requests_waiting", "temper_kv_cache_usage_ratio", "temper_prefix_cache_hit_rate",
                 "temper_prompt_tokens_total", "temper_generation_tokens_total", "temper_num_preemptions_total",
                 'temper_errors_total{status="400",type="invalid_request_error"}'):
        assert name in text, name


def test_prefix_cache_counts_cached_tokens(client):
    system = "You are a careful assistant. " * 20
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]
    client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    assert r.usage.prompt_tokens_details.cached_tokens >= 16 * (r.usage.prompt_tokens // 16 - 1)
