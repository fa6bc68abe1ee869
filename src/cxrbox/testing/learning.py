"""The checks that train: a tiny-batch overfit that must follow the content to held-out
positions (`check_overfit`), and a square that must be found where it moved
(`check_position_sensitivity`). Both train through the detector's own step
(`cxrbox.testing.training`) and score with BatchNorm statistics recomputed on the fitted batch
(`cxrbox.testing.batchnorm`; the `batchnorm` check says whether training moved them at all).

Step budget: with `adaptive=True` (the checklist's way) a check scores at every eighth of its
budget and stops as soon as its criteria hold, so a model that learns fast stops early and a
slow seed gets the whole budget; it fails only if the criteria do not hold at the end."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor, nn

from cxrbox.boxes import box_iou, cxcywh_to_xyxy, xywh_to_xyxy, xyxy_to_cxcywh
from cxrbox.evaluation.metrics import mean_iou
from cxrbox.testing.batchnorm import recomputed_statistics, running_statistics
from cxrbox.testing.detector import Detector, Prediction
from cxrbox.testing.result import CheckResult, raise_if_failed
from cxrbox.testing.shifted import ShiftedCopies, shifted_copies
from cxrbox.testing.training import TrainingRun, checkpoints, start_run


@dataclass(frozen=True)
class OverfitResult:
    """A tiny-batch overfit run (scored in eval mode after `steps` train_step calls, BatchNorm
    statistics recomputed on the fitted batch).

    On the fitted images: start/end loss (mean of 3 steps), mean IoU, spread of the top box's
    centre and size (max over x/y, w/h). On held-out positions: how the predicted centres follow
    the true ones (`follow_correlation`, the smaller over x and y) and their spread relative to
    the truth's (`heldout_spread_ratio`). `mean_iou_as_trained`: fitted mean IoU with the
    model's own running statistics (None when not measured or no BatchNorm);
    `format_hint`: a box format the predictions fit better than the truth ('' if none).
    """

    loss_start: float
    loss_end: float
    mean_iou: float
    centre_std: float
    size_std: float
    heldout_mean_iou: float
    follow_correlation: float
    heldout_spread_ratio: float
    steps: int = 0
    mean_iou_as_trained: float | None = None
    format_hint: str = ""


def _predict(detector: Detector, model: nn.Module, images: Tensor) -> list[Prediction]:
    """The detector's predictions as float64 CPU tensors (any real dtype in, exact); an image
    may get no box."""
    with torch.no_grad():
        out = detector.predict(model, detector.images_for(images))
    if len(out) != images.shape[0] or any(
        b.ndim != 2 or b.shape[-1] != 4 or s.shape[0] != b.shape[0] for b, s in out
    ):
        raise AssertionError(
            f"predict must return one (boxes [N, 4], scores [N]) per image; got "
            f"{[(tuple(b.shape), tuple(s.shape)) for b, s in out]} for {images.shape[0]} images"
        )
    return [(b.detach().cpu().double(), s.detach().cpu().double()) for b, s in out]


def _top(predictions: list[Prediction]) -> Tensor:
    """[B, 4]: each image's top box; an image without a box gets the empty box (0, 0, 0, 0)."""
    return torch.stack(
        [b[0] if len(b) else torch.zeros(4, dtype=torch.float64) for b, _ in predictions]
    )


# Box formats a pipeline may read the kit's normalized xyxy as. Predictions that fit one of these
# much better than the truth mean the targets reached the loss in that format.
MISREADINGS: dict[str, Callable[[Tensor], Tensor]] = {
    "centre x, centre y, width, height (cxcywh; Ultralytics' 'xywh')": lambda b: cxcywh_to_xyxy(
        b, validate=False
    ),
    "x1, y1, width, height (COCO xywh)": lambda b: xywh_to_xyxy(b, validate=False),
    "y and x swapped": lambda b: b[:, [1, 0, 3, 2]],
}
FORMAT_HINT_MIN_IOU = 0.5  # the misreading must fit at least this well ...
FORMAT_HINT_MARGIN = 0.2  # ... and this much better than the truth itself


