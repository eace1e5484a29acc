"""Text <-> token ids for GGUF files and HF tokenizer folders, chat templates and streaming decode.

A GGUF file stores its vocabulary, merges and special-token ids as metadata. We rebuild from them the same
`tokenizers` pipeline that transformers builds for the file (see `transformers/integrations/gguf`), so that ids
and text match transformers exactly; transformers itself is never imported.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from temper.chat_templates import default_chat_template
from temper.errors import ModelFormatError

if TYPE_CHECKING:
    import gguf
    import jinja2

END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>")  # chat turn ends that also stop generation
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types
_GEMMA_ARCHS = ("gemma", "gemma2", "gemma3")  # sentencepiece files transformers builds with GemmaTokenizer
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# `tokenizer.ggml.pre` values whose split regex differs from GPT-2's (the default, e.g. for "smollm").
_PRE_SPLITS = {**dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx"), _LLAMA3_SPLIT),
               **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2_SPLIT)}


class Tokenizer:
    """A `tokenizers` pipeline plus special tokens and a chat template."""

    def __init__(self, backend: Backend, *, bos_token: str | None = None, eos_token: str | None = None,
                 unk_token: str | None = None, pad_token: str | None = None, chat_template: str | None = None,
                 extra_eos_ids: Sequence[int] = ()):
        self.backend = backend
        self.chat_template = chat_template
        self.special_tokens = {"bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token,
                               "pad_token": pad_token}  # also the template variables of the same names
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        self.bos_token_id = self.token_to_id(bos_token) if bos_token else None
        self.eos_token_id = self.token_to_id(eos_token) if eos_token else None
        ends = {self.token_to_id(t) for t in END_OF_TURN_TOKENS} | {self.eos_token_id, *extra_eos_ids}
        self.eos_token_ids: frozenset[int] = frozenset(i for i in ends if i is not None)
        fallback = isinstance(backend.model, models.BPE) and backend.model.byte_fallback
        self._byte_ids = frozenset(self.token_to_id(f"<0x{b:02X}>") for b in range(256)) - {None} if fallback \
            else frozenset()
        self._special_ids = frozenset(i for i, t in backend.get_added_tokens_decoder().items() if t.special)
        self._byte_level = isinstance(backend.decoder, decoders.ByteLevel)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, reader: gguf.GGUFReader | None = None) -> Tokenizer:
        """Build the tokenizer described by a GGUF file's metadata (reusing `reader`'s mapping if given)."""
        try:
            if reader is not None:
                with memoryview(reader.data) as buf:
                    meta = _read_metadata(buf)
            else:
                with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m, \
                        memoryview(m) as buf:
                    meta = _read_metadata(buf)
        except (struct.error, ValueError, UnicodeDecodeError) as e:
            raise ModelFormatError(f"{path}: cannot read GGUF tokenizer metadata ({e})") from e
        return _from_metadata(meta, str(path))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> Tokenizer:
        """Load an HF-style folder: tokenizer.json, tokenizer_config.json and chat_template.jinja if present."""
        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise ModelFormatError(f"{folder} has no tokenizer.json")
        backend = Backend.from_file(str(folder / "tokenizer.json"))

        def read_json(name: str) -> dict[str, Any]:
            return json.loads((folder / name).read_text("utf-8")) if (folder / name).is_file() else {}

        config = read_json("tokenizer_config.json")
        special = {k: v.get("content") if isinstance(v := config.get(k), dict) else v  # str or AddedToken dict
                   for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
        template = config.get("chat_template")
        if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
            named = {t["name"]: t["template"] for t in template}
            template = named.get("default", next(iter(named.values()), None))
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        if "add_bos_token" in config or "add_eos_token" in config:  # as transformers: the flags rule
            backend.post_processor = _post_processor(backend, special["bos_token"], special["eos_token"],
                                                     bool(config.get("add_bos_token")),
                                                     bool(config.get("add_eos_token")))
        eos = read_json("generation_config.json").get("eos_token_id")
        extra = eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else []
        return cls(backend, chat_template=template, extra_eos_ids=extra, **special)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write tokenizer.json and tokenizer_config.json, loadable by transformers' AutoTokenizer."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"), pretty=False)
        config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                                  **{k: v for k, v in self.special_tokens.items() if v is not None}}
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                      encoding="utf-8")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; special tokens written in it are matched whole."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids of each text."""
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """The text of `ids`."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, tok: str) -> int | None:
        """The id of a token string, or None."""
        return self.backend.token_to_id(tok)

    def id_to_token(self, i: int) -> str | None:
        """The token string of an id, or None."""
        return self.backend.id_to_token(i)

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of special tokens (dropped from text when decoding with skip_special_tokens)."""
        return self._special_ids

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes a token stands for (OpenAI's logprob `bytes`): part of a UTF-8 character for byte tokens."""
        tok = self.id_to_token(int(token_id))
        if tok is None:
            return b""
        if token_id in self._byte_ids:  # SentencePiece byte fallback: <0xAB>
            return bytes([int(tok[3:-1], 16)])
        if token_id in self._special_ids:
            return tok.encode()
        if self._byte_level:  # GPT-2 stand-in characters back to bytes
            table = _byte_decoder()
            return bytes(table[c] for c in tok) if all(c in table for c in tok) else tok.encode()
        return tok.replace("\u2581", " ").encode()

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, tokenize: bool = False,
                            **kwargs: Any) -> str | list[int]:
        """Render `messages` with the chat template as transformers does; ids (no extra BOS) if `tokenize`."""
        # NOTE: a model file without a template (a base model) still chats in its vocabulary's turn format,
        # but `chat_template` stays None so that callers can tell a base model from an instruct one
        template = self.chat_template or default_chat_template(lambda t: self.token_to_id(t) is not None)
        if template is None:
            raise ValueError("this tokenizer has no chat template; pass plain text instead")
        if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
            raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
        for n, message in enumerate(messages):
            if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
                raise ValueError(f"message {n} must be a dict with 'role' and 'content' keys, got {message!r}")
        context = {**{k: v for k, v in self.special_tokens.items() if v is not None}, "tools": None,
                   "documents": None, **kwargs}
        context.update(messages=list(messages), add_generation_prompt=add_generation_prompt)
        text = _compile(template).render(**context)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def incremental_decoder(self, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True
                            ) -> IncrementalDecoder:
        """A decoder that turns generated ids into text deltas, one token at a time."""
        return IncrementalDecoder(self, prompt_ids, skip_special_tokens)


