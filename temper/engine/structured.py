"""Grammar-constrained decoding (JSON schema, any JSON object, regex) through llguidance.

We use llguidance rather than xgrammar because it builds its tokenizer straight from the `tokenizers` JSON
that our `Tokenizer.backend` serializes (byte-level BPE and SentencePiece byte fallback alike, no transformers
at runtime), and its wheel has no Python dependencies. xgrammar 0.2.8 requires transformers, triton and
apache-tvm-ffi, and outside transformers wants the decoded vocabulary and its encoding type by hand.
llguidance fills a SmolLM2 mask in ~0.03-0.1 ms per token of a JSON schema and copies a matcher in ~50 us.

Flow: `GrammarCompiler(tokenizer, vocab_size).compile(spec)` -> `CompiledGrammar` (cached per spec) ->
`.matcher()` per sequence -> each step `fill_bitmasks` (batched) then `accept(token)` once a token is picked.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence

import llguidance
import torch

from temper.engine.sampling_params import StructuredOutput
from temper.tokenizer import Tokenizer

# NOTE: llguidance's default JSON allows any run of whitespace between tokens, and small models then fill
# their budget with newlines; one fixed separator style (json.dumps's) keeps outputs short and in-distribution.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
MAX_CACHED_GRAMMARS = 256


def bitmask_words(vocab_size: int) -> int:
    """int32 words per row of a token bitmask (bit i of word w allows token 32 * w + i)."""
    return (vocab_size + 31) // 32


class GrammarMatcher:
    """One sequence's position in a grammar: which tokens may come next, and advancing by a token."""

    __slots__ = ("_matcher", "_grammar")

    def __init__(self, matcher: llguidance.LLMatcher, grammar: CompiledGrammar):
        self._matcher, self._grammar = matcher, grammar

    @property
    def vocab_size(self) -> int:
        """Bits per mask row: the logits width the grammar was compiled for, or the tokenizer's if larger."""
        return self._grammar.vocab_size

    def fill_bitmask(self, bitmask: torch.Tensor, row: int = 0) -> None:
        """Write the allowed-token bits into `bitmask[row]` (a contiguous CPU int32 (B, words) tensor)."""
        _check_bitmask(bitmask, self.vocab_size)
        if not 0 <= row < len(bitmask):
            raise IndexError(f"row {row} is outside a bitmask of {len(bitmask)} rows")
        self._matcher.unsafe_compute_mask_ptr(bitmask[row].data_ptr(), bitmask.shape[1] * 4)

    def allowed_mask(self) -> torch.Tensor:
        """A bool (vocab_size,) tensor of the tokens allowed next."""
        bitmask = torch.empty(1, bitmask_words(self.vocab_size), dtype=torch.int32)
        self.fill_bitmask(bitmask)
        return unpack_bitmask(bitmask, self.vocab_size)[0]

    def accept(self, token_id: int) -> None:
        """Advance by one token; raise ValueError (leaving the state as it was) if the grammar forbids it."""
        token_id = int(token_id)
        m = self._matcher
        # NOTE: a finished grammar reports EOS as invalid yet consumes it; EOS is how sequences end there
        finished_eos = token_id in self._grammar.eos_token_ids and m.is_stopped()
        if m.is_error() or not (finished_eos or m.validate_tokens([token_id]) == 1):
            reason = _reason(m.get_error()) if m.is_error() else "not allowed here"
            raise ValueError(f"token {token_id} is rejected by the grammar: {reason}")
        if not m.consume_token(token_id):
            raise ValueError(f"token {token_id} is rejected by the grammar: {_reason(m.get_error())}")

    def is_terminated(self) -> bool:
        """Whether only an end-of-sequence token may follow: the output is complete (or the matcher failed)."""
        return self._matcher.is_stopped()

    def is_accepting(self) -> bool:
        """Whether the output so far is a complete match (more tokens may still be allowed)."""
        return self._matcher.is_accepting()

    def rollback(self, num_tokens: int) -> None:
        """Undo the last `num_tokens` accepted tokens."""
        if not self._matcher.rollback(num_tokens):
            raise ValueError(f"cannot roll back {num_tokens} tokens: {self._matcher.get_error()}")

    def reset(self) -> None:
        """Go back to the start of the grammar."""
        self._matcher.reset()


class CompiledGrammar:
    """A checked grammar for one tokenizer; `matcher()` is cheap (a copy of a pristine matcher)."""

    __slots__ = ("_pristine", "vocab_size", "eos_token_ids", "executor")

    def __init__(self, pristine: llguidance.LLMatcher, vocab_size: int, eos_token_ids: frozenset[int],
                 executor: llguidance.LLExecutor):
        self._pristine, self.vocab_size, self.eos_token_ids = pristine, vocab_size, eos_token_ids
        self.executor = executor

    def matcher(self) -> GrammarMatcher:
        """A new matcher at the start of the grammar, for one sequence."""
        return GrammarMatcher(self._pristine.deep_copy(), self)


