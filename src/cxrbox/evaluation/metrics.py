"""Evaluation metrics on per-image lists: mean IoU, corner MAE in pixels, the RSNA mAP, spread.

Inputs, image by image (numpy arrays or torch tensors, computed in float64 on the CPU):
`preds[i]` (Tensor[P_i, 4]): predicted xyxy boxes, ordered; `scores[i]` (Tensor[P_i]): their
confidences; `truths[i]` (Tensor[T_i, 4]): ground-truth xyxy boxes, ordered, in the same unit as
the predictions. P_i = 0 or T_i = 0 (an empty [0, 4] array, or `[]`) are allowed.

IoU here is inter / union exactly (float64, no epsilon bias; 0 when both boxes have zero area),
so threshold comparisons are exact. Predictions with equal scores keep their index order.

Top-k matching (`mean_iou`, `corner_mae`): an image with T truth boxes keeps its k = T
highest-scoring predictions; each truth box is matched to the one of those with the highest IoU
(ties: the higher score). Two truths may match the same prediction. A truth box of an image
with no prediction has IoU 0 in `mean_iou` and is excluded from `corner_mae` and counted
(`EvalResult.n_missed`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from cxrbox.boxes import box_iou, check_box_shape, check_box_values, xyxy_to_cxcywh
from cxrbox.errors import BoxFormatError, InputValueError
from cxrbox.evaluation.coco import coco_map

__all__ = [
    "RSNA_IOU_THRESHOLDS",
    "EvalResult",
    "RankedMatches",
    "check_thresholds",
    "corner_mae",
    "evaluate_predictions",
    "mean_iou",
    "prediction_spread",
    "rsna_image_score",
    "rsna_map",
    "rsna_true_positive_prefixes",
]

# The RSNA Pneumonia Detection Challenge thresholds, 0.40 to 0.75 in steps of 0.05, written out
# so that each is the exact decimal (np.arange(0.40, 0.751, 0.05) gives e.g. 0.7000000000000001).
RSNA_IOU_THRESHOLDS: tuple[float, ...] = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75)

# box_iou divides by (union + eps) and needs eps > 0. In float64 this eps vanishes next to any
# union above ~1e-284, so inter / union is exact, while 0 / eps keeps two zero-area boxes at 0.
_VANISHING_EPS = 1e-300

BoxesLike = Any  # np.ndarray | Tensor | nested sequence


class _Image(NamedTuple):
    """One validated image: pred [P, 4] by descending score, score [P], truth [T, 4], iou [P, T]."""

    pred: np.ndarray
    score: np.ndarray
    truth: np.ndarray
    iou: np.ndarray


def _as_array(value: BoxesLike, shape: tuple[int, ...]) -> np.ndarray:
    """float64 numpy copy of a tensor, array or nested list; empty input gets `shape`."""
    if isinstance(value, Tensor):
        array = value.detach().to("cpu", torch.float64).numpy()
    else:
        array = np.asarray(value, dtype=np.float64)
    return array.reshape(shape) if array.size == 0 else array


def _iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise inter / union of float64 boxes, exactly; 0 where both have zero area. [N, M]."""
    if boxes1.shape[0] == 0 or boxes2.shape[0] == 0:
        return np.zeros((boxes1.shape[0], boxes2.shape[0]))
    iou = box_iou(
        torch.from_numpy(boxes1), torch.from_numpy(boxes2), eps=_VANISHING_EPS, validate=False
    )
    return iou.numpy()


