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

from cxrbox.boxes import cxcywh_to_xyxy, elementwise_box_iou
from cxrbox.errors import ConfigError
from cxrbox.modeling.losses import giou_loss
from cxrbox.testing import (
    Detector,
    assert_boxes_follow_transforms,
    assert_every_parameter_moves,
    assert_gradients_are_cleared,
    assert_gradients_reach_every_parameter,
    assert_loss_sees_clipped_boxes,
    assert_warmup_hands_over,
    check_recorded_lr,
    check_training_loss_sees_clipped_boxes,
    load_detector,
    multi_scale_batch,
    recomputed_statistics,
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


# ---- gradients cleared between optimizer steps (zero_grad), whatever the optimizer ----------


def step_without_zero_grad(model, optimizer, images, boxes):
    model.train()
    tiny_loss(model, images, boxes).backward()
    optimizer.step()
    return 0.0


def step_accumulating_two_batches(model, optimizer, images, boxes):
    """Ultralytics' order: backward on two halves, then step, then zero_grad."""
    model.train()
    half = images.shape[0] // 2
    tiny_loss(model, images[:half], boxes[:half]).backward()
    tiny_loss(model, images[half:], boxes[half:]).backward()
    optimizer.step()
    optimizer.zero_grad()
    return 0.0


def tiny_loss(model: nn.Module, images: Tensor, boxes: list[Tensor]) -> Tensor:
    return (model(images) - torch.stack([b[0] for b in boxes]).float()).abs().mean()


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adam])
def test_a_step_that_clears_gradients_passes_whatever_the_optimizer(batch, optimizer):
    detector = replace(tiny_detector(), optimizer=lambda m: optimizer(m.parameters(), lr=1e-2))
    result = assert_gradients_are_cleared(detector, *batch)
    assert result.numbers["optimizer_steps"] == 2


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adam])
def test_a_skipped_zero_grad_raises_whatever_the_optimizer(batch, optimizer):
    detector = replace(
        tiny_detector(),
        optimizer=lambda m: optimizer(m.parameters(), lr=1e-2),
        train_step=step_without_zero_grad,
    )
    with pytest.raises(AssertionError, match=r"zero_grad\(\) is skipped"):
        assert_gradients_are_cleared(detector, *batch)


def test_gradient_accumulation_within_one_optimizer_step_is_not_a_stale_gradient(batch):
    detector = replace(tiny_detector(), train_step=step_accumulating_two_batches)
    assert_gradients_are_cleared(detector, *batch)


# ---- optimizer_step: a warmup from LR 0, a step never taken ----------------------------------


def test_a_warmup_that_starts_at_lr_zero_still_moves_every_parameter(batch):
    def from_zero(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, step / 3))

    result = assert_every_parameter_moves(replace(tiny_detector(), scheduler=from_zero), *batch)
    assert result.numbers["lrs"][0] == [0.0]
    assert result.numbers["optimizer_steps"] == 2


def test_a_step_never_taken_is_named(batch):
    detector = replace(tiny_detector(), train_step=lambda m, o, i, b: 0.0)
    with pytest.raises(AssertionError, match=r"optimizer\.step\(\) was never called"):
        assert_every_parameter_moves(detector, *batch)


# ---- idle parameters: declared, reported, never silent ---------------------------------------


def test_a_declared_idle_layer_is_reported_not_failed(batch):
    detector = replace(tiny_detector(unused_layer=True), idle_parameters={"unused.*": "spare"})
    result = assert_gradients_reach_every_parameter(detector, *batch)
    assert result.numbers["idle_declared"] == ["unused.bias", "unused.weight"]
    assert "2 idle by declaration (unused.*: spare)" in result.message


def test_an_idle_declaration_that_matches_nothing_is_an_error(batch):
    detector = replace(tiny_detector(), idle_parameters={"no_such_layer.*": "stale"})
    with pytest.raises(ConfigError, match=r"no_such_layer\.\*"):
        assert_gradients_reach_every_parameter(detector, *batch)


# ---- the LR the optimizer used, against the declared warmup -----------------------------------


