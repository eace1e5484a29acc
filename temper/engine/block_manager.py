"""Paged KV-cache bookkeeping: a pool of fixed-size blocks, reference counts, a prefix cache, copy-on-write.

Full blocks are registered in the prefix cache under a hash chain over their token ids (and the sequence's
salt), with the token ids kept to verify a hit. A block whose reference count drops to zero stays cached and
joins the free queue; blocks are taken from the front of that queue (least recently freed first) and lose
their cache entry only then. A sequence frees its blocks tail first, so its prefix outlives its suffix.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from temper.engine.sequence import Sequence


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None  # set while the block is registered in the prefix cache
    token_ids: tuple[int, ...] = ()  # the tokens the hash stands for, to verify hits


@dataclass
class BlockStats:
    """Prefix-cache counters since start."""

    queries: int = 0  # full prompt blocks looked up
    hits: int = 0
    evictions: int = 0
    copies: int = 0  # copy-on-write block copies

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0


@dataclass
class BlockManager:
    """Allocates KV blocks to sequences. The scheduler sees only what its methods return."""

    num_blocks: int
    block_size: int
    enable_prefix_caching: bool = True
    stats: BlockStats = field(default_factory=BlockStats)

    def __post_init__(self) -> None:
        if self.num_blocks < 1 or self.block_size < 1:
            raise ValueError(f"need at least one block of at least one token, got {self.num_blocks} x {self.block_size}")
        self.blocks = [Block(i) for i in range(self.num_blocks)]
        self.free_queue: OrderedDict[int, None] = OrderedDict((i, None) for i in range(self.num_blocks))
        self.cached: dict[int, int] = {}  # hash -> block id
        self.pending_copies: list[tuple[int, int]] = []  # (src, dst) block copies the runner must do first

    # ------------------------------------------------------------------ queries
    @property
    def num_free_blocks(self) -> int:
        """Blocks that can be handed out now (free, cached or not)."""
        return len(self.free_queue)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def match_prefix(self, seq: Sequence) -> list[int]:
        """Cached blocks holding the longest full-block prefix of the sequence's tokens (no state change).

        NOTE: the last token is never matched, so the sequence always computes at least one token and gets
        its logits.
        """
        if not self.enable_prefix_caching:
            return []
        hits: list[int] = []
        parent = None
        for start in range(0, seq.num_tokens - 1 - self.block_size + 1, self.block_size):
            tokens = tuple(seq.token_ids[start: start + self.block_size])
            h = hash((parent, seq.salt, tokens))
            block_id = self.cached.get(h)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            hits.append(block_id)
            parent = h
        return hits

    # ------------------------------------------------------------------ changes
    def allocate(self, seq: Sequence, num_tokens: int, prefix_hits: list[int] = ()) -> bool:
        """Give `seq` blocks for its first `num_tokens` tokens, adopting `prefix_hits` on first allocation.

        Returns False and changes nothing when the free blocks do not suffice.
        """
        if prefix_hits:
            assert not seq.block_table, "prefix hits are adopted on the first allocation only"
        have = len(seq.block_table) + len(prefix_hits)
        new = max(self.blocks_needed(num_tokens) - have, 0)
        revived = sum(1 for b in prefix_hits if self.blocks[b].ref_count == 0)
        cow = self._needs_copy(seq, num_tokens)
        if new + revived + cow > self.num_free_blocks:
            return False
        if prefix_hits:
            self.stats.queries += seq.num_prompt_tokens // self.block_size
            self.stats.hits += len(prefix_hits)
            for block_id in prefix_hits:
                self._ref(block_id)
            seq.block_table.extend(prefix_hits)
            seq.block_hashes.extend(self.blocks[b].hash for b in prefix_hits)
            seq.num_computed_tokens = seq.num_cached_tokens = len(prefix_hits) * self.block_size
        elif not seq.block_table and self.enable_prefix_caching:
            self.stats.queries += seq.num_prompt_tokens // self.block_size
        if cow:
            self._copy_on_write(seq)
        for _ in range(new):
            seq.block_table.append(self._take_free())
        return True

    def _needs_copy(self, seq: Sequence, num_tokens: int) -> bool:
        """Whether the next write lands in a partly filled block that another sequence also holds."""
        if num_tokens <= seq.num_computed_tokens or seq.num_computed_tokens % self.block_size == 0:
            return False
        block_id = seq.block_table[seq.num_computed_tokens // self.block_size]
        return self.blocks[block_id].ref_count > 1

    def _copy_on_write(self, seq: Sequence) -> None:
        i = seq.num_computed_tokens // self.block_size
        src = seq.block_table[i]
        dst = self._take_free()
        self.blocks[src].ref_count -= 1
        seq.block_table[i] = dst
        self.pending_copies.append((src, dst))
        self.stats.copies += 1

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Let `child` share all of `parent`'s blocks (copy-on-write for the partial last block)."""
        for block_id in parent.block_table:
            self.blocks[block_id].ref_count += 1
        child.block_table = list(parent.block_table)
        child.block_hashes = list(parent.block_hashes)
        child.num_computed_tokens = parent.num_computed_tokens
        child.num_cached_tokens = parent.num_cached_tokens

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the sequence's blocks that its computed tokens have filled since the last call."""
        if not self.enable_prefix_caching:
            return
        num_full = seq.num_computed_tokens // self.block_size
        for i in range(len(seq.block_hashes), num_full):
            tokens = tuple(seq.token_ids[i * self.block_size: (i + 1) * self.block_size])
            parent = seq.block_hashes[-1] if seq.block_hashes else None
            h = hash((parent, seq.salt, tokens))
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if h not in self.cached and block.hash is None:
                block.hash, block.token_ids = h, tokens
                self.cached[h] = block.block_id

    def free(self, seq: Sequence) -> None:
        """Release the sequence's blocks, tail first; cached ones stay findable until reused."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0
            if block.ref_count == 0:
                self.free_queue[block_id] = None
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def reset_prefix_cache(self) -> None:
        """Forget every cached block (e.g. after the weights change)."""
        for block in self.blocks:
            block.hash, block.token_ids = None, ()
        self.cached.clear()

    # ------------------------------------------------------------------ internals
    def _ref(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free_queue[block_id]
        block.ref_count += 1

    def _take_free(self) -> int:
        block_id, _ = self.free_queue.popitem(last=False)
        block = self.blocks[block_id]
        assert block.ref_count == 0
        if block.hash is not None:  # evict it from the prefix cache
            del self.cached[block.hash]
            block.hash, block.token_ids = None, ()
            self.stats.evictions += 1
        block.ref_count = 1
        return block_id