def _images(
    preds: Sequence[BoxesLike], scores: Sequence[BoxesLike], truths: Sequence[BoxesLike]
) -> list[_Image]:
    """Validate every image (errors name it, e.g. `truths[3]`); sort predictions; IoU once."""
    if not len(preds) == len(scores) == len(truths):
        raise InputValueError(
            f"preds, scores and truths must list the same images, got lengths "
            f"{len(preds)}, {len(scores)}, {len(truths)}"
        )
    named: list[tuple[str, np.ndarray]] = []
    ranked: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for i, (p, s, t) in enumerate(zip(preds, scores, truths, strict=True)):
        pred, score, truth = _as_array(p, (0, 4)), _as_array(s, (0,)), _as_array(t, (0, 4))
        check_box_shape(f"preds[{i}]", torch.from_numpy(pred), rank=2)
        check_box_shape(f"truths[{i}]", torch.from_numpy(truth), rank=2)
        if score.shape != (pred.shape[0],):
            raise InputValueError(
                f"scores[{i}] must have shape [{pred.shape[0]}] (one per box), got {score.shape}"
            )
        if not np.isfinite(score).all():
            raise InputValueError(f"scores[{i}] must be finite, got NaN/Inf")
        named += [(f"preds[{i}]", pred), (f"truths[{i}]", truth)]
        order = np.argsort(-score, kind="stable")  # descending; ties keep index order
        ranked.append((pred[order], score[order], truth))
    # one value check for all boxes; on failure, find the image to name
    if named:
        try:
            everything = np.concatenate([a for _, a in named])
            check_box_values("boxes", torch.from_numpy(everything), validate=True, require="xyxy")
        except BoxFormatError:
            for name, array in named:
                check_box_values(name, torch.from_numpy(array), validate=True, require="xyxy")
            raise
    return [_Image(pred, score, truth, _iou(pred, truth)) for pred, score, truth in ranked]


def _match_top_k(image: _Image) -> tuple[np.ndarray, np.ndarray]:
    """Top-k matching: best IoU [T] and matched index into `image.pred` [T] (-1: no pred)."""
    n_truth = image.truth.shape[0]
    top = image.iou[:n_truth].T  # [T, k], k = min(T, P)
    if top.shape[1] == 0:
        return np.zeros(n_truth), np.full(n_truth, -1)
    index = np.argmax(top, axis=1)  # first maximum: the higher score among ties
    return top[np.arange(n_truth), index], index


def mean_iou(
    preds: Sequence[BoxesLike], scores: Sequence[BoxesLike], truths: Sequence[BoxesLike]
) -> float:
    """Mean over all truth boxes (per box, not per image) of the top-k matched IoU.

    Images without truth boxes are ignored; a truth box with no prediction counts as IoU 0.
    NaN if no image has a truth box.
    """
    return _mean_iou(_images(preds, scores, truths))


def _mean_iou(images: list[_Image]) -> float:
    best = np.concatenate([_match_top_k(image)[0] for image in images] + [np.zeros(0)])
    return float(best.mean()) if best.size else math.nan


def _sizes(image_sizes: Any, n_images: int) -> list[tuple[float, float]]:
    """(width, height) for every image from one pair or a per-image sequence of pairs."""
    if len(image_sizes) == 2 and all(isinstance(v, int | float) for v in image_sizes):
        sizes = [tuple(image_sizes)] * n_images
    else:
        sizes = [tuple(s) for s in image_sizes]
    if len(sizes) != n_images or any(len(s) != 2 for s in sizes):
        raise InputValueError(
            f"image_sizes must be one (width, height) pair or one per image ({n_images}), "
            f"got {image_sizes!r:.200}"
        )
    for w, h in sizes:
        if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
            raise InputValueError(f"image_sizes must hold finite sizes > 0, got ({w}, {h})")
    return sizes  # type: ignore[return-value]


def _corner_errors(
    images: list[_Image], sizes: list[tuple[float, float]]
) -> tuple[np.ndarray, int]:
    """Per matched truth box, mean |corner error| in pixels [M]; and the count of missed truths."""
    errors, missed = [np.zeros(0)], 0
    for image, (width, height) in zip(images, sizes, strict=True):
        if image.pred.shape[0] == 0:
            missed += image.truth.shape[0]
            continue
        _, index = _match_top_k(image)
        scale = np.array([width, height, width, height], dtype=np.float64)
        errors.append((np.abs(image.pred[index] - image.truth) * scale).mean(axis=1))  # [T]
    return np.concatenate(errors), missed


