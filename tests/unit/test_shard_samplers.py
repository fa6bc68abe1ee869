"""Data-parallel sharding: every rank the same permutation, disjoint slices, all of it together."""

from __future__ import annotations

import pytest
import torch

from cxrbox.data.loaders import EpochShuffleSampler, ShardSampler
from cxrbox.errors import DataError


def _shards(n: int, world_size: int, epoch: int = 0, seed: int = 3) -> list[list[int]]:
    samplers = [EpochShuffleSampler(n, seed, rank, world_size) for rank in range(world_size)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    return [list(s) for s in samplers]


def test_one_rank_is_the_single_process_permutation():
    sampler = EpochShuffleSampler(37, seed=3)
    sampler.set_epoch(2)
    expected = torch.randperm(37, generator=torch.Generator().manual_seed(3 * 100_003 + 2))
    assert list(sampler) == expected.tolist()
    assert len(sampler) == 37


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ranks_are_disjoint_equal_and_cover_all_but_the_remainder(world_size):
    n = 37
    shards = _shards(n, world_size)
    flat = [i for shard in shards for i in shard]
    assert len(flat) == len(set(flat)) == n - n % world_size
    assert {len(s) for s in shards} == {n // world_size}
    assert [len(s) for s in shards] == [
        len(EpochShuffleSampler(n, 3, r, world_size)) for r in range(world_size)
    ]


def test_rank_batches_together_are_the_single_process_batch():
    """Rank r's k-th batch of 4 holds the samples of one process's k-th batch of 8."""
    single = _shards(40, 1)[0]
    ranks = _shards(40, 2)
    for k in range(5):
        together = ranks[0][4 * k : 4 * k + 4] + ranks[1][4 * k : 4 * k + 4]
        assert sorted(together) == sorted(single[8 * k : 8 * k + 8])


def test_set_epoch_reshuffles_every_rank_alike():
    first, second = _shards(40, 2, epoch=0), _shards(40, 2, epoch=1)
    assert first[0] != second[0]
    assert sorted(first[0] + first[1]) == sorted(second[0] + second[1]) == list(range(40))


def test_rank_outside_the_world_is_a_data_error():
    with pytest.raises(DataError, match="rank"):
        EpochShuffleSampler(10, 0, rank=2, world_size=2)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 23])
def test_validation_shards_hold_every_index_once_without_padding(n):
    shards = [list(ShardSampler(n, rank, 3, batch_size=4)) for rank in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert [len(ShardSampler(n, rank, 3, 4)) for rank in range(3)] == [len(s) for s in shards]


def test_validation_shards_are_the_single_process_batches():
    """Whole batches of the one-process order, dealt round-robin: same batch, same arithmetic."""
    one_process = [list(range(i, min(i + 4, 23))) for i in range(0, 23, 4)]
    for rank in range(3):
        shard = list(ShardSampler(23, rank, 3, batch_size=4))
        batches = [shard[i : i + 4] for i in range(0, len(shard), 4)]
        assert batches == one_process[rank::3]
