"""Block manager: exact block ids, reference counts, prefix hits, eviction order and copy-on-write."""
from __future__ import annotations

from temper.engine.block_manager import BlockManager
from temper.engine.sampling_params import SamplingParams
from temper.engine.sequence import Sequence

BS = 4


def seq(tokens: list[int]) -> Sequence:
    return Sequence(list(tokens), SamplingParams())


def compute(bm: BlockManager, s: Sequence, upto: int | None = None) -> None:
    """Pretend the runner computed the sequence's tokens up to `upto`."""
    s.num_computed_tokens = s.num_tokens if upto is None else upto
    bm.cache_full_blocks(s)


def test_allocate_and_free_tail_first():
    bm = BlockManager(num_blocks=8, block_size=BS)
    a = seq(range(10))  # 3 blocks
    assert bm.allocate(a, 10)
    assert a.block_table == [0, 1, 2]
    assert [bm.blocks[i].ref_count for i in range(4)] == [1, 1, 1, 0]
    assert bm.num_free_blocks == 5
    bm.free(a)
    assert list(bm.free_queue) == [3, 4, 5, 6, 7, 2, 1, 0]
    assert a.block_table == [] and bm.num_free_blocks == 8


def test_allocate_grows_and_fails_without_changes():
    bm = BlockManager(num_blocks=3, block_size=BS)
    a = seq(range(6))
    assert bm.allocate(a, 6) and a.block_table == [0, 1]
    assert bm.allocate(a, 8) and a.block_table == [0, 1]  # still fits in two blocks
    assert bm.allocate(a, 9) and a.block_table == [0, 1, 2]
    b = seq(range(100, 104))
    assert not bm.allocate(b, 4)
    assert b.block_table == [] and bm.num_free_blocks == 0


def test_prefix_hit_shares_blocks_and_counts():
    bm = BlockManager(num_blocks=10, block_size=BS)
    prompt = list(range(13))  # 3 full blocks + 1 token
    a = seq(prompt)
    assert bm.allocate(a, 13)
    compute(bm, a)
    assert len(bm.cached) == 3
    b = seq(prompt + [99])
    hits = bm.match_prefix(b)
    assert hits == [0, 1, 2]
    assert bm.allocate(b, b.num_tokens, hits)
    assert b.block_table == [0, 1, 2, 4] and b.num_computed_tokens == 12 and b.num_cached_tokens == 12
    assert [bm.blocks[i].ref_count for i in (0, 1, 2, 3, 4)] == [2, 2, 2, 1, 1]
    assert bm.stats.hits == 3 and bm.stats.queries == 6


def test_last_token_is_never_a_hit():
    bm = BlockManager(num_blocks=10, block_size=BS)
    a = seq(range(8))  # exactly two blocks
    bm.allocate(a, 8)
    compute(bm, a)
    bm.free(a)
    b = seq(range(8))
    assert bm.match_prefix(b) == [0]  # the second block holds the last token: recomputed for its logits


def test_cached_blocks_survive_free_and_are_evicted_lru():
    bm = BlockManager(num_blocks=4, block_size=BS)
    a = seq(range(9))  # blocks 0, 1 full; 2 partial
    bm.allocate(a, 9)
    compute(bm, a)
    bm.free(a)
    assert list(bm.free_queue) == [3, 2, 1, 0]
    # a hit revives cached blocks straight from the free queue
    b = seq(list(range(8)) + [50, 51])
    hits = bm.match_prefix(b)
    assert hits == [0, 1]
    assert bm.allocate(b, 10, hits)
    assert b.block_table == [0, 1, 3] and list(bm.free_queue) == [2]
    bm.free(b)
    assert list(bm.free_queue) == [2, 3, 1, 0]
    # new unrelated blocks take the least recently freed first; cached ones lose their entry only then
    c = seq(range(200, 212))
    assert bm.allocate(c, 12)
    assert c.block_table == [2, 3, 1]
    assert bm.stats.evictions == 1  # block 1 was cached
    assert bm.match_prefix(seq(range(9))) == [0]


def test_hit_is_verified_against_tokens():
    bm = BlockManager(num_blocks=4, block_size=BS)
    a = seq(range(9))
    bm.allocate(a, 9)
    compute(bm, a)
    bm.blocks[0].token_ids = (7, 7, 7, 7)  # as if another prefix had collided on the hash
    assert bm.match_prefix(seq(range(9))) == []


def test_fork_then_copy_on_write():
    bm = BlockManager(num_blocks=6, block_size=BS)
    parent = seq(range(6))  # one full block, one partial (2 tokens)
    bm.allocate(parent, 6)
    compute(bm, parent)
    child = seq(range(6))
    bm.fork(parent, child)
    assert child.block_table == [0, 1] and [bm.blocks[i].ref_count for i in (0, 1)] == [2, 2]
    # the child writes token 6 into the shared partial block: it gets its own copy
    child.token_ids.append(42)
    assert bm.allocate(child, 7)
    assert child.block_table == [0, 2] and bm.pending_copies == [(1, 2)]
    assert [bm.blocks[i].ref_count for i in (0, 1, 2)] == [2, 1, 1]
    # the parent now holds block 1 alone and writes in place
    parent.token_ids.append(43)
    assert bm.allocate(parent, 7)
    assert parent.block_table == [0, 1] and bm.pending_copies == [(1, 2)]


def test_prefix_caching_off():
    bm = BlockManager(num_blocks=4, block_size=BS, enable_prefix_caching=False)
    a = seq(range(9))
    bm.allocate(a, 9)
    compute(bm, a)
    assert bm.cached == {} and bm.match_prefix(seq(range(9))) == []
