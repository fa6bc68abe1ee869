"""cxrbox's own heads as a `cxrbox.testing.Detector`: the gate and `cxrbox diagnose` check the
trainer through the same kit as anyone's model.

Each part calls the trainer's OWN code (`build_state`, `train_step`, `compute_loss`, the
scheduler `build_state` attaches, the training transforms), looked up at call time, so a fault
planted anywhere in that code shows up in the kit's checks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

import cxrbox.engine.train
from cxrbox.config import TrainConfig
from cxrbox.data.augment import build_transforms
from cxrbox.engine.train import TrainState
from cxrbox.errors import InputValueError
from cxrbox.modeling.decode import GridCoding, decode_grid, postprocess
from cxrbox.modeling.model import STRIDE
from cxrbox.modeling.objective import assign_targets, compute_loss
from cxrbox.testing.detector import Detector, Prediction
from cxrbox.testing.learning import DEFAULT_OVERFIT_STEPS

# (trained model, its config at the probe's image size, its coding, calibration images) -> the
# model to score: `model(images [B, 1, S, S]) -> raw [B, 5, Hg, Wg]` (e.g. an int8 ONNX export,
# `cxrbox.deploy.parity.Int8Deployer`).
Deploy = Callable[[nn.Module, TrainConfig, GridCoding, Tensor], Callable[[Tensor], Tensor]]


def probe_config(config: TrainConfig, steps: int) -> TrainConfig:
    """The config for a short probe run: one 'epoch' of `steps`, warmup 10 % of it."""
    return config.replace(epochs=1, warmup_epochs=0.1, iou_ramp_epochs=0.1, channels_last=False)


class _OwnRuns:
    """The trainer states the kit builds, found again from their model or optimizer."""

    def __init__(
        self, config: TrainConfig, steps_per_epoch: int, deploy: Deploy | None = None
    ) -> None:
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.states: list[TrainState] = []
        self.deploy = deploy
        self.deployed: dict[int, Callable[[Tensor], Tensor]] = {}  # id(model) -> its deployment

    def build(self) -> nn.Module:
        state = cxrbox.engine.train.build_state(self.config, steps_per_epoch=self.steps_per_epoch)
        self.states = [*self.states[-3:], state]  # the kit uses the latest; keep a few
        return state.model

    def state_of(self, thing: object) -> TrainState:
        for state in reversed(self.states):
            if thing is state.model or thing is state.optimizer:
                return state
        raise InputValueError("this model or optimizer was not built by this detector")

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return self.state_of(model).optimizer

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return self.state_of(optimizer).scheduler

    def train_step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        images: Tensor,
        boxes: list[Tensor],
    ) -> float:
        return float(cxrbox.engine.train.train_step(self.state_of(model), images, boxes)["loss"])

    def loss(self, model: nn.Module, images: Tensor, boxes: list[Tensor]) -> Tensor:
        state = self.state_of(model)
        grid = state.model.grid_size(images.shape[-1])
        targets = assign_targets(boxes, grid, grid)
        return compute_loss(state.model(images), targets, state.weights, state.coding).total

    def forward(self, state: TrainState, images: Tensor) -> Callable[[Tensor], Tensor]:
        """The trained model, or its deployment made once from it, calibrated on the first
        images it is asked to predict (the probe's fitted batch)."""
        if self.deploy is None:
            return state.model
        key = id(state.model)
        if key not in self.deployed:
            config = state.config.replace(image_size=int(images.shape[-1]))
            self.deployed[key] = self.deploy(state.model, config, state.coding, images)
        return self.deployed[key]

    def predict(self, model: nn.Module, images: Tensor) -> list[Prediction]:
        state = self.state_of(model)
        raw = self.forward(state, images)(images.to(state.device)).float()
        pred_boxes, scores = decode_grid(raw, state.coding)
        cfg = state.config
        detections = postprocess(pred_boxes.cpu(), scores.cpu(), 0.0, cfg.nms_iou, cfg.top_k)
        return [(d.boxes, d.scores) for d in detections]

    def box_loss(self, raw: Tensor, target: Tensor) -> Tensor:
        """The trainer's loss of raw head output [1, 5, 2, 2] against one image's boxes."""
        state = self.states[-1] if self.states else self.state_of(self.build())
        return compute_loss(raw, assign_targets([target], 2, 2), state.weights, state.coding).total


def grid_probe_raw() -> Tensor:
    """Raw head output [1, 5, 2, 2] float64: a wide box around cell (0, 0) that sticks out."""
    raw = torch.zeros(1, 5, 2, 2, dtype=torch.float64)
    raw[0, 3:, 0, 0] = 1.5
    return raw


def own_detector(config: TrainConfig, steps: int, deploy: Deploy | None = None) -> Detector:
    """cxrbox's model of `config` for a probe run of `steps` steps (`probe_config`); with
    `deploy`, predictions come from the deployed form of each trained model."""
    runs = _OwnRuns(probe_config(config, steps), steps_per_epoch=steps, deploy=deploy)
    warmup_steps = min(round(0.1 * steps), steps - 1)
    return Detector(
        build=runs.build,
        loss=runs.loss,
        predict=runs.predict,
        optimizer=runs.optimizer,
        train_step=runs.train_step,
        scheduler=runs.scheduler,
        warmup_steps=warmup_steps,
        total_steps=steps,
        transform=build_transforms(train=True, size=config.image_size),
        box_loss=runs.box_loss,
        box_loss_pred=grid_probe_raw(),
        in_channels=1,
        stride=STRIDE,  # the backbone's coarsest stride: whole cells of a stride-16 grid too
        overfit_steps=steps,
        name=f"cxrbox {config.head} head",
    )


def make_detector() -> Detector:
    """The default configuration.

    `pytest --cxrbox-detector cxrbox.diagnostics.own_detector:make_detector`
    """
    return own_detector(TrainConfig(), DEFAULT_OVERFIT_STEPS)
