"""Mid-epoch resume bookkeeping: the sampler's skip and the step-checkpoint schedule."""

from __future__ import annotations

from cxrbox.data.loaders import EpochShuffleSampler
from cxrbox.engine.resume import step_checkpoint_due


def test_sampler_start_skips_the_consumed_prefix_of_the_same_permutation():
    sampler = EpochShuffleSampler(10, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.start = 4
    assert list(sampler) == full[4:]
    assert len(sampler) == 6


def test_sampler_start_past_the_end_yields_nothing():
    sampler = EpochShuffleSampler(5, seed=0)
    sampler.start = 8
    assert list(sampler) == [] and len(sampler) == 0


def test_step_checkpoints_every_n_steps_and_never_with_zero():
    assert [s for s in range(1, 10) if step_checkpoint_due(s, 3)] == [3, 6, 9]
    assert not any(step_checkpoint_due(s, 0) for s in range(1, 10))