class IncrementalDecoder:
    """Streams text for generated ids; the deltas concatenate to the decode of all of them.

    Text is decoded over a short window of ids (the last emitted chunk plus the new ids) and the window's old
    text is subtracted, so a leading-space rule applies once per window and cancels out. Text is held back
    while it ends in U+FFFD (an incomplete UTF-8 character) or in a byte-fallback token (a later byte could
    still turn the whole byte run invalid, even across a skipped special token); `flush` releases what is held.
    The last prompt ids are left context: with a decoder that strips the text's first space (Llama-style
    SentencePiece), a continuation keeps its leading space; byte-level and Gemma decoders are unaffected.
    """

    _CONTEXT = 4  # prompt ids kept as left context, so the first token decodes as it would mid-text

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True):
        self._tokenizer, self._skip = tokenizer, skip_special_tokens
        context = [int(i) for i in list(prompt_ids)[-self._CONTEXT:]] if len(prompt_ids) else []
        while context and (self._in_byte_run(context) or self._decode(context).endswith("\ufffd")):
            context.pop()  # start on a clean character boundary
        self._ids, self._read = context, len(context)  # the window, and where its new (unemitted) ids start

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.backend.decode(ids, skip_special_tokens=self._skip)

    def _in_byte_run(self, ids: list[int]) -> bool:
        """Whether `ids` end in a byte-fallback token (ignoring special tokens that decoding skips)."""
        tokenizer = self._tokenizer
        for i in reversed(ids):
            if not (self._skip and i in tokenizer._special_ids):
                return i in tokenizer._byte_ids
        return False

    def add(self, token_id: int) -> str:
        """Take one generated id; return the text it completes (possibly empty)."""
        self._ids.append(int(token_id))
        return "" if self._in_byte_run(self._ids) else self._emit(final=False)

    def flush(self) -> str:
        """Return whatever text is still held back (call once generation ends)."""
        return self._emit(final=True) if self._read < len(self._ids) else ""

    def _emit(self, final: bool) -> str:
        old = self._decode(self._ids[:self._read])
        text = self._decode(self._ids)
        if not final and (len(text) <= len(old) or text.endswith("\ufffd")):
            return ""
        self._ids = self._ids[self._read:]  # the ids just emitted become the next window's old text
        self._read = len(self._ids)
        return text[len(old):]


