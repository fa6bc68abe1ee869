"""The adapter a user writes once for their model: `Detector`.

Units the kit uses everywhere:
- images (Tensor[B, C, S, S]): float32 in [0, 1], C = `Detector.in_channels`;
- boxes (list of B Tensor[K, 4]): xyxy normalized to [0, 1] (x along the image width, the last
  axis), x1 <= x2, y1 <= y2; any real dtype is accepted and read as float;
- predictions: per image (boxes Tensor[N, 4] normalized xyxy, scores Tensor[N]), highest
  score first, N >= 1 (the kit scores the top box).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import Tensor, nn

Prediction: TypeAlias = tuple[Tensor, Tensor]
"""(boxes Tensor[N, 4] normalized xyxy, scores Tensor[N]) of one image, best first."""
BuildModel: TypeAlias = Callable[[], nn.Module]
TrainingLoss: TypeAlias = Callable[[nn.Module, Tensor, list[Tensor]], Tensor]
Predict: TypeAlias = Callable[[nn.Module, Tensor], list[Prediction]]
BuildOptimizer: TypeAlias = Callable[[nn.Module], torch.optim.Optimizer]
TrainStep: TypeAlias = Callable[[nn.Module, torch.optim.Optimizer, Tensor, list[Tensor]], float]
SchedulerFactory: TypeAlias = Callable[
    [torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler
]
BoxLoss: TypeAlias = Callable[[Tensor, Tensor], Tensor]
PairTransform: TypeAlias = Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]
"""(image uint8 [H, W], boxes float32 [K, 4] pixel xyxy) -> (image [H', W'], boxes [K', 4])."""


def default_train_step(
    detector: Detector,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    boxes: list[Tensor],
) -> float:
    """model.train(); zero_grad; loss.backward(); optimizer.step(). Returns the loss."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = detector.loss(model, images, boxes)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@dataclass(frozen=True)
class Detector:
    """How the kit builds, trains and reads a box regressor. Write it once per model.

    build: a fresh model (the kit seeds torch before calling it).
    loss: (model, images [B, C, S, S], boxes: B x [K, 4] normalized xyxy) -> scalar loss with
        a graph (the model is in train mode).
    predict: (model in eval mode, images) -> one `Prediction` per image, under no_grad.
    optimizer: the optimizer the model trains with, over its trainable parameters.
    train_step: your own step (model, optimizer, images, boxes) -> loss as float; give it
        when your training loop has its own (the kit then checks YOUR step: a skipped
        `zero_grad` or `optimizer.step()` in it is caught). Default: `default_train_step`.
    scheduler, warmup_steps, total_steps: your LR scheduler (stepped once per optimizer step),
        checked by `assert_warmup_hands_over` when given.
    transform: your training augmentation (an albumentations Compose with bboxes and a
        "labels" field, or a `PairTransform`), checked by `assert_boxes_follow_transforms`.
    box_loss: your box loss (pred [N, 4], target [N, 4]) -> scalar, normalized xyxy,
        checked by `assert_loss_sees_clipped_boxes`; box_loss_pred: the prediction it is
        checked with when it takes something else than boxes [N, 4] (e.g. raw head output).
    in_channels: C of the images; stride: the coarsest stride of the model (px): the
        position check shifts its square by whole multiples of it; overfit_steps: steps of
        the overfit and position checks (60 is enough for a model that learns).
    """

    build: BuildModel
    loss: TrainingLoss
    predict: Predict
    optimizer: BuildOptimizer
    train_step: TrainStep | None = None
    scheduler: SchedulerFactory | None = None
    warmup_steps: int = 0
    total_steps: int = 0
    transform: Any = None
    box_loss: BoxLoss | None = None
    box_loss_pred: Tensor | None = None
    in_channels: int = 1
    stride: int = 32
    overfit_steps: int = 60
    name: str = "detector"

    def step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        images: Tensor,
        boxes: list[Tensor],
    ) -> float:
        """One training step: `train_step` if given, else `default_train_step`."""
        if self.train_step is not None:
            return self.train_step(model, optimizer, images, boxes)
        return default_train_step(self, model, optimizer, images, boxes)

    def images_for(self, images: Tensor) -> Tensor:
        """Grey [B, 1, S, S] images repeated to `in_channels`."""
        return images if self.in_channels == 1 else images.expand(-1, self.in_channels, -1, -1)