def format_hint(top: Tensor, truth: Tensor) -> str:
    """'' or a sentence naming the box format `top` [B, 4] fits better than `truth` [B, 4]."""
    as_truth = float(torch.diagonal(box_iou(top, truth, validate=False)).mean())
    best, name = 0.0, ""
    for label, misread in MISREADINGS.items():
        read = misread(truth).clamp(0, 1)
        iou = float(torch.diagonal(box_iou(top, read, validate=False)).mean())
        if iou > best:
            best, name = iou, label
    if best >= FORMAT_HINT_MIN_IOU and best >= as_truth + FORMAT_HINT_MARGIN:
        return (
            f"the predictions fit the truth read as {name} (IoU {best:.2f} vs {as_truth:.2f} "
            "as xyxy): the targets reach the loss in another box format than the kit's "
            "normalized xyxy"
        )
    return ""


def score(
    detector: Detector,
    model: nn.Module,
    data: ShiftedCopies,
    losses: list[float],
) -> OverfitResult:
    """Score a trained model on the fitted and held-out images (its `scored` weights, eval mode,
    BatchNorm statistics recomputed on the fitted batch and restored afterwards)."""
    scored = detector.scored(model)
    training = model.training
    fitted_images = detector.images_for(data.images)
    scored.eval()
    with recomputed_statistics(scored, lambda: detector.loss(scored, fitted_images, data.boxes)):
        fitted = _predict(detector, scored, data.images)
        heldout = _predict(detector, scored, data.heldout_images)
    model.train(training)
    top = _top(fitted)  # [B, 4]
    held_top = _top(heldout)  # [B, 4]
    cxcywh = xyxy_to_cxcywh(top, validate=False)
    held_centres = xyxy_to_cxcywh(held_top, validate=False)[:, :2]  # [B, 2]
    truth = torch.cat(data.heldout_boxes).double()
    true_centres = xyxy_to_cxcywh(truth, validate=False)[:, :2]  # [B, 2]
    correlation = min(
        float(torch.corrcoef(torch.stack([held_centres[:, k], true_centres[:, k]]))[0, 1])
        for k in range(2)
    )
    spread = held_centres.std(dim=0, unbiased=False) / true_centres.std(dim=0, unbiased=False)
    fitted_iou = mean_iou([b for b, _ in fitted], [s for _, s in fitted], data.boxes)
    return OverfitResult(
        loss_start=float(np.mean(losses[:3])),
        loss_end=float(np.mean(losses[-3:])),
        mean_iou=fitted_iou,
        centre_std=float(cxcywh[:, :2].std(dim=0, unbiased=False).max()),
        size_std=float(cxcywh[:, 2:].std(dim=0, unbiased=False).max()),
        heldout_mean_iou=mean_iou(
            [b for b, _ in heldout], [s for _, s in heldout], data.heldout_boxes
        ),
        follow_correlation=correlation if math.isfinite(correlation) else 0.0,
        heldout_spread_ratio=float(spread.min()),
        steps=len(losses),
        format_hint=format_hint(top, torch.cat(data.boxes).double()),
    )


def fitted_iou_as_trained(
    detector: Detector, model: nn.Module, data: ShiftedCopies
) -> float | None:
    """Fitted mean IoU in eval mode with the model's own BatchNorm running statistics (None
    when the scored model has no BatchNorm layer)."""
    scored = detector.scored(model)
    if not running_statistics(scored):
        return None
    training = model.training
    scored.eval()
    plain = _predict(detector, scored, data.images)
    model.train(training)
    return mean_iou([b for b, _ in plain], [s for _, s in plain], data.boxes)


@dataclass
class Fit:
    """A finished learning run: its last score and what the run recorded."""

    result: OverfitResult
    run: TrainingRun
    statistics_at_end: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)


