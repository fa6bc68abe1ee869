"""cxrbox.testing on small stand-ins: each assert passes on a correct input and raises
AssertionError, with the measured numbers, on the fault it exists for."""

from __future__ import annotations

import math
from dataclasses import replace

import albumentations as A
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from cxrbox.boxes import elementwise_box_iou
from cxrbox.errors import ConfigError
from cxrbox.modeling.losses import giou_loss
from cxrbox.testing import (
    Detector,
    assert_boxes_follow_transforms,
    assert_every_parameter_moves,
    assert_gradients_reach_every_parameter,
    assert_loss_sees_clipped_boxes,
    assert_warmup_hands_over,
    load_detector,
    shifted_copies,
)

WARMUP, TOTAL = 5, 30


class TinyRegressor(nn.Module):
    """One box per image from globally pooled features (enough for the step checks)."""

    def __init__(self, unused_layer: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, 2, 1)
        self.head = nn.Linear(4, 4)
        self.unused = nn.Linear(2, 2) if unused_layer else None

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.conv(images).mean(dim=(2, 3))).sigmoid()  # [B, 4]


def tiny_detector(unused_layer: bool = False) -> Detector:
    def loss(model: nn.Module, images: Tensor, boxes: list[Tensor]) -> Tensor:
        return (model(images) - torch.stack([b[0] for b in boxes]).float()).abs().mean()

    def predict(model: nn.Module, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [(box[None], torch.ones(1)) for box in model(images)]

    return Detector(
        build=lambda: TinyRegressor(unused_layer),
        loss=loss,
        predict=predict,
        optimizer=lambda model: torch.optim.AdamW(model.parameters(), lr=1e-3),
    )


@pytest.fixture(scope="module")
def batch() -> tuple[Tensor, list[Tensor]]:
    copies = shifted_copies(n_fit=4, n_heldout=4, image_size=64, step=8)
    return copies.images, copies.boxes


def warmup_then_cosine(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 0.1, 1.0, total_iters=WARMUP)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, TOTAL - WARMUP)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], [WARMUP])


def cosine_from_step_zero(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < WARMUP:
            return (step + 1) / WARMUP
        return 0.5 * (1 + math.cos(math.pi * step / TOTAL))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def test_warmup_into_cosine_hands_over_for_every_param_group():
    result = assert_warmup_hands_over(warmup_then_cosine, WARMUP, TOTAL, base_lrs=(1e-3, 1e-2))
    assert result.numbers["base_lrs"] == [1e-3, 1e-2]


def test_warmup_fighting_its_decay_raises_with_the_lr_it_measured():
    with pytest.raises(AssertionError, match=r"LR at the end of warmup \(step 5\) is 0\.000"):
        assert_warmup_hands_over(cosine_from_step_zero, WARMUP, TOTAL)


def test_warmup_overshooting_its_base_lr_raises():
    def overshoot(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.5, (s + 1) / WARMUP))

    with pytest.raises(AssertionError, match="peak LR"):
        assert_warmup_hands_over(overshoot, WARMUP, TOTAL)


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, Tensor]:
    """A correct flip that returns int16 boxes as a tensor: the kit reads any real dtype."""
    width = image.shape[1]
    flipped = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
    return image[:, ::-1].copy(), torch.from_numpy(flipped.astype(np.int16))


def test_callable_flip_that_moves_boxes_passes_with_integer_boxes():
    result = assert_boxes_follow_transforms(hflip, image_size=64, n_seeds=5)
    assert result.numbers["worst_iou"] == pytest.approx(1.0)


def test_albumentations_flip_passes():
    compose = A.Compose(
        [A.HorizontalFlip(p=1.0)], bbox_params=A.BboxParams("pascal_voc", label_fields=["labels"])
    )
    assert_boxes_follow_transforms(compose, image_size=64, n_seeds=5)


def test_flip_of_the_image_alone_raises_with_the_count_misaligned():
    def image_only(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return image[:, ::-1].copy(), boxes

    with pytest.raises(
        AssertionError, match=r"(?s)[1-5] of 5 augmented samples .*'misaligned': [1-5]"
    ):
        assert_boxes_follow_transforms(image_only, image_size=64, n_seeds=5)


def test_loss_that_clips_its_targets_passes():
    assert_loss_sees_clipped_boxes(lambda p, t: giou_loss(p, t, reduction="mean"))


def test_loss_that_does_not_clip_raises():
    def unclipped(pred: Tensor, target: Tensor) -> Tensor:
        return (1 - elementwise_box_iou(pred, target, "giou", validate=False)).mean()

    with pytest.raises(AssertionError, match="does not clip its targets"):
        assert_loss_sees_clipped_boxes(unclipped)


def test_a_training_step_moves_every_parameter(batch):
    result = assert_every_parameter_moves(tiny_detector(), *batch)
    assert result.numbers["unchanged"] == []


def test_skipped_optimizer_step_raises_naming_the_parameters(batch):
    def no_step(model, optimizer, images, boxes):
        detector.loss(model, images, boxes).backward()
        return 0.0

    detector = replace(tiny_detector(), train_step=no_step)
    with pytest.raises(AssertionError, match=r"(?s)4 of 4 trainable tensors .*conv\.weight"):
        assert_every_parameter_moves(detector, *batch)


def test_gradients_reach_every_parameter(batch):
    assert_gradients_reach_every_parameter(tiny_detector(), *batch)


def test_a_layer_outside_the_graph_raises_naming_it(batch):
    with pytest.raises(AssertionError, match=r"2 parameter tensors got no gradient: unused"):
        assert_gradients_reach_every_parameter(tiny_detector(unused_layer=True), *batch)


@pytest.mark.parametrize(
    "spec",
    ["no_colon", "cxrbox.no_such_module:x", "cxrbox.boxes:no_such_name", "cxrbox.boxes:widen"],
)
def test_load_detector_rejects_a_bad_spec(spec):
    with pytest.raises(ConfigError, match="detector spec"):
        load_detector(spec)
