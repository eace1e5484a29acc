"""Batched sampling: one call per engine step turns (B, V) logits into one token per sequence.

Order of processing (a step is skipped when no row in the batch needs it):
  1. logit_bias          add `logit_bias[token]` to the token's logit
  2. min_tokens          while fewer than `min_tokens` output tokens exist, `eos_token_ids` and `stop_token_ids`
                         get -inf (also with `ignore_eos`; not once the row's grammar is terminated)
  3. grammar             tokens the row's grammar forbids get -inf; a terminated grammar allows only the row's
                         `eos_token_ids`
  4. repetition penalty  CTRL / HF over prompt + output ids: a seen token's logit is divided by the penalty if
                         positive, multiplied by it if negative
  5. presence/frequency  OpenAI over output ids only: logit - count * frequency - (count > 0) * presence
  6. temperature         rows with temperature 0 take the argmax here (greedy: steps 1-5 still apply)
  7. top-k  8. top-p  9. min-p
 10. sample              exponential race: argmax(probs / q), q ~ Exp(1) over the full vocabulary from the row's
                         own generator, so a seeded row samples the same tokens whatever else is in the batch
Logprobs are those of the model's raw distribution (log_softmax of the incoming logits, before any step above),
as vLLM and OpenAI report them. The sampler never advances grammars: the caller calls `grammar.accept(token)`.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from temper.engine.sampling_params import SamplingParams
from temper.engine.structured import GrammarMatcher, bitmask_words, fill_bitmasks, unpack_bitmask

NEG_INF = float("-inf")


@dataclass(slots=True)
class SamplingRow:
    """One sequence's view for this step."""

    params: SamplingParams
    token_ids: Sequence[int]  # prompt + output so far
    num_prompt_tokens: int
    generator: torch.Generator | None  # seeded from params.seed by the engine; None -> the sampler's shared one
    grammar: GrammarMatcher | None
    eos_token_ids: frozenset[int]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens


@dataclass
class TokenLogprobs:
    """A token's logprob under the raw distribution, its rank (1 = most likely) and the most likely tokens."""

    token_id: int
    logprob: float
    rank: int
    top: list[tuple[int, float]]  # the `logprobs` most likely (id, logprob), best first


@dataclass
class SampleOutput:
    token_ids: list[int]
    logprobs: list[TokenLogprobs | None]  # None for rows whose params.logprobs is None


def check_token_ids(params: SamplingParams, vocab_size: int) -> None:
    """Raise ValueError if `logit_bias` or `stop_token_ids` name a token outside [0, vocab_size)."""
    for what, ids in (("logit_bias", params.logit_bias), ("stop_token_ids", params.stop_token_ids)):
        bad = [i for i in ids if not 0 <= i < vocab_size]
        if bad:
            raise ValueError(f"{what} has token ids outside [0, {vocab_size}): {bad[:5]}")


