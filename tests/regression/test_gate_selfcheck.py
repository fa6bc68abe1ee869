"""The gate checks itself: each known fault, planted by monkeypatching, turns its check red.

A gate is only worth the faults it catches. Each test plants one fault the original project had
(or could have had) into the trainer's code and asserts the matching gate check FAILS.
"""

from __future__ import annotations

import math

import albumentations as A
import pytest
import torch
from tests.regression.gate_config import OVERFIT_STEPS, THRESHOLDS

import cxrbox.engine.train
import cxrbox.modeling.losses
from cxrbox.diagnostics.probes import (
    check_box_sync,
    check_gradient_flow,
    check_loss_coordinates,
    check_lr_schedule,
    check_optimizer_step,
    check_overfit,
)
from cxrbox.modeling.model import build_model

pytestmark = pytest.mark.gate


def test_skipped_optimizer_step_is_caught(monkeypatch, default_config, copies):
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    result = check_optimizer_step(default_config, copies.images, copies.boxes)
    assert result.status == "fail"
    assert result.numbers["unchanged"]


def test_skipped_backward_is_caught(monkeypatch, default_config, copies):
    monkeypatch.setattr(torch.Tensor, "backward", lambda self, *args, **kwargs: None)
    assert check_gradient_flow(default_config, copies.images, copies.boxes).status == "fail"
    assert check_optimizer_step(default_config, copies.images, copies.boxes).status == "fail"


def test_pooled_head_swapped_in_is_caught(monkeypatch, default_config, copies):
    def pooled_model(head, norm, width, in_channels=1, stride=32):
        return build_model("pooled", norm, width, in_channels)

    monkeypatch.setattr(cxrbox.engine.train, "build_model", pooled_model)
    result = check_overfit(default_config, copies, OVERFIT_STEPS, THRESHOLDS)
    assert result.status == "fail"


def _cosine_from_step_zero(optimizer, warmup_steps, total_steps, min_lr_ratio=0.0):
    """The original bug: warmup set by hand while the cosine counted from step 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * step / total_steps)
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def test_warmup_fighting_the_cosine_is_caught(monkeypatch, default_config):
    monkeypatch.setattr(cxrbox.engine.train, "build_scheduler", _cosine_from_step_zero)
    # A long warmup (3 of 6 epochs) makes the drop at the boundary large, as in the original.
    result = check_lr_schedule(
        default_config.replace(warmup_epochs=3, epochs=6), steps_per_epoch=10
    )
    assert result.status == "fail"


def test_lr_stuck_at_zero_is_caught(monkeypatch, default_config, copies):
    def zero_lr(optimizer, warmup_steps, total_steps, min_lr_ratio=0.0):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.0)

    monkeypatch.setattr(cxrbox.engine.train, "build_scheduler", zero_lr)
    assert check_lr_schedule(default_config, steps_per_epoch=10).status == "fail"
    assert check_optimizer_step(default_config, copies.images, copies.boxes).status == "fail"


def test_flip_applied_to_the_image_but_not_the_boxes_is_caught(monkeypatch):
    monkeypatch.setattr(A.HorizontalFlip, "apply_to_bboxes", lambda self, bboxes, **params: bboxes)
    result = check_box_sync(image_size=256, n_seeds=40)
    assert result.status == "fail"
    assert result.numbers["misaligned"] > 0


def test_corners_neither_ordered_nor_clipped_is_caught(monkeypatch, default_config):
    monkeypatch.setattr(
        cxrbox.modeling.losses, "order_and_clip_xyxy", lambda boxes, w, h, **kw: boxes
    )
    assert check_loss_coordinates(default_config).status == "fail"