class GrammarCompiler:
    """Compiles `StructuredOutput` specs for one tokenizer and logits width; results are cached per spec."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, max_cached: int = MAX_CACHED_GRAMMARS):
        """`vocab_size` is the width of the logits (the model's lm_head), which may exceed the tokenizer's."""
        # NOTE: bits past the tokenizer's own vocabulary (lm_head padding) are never allowed
        self.eos_token_ids = frozenset(tokenizer.eos_token_ids)
        self._tokenizer = llguidance.LLTokenizer(tokenizer.backend.to_str(),
                                                 n_vocab=max(vocab_size, tokenizer.vocab_size),
                                                 eos_token=sorted(self.eos_token_ids))
        self.vocab_size: int = self._tokenizer.vocab_size  # bits per mask row, >= the logits width
        self._executor = llguidance.LLExecutor()
        self._cache: OrderedDict[tuple[str, str], CompiledGrammar] = OrderedDict()
        self._max_cached = max_cached

    def compile(self, spec: StructuredOutput) -> CompiledGrammar:
        """The grammar of `spec`; raises ValueError for an invalid JSON schema or regex."""
        key = _cache_key(spec)
        if (hit := self._cache.get(key)) is not None:
            self._cache.move_to_end(key)
            return hit
        pristine = llguidance.LLMatcher(self._tokenizer, _grammar(spec), log_level=0)
        if pristine.is_error():
            kind = "regex" if spec.regex is not None else "JSON schema"
            raise ValueError(f"invalid {kind} for structured output: {_reason(pristine.get_error())}")
        compiled = CompiledGrammar(pristine, self.vocab_size, self.eos_token_ids, self._executor)
        self._cache[key] = compiled
        if len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return compiled


def fill_bitmasks(matchers: Sequence[GrammarMatcher], bitmask: torch.Tensor) -> None:
    """Fill `bitmask[i]` for `matchers[i]`, in parallel on llguidance's threads when they share a compiler."""
    if not matchers:
        return
    _check_bitmask(bitmask, matchers[0].vocab_size)
    if len(bitmask) < len(matchers):
        raise ValueError(f"bitmask has {len(bitmask)} rows for {len(matchers)} matchers")
    executor = matchers[0]._grammar.executor
    if len(matchers) == 1 or any(m._grammar.executor is not executor for m in matchers):
        for i, m in enumerate(matchers):
            m.fill_bitmask(bitmask, i)
        return
    executor.unsafe_compute_mask_ptr([(m._matcher, i) for i, m in enumerate(matchers)], bitmask.data_ptr(),
                                     bitmask.shape[1] * 4, len(bitmask))


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """A bool (B, vocab_size) allowed-token mask from an int32 (B, words) bitmask, on the bitmask's device."""
    # NOTE: byte by byte through a 256 x 8 table (3x faster than shifting every int32 32 times); the bytes of an
    # int32 are little-endian on every device we run on, so byte j of word w holds tokens 32 w + 8 j ...
    bits = torch.arange(8, device=bitmask.device)
    table = ((torch.arange(256, device=bitmask.device)[:, None] >> bits) & 1).bool()  # (256, 8)
    return table[bitmask.view(torch.uint8).long()].view(len(bitmask), -1)[:, :vocab_size]


def _check_bitmask(bitmask: torch.Tensor, vocab_size: int) -> None:
    # the matcher writes through a raw pointer, so a wrong shape or device must never reach it
    if bitmask.dtype != torch.int32 or bitmask.device.type != "cpu" or bitmask.dim() != 2 \
            or not bitmask.is_contiguous() or bitmask.shape[1] != bitmask_words(vocab_size):
        raise ValueError(f"bitmask must be a contiguous CPU int32 (B, {bitmask_words(vocab_size)}) tensor, got "
                         f"{bitmask.dtype} {tuple(bitmask.shape)} on {bitmask.device}")


def _reason(message: str) -> str:
    """The gist of an llguidance error: its first line, and the regex parser's `error:` line if any."""
    lines = [line.strip() for line in message.splitlines() if line.strip()] or ["unknown error"]
    detail = next((line for line in lines[1:] if line.startswith("error:")), None)
    return lines[0] if detail is None else f"{lines[0]} {detail}"


def _cache_key(spec: StructuredOutput) -> tuple[str, str]:
    if spec.regex is not None:
        return "regex", spec.regex
    if spec.json_object:
        return "json_object", ""
    schema = spec.json_schema
    try:
        return "json_schema", schema if isinstance(schema, str) else json.dumps(schema)
    except (TypeError, ValueError) as e:  # e.g. a set or an object inside the dict
        raise ValueError(f"invalid JSON schema for structured output: {e}") from e


def _grammar(spec: StructuredOutput) -> str:
    """llguidance's grammar text for a spec."""
    if spec.regex is not None:
        return llguidance.LLMatcher.grammar_from_regex(spec.regex)
    schema = {"type": "object"} if spec.json_object else spec.json_schema
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    except (ValueError, TypeError) as e:  # not JSON, or not a JSON object
        raise ValueError(f"invalid JSON schema for structured output: {e}") from e