def _from_metadata(meta: dict[str, Any], where: str) -> Tokenizer:
    """Rebuild transformers' tokenizer for a GGUF's `tokenizer.*` metadata."""
    get = lambda key, default=None: meta.get(f"tokenizer.ggml.{key}", default)  # noqa: E731
    kind, tokens, types = get("model"), get("tokens"), get("token_type")
    if not tokens:
        raise ModelFormatError(f"{where} has no tokenizer.ggml.tokens")

    def token(key: str) -> str | None:
        i = get(f"{key}_token_id")
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    types = types.tolist() if types is not None else [0] * len(tokens)
    if kind == "gpt2":
        backend, vocab = _byte_level(tokens, get("merges"), get("pre"), where)
        alphabet = set(_byte_alphabet())
        control = [t for t, k in zip(tokens, types) if k == _CONTROL and set(t) <= alphabet]
    elif kind == "llama":
        gemma = meta.get("general.architecture") in _GEMMA_ARCHS
        unk = token("unknown") if gemma else None  # as GemmaTokenizer / LlamaTokenizer
        backend, vocab = _sentencepiece(tokens, get("scores"), get("merges"), gemma, get("add_space_prefix", True),
                                        unk)
        control = [t for t, k in zip(tokens, types) if k == _CONTROL]
    else:
        raise ModelFormatError(f"{where}: GGUF tokenizer model {kind!r} is not supported (only 'gpt2' and 'llama')")
    special = {f"{name}_token": token(key) for name, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"),
                                                              ("pad", "padding"))}
    control += [t for t in special.values() if t in vocab]  # transformers makes these special too
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in dict.fromkeys(control)])
    backend.add_tokens([AddedToken(t, normalized=False, special=False)
                        for t, k in zip(tokens, types) if k == _USER_DEFINED and t in vocab])
    backend.post_processor = _post_processor(backend, special["bos_token"], special["eos_token"],
                                             bool(get("add_bos_token", kind == "llama")),
                                             bool(get("add_eos_token", False)))
    return Tokenizer(backend, chat_template=meta.get("tokenizer.chat_template"), **special)


def _byte_level(tokens: list[str], merges: list[str] | None, pre: str | None, where: str
                ) -> tuple[Backend, dict[str, int]]:
    """GPT-2 style byte-level BPE (as transformers' GPT2Tokenizer, with the split regex `pre` names)."""
    if not merges:
        raise ModelFormatError(f"{where}: a byte-level ('gpt2') GGUF tokenizer needs tokenizer.ggml.merges")
    alphabet = _byte_alphabet()
    spelled = set(alphabet)
    vocab = {t if set(t) <= spelled else "".join(alphabet[b] for b in t.encode()): i for i, t in enumerate(tokens)}
    backend = Backend(models.BPE(vocab, [tuple(m.split(" ", 1)) for m in merges], dropout=None,
                                 continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    split = _PRE_SPLITS.get(pre or "")
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False) if split is None else \
        pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    return backend, vocab


def _sentencepiece(tokens: list[str], scores: np.ndarray | None, merges: list[str] | None, gemma: bool,
                   prefix_space: bool, unk: str | None) -> tuple[Backend, dict[str, int]]:
    """SentencePiece BPE with byte fallback (as transformers' GemmaTokenizer, or LlamaTokenizer otherwise)."""
    if gemma:  # all-space tokens are stored as spaces but looked up as "▁"s; merges rank by file order
        tokens = ["\u2581" * len(t) if " " in t and not t.strip() else t for t in tokens]
        rank = np.arange(len(tokens), dtype=np.float64)
    else:
        rank = -np.asarray(scores if scores is not None else np.zeros(len(tokens)), dtype=np.float64)
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges] if merges else _derive_merges(tokens, rank, len(vocab))
    backend = Backend(models.BPE(vocab, pairs, unk_token=unk, fuse_unk=True, byte_fallback=True, dropout=None))
    tail = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if gemma:
        backend.normalizer = normalizers.Replace(" ", "\u2581")
        backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    else:  # transformers always prepends "▁" here; we follow the file's add_space_prefix, as llama.cpp does
        backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first" if prefix_space else "never",
                                                         split=False)
        tail += [decoders.Strip(" ", 1, 0)] if prefix_space else []
    backend.decoder = decoders.Sequence(tail)
    return backend, vocab