def fit(
    detector: Detector,
    data: ShiftedCopies,
    steps: int,
    seed: int = 0,
    *,
    adaptive: bool = False,
    passes: Callable[[OverfitResult], bool] | None = None,
) -> Fit:
    """Train a fresh model on the fitted batch with the detector's own step, then score it.
    adaptive: score at every eighth of `steps` (none before the end of the declared warmup
    plus 5 optimizer steps) and stop at the first score `passes` accepts."""
    run = start_run(detector, data.images, data.boxes, seed)
    try:
        first = (detector.warmup_steps + 5) * max(1, detector.accumulation)
        points = checkpoints(steps, first) if adaptive and passes is not None else [steps]
        for point in points:
            run.advance(point - run.calls)
            result = score(detector, run.model, data, run.losses)
            if passes is not None and passes(result):
                break
        statistics = running_statistics(run.model)
        as_trained = fitted_iou_as_trained(detector, run.model, data)
        result = replace(result, mean_iou_as_trained=as_trained)
    finally:
        run.close()
    return Fit(result, run, statistics)


def overfit(detector: Detector, data: ShiftedCopies, steps: int, seed: int = 0) -> OverfitResult:
    """Train a fresh model on the fitted batch with the detector's own step for `steps` calls,
    then score it."""
    return fit(detector, data, steps, seed).result


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


def overfit_problems(r: OverfitResult, t: OverfitThresholds) -> list[str]:
    """What keeps `r` from passing the overfit check (empty: it passes)."""
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
    if problems and r.format_hint:
        problems.append(r.format_hint)
    return problems


def overfit_result(
    r: OverfitResult, data: ShiftedCopies, thresholds: OverfitThresholds, budget: int
) -> CheckResult:
    """The overfit verdict on a scored run."""
    problems = overfit_problems(r, thresholds)
    summary = (
        f"{r.steps} steps (budget {budget}) on {data.images.shape[0]} images: loss "
        f"{r.loss_start:.3f} -> {r.loss_end:.3f}, mean IoU {r.mean_iou:.3f}, held-out "
        f"correlation {r.follow_correlation:.2f}"
    )
    numbers = {**r.__dict__, "budget": budget}
    if problems:
        return CheckResult("overfit", "fail", f"{summary}; " + "; ".join(problems), numbers)
    return CheckResult("overfit", "pass", summary, numbers)


def check_overfit(
    detector: Detector,
    data: ShiftedCopies,
    steps: int = DEFAULT_OVERFIT_STEPS,
    thresholds: OverfitThresholds = DEFAULT_OVERFIT_THRESHOLDS,
    *,
    seed: int = 0,
    adaptive: bool = False,
) -> CheckResult:
    """Loss fell, boxes fit, predictions vary, and they follow the opacity to new positions.
    steps: the budget (exactly that many steps unless `adaptive`)."""
    run = fit(
        detector,
        data,
        steps,
        seed,
        adaptive=adaptive,
        passes=lambda r: not overfit_problems(r, thresholds),
    )
    return overfit_result(run.result, data, thresholds, steps)


def assert_overfits_and_follows(
    detector: Detector,
    data: ShiftedCopies | None = None,
    steps: int | None = None,
    thresholds: OverfitThresholds = DEFAULT_OVERFIT_THRESHOLDS,
) -> CheckResult:
    """Raise AssertionError unless `detector` overfits 8 shifted copies of a synthetic
    radiograph (loss < 30 % of its start, mean IoU >= 0.6, centres spread) and its predictions
    follow the opacity to 8 held-out positions (correlation >= 0.8, spread >= 0.5 of the
    truth's). data: default `detector.overfit_data(0)` or
    `shifted_copies(image_size=detector.image_size)`; steps: the budget, default
    detector.overfit_steps (adaptive: stops once the criteria hold)."""
    if data is None and detector.overfit_data is not None:
        data = detector.overfit_data(0)
    data = data if data is not None else shifted_copies(image_size=detector.image_size)
    steps = steps if steps is not None else detector.overfit_steps
    return raise_if_failed(check_overfit(detector, data, steps, thresholds, adaptive=True))


