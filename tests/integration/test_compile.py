"""`compile=True` (`cxrbox train --compile`) trains like eager; the CUDA step's GPU-only parts."""

from __future__ import annotations

import pytest
import torch

from cxrbox.config import TrainConfig
from cxrbox.engine.train import build_state, train_step
from cxrbox.speed.bench_train import random_batch

CONFIG = TrainConfig(image_size=64, batch_size=4, width=0.25, norm="group")


def _losses(config: TrainConfig, steps: int = 3) -> list[float]:
    torch.manual_seed(0)
    state = build_state(config, steps_per_epoch=10)
    images, boxes = random_batch(config.batch_size, config.image_size)
    return [train_step(state, images, boxes)["loss"] for _ in range(steps)]


@pytest.mark.slow
def test_compiled_training_steps_match_eager():
    assert _losses(CONFIG.replace(compile=True)) == pytest.approx(_losses(CONFIG), rel=1e-4)


@pytest.mark.gpu
def test_cuda_step_uses_fused_adamw_and_trains_in_bf16_compiled():
    config = CONFIG.replace(device="cuda", bf16=True, compile=True, batch_size=16)
    state = build_state(config, steps_per_epoch=10)
    assert state.optimizer.defaults["fused"] is True
    images, boxes = random_batch(16, 64)
    losses = [train_step(state, images.pin_memory(), boxes)["loss"] for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
