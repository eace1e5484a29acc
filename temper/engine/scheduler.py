"""Iteration-level scheduling: which sequences run this step, and how many tokens each.

Each step first serves running sequences in arrival order (a decode token each, or their next prefill
chunk), then admits waiting sequences first-come-first-served while the token budget, the sequence cap and
the free blocks allow; a waiting sequence that does not fit blocks the ones behind it, so none starves.
When blocks run out, the most recently admitted running sequence is preempted (its blocks freed, its
tokens recomputed later; with prefix caching most come back as cache hits) and goes to the front of the
waiting queue.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from temper.engine.block_manager import BlockManager
from temper.engine.config import EngineConfig
from temper.engine.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    """The work of one step: sequences with the number of new tokens each computes."""

    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    def __bool__(self) -> bool:
        return bool(self.seqs)


class Scheduler:
    def __init__(self, config: EngineConfig, block_manager: BlockManager):
        self.config = config
        self.block_manager = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.config.max_num_batched_tokens
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted earlier in this loop
                continue
            n = self._num_new_tokens(seq, budget)
            if n == 0:
                continue
            while not self.block_manager.allocate(seq, seq.num_computed_tokens + n):
                victim = self.running[-1]
                self._preempt(victim, batch)
                if victim is seq:
                    break
            if seq.status is SequenceStatus.RUNNING:
                batch.seqs.append(seq)
                batch.num_new_tokens.append(n)
                budget -= n
        if batch.preempted:
            return batch  # blocks are short: admit nobody new this step
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            hits = self.block_manager.match_prefix(seq)
            computed = len(hits) * self.block_manager.block_size
            n = self._num_new_tokens(seq, budget, computed)
            if n == 0 or not self.block_manager.allocate(seq, computed + n, hits):
                break
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(n)
            budget -= n
        return batch

    def _num_new_tokens(self, seq: Sequence, budget: int, computed: int | None = None) -> int:
        remaining = seq.num_tokens - (seq.num_computed_tokens if computed is None else computed)
        if not self.config.enable_chunked_prefill and remaining > budget:
            return 0  # a whole prompt or nothing (the engine rejects prompts over the step budget)
        return min(remaining, budget)

    def _preempt(self, seq: Sequence, batch: ScheduledBatch) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        if seq in batch.seqs:
            i = batch.seqs.index(seq)
            del batch.seqs[i], batch.num_new_tokens[i]
        batch.preempted.append(seq)

    def finish(self, seq: Sequence) -> None:
        """Take a finished (or aborted) sequence out and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