def corner_mae(
    preds: Sequence[BoxesLike],
    scores: Sequence[BoxesLike],
    truths: Sequence[BoxesLike],
    image_sizes: tuple[float, float] | Sequence[tuple[float, float]],
) -> float:
    """Mean absolute corner error in pixels between each truth box and its top-k match.

    image_sizes: (width, height) multiplying normalized x and y, one pair for all images or one
    per image; (1, 1) for boxes already in pixels. Truth boxes of an image with no prediction
    are excluded (see `EvalResult.n_missed`). NaN if no truth box was matched.
    """
    images = _images(preds, scores, truths)
    errors, _ = _corner_errors(images, _sizes(image_sizes, len(images)))
    return float(errors.mean()) if errors.size else math.nan


def check_thresholds(thresholds: Sequence[float]) -> np.ndarray:
    values = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if values.size == 0 or not bool(((values >= 0) & (values <= 1)).all()):
        raise InputValueError(f"thresholds must be a non-empty list in [0, 1], got {thresholds!r}")
    return values


def _true_positive_prefixes(image: _Image, thresholds: np.ndarray) -> np.ndarray:
    """True positives of the first p predictions (by score), p = 0..P: int64 [P + 1, n_thr].

    The competition's greedy matching: predictions in descending confidence, each matching the
    unmatched truth with the highest IoU > t. Row P is the whole image's count; a score
    threshold keeps a prefix, so its count is one of these rows.
    """
    n_truth = image.iou.shape[1]
    counts = np.zeros((image.iou.shape[0] + 1, thresholds.size), dtype=np.int64)
    matched = np.zeros((thresholds.size, n_truth), dtype=bool)  # [n_thr, T]
    if n_truth == 0:
        return counts
    rows = np.arange(thresholds.size)
    for p, iou in enumerate(image.iou):  # [T] per prediction, descending confidence
        hit = (iou[None, :] > thresholds[:, None]) & ~matched  # [n_thr, T]
        best = np.argmax(np.where(hit, iou[None, :], -1.0), axis=1)  # [n_thr]
        found = hit.any(axis=1)  # [n_thr]
        matched[rows[found], best[found]] = True
        counts[p + 1] = counts[p] + found
    return counts


def _rsna_score(image: _Image, thresholds: np.ndarray) -> float | None:
    """RSNA score of one image; None if it has neither truths nor predictions."""
    n_pred, n_truth = image.iou.shape
    if n_pred == 0 and n_truth == 0:
        return None
    if n_pred == 0 or n_truth == 0:
        return 0.0
    tp = _true_positive_prefixes(image, thresholds)[-1]  # [n_thr]
    # TP / (TP + FP + FN) with FP = P - TP and FN = T - TP
    return float(np.mean(tp / (n_pred + n_truth - tp)))


class RankedMatches(NamedTuple):
    """One image for a score-threshold sweep: scores [P] descending, true positives of each
    prefix [P + 1, n_iou] (see `rsna_true_positive_prefixes`), number of truth boxes."""

    scores: np.ndarray
    true_positives: np.ndarray
    n_truth: int


def rsna_true_positive_prefixes(
    preds: Sequence[BoxesLike],
    scores: Sequence[BoxesLike],
    truths: Sequence[BoxesLike],
    thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
) -> list[RankedMatches]:
    """Per image, the RSNA matching's true positives after each prefix of its ranked boxes.

    Inputs as in `rsna_map`. A score threshold keeps a prefix of the ranked boxes, so this is
    all a threshold sweep needs (`cxrbox.evaluation.threshold`) and the matching is written once.
    """
    values = check_thresholds(thresholds)
    return [
        RankedMatches(image.score, _true_positive_prefixes(image, values), image.truth.shape[0])
        for image in _images(preds, scores, truths)
    ]


def rsna_image_score(
    pred: BoxesLike,
    score: BoxesLike,
    truth: BoxesLike,
    thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
) -> float | None:
    """The RSNA score of one image (see `rsna_map`); None when it has no truth and no prediction."""
    (image,) = _images([pred], [score], [truth])
    return _rsna_score(image, check_thresholds(thresholds))


