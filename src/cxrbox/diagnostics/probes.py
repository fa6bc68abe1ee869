"""Diagnostic probes: the diagnosis's checklist on cxrbox's own trainer, through the kit.

Each probe runs a `cxrbox.testing` check on `own_detector(config, ...)`, whose parts are the
trainer's OWN code (its `build_state`, `train_step`, `compute_loss`, transforms and scheduler),
so a fault planted anywhere in that code shows up here. The checks themselves (thresholds,
messages) live once, in `cxrbox.testing`. The pull-request gate (`tests/regression`) asserts on
these probes; `cxrbox diagnose` prints them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cxrbox.config import TrainConfig
from cxrbox.data.augment import build_transforms
from cxrbox.diagnostics.own_detector import Deploy, grid_probe_raw, own_detector, probe_config
from cxrbox.engine.train import build_state
from cxrbox.modeling.decode import decode_grid
from cxrbox.modeling.model import STRIDE
from cxrbox.progress import Progress
from cxrbox.testing import Detector, clipped, learning, parameters, warmup
from cxrbox.testing import transforms as box_transforms
from cxrbox.testing.learning import (
    OverfitResult,
    OverfitThresholds,
)
from cxrbox.testing.result import CheckResult
from cxrbox.testing.shifted import ShiftedCopies

__all__ = [
    "check_box_sync",
    "check_gradient_flow",
    "check_loss_coordinates",
    "check_lr_schedule",
    "check_optimizer_step",
    "check_overfit",
    "check_position_sensitivity",
    "dry_run_lr_curves",
    "overfit",
]


def overfit(config: TrainConfig, data: ShiftedCopies, steps: int, seed: int = 0) -> OverfitResult:
    """Train the configured model on the fitted batch with the trainer's own `train_step`."""
    return learning.overfit(own_detector(config, steps), data, steps, seed)


def check_overfit(
    config: TrainConfig, data: ShiftedCopies, steps: int, thresholds: OverfitThresholds
) -> CheckResult:
    """Loss fell, boxes fit, predictions vary, and they follow the opacity to new positions."""
    return learning.check_overfit(own_detector(config, steps), data, steps, thresholds)


def check_optimizer_step(
    config: TrainConfig, images: Tensor, boxes: list[Tensor], tolerance: float = 0.0
) -> CheckResult:
    """One `train_step` changes every trainable parameter (|delta| > tolerance somewhere)."""
    return parameters.check_every_parameter_moves(
        own_detector(config, 10), images, boxes, tolerance
    )


def check_gradient_flow(config: TrainConfig, images: Tensor, boxes: list[Tensor]) -> CheckResult:
    """After one forward/backward through the trainer's loss, no trainable layer has a zero grad."""
    return parameters.check_gradients_reach_every_parameter(own_detector(config, 10), images, boxes)


def dry_run_lr_curves(state: Any) -> list[list[float]]:
    """LR per step of every param group over the whole run: the trainer's own scheduler stepped
    without training (state from `build_state`; its scheduler is consumed)."""
    return warmup.lr_curves(state.optimizer, state.scheduler, state.total_steps)


def check_lr_schedule(config: TrainConfig, steps_per_epoch: int) -> CheckResult:
    """Step the trainer's own optimizer + scheduler dry (no gradients) and audit the LR curve."""
    state = build_state(config, steps_per_epoch=steps_per_epoch)
    result = warmup.check_warmup_hands_over(
        lambda optimizer: state.scheduler,
        state.warmup_steps,
        state.total_steps,
        optimizer=state.optimizer,
        min_lr_ratio=config.min_lr_ratio,
    )
    if result.status == "fail":
        return result
    return replace(
        result,
        message=f"warmup {state.warmup_steps} steps to {config.lr:g}, then cosine to "
        f"{config.min_lr_ratio * config.lr:g} over {state.total_steps} steps, no jump",
    )


def check_box_sync(
    image_size: int = 256,
    n_seeds: int = 50,
    transforms: Any = None,
    *,
    cases: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> CheckResult:
    """The training transforms (default `build_transforms(train=True, size=image_size)`) move a
    painted rectangle and its box together (`cxrbox.testing.check_boxes_follow_transforms`)."""
    transforms = transforms or build_transforms(train=True, size=image_size)
    return box_transforms.check_boxes_follow_transforms(
        transforms, image_size, n_seeds, cases=cases
    )


def check_loss_coordinates(config: TrainConfig) -> CheckResult:
    """The trainer's loss sees one coordinate system: boxes partly outside the image give the
    loss (and gradient) of their clipped version, and no gradient reaches a clamped prediction
    coordinate."""
    torch.manual_seed(0)
    detector = own_detector(config, 10)
    assert detector.box_loss is not None  # own_detector always gives one
    raw = grid_probe_raw()
    outside = torch.tensor([[-0.20, -0.10, 0.40, 0.45]], dtype=torch.float64)
    result = clipped.check_loss_sees_clipped_boxes(detector.box_loss, pred=raw, target=outside)
    # The decoded x1, y1 of cell (0, 0) are clamped at 0; tx, ty still move x2, y2, so check
    # that the clamped corners carry no gradient by differentiating the decoded box itself.
    raw.requires_grad_(True)
    boxes, _ = decode_grid(raw, build_state(probe_config(config, 10), 10).coding)
    (corner_grad,) = torch.autograd.grad(boxes[0, 0, :2].sum(), raw)
    leak = float(corner_grad.abs().sum())
    numbers = {**result.numbers, "clamped_gradient": leak}
    if leak > 0:
        return CheckResult(
            "loss_coordinates",
            "fail",
            f"gradient into clamped corners {leak:.2e}; {result.message}",
            numbers,
        )
    return replace(result, numbers=numbers)


def check_position_sensitivity(
    config: TrainConfig,
    image_size: int = 128,
    steps: int = 60,
    seed: int = 0,
    *,
    deploy: Deploy | None = None,
    progress: str | None = None,
) -> CheckResult:
    """A bright square rolled to stride-aligned positions (every 32 px): fit 8 with the trainer's
    own `train_step`, then the top box must find it at 8 held-out positions
    (`cxrbox.testing.check_position_sensitivity`; the original pooled head fails).

    `deploy` scores a deployed form of the trained model instead (e.g. its int8 ONNX export,
    `cxrbox.deploy.parity.Int8Deployer`): quantization must not bring the stall back.
    `progress`: a label to show the training steps done under on stderr (`cxrbox.progress`)."""
    detector = own_detector(config, steps, deploy=deploy)
    if progress is None:
        return learning.check_position_sensitivity(detector, image_size, steps, seed, stride=STRIDE)
    with Progress(steps, progress, "step") as bar:
        return learning.check_position_sensitivity(
            counting_steps(detector, bar), image_size, steps, seed, stride=STRIDE
        )


def counting_steps(detector: Detector, progress: Progress) -> Detector:
    """`detector` (a `cxrbox.testing.Detector`) whose training steps advance `progress`."""
    step = detector.step

    def counted(model: Any, optimizer: Any, images: Any, boxes: Any) -> float:
        loss = step(model, optimizer, images, boxes)
        progress.update()
        return loss

    return replace(detector, train_step=counted)
