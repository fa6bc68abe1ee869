"""COCO-style box mAP through pycocotools: mAP@0.5 and mAP@[.5:.95], one class.

These are the numbers users of Ultralytics (`metrics/mAP50(B)`, `metrics/mAP50-95(B)`),
detectron2, torchvision's references and MONAI compare detectors on. They are computed by
pycocotools' own `COCOeval` (the reference implementation, BSD-2-Clause), not re-implemented:

- a prediction matches an unmatched truth box when IoU >= t (COCO's rule; the RSNA metric in
  `cxrbox.evaluation.metrics` uses IoU > t), greedily by descending score;
- average precision is the 101-point interpolated area under the precision-recall curve of all
  images pooled (every detection of every image ranked by score);
- mAP@[.5:.95] averages the 10 IoU thresholds 0.50, 0.55, ..., 0.95; "all" object areas, up to
  100 detections per image. The values equal `COCOeval.summarize()`'s `stats[0]` (@[.5:.95])
  and `stats[1]` (@0.5), which the tests check.

No score threshold is applied: COCO mAP ranks every detection it is given (the trainer passes
all post-NMS detections, as Ultralytics validates at conf 0.001). Images without truth boxes
count: each detection on them is a false positive. With no truth box at all, AP is undefined
and both values are NaN. pycocotools prints progress on stdout; it is silenced here.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxrbox.errors import InputValueError

__all__ = ["CocoMap", "coco_map"]

_CATEGORY = 1  # the one class ("opacity"); COCO ids start at 1
_ALL_AREAS = [0.0, 1e5**2]  # pycocotools' "all" area range


@dataclass(frozen=True)
class CocoMap:
    """map_50: AP at IoU 0.5; map_50_95: AP averaged over IoU 0.50:0.05:0.95 (NaN: no truth)."""

    map_50: float
    map_50_95: float


def _xyxy_array(value: Any, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    array = array.reshape(0, 4) if array.size == 0 else array
    if array.ndim != 2 or array.shape[1] != 4:
        raise InputValueError(f"{name}: expected xyxy boxes [N, 4], got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputValueError(f"{name}: boxes must be finite, got NaN/Inf")
    if (array[:, 2] < array[:, 0]).any() or (array[:, 3] < array[:, 1]).any():
        raise InputValueError(f"{name}: expected xyxy boxes with x1 <= x2 and y1 <= y2")
    return array


def _annotations(boxes: np.ndarray, image_id: int, first_id: int) -> list[dict[str, Any]]:
    """COCO annotations (xywh, area) of one image's xyxy boxes; ids from `first_id` (>= 1:
    COCOeval records matches by id, so id 0 would read as unmatched)."""
    wh = boxes[:, 2:] - boxes[:, :2]
    return [
        {
            "id": first_id + i,
            "image_id": image_id,
            "category_id": _CATEGORY,
            "bbox": [float(x1), float(y1), float(w), float(h)],
            "area": float(w * h),
            "iscrowd": 0,
        }
        for i, ((x1, y1), (w, h)) in enumerate(zip(boxes[:, :2], wh, strict=True))
    ]


def _coco(images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {
        "images": images,
        "categories": [{"id": _CATEGORY, "name": "opacity"}],
        "annotations": annotations,
    }
    coco.createIndex()
    return coco


def coco_map(preds: Sequence[Any], scores: Sequence[Any], truths: Sequence[Any]) -> CocoMap:
    """COCO mAP@0.5 and mAP@[.5:.95] of per-image detections (see the module docstring).

    preds[i] (Tensor or array [P_i, 4]): xyxy boxes of image i; scores[i] [P_i]: their
    confidences; truths[i] [T_i, 4]: its truth boxes, xyxy in the same unit (pixels or
    normalized: IoU does not depend on it; areas are only used for the "all" range).
    P_i = 0 or T_i = 0 are allowed. Raises InputValueError for mismatched lengths or shapes,
    non-finite values or x2 < x1.
    """
    from pycocotools.cocoeval import COCOeval

    if not len(preds) == len(scores) == len(truths):
        raise InputValueError(
            f"preds, scores and truths must list the same images, got lengths "
            f"{len(preds)}, {len(scores)}, {len(truths)}"
        )
    images: list[dict[str, Any]] = []
    gt: list[dict[str, Any]] = []
    dt: list[dict[str, Any]] = []
    for i, (p, s, t) in enumerate(zip(preds, scores, truths, strict=True)):
        pred, truth = _xyxy_array(p, f"preds[{i}]"), _xyxy_array(t, f"truths[{i}]")
        score = np.asarray(s, dtype=np.float64).reshape(-1)
        if score.shape != (pred.shape[0],) or not np.isfinite(score).all():
            raise InputValueError(
                f"scores[{i}]: expected {pred.shape[0]} finite scores (one per box), got "
                f"shape {score.shape}"
            )
        images.append({"id": i + 1})
        gt += _annotations(truth, i + 1, len(gt) + 1)
        found = _annotations(pred, i + 1, len(dt) + 1)
        for annotation, value in zip(found, score, strict=True):
            annotation["score"] = float(value)
        dt += found
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress by print
        evaluation = COCOeval(_coco(images, gt), _coco(images, dt), iouType="bbox")
        evaluation.params.areaRng, evaluation.params.areaRngLbl = [_ALL_AREAS], ["all"]
        evaluation.params.maxDets = [100]
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][:, :, 0, 0, 0]  # [T=10 IoU thresholds, R=101 recalls]
    return CocoMap(map_50=_mean_defined(precision[:1]), map_50_95=_mean_defined(precision))


def _mean_defined(precision: np.ndarray) -> float:
    """Mean of the precisions pycocotools defined (-1 marks 'no truth'), as `summarize` takes."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else math.nan
