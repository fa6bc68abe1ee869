"""The checks that train: a tiny-batch overfit that must follow the content to held-out
positions (`check_overfit`), and a square that must be found where it moved
(`check_position_sensitivity`). Both train through the detector's own step."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from cxrbox.boxes import xyxy_to_cxcywh
from cxrbox.evaluation.metrics import mean_iou
from cxrbox.testing.detector import Detector, Prediction
from cxrbox.testing.result import CheckResult, raise_if_failed
from cxrbox.testing.shifted import ShiftedCopies, shifted_copies


@dataclass(frozen=True)
class OverfitResult:
    """A tiny-batch overfit run (model in eval mode after `steps` steps).

    On the fitted images: start/end loss (mean of 3 steps), mean IoU, spread of the top box's
    centre and size (max over x/y, w/h). On held-out positions: how the predicted centres follow
    the true ones (`follow_correlation`, the smaller over x and y) and their spread relative to
    the truth's (`heldout_spread_ratio`).
    """

    loss_start: float
    loss_end: float
    mean_iou: float
    centre_std: float
    size_std: float
    heldout_mean_iou: float
    follow_correlation: float
    heldout_spread_ratio: float


def _predict(detector: Detector, model: nn.Module, images: Tensor) -> list[Prediction]:
    """The detector's predictions as float64 CPU tensors (any real dtype in, exact)."""
    with torch.no_grad():
        out = detector.predict(model, detector.images_for(images))
    if len(out) != images.shape[0] or any(len(boxes) == 0 for boxes, _ in out):
        raise AssertionError(
            f"predict must return one (boxes [N >= 1, 4], scores [N]) per image; got "
            f"{[tuple(b.shape) for b, _ in out]} for {images.shape[0]} images"
        )
    return [(b.detach().cpu().double(), s.detach().cpu().double()) for b, s in out]


def overfit(detector: Detector, data: ShiftedCopies, steps: int, seed: int = 0) -> OverfitResult:
    """Train a fresh model on the fitted batch with the detector's own step, then score it."""
    torch.manual_seed(seed)
    model = detector.build()
    optimizer = detector.optimizer(model)
    images = detector.images_for(data.images)
    losses = [detector.step(model, optimizer, images, data.boxes) for _ in range(steps)]
    model.eval()
    fitted = _predict(detector, model, data.images)
    heldout = _predict(detector, model, data.heldout_images)
    top = torch.stack([boxes[0] for boxes, _ in fitted])  # [B, 4]
    held_top = torch.stack([boxes[0] for boxes, _ in heldout])  # [B, 4]
    cxcywh = xyxy_to_cxcywh(top, validate=False)
    held_centres = xyxy_to_cxcywh(held_top, validate=False)[:, :2]  # [B, 2]
    truth = torch.cat(data.heldout_boxes).double()
    true_centres = xyxy_to_cxcywh(truth, validate=False)[:, :2]  # [B, 2]
    correlation = min(
        float(torch.corrcoef(torch.stack([held_centres[:, k], true_centres[:, k]]))[0, 1])
        for k in range(2)
    )
    spread = held_centres.std(dim=0, unbiased=False) / true_centres.std(dim=0, unbiased=False)
    return OverfitResult(
        loss_start=float(np.mean(losses[:3])),
        loss_end=float(np.mean(losses[-3:])),
        mean_iou=mean_iou([b for b, _ in fitted], [s for _, s in fitted], data.boxes),
        centre_std=float(cxcywh[:, :2].std(dim=0, unbiased=False).max()),
        size_std=float(cxcywh[:, 2:].std(dim=0, unbiased=False).max()),
        heldout_mean_iou=mean_iou(
            [b for b, _ in heldout], [s for _, s in heldout], data.heldout_boxes
        ),
        follow_correlation=correlation if math.isfinite(correlation) else 0.0,
        heldout_spread_ratio=float(spread.min()),
    )


@dataclass(frozen=True)
class OverfitThresholds:
    """Pass marks of the overfit check (`DEFAULT_OVERFIT_THRESHOLDS` states why each number)."""

    max_loss_ratio: float
    min_mean_iou: float
    min_centre_std: float
    min_follow_correlation: float
    min_spread_ratio: float


# The overfit procedure of the gate (tests/regression), `cxrbox diagnose` and the kit: 8 fitted
# images + 8 held-out positions at 128 px (a 4x4 grid), 60 steps. Measured on cxrbox's default
# config (grid head): loss falls to ~5 % of its start, fitted mean IoU ~0.9, held-out centre
# correlation ~0.98; pooled head: held-out correlation ~0.4.
DEFAULT_OVERFIT_STEPS = 60
DEFAULT_OVERFIT_THRESHOLDS = OverfitThresholds(
    # The loss must end below 30 % of its start: the grid head reaches ~5 %, a model that does
    # not learn stays near 100 %.
    max_loss_ratio=0.30,
    # Fitted mean IoU 0.6: the grid head reaches ~0.9; 0.6 is also the learning bar of issue 4.
    min_mean_iou=0.6,
    # The truth's centres spread ~0.2 (normalized); the collapse alarm fires under 0.02, so 0.05
    # separates "varies like the truth" from "one box for every image" with margin both ways.
    min_centre_std=0.05,
    # Held-out positions: predicted vs true centre correlation. Grid ~0.98, pooled ~0.4; 0.8 is
    # far from both.
    min_follow_correlation=0.8,
    # Held-out spread of predicted centres relative to the truth's: grid ~1.0; 0.5 flags
    # predictions squeezed toward one place.
    min_spread_ratio=0.5,
)


