"""The engine core: requests in, one scheduled step at a time, outputs out.

`step()` schedules a batch, runs the model on the paged KV cache, samples every sequence that reached the
end of its known tokens, detokenizes, checks stop conditions and frees what finished.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import torch

from temper.engine.block_manager import BlockManager
from temper.engine.config import EngineConfig
from temper.engine.model_runner import ModelRunner
from temper.engine.outputs import CompletionOutput, EngineStats, RequestMetrics, RequestOutput
from temper.engine.sampler import Sampler, SamplingRow, TokenLogprobs, check_token_ids, token_logprobs
from temper.engine.sampling_params import SamplingParams
from temper.engine.scheduler import ScheduledBatch, Scheduler
from temper.engine.sequence import Sequence, SequenceStatus
from temper.errors import ContextLengthExceededError
from temper.models import CausalLM
from temper.tokenizer import IncrementalDecoder, Tokenizer


@dataclass(eq=False)
class SeqState:
    """Per-sequence state beside the token ids: text, generator, grammar, logprobs."""

    seq: Sequence
    decoder: IncrementalDecoder
    generator: torch.Generator | None
    grammar: object | None
    text: str = ""
    logprobs: list[TokenLogprobs] = field(default_factory=list)


@dataclass(eq=False)
class Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    metrics: RequestMetrics
    states: list[SeqState] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprobs | None] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return len(self.states) == self.params.num_samples and all(s.seq.is_finished for s in self.states)


class LLMEngine:
    def __init__(self, model: CausalLM, tokenizer: Tokenizer, config: EngineConfig | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config or EngineConfig()
        self.max_model_len = min(self.config.max_model_len or model.config.max_position_embeddings,
                                 model.config.max_position_embeddings)
        self.runner = ModelRunner(model, self.config, self.max_model_len)
        self.block_manager = BlockManager(self.runner.num_blocks, self.config.block_size,
                                          self.config.enable_prefix_caching)
        self.scheduler = Scheduler(self.config, self.block_manager)
        self.sampler = Sampler(seed=self.config.seed)
        self.requests: dict[str, Request] = {}
        self.states: dict[int, SeqState] = {}  # seq_id -> state
        self._grammars = None
        self._ids = itertools.count()
        self._stats = EngineStats(num_blocks=self.runner.num_blocks)

    # ------------------------------------------------------------------ requests
    def add_request(self, prompt_token_ids: list[int], params: SamplingParams, request_id: str | None = None,
                    arrival_time: float | None = None) -> str:
        """Queue a request; raises ContextLengthExceededError or ValueError for one that cannot run."""
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        if not prompt_token_ids:
            raise ValueError("the prompt is empty")
        n = len(prompt_token_ids)
        if n + params.max_tokens > self.max_model_len:
            raise ContextLengthExceededError(
                f"this model's maximum context length is {self.max_model_len} tokens, but {n + params.max_tokens} "
                f"were requested ({n} in the prompt, {params.max_tokens} for the completion); shorten the prompt "
                f"or lower max_tokens to {max(self.max_model_len - n, 0)}")
        if not self.config.enable_chunked_prefill and n > self.config.max_num_batched_tokens:
            raise ContextLengthExceededError(f"the prompt has {n} tokens; without chunked prefill the limit is "
                                             f"max_num_batched_tokens ({self.config.max_num_batched_tokens})")
        vocab = self.model.config.vocab_size
        bad = [t for t in prompt_token_ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt token ids must be in [0, {vocab}), got {bad[:5]}")
        check_token_ids(params, vocab)
        grammar = self._compile(params)
        now = arrival_time or time.monotonic()
        request = Request(request_id, list(prompt_token_ids), params, RequestMetrics(arrival_time=now))
        self.requests[request_id] = request
        self._new_sequence(request, list(prompt_token_ids), 0, grammar)
        return request_id

    def _compile(self, params: SamplingParams):
        if params.structured is None:
            return None
        if self._grammars is None:
            from temper.engine.structured import GrammarCompiler

            self._grammars = GrammarCompiler(self.tokenizer, self.model.config.vocab_size)
        return self._grammars.compile(params.structured)

    def _new_sequence(self, request: Request, token_ids: list[int], index: int, grammar) -> SeqState:
        params = request.params
        seq = Sequence(token_ids, params, request_id=request.request_id, index=index,
                       num_prompt_tokens=len(request.prompt_token_ids), arrival_time=request.metrics.arrival_time)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.runner.device).manual_seed(hash((params.seed, index)) & (2**63 - 1))
        state = SeqState(seq, self.tokenizer.incremental_decoder(request.prompt_token_ids[-4:],
                                                                 params.skip_special_tokens),
                         generator, None if grammar is None else grammar.matcher())
        request.states.append(state)
        self.states[seq.seq_id] = state
        if index == 0:
            self.scheduler.add(seq)
        return state

    def abort(self, request_id: str) -> None:
        """Stop a request now and free its blocks."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return
        for state in request.states:
            if not state.seq.is_finished:
                self._finish(state, "abort")
            self.states.pop(state.seq.seq_id, None)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    # ------------------------------------------------------------------ the step
    def step(self) -> list[RequestOutput]:
        """Run one iteration; return an output for every request that progressed (or finished)."""
        start = time.perf_counter()
        batch = self.scheduler.schedule()
        if not batch:
            return []
        now = time.monotonic()
        rows, samplers, prompt_rows = self._plan_logits(batch, now)
        copies, self.block_manager.pending_copies = self.block_manager.pending_copies, []
        logits = self.runner.execute(batch, copies, rows)
        touched: dict[str, Request] = {}
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            if seq.is_prefill:
                self._stats.prompt_tokens += min(n, seq.num_prompt_tokens - seq.num_computed_tokens)
            seq.num_computed_tokens += n
            self.block_manager.cache_full_blocks(seq)
            touched[seq.request_id] = self.requests[seq.request_id]
        for state, (start_row, ids) in prompt_rows.items():
            request = self.requests[state.seq.request_id]
            if not request.prompt_logprobs:
                request.prompt_logprobs.append(None)  # nothing predicts the first prompt token
            request.prompt_logprobs.extend(
                token_logprobs(logits[start_row: start_row + len(ids)], ids, request.params.prompt_logprobs))
        self._sample(samplers, logits, now)
        self._stats.steps += 1
        self._stats.busy_seconds += time.perf_counter() - start
        return [self._output(r) for r in touched.values()]

    def _plan_logits(self, batch: ScheduledBatch, now: float):
        """Which packed rows need logits: the last new token of each sequence that reaches its end (to
        sample), and every new prompt token of requests that asked for prompt logprobs."""
        rows: list[int] = []
        samplers: list[tuple[SeqState, int]] = []
        prompt_rows: dict[SeqState, tuple[int, list[int]]] = {}
        offset = 0
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            state = self.states[seq.seq_id]
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = now
                metrics = self.requests[seq.request_id].metrics
                metrics.first_scheduled_time = metrics.first_scheduled_time or now
            if seq.params.prompt_logprobs is not None and seq.is_prefill and not seq.num_preemptions:
                # logits at position p score token p + 1
                first = seq.num_computed_tokens
                last = min(first + n, seq.num_prompt_tokens - 1)
                if last > first:
                    prompt_rows[state] = (len(rows), seq.token_ids[first + 1: last + 1])
                    rows.extend(range(offset, offset + last - first))
            if seq.num_computed_tokens + n == seq.num_tokens:
                samplers.append((state, len(rows)))
                rows.append(offset + n - 1)
            offset += n
        return rows, samplers, prompt_rows

    def _sample(self, samplers: list[tuple[SeqState, int]], logits: torch.Tensor, now: float) -> None:
        # n > 1: once the first sample's prompt is computed, fork the others onto its blocks
        for state, row in list(samplers):
            request = self.requests[state.seq.request_id]
            if state.seq.index == 0 and state.seq.num_output_tokens == 0:
                for i in range(1, request.params.num_samples - len(request.states) + 1):
                    child = self._new_sequence(request, list(request.prompt_token_ids), len(request.states),
                                               self._compile(request.params))
                    self.block_manager.fork(state.seq, child.seq)
                    child.seq.status = SequenceStatus.RUNNING
                    child.seq.first_scheduled_time = state.seq.first_scheduled_time
                    self.scheduler.running.append(child.seq)
                    samplers.append((child, row))
        if not samplers:
            return
        out = self.sampler(logits[[row for _, row in samplers]], [
            SamplingRow(s.seq.params, s.seq.token_ids, s.seq.num_prompt_tokens, s.generator, s.grammar,
                        self.tokenizer.eos_token_ids) for s, _ in samplers])
        for (state, _), token_id, lp in zip(samplers, out.token_ids, out.logprobs):
            seq = state.seq
            seq.token_ids.append(token_id)
            self._stats.generation_tokens += 1
            request = self.requests[seq.request_id]
            if seq.first_token_time is None:
                seq.first_token_time = now
                request.metrics.first_token_time = request.metrics.first_token_time or time.monotonic()
            if lp is not None:
                state.logprobs.append(lp)
                seq.cumulative_logprob += lp.logprob
            if state.grammar is not None and token_id not in self.tokenizer.eos_token_ids:
                state.grammar.accept(token_id)
            self._check_stop(state, token_id)

    def _check_stop(self, state: SeqState, token_id: int) -> None:
        seq, params = state.seq, state.seq.params
        delta = state.decoder.add(token_id)
        state.text += delta
        if params.stop and delta:
            tail = max(len(s) for s in params.stop) + len(delta)
            window_start = max(len(state.text) - tail, 0)
            hits = [(i, s) for s in params.stop if (i := state.text.find(s, window_start)) >= 0]
            if hits:
                i, s = min(hits)
                state.text = state.text[: i + len(s) if params.include_stop_str_in_output else i]
                return self._finish(state, "stop", s)
        enough = seq.num_output_tokens >= params.min_tokens
        if enough and not params.ignore_eos and token_id in self.tokenizer.eos_token_ids:
            return self._finish(state, "stop", token_id)
        if enough and token_id in params.stop_token_ids:
            return self._finish(state, "stop", token_id)
        if state.grammar is not None and state.grammar.is_terminated():
            return self._finish(state, "stop")
        if seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            return self._finish(state, "length")

    def _finish(self, state: SeqState, reason: str, stop_reason: int | str | None = None) -> None:
        seq = state.seq
        if reason != "stop" or not isinstance(stop_reason, str):
            state.text += state.decoder.flush()
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason, seq.stop_reason = reason, stop_reason
        seq.finished_time = time.monotonic()
        self.scheduler.finish(seq)

    def _output(self, request: Request) -> RequestOutput:
        finished = request.finished
        if finished:
            request.metrics.finished_time = time.monotonic()
            del self.requests[request.request_id]
            for s in request.states:
                self.states.pop(s.seq.seq_id, None)
        states = request.states
        if finished and request.params.best_of and request.params.best_of > request.params.n:
            states = sorted(states, key=lambda s: -s.seq.cumulative_logprob / max(s.seq.num_output_tokens, 1))
            states = states[: request.params.n]
        hold = max((len(s) for s in request.params.stop), default=1) - 1
        outputs = [CompletionOutput(
            index=s.seq.index,
            text=s.text if s.seq.is_finished or hold == 0 else s.text[: max(len(s.text) - hold, 0)],
            token_ids=s.seq.output_token_ids, finish_reason=s.seq.finish_reason, stop_reason=s.seq.stop_reason,
            logprobs=list(s.logprobs) if request.params.logprobs is not None else None,
            cumulative_logprob=s.seq.cumulative_logprob) for s in states]
        return RequestOutput(request.request_id, request.prompt_token_ids, outputs, finished, request.metrics,
                             num_cached_tokens=request.states[0].seq.num_cached_tokens,
                             prompt_logprobs=request.prompt_logprobs if request.params.prompt_logprobs is not None
                             else None)

    # ------------------------------------------------------------------ stats
    def stats(self) -> EngineStats:
        s = self._stats
        bm = self.block_manager
        s.num_running, s.num_waiting = len(self.scheduler.running), len(self.scheduler.waiting)
        s.num_used_blocks = bm.num_blocks - bm.num_free_blocks
        held = {b for seq in self.scheduler.running for b in seq.block_table}
        s.kv_slots_allocated = len(held) * bm.block_size
        shared_tokens: dict[int, int] = {}
        for seq in self.scheduler.running:
            for i, b in enumerate(seq.block_table):
                filled = min(max(seq.num_computed_tokens - i * bm.block_size, 0), bm.block_size)
                shared_tokens[b] = max(shared_tokens.get(b, 0), filled)
        s.kv_tokens_stored = sum(shared_tokens.values())
        s.prefix_queries, s.prefix_hits = bm.stats.queries, bm.stats.hits
        s.num_preemptions = self.scheduler.num_preemptions
        return s