# Pass marks of `check_position_sensitivity`, measured at 128 px on cxrbox's default config, 60
# steps: grid head held-out mean IoU 0.97, centre correlation 1.00; pooled head (seeds 0-2) mean
# IoU 0.28-0.37 and correlation 0.60-0.97, so the IoU separates them and the correlation backs it.
POSITION_MIN_HELDOUT_IOU = 0.5
POSITION_MIN_CORRELATION = 0.8


def square_copies(image_size: int, seed: int, stride: int) -> ShiftedCopies:
    """A bright square (side image_size / 4) rolled to stride-aligned positions: 8 fitted, 8
    held out."""
    side = image_size // 4
    blob = np.zeros((image_size, image_size), np.uint8)
    blob[:side, :side] = 255
    return shifted_copies(
        8, 8, image_size, seed, step=stride, source=blob, source_box=np.array([0, 0, side, side])
    )


def _found(r: OverfitResult) -> bool:
    return (
        r.heldout_mean_iou >= POSITION_MIN_HELDOUT_IOU
        and r.follow_correlation >= POSITION_MIN_CORRELATION
    )


def check_position_sensitivity(
    detector: Detector,
    image_size: int = 128,
    steps: int = DEFAULT_OVERFIT_STEPS,
    seed: int = 0,
    stride: int = 32,
    *,
    adaptive: bool = False,
) -> CheckResult:
    """A bright square rolled to stride-aligned positions (every `stride` px): fit 8 with the
    detector's own step, then the top box must find it at 8 held-out positions.

    Shifts by whole strides give a head that pools position away nothing but border effects to
    tell positions apart, so a global-pooling head misses held-out positions while a spatial
    head lands on them. (Scoring the fitted images themselves does not work: a pooled head
    memorises them; measured correlation 1.00.)
    """
    copies = square_copies(image_size, seed, stride)
    r = fit(detector, copies, steps, seed, adaptive=adaptive, passes=_found).result
    numbers = {
        "heldout_mean_iou": r.heldout_mean_iou,
        "correlation": r.follow_correlation,
        "heldout_spread_ratio": r.heldout_spread_ratio,
        "fitted_mean_iou": r.mean_iou,
        "steps": r.steps,
        "budget": steps,
    }
    side = image_size // 4
    summary = (
        f"{side} px square fitted at 8 places in {image_size} px images ({r.steps} steps), found "
        f"at 8 held-out ones with mean IoU {r.heldout_mean_iou:.2f} (fitted {r.mean_iou:.2f}), "
        f"centre correlation {r.follow_correlation:.2f}"
    )
    if not _found(r):
        cause = "the head does not place boxes where the content is"
        if r.format_hint:
            cause = r.format_hint
        elif r.mean_iou < POSITION_MIN_HELDOUT_IOU:
            cause += f" (it does not fit the fitted images either: IoU {r.mean_iou:.2f})"
        return CheckResult(
            "position_sensitivity",
            "fail",
            f"{summary} (need IoU >= {POSITION_MIN_HELDOUT_IOU}, correlation >= "
            f"{POSITION_MIN_CORRELATION}): {cause}",
            numbers,
        )
    return CheckResult("position_sensitivity", "pass", summary, numbers)


def assert_position_sensitive(
    detector: Detector, image_size: int | None = None, steps: int | None = None, seed: int = 0
) -> CheckResult:
    """Raise AssertionError unless a square fitted at 8 stride-aligned places is found at 8
    held-out ones (mean IoU >= 0.5, centre correlation >= 0.8): a head that pools position away
    fails. image_size: default detector.image_size; steps: the budget, default
    detector.overfit_steps (adaptive); the shift is detector.stride."""
    steps = steps if steps is not None else detector.overfit_steps
    size = image_size if image_size is not None else detector.image_size
    return raise_if_failed(
        check_position_sensitivity(detector, size, steps, seed, detector.stride, adaptive=True)
    )
