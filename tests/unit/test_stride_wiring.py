"""`TrainConfig.stride` reaches every model built from a config: the trainer, the bench, the
probes' detector and checkpoint loading (tested with the checkpoints)."""

from __future__ import annotations

import pytest
import torch

from cxrbox.config import TrainConfig
from cxrbox.diagnostics.own_detector import own_detector
from cxrbox.engine.train import build_state, train_step
from cxrbox.speed.bench_train import random_batch, training_flops_per_image

CONFIG = TrainConfig(image_size=64, batch_size=2, width=0.25, channels_last=False, stride=32)


@pytest.mark.parametrize("stride", [16, 32])
def test_a_train_step_runs_on_the_grid_of_the_configured_stride(stride):
    state = build_state(CONFIG.replace(stride=stride), steps_per_epoch=10)
    assert state.model.grid_size(64) == 64 // stride
    logged = train_step(state, *random_batch(2, 64))
    assert torch.isfinite(torch.as_tensor(logged["loss"]))


def test_the_bench_counts_the_flops_of_the_configured_stride():
    coarse = training_flops_per_image(CONFIG)
    fine = training_flops_per_image(CONFIG.replace(stride=16))
    assert fine > coarse  # the merge and a 4x larger head map


def test_the_probes_detector_builds_the_configured_stride():
    detector = own_detector(CONFIG.replace(stride=16), steps=10)
    images, boxes = random_batch(2, 64)
    model = detector.build()
    assert model(images).shape[-2:] == (4, 4)
    assert torch.isfinite(detector.loss(model, images, boxes))