def rsna_map(
    preds: Sequence[BoxesLike],
    scores: Sequence[BoxesLike],
    truths: Sequence[BoxesLike],
    thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
) -> float:
    """RSNA Pneumonia Detection Challenge metric: mean over images of mean_t TP/(TP+FP+FN).

    Per image and threshold t, predictions are taken in descending confidence; each is a true
    positive if some still-unmatched truth box has IoU > t (strictly greater, as the competition
    description says "greater than"; it takes the unmatched truth with the highest IoU), else a
    false positive; unmatched truths are false negatives. An image with neither truths nor
    predictions is skipped; with truths but no prediction, or predictions but no truth, it
    scores 0. NaN if no image is scored.

    The widely copied Kaggle kernel (chenyc15, "mean-average-precision-metric") differs: it uses
    IoU >= t and loops over truths in file order, each taking the most confident unmatched
    prediction with IoU >= t.
    """
    return _rsna_map(_images(preds, scores, truths), check_thresholds(thresholds))


def _rsna_map(images: list[_Image], thresholds: np.ndarray) -> float:
    per_image = [_rsna_score(image, thresholds) for image in images]
    scored = [s for s in per_image if s is not None]
    return float(np.mean(scored)) if scored else math.nan


def prediction_spread(boxes_top1: BoxesLike) -> dict[str, float]:
    """Std over images (population, ddof=0) of the top box's normalized cx, cy, w, h.

    boxes_top1 (Tensor[N, 4]): xyxy, normalized, one per image. Near-zero values mean every
    image gets the same box (collapse). N = 0 gives NaN; N = 1 gives 0.
    """
    boxes = torch.from_numpy(_as_array(boxes_top1, (0, 4)))
    check_box_shape("boxes_top1", boxes, rank=2)
    check_box_values("boxes_top1", boxes, validate=True, require="xyxy")
    if boxes.shape[0] == 0:
        return dict.fromkeys(("cx", "cy", "w", "h"), math.nan)
    std = xyxy_to_cxcywh(boxes, validate=False).std(dim=0, unbiased=False)  # [4]
    return {name: float(v) for name, v in zip(("cx", "cy", "w", "h"), std, strict=True)}


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation pass (see the module docstring for the matching rules).

    mean_iou: per truth box, positive images only. mae_px: corner MAE in pixels of matched truth
    boxes. rsna_map: the competition metric. coco_map_50, coco_map_50_95: COCO mAP@0.5 and
    mAP@[.5:.95] of every detection given, ranked by score (`cxrbox.evaluation.coco`; NaN
    without truth boxes). n_images: images evaluated; n_positive: those with a truth box;
    n_missed: truth boxes in images with no prediction (excluded from mae_px).
    prediction_std: `prediction_spread` of each image's top prediction (images with one).
    """

    mean_iou: float
    mae_px: float
    rsna_map: float
    coco_map_50: float
    coco_map_50_95: float
    n_images: int
    n_positive: int
    n_missed: int
    prediction_std: dict[str, float]


def evaluate_predictions(
    preds: Sequence[BoxesLike],
    scores: Sequence[BoxesLike],
    truths: Sequence[BoxesLike],
    image_sizes: tuple[float, float] | Sequence[tuple[float, float]],
    thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
) -> EvalResult:
    """All metrics at once. Boxes normalized xyxy; image_sizes as in `corner_mae` (COCO mAP
    is computed on the boxes in those pixels, as COCO's areas are)."""
    images = _images(preds, scores, truths)
    values = check_thresholds(thresholds)
    sizes = _sizes(image_sizes, len(images))
    errors, missed = _corner_errors(images, sizes)
    top1 = np.concatenate([image.pred[:1] for image in images] + [np.zeros((0, 4))])
    scales = [np.array([w, h, w, h], dtype=np.float64) for w, h in sizes]
    coco = coco_map(
        [image.pred * scale for image, scale in zip(images, scales, strict=True)],
        [image.score for image in images],
        [image.truth * scale for image, scale in zip(images, scales, strict=True)],
    )
    return EvalResult(
        mean_iou=_mean_iou(images),
        mae_px=float(errors.mean()) if errors.size else math.nan,
        rsna_map=_rsna_map(images, values),
        coco_map_50=coco.map_50,
        coco_map_50_95=coco.map_50_95,
        n_images=len(images),
        n_positive=sum(1 for image in images if image.truth.shape[0]),
        n_missed=missed,
        prediction_std=prediction_spread(top1),
    )
