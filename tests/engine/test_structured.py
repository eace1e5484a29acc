"""Grammar-constrained decoding with the real SmolLM2 tokenizer and model: outputs always parse and validate."""
from __future__ import annotations

import json
import re

import pytest
import torch

from temper.engine.sampler import Sampler, SamplingRow
from temper.engine.sampling_params import SamplingParams, StructuredOutput
from temper.engine.structured import GrammarCompiler, bitmask_words, fill_bitmasks, unpack_bitmask
from temper.models.loader import load
from temper.models.registry import resolve

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "color": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "color", "tags"],
    "additionalProperties": False,
}
PHONE = r"\d{3}-\d{4}"
SEEDS = (None, 1, 2, 3)  # greedy, then temperature 1.0 with three seeds, as one batch


@pytest.fixture(scope="module")
def smollm2():
    return load(resolve("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def compiler(smollm2):
    return GrammarCompiler(smollm2.tokenizer, smollm2.model.config.vocab_size)


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


@torch.inference_mode()
def generate(smollm2, compiler, prompt: str, spec: StructuredOutput, max_tokens: int) -> list[tuple[str, bool]]:
    """(text, finished) for each of SEEDS, decoded as one batch over a KV cache; the grammar advances each step."""
    model, tokenizer = smollm2.model, smollm2.tokenizer
    prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True)
    grammar = compiler.compile(spec)
    B = len(SEEDS)
    matchers = [grammar.matcher() for _ in SEEDS]
    generators = [None if s is None else torch.Generator().manual_seed(s) for s in SEEDS]
    params = [SamplingParams(temperature=0.0 if s is None else 1.0, seed=s, structured=spec) for s in SEEDS]
    outputs: list[list[int]] = [[] for _ in SEEDS]
    finished = [False] * B
    cache = model.new_cache(B, len(prompt_ids) + max_tokens)
    ids = torch.tensor([prompt_ids] * B)
    positions = torch.arange(len(prompt_ids)).expand(B, -1)
    sampler = Sampler(seed=0)
    for _ in range(max_tokens):
        logits = model(ids, positions, cache, last_only=True)[:, -1]
        rows = [SamplingRow(p, prompt_ids + out, len(prompt_ids), g, None if done else m, tokenizer.eos_token_ids)
                for p, out, g, m, done in zip(params, outputs, generators, matchers, finished)]
        tokens = sampler(logits, rows).token_ids
        for i, token in enumerate(tokens):
            if finished[i]:
                continue
            if token in tokenizer.eos_token_ids:
                assert matchers[i].is_accepting(), "EOS before the grammar was complete"
                finished[i] = True
                continue
            matchers[i].accept(token)  # raises if the sampler let a forbidden token through
            outputs[i].append(token)
            finished[i] = matchers[i].is_terminated()
        if all(finished):
            break
        ids, positions = torch.tensor(tokens)[:, None], positions[:, -1:] + 1
    return [(tokenizer.decode(out), done) for out, done in zip(outputs, finished)]


def check_schema(value) -> None:
    """SCHEMA, validated by hand."""
    assert isinstance(value, dict) and set(value) == {"name", "age", "color", "tags"}, value
    assert isinstance(value["name"], str) and len(value["name"]) <= 20
    assert isinstance(value["age"], int) and not isinstance(value["age"], bool) and 0 <= value["age"] <= 150
    assert value["color"] in ("red", "green", "blue")
    assert isinstance(value["tags"], list) and len(value["tags"]) <= 3
    assert all(isinstance(t, str) and len(t) <= 12 for t in value["tags"])


def test_json_schema_outputs_parse_and_validate(smollm2, compiler):
    prompt = "Describe a person named Ana as JSON with name, age, favourite color and some tags."
    results = generate(smollm2, compiler, prompt, StructuredOutput(json_schema=SCHEMA), max_tokens=80)
    for text, finished in results:
        print(text)
        assert finished
        check_schema(json.loads(text))
    assert len({text for text, _ in results}) > 1  # the seeds sample different outputs


def test_json_object_outputs_parse(smollm2, compiler):
    prompt = 'Return a JSON object with keys "city" and "country" for Paris.'
    for text, finished in generate(smollm2, compiler, prompt, StructuredOutput(json_object=True), max_tokens=60):
        print(text)
        assert finished and isinstance(json.loads(text), dict)


def test_regex_outputs_match(smollm2, compiler):
    prompt = "What is the phone number of the pizza place?"
    for text, finished in generate(smollm2, compiler, prompt, StructuredOutput(regex=PHONE), max_tokens=40):
        print(text)
        assert finished and re.fullmatch(PHONE, text)


def test_unpack_bitmask_bit_order():
    bitmask = torch.tensor([[1 | 1 << 9 | -2**31, 1 << 2], [0, -1]], dtype=torch.int32)  # -2**31: bit 31 alone
    allowed = unpack_bitmask(bitmask, 40)
    assert allowed.shape == (2, 40)
    assert allowed[0].nonzero().flatten().tolist() == [0, 9, 31, 34]
    assert allowed[1].nonzero().flatten().tolist() == list(range(32, 40))


def test_json_schema_given_as_a_string(compiler, smollm2):
    matcher = compiler.compile(StructuredOutput(json_schema=json.dumps(SCHEMA))).matcher()
    for token in ids_of(smollm2.tokenizer, '{"name": "Bo", "age": 7, "color": "red", "tags": []}'):
        matcher.accept(token)
    assert matcher.is_terminated()


@pytest.mark.parametrize("spec, message", [
    (StructuredOutput(json_schema={"type": "object", "properties": {"a": {"type": "no-such-type"}}}), "JSON schema"),
    (StructuredOutput(json_schema={"type": "integer", "minimum": 5, "maximum": 2}), "JSON schema"),
    (StructuredOutput(json_schema="{not json"), "JSON schema"),
    (StructuredOutput(json_schema={"type": "object", "default": {1, 2}}), "JSON schema"),
    (StructuredOutput(regex="(ab"), "regex"),
    (StructuredOutput(regex="a{3,1}"), "regex"),
])
def test_invalid_specs_raise_value_error(compiler, spec, message):
    with pytest.raises(ValueError, match=f"invalid {message}"):
        compiler.compile(spec)


def test_compile_is_cached_per_spec(compiler):
    first = compiler.compile(StructuredOutput(regex="[ab]+"))
    assert compiler.compile(StructuredOutput(regex="[ab]+")) is first
    assert compiler.compile(StructuredOutput(regex="[abc]+")) is not first
    schema = compiler.compile(StructuredOutput(json_schema={"type": "object"}))
    assert compiler.compile(StructuredOutput(json_schema={"type": "object"})) is schema


def test_matcher_masks_accepts_rolls_back_and_terminates(compiler, smollm2):
    tokenizer = smollm2.tokenizer
    eos = tokenizer.eos_token_id
    matcher = compiler.compile(StructuredOutput(regex=PHONE)).matcher()
    mask = matcher.allowed_mask()
    assert mask.shape == (smollm2.model.config.vocab_size,) and mask.dtype == torch.bool
    allowed_text = [tokenizer.decode([t]) for t in mask.nonzero().flatten().tolist()]
    assert {str(d) for d in range(10)} <= set(allowed_text)
    assert all(t.isdigit() or t == "\ufffd" for t in allowed_text)  # digits, or bytes of a non-ASCII digit
    assert not mask[eos] and not mask[ids_of(tokenizer, "-")[0]]
    with pytest.raises(ValueError, match="rejected by the grammar"):
        matcher.accept(ids_of(tokenizer, "a")[0])
    digits = ids_of(tokenizer, "555")  # the state is as it was: the number still goes in
    for token in digits:
        matcher.accept(token)
    assert matcher.allowed_mask().nonzero().flatten().tolist() == ids_of(tokenizer, "-")
    matcher.rollback(1)
    assert mask_has(matcher, ids_of(tokenizer, "7")[0]) and not mask_has(matcher, ids_of(tokenizer, "-")[0])
    for token in ids_of(tokenizer, "5-1234"):
        matcher.accept(token)
    assert matcher.is_terminated() and matcher.is_accepting()
    assert matcher.allowed_mask().nonzero().flatten().tolist() == [eos]
    matcher.accept(eos)  # how a sequence ends
    matcher.reset()
    assert not matcher.is_terminated() and torch.equal(matcher.allowed_mask(), mask)


def mask_has(matcher, token: int) -> bool:
    return bool(matcher.allowed_mask()[token])


def test_batched_fill_equals_one_by_one(compiler, smollm2):
    tokenizer = smollm2.tokenizer
    matchers = [compiler.compile(StructuredOutput(json_schema=SCHEMA)).matcher() for _ in range(3)]
    matchers.append(compiler.compile(StructuredOutput(regex=PHONE)).matcher())
    for token in ids_of(tokenizer, '{"name": "A'):
        matchers[1].accept(token)
    for token in ids_of(tokenizer, '{"name": "Al", "age": 3'):
        matchers[2].accept(token)
    bitmask = torch.zeros(4, bitmask_words(compiler.vocab_size), dtype=torch.int32)
    fill_bitmasks(matchers, bitmask)
    one_by_one = torch.zeros_like(bitmask)
    for i, m in enumerate(matchers):
        m.fill_bitmask(one_by_one, i)
    assert torch.equal(bitmask, one_by_one)
    assert len({tuple(r.tolist()) for r in bitmask}) == 4
    with pytest.raises(ValueError, match="bitmask"):
        matchers[0].fill_bitmask(torch.zeros(1, 10, dtype=torch.int32))


def test_sampler_obeys_the_grammar_for_any_logits(compiler, smollm2):
    torch.manual_seed(0)
    tokenizer = smollm2.tokenizer
    V = smollm2.model.config.vocab_size
    grammar = compiler.compile(StructuredOutput(json_schema=SCHEMA))
    matchers = [grammar.matcher() for _ in range(4)]
    params = [SamplingParams(temperature=t, top_p=0.9) for t in (0.0, 0.5, 1.0, 2.0)]
    sampler = Sampler(seed=1)
    for _ in range(30):  # random logits: only the mask keeps the output valid
        rows = [SamplingRow(p, [1], 1, None, m, tokenizer.eos_token_ids) for p, m in zip(params, matchers)]
        masks = [m.allowed_mask() for m in matchers]
        for m, mask, token in zip(matchers, masks, sampler(torch.randn(4, V) * 5, rows).token_ids):
            assert mask[token]
            if not m.is_terminated() and token not in tokenizer.eos_token_ids:
                m.accept(token)


def test_terminated_grammar_allows_only_eos_even_before_min_tokens(compiler, smollm2):
    tokenizer = smollm2.tokenizer
    V = smollm2.model.config.vocab_size
    matcher = compiler.compile(StructuredOutput(regex="ok")).matcher()
    for token in ids_of(tokenizer, "ok"):
        matcher.accept(token)
    assert matcher.is_terminated()
    logits = torch.randn(2, V)
    logits[:, tokenizer.eos_token_id] = -50.0
    params = SamplingParams(temperature=1.0, min_tokens=10)
    rows = [SamplingRow(params, [1, 2, 3], 1, None, matcher, tokenizer.eos_token_ids),
            SamplingRow(SamplingParams(temperature=0.0), [1], 1, None, matcher, tokenizer.eos_token_ids)]
    assert Sampler(seed=0)(logits, rows).token_ids == [tokenizer.eos_token_id] * 2


def test_logits_wider_than_the_tokenizer(smollm2):
    tokenizer = smollm2.tokenizer
    width = tokenizer.vocab_size + 77  # lm_head padding, as some models have
    compiler = GrammarCompiler(tokenizer, width)
    matcher = compiler.compile(StructuredOutput(json_object=True)).matcher()
    mask = matcher.allowed_mask()
    assert mask.shape == (width,) and not mask[tokenizer.vocab_size:].any()
    logits = torch.zeros(1, width)
    logits[0, tokenizer.vocab_size:] = 100.0  # the padding is what the model likes best: still never picked
    row = SamplingRow(SamplingParams(temperature=0.0), [1], 1, None, matcher, tokenizer.eos_token_ids)
    assert Sampler()(logits, [row]).token_ids == ids_of(tokenizer, "{")


@pytest.mark.slow
def test_gemma_tokenizer_json_and_regex():
    gemma = load(resolve("gemma3-270m"))
    tokenizer = gemma.tokenizer
    compiler = GrammarCompiler(tokenizer, gemma.model.config.vocab_size)
    matcher = compiler.compile(StructuredOutput(json_object=True)).matcher()
    for token in ids_of(tokenizer, '{"a": [1, 2.5], "b": "héllo ✓"}'):
        matcher.accept(token)
    assert matcher.is_terminated()
    matcher = compiler.compile(StructuredOutput(regex=r"[a-z]+ [0-9]{2}")).matcher()
    for token in ids_of(tokenizer, "hello 42"):  # the space is a token of its own here
        matcher.accept(token)
    assert matcher.is_terminated()