def ultralytics_curves(steps: int = 12, warmup: int = 3) -> list[list[float]]:
    """Ultralytics' in-loop warmup on a one-batch epoch: weights rise from 0, biases fall from
    0.1, both toward lr0 x lf(epoch) of a linear decay over 100 epochs (lr0 0.01)."""

    def lf(x: float) -> float:
        return max(1 - x / 100, 0) * 0.99 + 0.01

    curves = []
    for start in (0.0, 0.1):
        curve = []
        for t in range(steps):
            if t <= warmup:
                curve.append(float(np.interp(t, [0, warmup], [start, 0.01 * lf(t)])))
            else:
                curve.append(0.01 * lf(t))
        curves.append(curve)
    return curves


def test_recorded_ultralytics_warmup_with_a_falling_bias_group_passes():
    result = check_recorded_lr(ultralytics_curves(), [0.01, 0.01], 3, (0.0, 0.1))
    assert result.status == "pass", result.message


def test_recorded_warmup_overwritten_by_the_scheduler_fails():
    curves = [[0.01 * (1 - t / 100) for t in range(12)]] * 2  # no warmup left
    result = check_recorded_lr(curves, [0.01, 0.01], 3, (0.0, 0.1))
    assert "group 0: LR at the first optimizer step is 0.01, the declared warmup start is 0" in (
        result.message
    )


def test_recorded_jump_at_the_hand_over_fails():
    curves = ultralytics_curves()
    # The warmup interpolates over 6 steps but stops after 3, half-way: then the decay takes over.
    curves[0][:4] = [0.01 * t / 6 for t in range(4)]
    result = check_recorded_lr(curves, [0.01, 0.01], 3, (0.0, 0.1))
    assert result.status == "fail"
    assert "jump of +0.00" in result.message


def test_recorded_lr_zero_after_the_warmup_fails():
    curves = [c[:4] + [0.0] * 8 for c in ultralytics_curves()]
    result = check_recorded_lr(curves, [0.01, 0.01], 3, (0.0, 0.1))
    assert "group 0: LR is 0 from step 4 on" in result.message


def test_recorded_warmup_that_peaks_before_its_end_fails():
    """cxrbox's original bug: warmup by hand while the cosine counts from step 0."""
    warmup, total = 5, 30
    curve = [
        (t + 1) / warmup if t < warmup else 0.5 * (1 + math.cos(math.pi * t / total))
        for t in range(15)
    ]
    result = check_recorded_lr([[1e-3 * v for v in curve]], [1e-3], warmup)
    assert "warmup is not rising" in result.message


# ---- BatchNorm: scored with recomputed statistics, frozen statistics named -------------------


class TinyBatchNormRegressor(TinyRegressor):
    def __init__(self, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(4, momentum=momentum)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.bn(self.conv(images)).mean(dim=(2, 3))).sigmoid()


def test_frozen_batchnorm_statistics_are_named():
    from cxrbox.testing.checklist import detector_checks

    healthy = replace(tiny_detector(), build=TinyBatchNormRegressor, overfit_steps=8)
    assert detector_checks(healthy)["batchnorm"]().status == "pass"
    frozen = replace(healthy, build=lambda: TinyBatchNormRegressor(momentum=0.0))
    result = detector_checks(frozen)["batchnorm"]()
    assert result.status == "fail"
    assert "BatchNorm statistics are frozen" in result.message
    assert result.numbers["frozen"] == ["bn"]


def test_recomputed_statistics_are_the_batch_statistics_and_are_restored():
    model = TinyBatchNormRegressor().train()
    for _ in range(3):  # statistics of other batches, as after some training
        model(torch.rand(4, 1, 16, 16) * 3)
    model.eval()
    images = torch.rand(4, 1, 16, 16)
    before = model.bn.running_mean.clone()
    with recomputed_statistics(model, lambda: model(images)) as recomputed:
        features = model.conv(images)
        assert recomputed and not model.training
        torch.testing.assert_close(model.bn.running_mean, features.mean(dim=(0, 2, 3)))
    assert torch.equal(model.bn.running_mean, before)
    assert model.bn.momentum == 0.1 and not model.training