class Sampler:
    """Picks the next token of every row in a batch; vectorized over rows, never looping over the vocabulary."""

    def __init__(self, seed: int | None = None):
        self._seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}  # the shared one, per device

    def __call__(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SampleOutput:
        """Next token ids for logits (B, V) of any float dtype and device, one row per `rows` entry."""
        if logits.dim() != 2 or logits.shape[0] != len(rows):
            raise ValueError(f"logits must be (B={len(rows)}, V), got {tuple(logits.shape)}")
        if all(_is_plain_greedy(r) for r in rows):
            tokens = logits.argmax(dim=-1)
        else:
            x = logits.to(torch.float32, copy=True)
            for step in _PROCESSORS:
                step(x, rows)
            tokens = self._pick(x, rows)
        token_ids = tokens.tolist()
        return SampleOutput(token_ids, _logprobs(logits, token_ids, rows))

    def _pick(self, x: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        """Greedy rows: argmax; the others: temperature, top-k, top-p, min-p, then the exponential race."""
        tokens = x.argmax(dim=-1)
        sampled = [i for i, r in enumerate(rows) if r.params.temperature > 0.0]
        if not sampled:
            return tokens
        every = len(sampled) == len(rows)
        y = x if every else x[_index(sampled, x.device)]  # (S, V), our own copy either way
        params = [rows[i].params for i in sampled]
        for step in _FILTERS:
            step(y, params)
        y.sub_(self._exponentials(y, [rows[i].generator for i in sampled]).log_())
        picked = y.argmax(dim=-1)
        if every:
            return picked
        tokens[_index(sampled, x.device)] = picked
        return tokens

    def _exponentials(self, y: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
        """q ~ Exp(1) of y's shape; row i drawn from generators[i] (the shared one where None)."""
        q = torch.empty_like(y)
        shared = [i for i, g in enumerate(generators) if g is None]
        if len(shared) == len(generators):
            q.exponential_(generator=self._shared(y.device))
        else:
            for i, g in enumerate(generators):
                if g is not None:
                    q[i].exponential_(generator=g)  # a full-vocabulary draw: independent of the batch
            if shared:
                index = _index(shared, y.device)
                q[index] = torch.empty(len(shared), y.shape[1], device=y.device).exponential_(
                    generator=self._shared(y.device))
        return q.clamp_min_(torch.finfo(q.dtype).tiny)  # q == 0 would turn a -inf logit into nan

    def _shared(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            g = torch.Generator(device=device)
            if self._seed is None:
                g.seed()
            else:
                g.manual_seed(self._seed)
            self._generators[device] = g
        return self._generators[device]


def prompt_logprobs(logits: torch.Tensor, prompt_ids: Sequence[int], k: int) -> list[TokenLogprobs | None]:
    """Logprobs of each prompt token given the ones before it; the first entry is None (nothing predicts it).

    Args:
        logits: (T, V) model outputs at the prompt positions, T >= len(prompt_ids) - 1; row t predicts token t + 1.
        k: how many most likely tokens to return at each position.
    """
    n = len(prompt_ids)
    if logits.dim() != 2 or logits.shape[0] < n - 1:
        raise ValueError(f"need (>= {n - 1}, V) logits for a prompt of {n} tokens, got {tuple(logits.shape)}")
    if n <= 1:
        return [None] * n
    targets = torch.as_tensor(list(prompt_ids[1:]), device=logits.device)
    return [None, *_token_logprobs(logits[: n - 1], targets, [k] * (n - 1))]


def _is_plain_greedy(row: SamplingRow) -> bool:
    p = row.params
    return (p.temperature == 0.0 and row.grammar is None and not p.logit_bias and not _blocks_min_tokens(row)
            and p.repetition_penalty == 1.0 and p.presence_penalty == 0.0 and p.frequency_penalty == 0.0)


def _blocks_min_tokens(row: SamplingRow) -> bool:
    return row.num_output_tokens < row.params.min_tokens and bool(row.eos_token_ids or row.params.stop_token_ids)


def _index(ids: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long, device=device)


def _subset(rows: list[SamplingRow], wanted: Callable[[SamplingRow], bool]) -> list[int]:
    return [i for i, r in enumerate(rows) if wanted(r)]


def _apply_logit_bias(x: torch.Tensor, rows: list[SamplingRow]) -> None:
    biased = _subset(rows, lambda r: bool(r.params.logit_bias))
    if not biased:
        return
    r = [i for i in biased for _ in rows[i].params.logit_bias]
    t = [t for i in biased for t in rows[i].params.logit_bias]
    v = [b for i in biased for b in rows[i].params.logit_bias.values()]
    if not all(0 <= i < x.shape[1] for i in t):
        raise ValueError(f"logit_bias names a token id outside [0, {x.shape[1]})")
    x.index_put_((_index(r, x.device), _index(t, x.device)), torch.tensor(v, device=x.device), accumulate=True)


def _apply_min_tokens(x: torch.Tensor, rows: list[SamplingRow]) -> None:
    blocked = _subset(rows, lambda r: _blocks_min_tokens(r) and not (r.grammar and r.grammar.is_terminated()))
    if not blocked:
        return
    ids = {i: [t for t in {*rows[i].eos_token_ids, *rows[i].params.stop_token_ids} if 0 <= t < x.shape[1]]
           for i in blocked}
    r = [i for i in blocked for _ in ids[i]]
    t = [t for i in blocked for t in ids[i]]
    x[_index(r, x.device), _index(t, x.device)] = NEG_INF


def _apply_grammar(x: torch.Tensor, rows: list[SamplingRow]) -> None:
    constrained = _subset(rows, lambda r: r.grammar is not None)
    if not constrained:
        return
    terminated = [i for i in constrained if rows[i].grammar.is_terminated()]
    active = [i for i in constrained if i not in set(terminated)]
    if active:
        matchers = [rows[i].grammar for i in active]
        width = matchers[0].vocab_size
        if any(m.vocab_size != width for m in matchers) or width < x.shape[1]:
            raise ValueError(f"grammars must be compiled for the logits width {x.shape[1]}")
        bitmask = torch.empty(len(active), bitmask_words(width), dtype=torch.int32)
        fill_bitmasks(matchers, bitmask)
        allowed = unpack_bitmask(bitmask.to(x.device, non_blocking=True), x.shape[1])  # (G, V)
        index = _index(active, x.device)
        x[index] = x[index].masked_fill_(~allowed, NEG_INF)
    for i in terminated:  # only EOS may follow: few rows, few ids
        eos = _index(sorted(t for t in rows[i].eos_token_ids if t < x.shape[1]), x.device)
        keep = x[i, eos]
        x[i] = NEG_INF
        x[i, eos] = keep


def _flat_ids(rows: list[SamplingRow], subset: list[int], output_only: bool, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(row position in subset, token id) pairs for every token of each subset row, as two 1-D tensors."""
    seqs = [rows[i].token_ids[rows[i].num_prompt_tokens:] if output_only else rows[i].token_ids for i in subset]
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.tensor(list(itertools.chain.from_iterable(seqs)), dtype=torch.long)
    where = torch.repeat_interleave(torch.arange(len(subset)), lengths)
    return where.to(device), ids.to(device)


def _apply_repetition_penalty(x: torch.Tensor, rows: list[SamplingRow]) -> None:
    penalized = _subset(rows, lambda r: r.params.repetition_penalty != 1.0)
    if not penalized:
        return
    where, ids = _flat_ids(rows, penalized, output_only=False, device=x.device)
    index = _index(penalized, x.device)
    sub = x[index]  # (P, V)
    seen = torch.zeros_like(sub, dtype=torch.bool).index_put_((where, ids), torch.tensor(True, device=x.device))
    penalty = torch.tensor([rows[i].params.repetition_penalty for i in penalized], device=x.device)[:, None]
    x[index] = torch.where(seen, torch.where(sub < 0, sub * penalty, sub / penalty), sub)


def _apply_presence_frequency(x: torch.Tensor, rows: list[SamplingRow]) -> None:
    penalized = _subset(rows, lambda r: r.params.presence_penalty != 0.0 or r.params.frequency_penalty != 0.0)
    if not penalized:
        return
    where, ids = _flat_ids(rows, penalized, output_only=True, device=x.device)
    P, V = len(penalized), x.shape[1]
    counts = torch.bincount(where * V + ids, minlength=P * V).view(P, V).to(x.dtype)
    presence = torch.tensor([rows[i].params.presence_penalty for i in penalized], device=x.device)[:, None]
    frequency = torch.tensor([rows[i].params.frequency_penalty for i in penalized], device=x.device)[:, None]
    index = _index(penalized, x.device)
    x[index] = x[index] - counts * frequency - (counts > 0).to(x.dtype) * presence


def _apply_temperature(y: torch.Tensor, params: list[SamplingParams]) -> None:
    if any(p.temperature != 1.0 for p in params):
        y.div_(torch.tensor([p.temperature for p in params], device=y.device)[:, None])


def _apply_top_k(y: torch.Tensor, params: list[SamplingParams]) -> None:
    V = y.shape[1]
    rows = [i for i, p in enumerate(params) if 0 < p.top_k < V]
    if not rows:
        return
    index = _index(rows, y.device)
    sub = y[index]
    k = torch.tensor([params[i].top_k for i in rows], device=y.device)
    kth = sub.topk(int(k.max()), dim=-1).values.gather(1, (k - 1)[:, None])  # (K, 1)
    y[index] = sub.masked_fill_(sub < kth, NEG_INF)


def _apply_top_p(y: torch.Tensor, params: list[SamplingParams]) -> None:
    rows = [i for i, p in enumerate(params) if p.top_p < 1.0]
    if not rows:
        return
    index = _index(rows, y.device)
    ordered, order = y[index].sort(dim=-1, descending=True)
    probs = ordered.softmax(dim=-1)
    top_p = torch.tensor([params[i].top_p for i in rows], device=y.device)[:, None]
    # drop a token once the more likely ones already reach top_p (the most likely one always stays)
    drop = probs.cumsum(dim=-1) - probs >= top_p
    filtered = ordered.masked_fill_(drop, NEG_INF)
    y[index] = torch.empty_like(filtered).scatter_(1, order, filtered)


def _apply_min_p(y: torch.Tensor, params: list[SamplingParams]) -> None:
    rows = [i for i, p in enumerate(params) if p.min_p > 0.0]
    if not rows:
        return
    index = _index(rows, y.device)
    sub = y[index]
    # p < min_p * p_max  <=>  logit < max_logit + log(min_p), with no softmax
    log_min_p = torch.tensor([math.log(params[i].min_p) for i in rows], device=y.device)[:, None]
    y[index] = sub.masked_fill_(sub < sub.max(dim=-1, keepdim=True).values + log_min_p, NEG_INF)


_PROCESSORS: tuple[Callable[[torch.Tensor, list[SamplingRow]], None], ...] = (
    _apply_logit_bias, _apply_min_tokens, _apply_grammar, _apply_repetition_penalty, _apply_presence_frequency)
_FILTERS: tuple[Callable[[torch.Tensor, list[SamplingParams]], None], ...] = (
    _apply_temperature, _apply_top_k, _apply_top_p, _apply_min_p)


def _logprobs(logits: torch.Tensor, token_ids: list[int], rows: list[SamplingRow]) -> list[TokenLogprobs | None]:
    out: list[TokenLogprobs | None] = [None] * len(rows)
    wanted = _subset(rows, lambda r: r.params.logprobs is not None)
    if wanted:
        index = _index(wanted, logits.device)
        targets = _index([token_ids[i] for i in wanted], logits.device)
        found = _token_logprobs(logits[index], targets, [rows[i].params.logprobs for i in wanted])
        for i, lp in zip(wanted, found):
            out[i] = lp
    return out


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor, ks: list[int]) -> list[TokenLogprobs]:
    """For each row of logits (N, V): the target's raw logprob and rank, and the ks[n] most likely tokens."""
    logp = logits.float().log_softmax(dim=-1)
    chosen = logp.gather(1, targets[:, None])  # (N, 1)
    ranks = ((logp > chosen).sum(dim=-1) + 1).tolist()
    top = logp.topk(max(ks), dim=-1)
    top_values, top_ids = top.values.tolist(), top.indices.tolist()
    return [TokenLogprobs(t, lp, rank, list(zip(ids[:k], vals[:k])))
            for t, lp, rank, ids, vals, k in zip(targets.tolist(), chosen[:, 0].tolist(), ranks, top_ids,
                                                  top_values, ks)]