def check_overfit(
    detector: Detector,
    data: ShiftedCopies,
    steps: int = DEFAULT_OVERFIT_STEPS,
    thresholds: OverfitThresholds = DEFAULT_OVERFIT_THRESHOLDS,
) -> CheckResult:
    """Loss fell, boxes fit, predictions vary, and they follow the opacity to new positions."""
    r = overfit(detector, data, steps)
    t = thresholds
    problems = []
    if not r.loss_end < t.max_loss_ratio * r.loss_start:
        problems.append(
            f"loss {r.loss_start:.3f} -> {r.loss_end:.3f} (need < {t.max_loss_ratio:.0%})"
        )
    if not r.mean_iou >= t.min_mean_iou:
        problems.append(f"mean IoU {r.mean_iou:.3f} < {t.min_mean_iou}")
    if not r.centre_std >= t.min_centre_std:
        problems.append(
            f"centre std {r.centre_std:.4f} < {t.min_centre_std}: predictions collapsed"
        )
    if not r.follow_correlation >= t.min_follow_correlation:
        problems.append(
            f"held-out positions: predicted centres correlate {r.follow_correlation:.2f} with the "
            f"truth (< {t.min_follow_correlation}): predictions do not follow the content"
        )
    if not r.heldout_spread_ratio >= t.min_spread_ratio:
        problems.append(
            f"held-out spread {r.heldout_spread_ratio:.2f} of the truth's "
            f"(< {t.min_spread_ratio}): predictions are near-constant"
        )
    summary = (
        f"{steps} steps on {data.images.shape[0]} images: loss {r.loss_start:.3f} -> "
        f"{r.loss_end:.3f}, mean IoU {r.mean_iou:.3f}, held-out correlation "
        f"{r.follow_correlation:.2f}"
    )
    numbers = dict(r.__dict__)
    if problems:
        return CheckResult("overfit", "fail", f"{summary}; " + "; ".join(problems), numbers)
    return CheckResult("overfit", "pass", summary, numbers)


def assert_overfits_and_follows(
    detector: Detector,
    data: ShiftedCopies | None = None,
    steps: int | None = None,
    thresholds: OverfitThresholds = DEFAULT_OVERFIT_THRESHOLDS,
) -> CheckResult:
    """Raise AssertionError unless `detector` overfits 8 shifted copies of a synthetic
    radiograph (loss < 30 % of its start, mean IoU >= 0.6, centres spread) and its predictions
    follow the opacity to 8 held-out positions (correlation >= 0.8, spread >= 0.5 of the
    truth's). data: default `shifted_copies()` (128 px); steps: default detector.overfit_steps."""
    data = data if data is not None else shifted_copies()
    steps = steps if steps is not None else detector.overfit_steps
    return raise_if_failed(check_overfit(detector, data, steps, thresholds))


# Pass marks of `check_position_sensitivity`, measured at 128 px on cxrbox's default config, 60
# steps: grid head held-out mean IoU 0.97, centre correlation 1.00; pooled head (seeds 0-2) mean
# IoU 0.28-0.37 and correlation 0.60-0.97, so the IoU separates them and the correlation backs it.
POSITION_MIN_HELDOUT_IOU = 0.5
POSITION_MIN_CORRELATION = 0.8


def check_position_sensitivity(
    detector: Detector,
    image_size: int = 128,
    steps: int = DEFAULT_OVERFIT_STEPS,
    seed: int = 0,
    stride: int = 32,
) -> CheckResult:
    """A bright square rolled to stride-aligned positions (every `stride` px): fit 8 with the
    detector's own step, then the top box must find it at 8 held-out positions.

    Shifts by whole strides give a head that pools position away nothing but border effects to
    tell positions apart, so a global-pooling head misses held-out positions while a spatial
    head lands on them. (Scoring the fitted images themselves does not work: a pooled head
    memorises them; measured correlation 1.00.)
    """
    side = image_size // 4
    blob = np.zeros((image_size, image_size), np.uint8)
    blob[:side, :side] = 255
    copies = shifted_copies(
        8, 8, image_size, seed, step=stride, source=blob, source_box=np.array([0, 0, side, side])
    )
    r = overfit(detector, copies, steps, seed)
    numbers = {
        "heldout_mean_iou": r.heldout_mean_iou,
        "correlation": r.follow_correlation,
        "heldout_spread_ratio": r.heldout_spread_ratio,
        "fitted_mean_iou": r.mean_iou,
    }
    summary = (
        f"{side} px square fitted at 8 places in {image_size} px images, found at 8 held-out "
        f"ones with mean IoU "
        f"{r.heldout_mean_iou:.2f} (fitted {r.mean_iou:.2f}), centre correlation "
        f"{r.follow_correlation:.2f}"
    )
    found = r.heldout_mean_iou >= POSITION_MIN_HELDOUT_IOU
    if not (found and r.follow_correlation >= POSITION_MIN_CORRELATION):
        return CheckResult(
            "position_sensitivity",
            "fail",
            f"{summary} (need IoU >= {POSITION_MIN_HELDOUT_IOU}, correlation >= "
            f"{POSITION_MIN_CORRELATION}): the head does not place boxes where the content is",
            numbers,
        )
    return CheckResult("position_sensitivity", "pass", summary, numbers)


def assert_position_sensitive(
    detector: Detector, image_size: int = 128, steps: int | None = None, seed: int = 0
) -> CheckResult:
    """Raise AssertionError unless a square fitted at 8 stride-aligned places is found at 8
    held-out ones (mean IoU >= 0.5, centre correlation >= 0.8): a head that pools position away
    fails. steps: default detector.overfit_steps; the shift is detector.stride."""
    steps = steps if steps is not None else detector.overfit_steps
    return raise_if_failed(
        check_position_sensitivity(detector, image_size, steps, seed, detector.stride)
    )
