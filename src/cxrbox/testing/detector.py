"""The adapter a user writes once for their model: `Detector`.

Units the kit uses everywhere:
- images (Tensor[B, C, H, W]): float32 in [0, 1], C = `Detector.in_channels` (the kit's grey
  images are repeated to C channels), H = W = `Detector.image_size` for the checks that train;
- boxes (list of B Tensor[K, 4]): xyxy normalized to [0, 1] (x along the image width, the last
  axis), x1 <= x2, y1 <= y2; any real dtype is accepted and read as float;
- predictions: per image (boxes Tensor[N, 4] normalized xyxy, scores Tensor[N]), highest
  score first; N = 0 is allowed (an image without a box scores IoU 0).

The training contract (docs/testing-kit.md says more):
- one `train_step` call is one batch forward + backward of YOUR loop; it steps the optimizer
  when your loop would (every call, or every `accumulation`-th call with gradient
  accumulation). The kit counts optimizer steps itself (optimizer hooks): every LR, warmup
  length and step count it reports is in optimizer steps.
- your train_step owns the LR: a warmup written inside the loop (Ultralytics) or a scheduler
  it steps are both recorded as the LR the optimizer used at each of its steps. A `scheduler`
  factory that your train_step does not step is stepped by the kit after each optimizer step;
  if your train_step steps a scheduler, the factory must return THAT scheduler (as
  `cxrbox.diagnostics.own_detector` does), not build a second one on the same optimizer.
- EMA: `ema(model)` gives the weights to score (e.g. your EMA copy); the kit never trains them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import Tensor, nn

from cxrbox.testing.shifted import ShiftedCopies

Prediction: TypeAlias = tuple[Tensor, Tensor]
"""(boxes Tensor[N, 4] normalized xyxy, scores Tensor[N]) of one image, best first; N >= 0."""
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
"""(image uint8 [H, W] or [H, W, C], boxes float32 [K, 4] pixel xyxy) -> (image, boxes [K', 4]);
the image out as numpy [H', W'] / [H', W', C] or a tensor [H', W'] / [C, H', W']."""
ProbeBatch: TypeAlias = Callable[[], tuple[Tensor, list[Tensor]]]
"""() -> (images [B, C, H, W] float in [0, 1], B boxes [K, 4] normalized xyxy)."""
ScoredModel: TypeAlias = Callable[[nn.Module], nn.Module]
OverfitData: TypeAlias = Callable[[int], ShiftedCopies]
"""seed -> (fitted images, boxes, held-out images, boxes) of the overfit check."""


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
    loss: (model, images [B, C, H, W], boxes: B x [K, 4] normalized xyxy) -> scalar loss with
        a graph (the model is in train mode): the loss your training minimises.
    predict: (model in eval mode, images) -> one `Prediction` per image, under no_grad; an image
        may get no box (scored IoU 0).
    optimizer: the optimizer the model trains with, over its trainable parameters (your own
        param groups: every group's LR is recorded).
    train_step: your own step (model, optimizer, images, boxes) -> loss as float; give it
        when your training loop has its own (the kit then checks YOUR step: a skipped
        `zero_grad` or `optimizer.step()`, an in-loop warmup). Default: `default_train_step`.
    accumulation: at most this many train_step calls per optimizer step (gradient
        accumulation; 1: every call steps).
    scheduler, warmup_steps, total_steps: your LR scheduler factory (stepped once per optimizer
        step; the kit steps it when your train_step does not) and the run length it is built
        for, in optimizer steps. warmup_steps is the declared warmup length whether a scheduler
        or your loop makes it; total_steps 0: the kit's run is the whole schedule.
    warmup_start_lrs: the declared LR of each param group (in `optimizer`'s group order) at the
        first optimizer step, e.g. (0.0, 0.0, 0.1) for Ultralytics' weight / BN / bias groups:
        a group whose start is above its base LR is expected to fall during warmup. A group
        without one is expected to rise (or stay) to its base LR.
    transform: your training augmentation (an albumentations Compose with bboxes and a
        "labels" field, or a `PairTransform`), checked by `assert_boxes_follow_transforms`.
    box_loss: your box loss (pred [N, 4], target [N, 4]) -> scalar, normalized xyxy,
        checked by `assert_loss_sees_clipped_boxes`; box_loss_pred: the prediction it is
        checked with when it takes something else than boxes [N, 4] (e.g. raw head output).
        Without it, `loss_coordinates` checks the targets that reach `loss` (your transform's
        output, else `loss` itself).
    in_channels: C of the images; stride: the coarsest stride of the model (px): the
        position check shifts its square by whole multiples of it.
    image_size: px of the images of the checks that train (position_sensitivity, overfit)
        and of the default probe batch.
    overfit_data: seed -> the fitted and held-out images of the overfit check (a
        `ShiftedCopies`, e.g. `shifted_copies(source=your_image, source_box=its_box)`), when
        the kit's synthetic radiograph (an opacity of 16-45 px, faint on some seeds) is not a
        fair target for your model at `image_size`; default:
        `shifted_copies(image_size=image_size, seed=seed)`.
    probe_batch: the batch of the one-step checks (optimizer_step, gradient_flow, zero_grad),
        e.g. `multi_scale_batch(...)` or your own data; default: the overfit check's fitted
        images.
    idle_parameters: {fnmatch pattern of parameter or BatchNorm module names: why they may stay
        idle on the probe data}, e.g. {"model.22.cv2.2.*": "P5 box branch: no object is large
        enough at 128 px"}. Matching tensors that get no gradient or do not move are reported
        as idle by declaration, never silently; a pattern matching nothing is an error.
    ema: the weights to score after training, from the trained model (e.g. your EMA copy);
        default: the model itself.
    overfit_steps: the step budget of the overfit and position checks: each stops as soon as
        its criteria hold at a checkpoint (every eighth of the budget) and fails only if they
        do not hold at the end.
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
    image_size: int = 128
    overfit_data: OverfitData | None = None
    probe_batch: ProbeBatch | None = None
    idle_parameters: Mapping[str, str] = field(default_factory=dict)
    accumulation: int = 1
    warmup_start_lrs: tuple[float | None, ...] = ()
    ema: ScoredModel | None = None

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
        """Grey [B, 1, H, W] images repeated to `in_channels`."""
        if self.in_channels == 1 or images.shape[1] == self.in_channels:
            return images
        return images.expand(-1, self.in_channels, -1, -1)

    def scored(self, model: nn.Module) -> nn.Module:
        """The module to predict with after training: `ema(model)` or the model itself."""
        return self.ema(model) if self.ema is not None else model
