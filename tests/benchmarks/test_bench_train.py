"""Training-step speed (pytest-benchmark; run with `tox -e bench`).

With --benchmark-disable (the default in ordinary runs) each benchmark body still runs once, so
these double as smoke tests of the timed code.
"""

from __future__ import annotations

import pytest
import torch

from cxrbox.config import TrainConfig
from cxrbox.engine.train import build_state, train_step
from cxrbox.speed.bench_train import random_batch


def _state_and_batch(image_size: int, batch_size: int):
    config = TrainConfig(image_size=image_size, batch_size=batch_size, channels_last=True)
    state = build_state(config, steps_per_epoch=1000)
    images, boxes = random_batch(batch_size, image_size)
    train_step(state, images, boxes)  # warm the allocator and oneDNN kernels
    return state, images, boxes


@pytest.mark.benchmark(group="train-step")
@pytest.mark.parametrize(("image_size", "batch_size"), [(256, 16), (512, 8)])
def test_full_training_step(benchmark, image_size, batch_size):
    """Targets + forward + loss + backward + clipping + monitors + AdamW + scheduler."""
    state, images, boxes = _state_and_batch(image_size, batch_size)
    benchmark.extra_info["images_per_round"] = batch_size
    # train_step itself raises NonFiniteLossError on a NaN/Inf loss: nothing left to assert.
    benchmark(train_step, state, images, boxes)


@pytest.mark.benchmark(group="forward")
@pytest.mark.parametrize(("image_size", "batch_size"), [(256, 16), (512, 8)])
def test_forward_only(benchmark, image_size, batch_size):
    state, images, _ = _state_and_batch(image_size, batch_size)
    model = state.model.eval()
    images = images.to(memory_format=torch.channels_last)

    def forward():
        with torch.no_grad():
            return model(images)

    raw = benchmark(forward)
    assert raw.shape == (batch_size, 5, image_size // 32, image_size // 32)


@pytest.mark.benchmark(group="train-step")
def test_monitor_overhead_reference_step_without_monitors(benchmark):
    """The 256 px / batch 16 step with monitors sampled away: compare with the full step."""
    state, images, boxes = _state_and_batch(256, 16)
    state.monitor.every = 10**9  # never monitored (step 0 already ran in warm-up)
    record = benchmark(train_step, state, images, boxes)
    assert "pred_cx_std" not in record


@pytest.mark.benchmark(group="train-step")
def test_checkpoint_save_of_the_default_config(benchmark, tmp_path):
    """One `last.pt` write (atomic, fsynced) of the 256 px / batch 16 state: compare with the
    full step above to size `checkpoint_every_steps` (its cost per step is this / N)."""
    from cxrbox.engine.checkpoint import save_checkpoint
    from cxrbox.engine.train import checkpoint_state

    state, _, _ = _state_and_batch(256, 16)
    benchmark(lambda: save_checkpoint(checkpoint_state(state), tmp_path / "last.pt"))
    assert (tmp_path / "last.pt").stat().st_size > 1_000_000