# ---- predictions, images and box formats -----------------------------------------------------


def test_an_image_without_a_prediction_scores_iou_zero():
    from cxrbox.testing.learning import score

    copies = shifted_copies(n_fit=4, n_heldout=4, image_size=64, step=8)
    detector = replace(
        tiny_detector(), predict=lambda model, images: [(torch.zeros(0, 4), torch.zeros(0))] * 4
    )
    result = score(detector, TinyRegressor(), copies, [1.0, 1.0])
    assert result.mean_iou == 0.0 and result.heldout_mean_iou == 0.0


def test_box_sync_reads_height_width_channel_images():
    def rgb_flip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert image.shape[2] == 3  # the kit feeds [H, W, C] for a 3-channel detector
        width = image.shape[1]
        flipped = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
        return image[:, ::-1].copy(), flipped

    from cxrbox.testing import check_boxes_follow_transforms

    assert check_boxes_follow_transforms(rgb_flip, 64, 5, channels=3).status == "pass"
    image_only = check_boxes_follow_transforms(
        lambda image, boxes: (image[:, ::-1].copy(), boxes), 64, 5, channels=3
    )
    assert image_only.status == "fail"


def test_predictions_that_fit_the_truth_read_as_centre_size_are_named():
    from cxrbox.testing.learning import format_hint

    truth = torch.tensor([[0.2, 0.3, 0.4, 0.5], [0.5, 0.1, 0.7, 0.3]], dtype=torch.float64)
    misread = cxcywh_to_xyxy(truth, validate=False).clamp(0, 1)
    assert "cxcywh" in format_hint(misread, truth)
    assert format_hint(truth, truth) == ""


# ---- loss_coordinates on the targets that reach the loss -------------------------------------


def test_a_training_loss_that_clips_its_targets_passes_and_one_that_does_not_fails(batch):
    images, boxes = batch

    def clipping(model, images, boxes):
        return tiny_loss(model, images, [b.clamp(0, 1) for b in boxes])

    model = TinyRegressor()
    assert check_training_loss_sees_clipped_boxes(clipping, model, images, boxes).passed
    result = check_training_loss_sees_clipped_boxes(tiny_loss, model, images, boxes)
    assert result.status == "fail" and "does not clip its targets" in result.message


def test_a_transform_that_clips_boxes_is_enough_for_loss_coordinates(batch):
    from cxrbox.testing.clipped import transform_targets_outside

    def clip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return image, np.clip(boxes, 0, image.shape[0])

    assert transform_targets_outside(clip, 64, 3)[0] == 0
    assert transform_targets_outside(lambda image, boxes: (image, boxes), 64, 3)[0] == 3


def test_multi_scale_batch_holds_one_object_per_scale():
    images, boxes = multi_scale_batch(64, fractions=(0.25, 0.5), per_scale=2)
    assert images.shape == (4, 1, 64, 64)
    widths = [float(b[0, 2] - b[0, 0]) for b in boxes]
    assert widths == [0.25, 0.25, 0.5, 0.5]


def test_load_detector_imports_from_the_search_path(tmp_path):
    (tmp_path / "my_kit_adapter.py").write_text(
        "from cxrbox.diagnostics.own_detector import make_detector\n"
    )
    assert isinstance(load_detector("my_kit_adapter:make_detector", str(tmp_path)), Detector)


def test_recorded_warmup_is_judged_per_train_step_call_under_accumulation():
    """Accumulation ramping from 1 to 2 during an in-loop warmup: optimizer steps at calls 0, 1,
    3, 5, ...; the LR moves by the same amount per call, so no step is a jump."""
    calls = [0, 1, 3, 5, 7, 9]
    curve = [0.0, 0.01 / 3, 0.01, 0.0099, 0.0098, 0.0097]
    assert check_recorded_lr([curve], [0.01], 2, (0.0,), positions=calls).status == "pass"
    evenly = check_recorded_lr([curve], [0.01], 2, (0.0,))
    assert "jump of +0.00666667 at the warmup hand-over (step 2)" in evenly.message
