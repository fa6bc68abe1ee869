"""Choosing the score threshold on validation: RSNA mAP, precision and recall over a sweep.

The RSNA metric scores every box on a negative image as a false positive (the image scores 0),
and most RSNA images are negative, so the score threshold decides the metric as much as the
boxes do. After each validation the trainer sweeps `SWEEP_THRESHOLDS`, keeps the threshold with
the best RSNA mAP (ties: the lowest) and stores it with the checkpoint; `eval`, `predict` and
`export` use it unless told otherwise.

Detections of an image are sorted by descending score, so a threshold keeps a prefix of them
and the competition's greedy matching of that prefix is the matching of the whole list stopped
early. `sweep_score_thresholds` therefore walks each image's detections once and reads every
threshold's result off the running counts: the same numbers as `cxrbox.evaluation.metrics.rsna_map`
on the filtered detections, in one pass.

Precision and recall are over boxes, averaged over the RSNA IoU thresholds (0.40 .. 0.75):
precision = TP / (TP + FP) (1 when no box is kept), recall = TP / (TP + FN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxrbox.errors import CheckpointError
from cxrbox.evaluation.metrics import (
    RSNA_IOU_THRESHOLDS,
    BoxesLike,
    check_thresholds,
    rsna_true_positive_prefixes,
)

__all__ = ["SWEEP_THRESHOLDS", "ScoreThreshold", "ThresholdSweep", "sweep_score_thresholds"]

# 0.05 .. 0.95 in steps of 0.05, written as exact decimals (see metrics.RSNA_IOU_THRESHOLDS).
SWEEP_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


@dataclass(frozen=True)
class ThresholdSweep:
    """RSNA mAP, precision and recall at each score threshold (all lists of the same length).

    n_images: images evaluated. `best` is the index of the chosen threshold.
    """

    thresholds: list[float]
    rsna_map: list[float]
    precision: list[float]
    recall: list[float]
    n_images: int

    @property
    def best(self) -> int:
        """Index of the highest RSNA mAP (the lowest threshold among ties; NaN never wins)."""
        values = [v if math.isfinite(v) else -math.inf for v in self.rsna_map]
        return int(np.argmax(values))

    @property
    def best_threshold(self) -> float:
        return self.thresholds[self.best]

    @property
    def best_rsna_map(self) -> float:
        return self.rsna_map[self.best]

    def record(self) -> dict[str, Any]:
        """The sweep as a JSON-clean dict (for metrics.jsonl and the threshold plot)."""
        return {
            "thresholds": self.thresholds,
            "rsna_map": self.rsna_map,
            "precision": self.precision,
            "recall": self.recall,
            "n_images": self.n_images,
            "best_threshold": self.best_threshold,
        }


def sweep_score_thresholds(
    preds: Sequence[BoxesLike],
    scores: Sequence[BoxesLike],
    truths: Sequence[BoxesLike],
    thresholds: Sequence[float] = SWEEP_THRESHOLDS,
    iou_thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
) -> ThresholdSweep:
    """RSNA mAP, precision and recall of the detections scoring >= each threshold.

    preds[i] (Tensor[P_i, 4]), scores[i] (Tensor[P_i]), truths[i] (Tensor[T_i, 4]): as in
    `cxrbox.evaluation.metrics.rsna_map` (normalized or pixel xyxy, the same unit for both).
    """
    score_bars = check_thresholds(thresholds)
    n_bars = score_bars.size
    image_sum = np.zeros(n_bars)  # sum over scored images of the RSNA image score
    image_count = np.zeros(n_bars)  # images scored (not empty on both sides)
    tp = np.zeros(n_bars)  # summed over images and IoU thresholds
    n_kept = np.zeros(n_bars)
    n_truth = 0
    matches = rsna_true_positive_prefixes(preds, scores, truths, iou_thresholds)
    for ranked_scores, tp_prefix, image_truths in matches:
        # kept[b]: detections scoring >= bar b; they are a prefix (scores descend)
        kept = (ranked_scores[None, :] >= score_bars[:, None]).sum(axis=1)  # [n_bars]
        hits = tp_prefix[kept]  # [n_bars, n_iou]: true positives of that prefix
        n_truth += image_truths
        tp += hits.sum(axis=1)
        n_kept += kept
        scored = (kept > 0) | (image_truths > 0)
        per_iou = hits / np.maximum(kept[:, None] + image_truths - hits, 1)  # [n_bars, n_iou]
        image_sum += np.where(scored, per_iou.mean(axis=1), 0.0)
        image_count += scored
    n_iou = len(iou_thresholds)
    with np.errstate(invalid="ignore", divide="ignore"):
        rsna = np.where(image_count > 0, image_sum / np.maximum(image_count, 1), math.nan)
        precision = np.where(n_kept > 0, tp / np.maximum(n_kept * n_iou, 1), 1.0)
        recall = tp / (n_truth * n_iou) if n_truth else np.full(n_bars, math.nan)
    return ThresholdSweep(
        thresholds=[float(v) for v in score_bars],
        rsna_map=[float(v) for v in rsna],
        precision=[float(v) for v in precision],
        recall=[float(v) for v in recall],
        n_images=len(preds),
    )


@dataclass(frozen=True)
class ScoreThreshold:
    """The score threshold a checkpoint carries: the config's fixed one, or tuned on validation.

    Stored in checkpoints as `record()`: {"value", "tuned"} and, when tuned, {"epoch",
    "rsna_map", "n_images"} of the validation that chose it (the format of older checkpoints).
    """

    value: float
    tuned: bool = False
    epoch: int | None = None  # 1-based epoch whose validation chose it (tuned only)
    rsna_map: float | None = None  # RSNA mAP at `value` on that validation (tuned only)
    n_images: int | None = None  # validation images of that sweep (tuned only)

    @classmethod
    def fixed(cls, value: float) -> ScoreThreshold:
        """The config's threshold, before any validation or without tuning."""
        return cls(value=float(value))

    @classmethod
    def from_sweep(cls, sweep: ThresholdSweep, epoch: int) -> ScoreThreshold:
        """The sweep's best threshold, chosen on the validation of `epoch`."""
        return cls(sweep.best_threshold, True, epoch, sweep.best_rsna_map, sweep.n_images)

    @classmethod
    def from_record(cls, record: Any, source: str) -> ScoreThreshold:
        """Read a checkpoint's `score_threshold` entry; CheckpointError naming `source` if bad."""
        try:
            if record.get("tuned"):
                return cls(
                    float(record["value"]),
                    True,
                    int(record["epoch"]),
                    float(record["rsna_map"]),
                    int(record["n_images"]),
                )
            return cls.fixed(float(record["value"]))
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"{source}: its score_threshold entry {record!r} is not a threshold record "
                "(expected {'value': float, 'tuned': bool, ...})"
            ) from error

    def record(self) -> dict[str, Any]:
        """The JSON-clean entry stored in checkpoints."""
        if not self.tuned:
            return {"value": self.value, "tuned": False}
        return {
            "value": self.value,
            "tuned": True,
            "epoch": self.epoch,
            "rsna_map": self.rsna_map,
            "n_images": self.n_images,
        }

    def source(self) -> str:
        """Where the threshold came from, in words (for `eval` and `predict`)."""
        if not self.tuned:
            return "the training config's (not tuned on validation)"
        return (
            f"tuned on validation: best RSNA mAP {self.rsna_map:.4f} on "
            f"{self.n_images} images at epoch {self.epoch}"
        )
