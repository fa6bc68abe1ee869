"""The kit's own training run: a fresh model trained on a fixed batch with the detector's own
step, while `OptimizerRecorder` watches the optimizer and BatchNorm statistics are kept at build
time. The learning checks score it; `lr_schedule`, `zero_grad` and `batchnorm` read what it
recorded."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from cxrbox.testing.batchnorm import Statistics, running_statistics
from cxrbox.testing.detector import Detector
from cxrbox.testing.recorder import OptimizerRecorder


@dataclass
class TrainingRun:
    """A fresh model of `detector` being trained on (images, boxes).

    losses: the loss of every train_step call; recorder: LRs, optimizer steps, stale gradients;
    base_lrs: each param group's base LR ("initial_lr" a scheduler set, else its LR at build);
    statistics_at_build: BatchNorm running statistics before any step.
    """

    detector: Detector
    model: nn.Module
    optimizer: torch.optim.Optimizer
    images: Tensor
    boxes: list[Tensor]
    recorder: OptimizerRecorder
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    base_lrs: list[float]
    statistics_at_build: Statistics
    losses: list[float] = field(default_factory=list)

    @property
    def calls(self) -> int:
        """train_step calls so far."""
        return len(self.losses)

    def advance(self, calls: int) -> None:
        """`calls` more train_step calls; a scheduler factory your step does not step is stepped
        once per optimizer step."""
        for _ in range(calls):
            steps = self.recorder.steps
            clock = self.scheduler.last_epoch if self.scheduler is not None else None
            self.recorder.call = self.calls
            self.losses.append(
                float(self.detector.step(self.model, self.optimizer, self.images, self.boxes))
            )
            taken = self.recorder.steps - steps
            if self.scheduler is not None and taken and self.scheduler.last_epoch == clock:
                for _ in range(taken):
                    self.scheduler.step()

    def close(self) -> None:
        """Remove the recorder's hooks."""
        self.recorder.__exit__(None, None, None)


def start_run(detector: Detector, images: Tensor, boxes: list[Tensor], seed: int) -> TrainingRun:
    """Seed torch, build the model, its optimizer (and the scheduler factory's scheduler) and
    start recording. images [B, 1 or C, H, W] in [0, 1]; boxes B x [K, 4] normalized xyxy."""
    torch.manual_seed(seed)
    model = detector.build()
    optimizer = detector.optimizer(model)
    scheduler = None
    if detector.scheduler is not None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            scheduler = detector.scheduler(optimizer)
    base_lrs = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
    recorder = OptimizerRecorder(model, optimizer).__enter__()
    return TrainingRun(
        detector=detector,
        model=model,
        optimizer=optimizer,
        images=detector.images_for(images),
        boxes=boxes,
        recorder=recorder,
        scheduler=scheduler,
        base_lrs=base_lrs,
        statistics_at_build=running_statistics(model),
    )


CHECKPOINTS = 8  # an adaptive check scores at every eighth of its budget


def checkpoints(budget: int, first: int = 1) -> list[int]:
    """Call counts at which an adaptive check scores: every eighth of `budget`, none before
    `first` (e.g. the end of warmup plus a few steps), always `budget` itself."""
    points = {
        max(min(first, budget), round(budget * k / CHECKPOINTS)) for k in range(1, CHECKPOINTS + 1)
    }
    return sorted(p for p in points if p > 0)
