"""Plain-loop references for the RSNA metric, written for clarity, not speed (tests only)."""

from __future__ import annotations


def iou_exact(a: list[float], b: list[float]) -> float:
    """inter / union of two xyxy boxes; 0 when the union is empty."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0.0, min(a[3], b[3]) - max(a[1], b[1])
    )
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def rsna_true_positives(preds, scores, truths, t: float) -> int:
    """Predictions by descending confidence (index order on ties), each taking the unmatched
    truth with the highest IoU > t (first in index order on ties); the number matched."""
    order = sorted(range(len(preds)), key=lambda i: (-scores[i], i))
    matched = [False] * len(truths)
    tp = 0
    for i in order:
        best, best_iou = None, -1.0
        for j, truth in enumerate(truths):
            iou = iou_exact(preds[i], truth)
            if not matched[j] and iou > t and iou > best_iou:
                best, best_iou = j, iou
        if best is not None:
            matched[best] = True
            tp += 1
    return tp


def rsna_reference(preds, scores, truths, thresholds) -> float | None:
    """One image's RSNA score: mean over thresholds of TP / (TP + FP + FN); None when empty."""
    if not preds and not truths:
        return None
    total = 0.0
    for t in thresholds:
        tp = rsna_true_positives(preds, scores, truths, t)
        fp, fn = len(preds) - tp, len(truths) - tp
        total += tp / (tp + fp + fn)
    return total / len(thresholds)