_HASH_BASE = 0x9E3779B97F4A7C15
_HASH_BASE_INV = pow(_HASH_BASE, -1, 1 << 64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection that spreads a polynomial hash over all 64 bits."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _derive_merges(tokens: list[str], rank: np.ndarray, distinct: int) -> list[tuple[str, str]]:
    """All splits of a token into two tokens, ordered as transformers' `generate_merges` orders them.

    Order: token rank, then longer left part first, then file order. Substrings are matched by 64-bit
    rolling hashes in numpy (a Python loop takes ~2 s on Gemma's 262k tokens). Two tokens with the same hash
    send us to that loop; a non-token substring hashing like a token (odds ~1e-8) would make tokenizers
    reject the merge list, never pass silently.
    """
    lens = np.fromiter(map(len, tokens), np.int64, len(tokens))
    start = np.zeros(len(tokens) + 1, np.int64)
    np.cumsum(lens, out=start[1:])
    codes = np.frombuffer("".join(tokens).encode("utf-32-le"), np.uint32)
    with np.errstate(over="ignore"):
        power = np.full(len(codes) + 1, _HASH_BASE, np.uint64)
        inverse = np.full(len(codes) + 1, _HASH_BASE_INV, np.uint64)
        power[0] = inverse[0] = 1
        np.multiply.accumulate(power, out=power)
        np.multiply.accumulate(inverse, out=inverse)
        prefix = np.zeros(len(codes) + 1, np.uint64)
        np.cumsum(codes * power[:-1], out=prefix[1:])
        hash_of = lambda a, b: _mix((prefix[b] - prefix[a]) * inverse[a])  # noqa: E731  (text[a:b])
        full = hash_of(start[:-1], start[1:])
        order = np.argsort(full, kind="stable")
        keys = full[order]
        new = np.concatenate(([True], keys[1:] != keys[:-1]))
        keys, first = keys[new], np.sort(order[new])  # distinct hashes; first occurrence of each token
        if len(keys) != distinct:
            return _derive_merges_slow(tokens, rank)
        buckets = np.searchsorted(keys, np.arange(1 << 20, dtype=np.uint64) << np.uint64(44))
        buckets = np.append(buckets, len(keys))
        tok = first[lens[first] > 1]
        tok = np.repeat(tok, lens[tok] - 1)
        left = np.arange(len(tok)) - np.searchsorted(tok, tok) + 1  # 1 .. len-1 within each token
        for side in (0, 1):
            a, b = start[tok] + left * side, start[tok] + (left if side == 0 else lens[tok])
            hit = _member(hash_of(a, b), keys, buckets)
            tok, left = tok[hit], left[hit]
    order = np.lexsort((tok, left - lens[tok], -left, rank[tok]))
    return [(t[:k], t[k:]) for t, k in zip(map(tokens.__getitem__, tok[order].tolist()), left[order].tolist())]


def _member(query: np.ndarray, keys: np.ndarray, buckets: np.ndarray) -> np.ndarray:
    """Which `query` hashes are among the sorted `keys` (bucketed by their top 20 bits)."""
    lo = buckets[(query >> np.uint64(44)).astype(np.intp)]
    width = buckets[(query >> np.uint64(44)).astype(np.intp) + 1] - lo
    hit = np.zeros(len(query), bool)
    for j in range(int(width.max(initial=0))):
        idx = np.flatnonzero(width > j)
        hit[idx] |= keys[lo[idx] + j] == query[idx]
    return hit


def _derive_merges_slow(tokens: list[str], rank: np.ndarray) -> list[tuple[str, str]]:
    """The plain-Python version of `_derive_merges`."""
    vocab = {t: i for i, t in reversed(list(enumerate(tokens)))}  # first occurrence wins
    found = [(rank[i], -k, k - len(t), i, t[:k], t[k:]) for t, i in vocab.items()
             for k in range(1, len(t)) if t[:k] in vocab and t[k:] in vocab]
    return [(l, r) for *_, l, r in sorted(found)]


def _post_processor(backend: Backend, bos: str | None, eos: str | None, add_bos: bool, add_eos: bool
                    ) -> processors.TemplateProcessing:
    """Add BOS / EOS around each sequence, as transformers' `update_post_processor`."""
    add_bos, add_eos = add_bos and bos is not None, add_eos and eos is not None
    seq = lambda s, t: " ".join([f"{bos}:{t}"] * add_bos + [f"${s}:{t}"] + [f"{eos}:{t}"] * add_eos)  # noqa: E731
    special = {t: backend.token_to_id(t) for t, on in ((bos, add_bos), (eos, add_eos)) if on}
    return processors.TemplateProcessing(single=seq("A", 0), pair=f"{seq('A', 0)} {seq('B', 1)}",
                                         special_tokens=list(special.items()))


def _read_metadata(buf: memoryview) -> dict[str, Any]:
    """The `tokenizer.*` and `general.architecture` metadata of a GGUF file; other arrays are skipped unread."""
    magic, version, _, count = struct.unpack_from("<4sIQQ", buf, 0)
    if magic != b"GGUF" or version < 2:
        raise ValueError(f"not a GGUF v2+ file (magic {magic!r}, version {version})")
    pos, meta = 24, {}
    for _ in range(count):
        key, pos = _read_string(buf, pos)
        wanted = key.startswith("tokenizer.") or key == "general.architecture"
        value, pos = _read_value(buf, pos + 4, struct.unpack_from("<I", buf, pos)[0], wanted)
        if wanted:
            meta[key] = value
    return meta


def _read_string(buf: memoryview, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", buf, pos)
    return str(buf[pos + 8:pos + 8 + n], "utf-8", "replace"), pos + 8 + n


def _read_value(buf: memoryview, pos: int, kind: int, keep: bool) -> tuple[Any, int]:
    """One metadata value (arrays only if `keep`), and the offset after it."""
    if kind in _SCALARS:
        return struct.unpack_from(_SCALARS[kind], buf, pos)[0], pos + struct.calcsize(_SCALARS[kind])
    if kind == 8:
        return _read_string(buf, pos)
    if kind != 9:
        raise ValueError(f"unknown GGUF value type {kind}")
    item, n = struct.unpack_from("<IQ", buf, pos)
    pos += 12
    if item in _SCALARS:  # numbers: one numpy copy (a view would pin the file's mapping)
        size = struct.calcsize(_SCALARS[item])
        return (np.frombuffer(buf, _SCALARS[item], n, pos).copy() if keep else None), pos + n * size
    if item != 8:  # arrays of arrays
        values = []
        for _ in range(n):
            value, pos = _read_value(buf, pos, item, keep)
            values.append(value)
        return (values if keep else None), pos
    start, bounds, unpack = pos, [], struct.Struct("<Q").unpack_from
    for _ in range(n):  # strings: find them all, then decode from one bytes copy (much faster than per slice)
        (length,) = unpack(buf, pos)
        bounds.append(pos + 8 - start)
        pos += 8 + length
    if not keep:
        return None, pos
    region = bytes(buf[start:pos])
    bounds.append(pos - start + 8)
    return [region[a:b - 8].decode("utf-8", "replace") for a, b in zip(bounds, bounds[1:])], pos


@lru_cache(maxsize=1)
def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in character for each byte value."""
    printable = {*range(33, 127), *range(161, 173), *range(174, 256)}
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    return {c: b for b, c in enumerate(_byte_alphabet())}


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    """A chat template compiled in the sandboxed environment transformers uses."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:  # unlike jinja's own, no HTML escaping
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    return env.from_string(template)
