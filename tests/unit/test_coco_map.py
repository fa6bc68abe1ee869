"""cxrbox.evaluation.coco: COCO mAP through pycocotools, checked on hand-computed cases.

Average precision here is COCO's 101-point interpolation: the mean over recall levels
0, 0.01, ..., 1 of the best precision at a recall at least that high (0 beyond the last recall
reached). mAP@[.5:.95] averages IoU thresholds 0.50, 0.55, ..., 0.95, matching when IoU >= t.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cxrbox.errors import InputValueError
from cxrbox.evaluation.coco import coco_map
from cxrbox.evaluation.metrics import evaluate_predictions

EMPTY = np.zeros((0, 4))
NO_SCORES = np.zeros(0)
BOX = [0.0, 0.0, 10.0, 10.0]


def test_one_perfect_match_scores_one_at_every_threshold():
    result = coco_map([[BOX]], [[0.9]], [[BOX]])
    assert result.map_50 == pytest.approx(1.0)
    assert result.map_50_95 == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("truth_height", "thresholds_met"),
    [
        (6.25, 3),  # IoU 62.5 / 100 = 0.625 >= 0.50, 0.55, 0.60
        (5.8, 2),  # IoU 0.58 >= 0.50, 0.55
    ],
)
def test_one_box_counts_the_iou_thresholds_it_reaches(truth_height, thresholds_met):
    result = coco_map([[BOX]], [[0.9]], [[[0.0, 0.0, 10.0, truth_height]]])
    assert result.map_50 == pytest.approx(1.0)
    assert result.map_50_95 == pytest.approx(thresholds_met / 10)


def test_iou_equal_to_the_threshold_matches_as_coco_rules():
    # IoU exactly 1/2: COCO matches at IoU >= 0.5 (the RSNA metric, IoU > t, would not)
    result = coco_map([[[0.0, 0.0, 1.0, 1.0]]], [[0.9]], [[[0.0, 0.0, 2.0, 1.0]]])
    assert result.map_50 == pytest.approx(1.0)
    assert result.map_50_95 == pytest.approx(0.1)


def test_no_predictions_score_zero():
    result = coco_map([EMPTY, EMPTY], [NO_SCORES, NO_SCORES], [[BOX], EMPTY])
    assert (result.map_50, result.map_50_95) == (0.0, 0.0)


def test_a_higher_scored_box_on_an_image_without_truth_halves_precision():
    # ranked: the false positive (0.95), then the true positive: precision 1/2 at recall 1
    result = coco_map([[BOX], [[0.0, 0.0, 5.0, 5.0]]], [[0.9], [0.95]], [[BOX], EMPTY])
    assert result.map_50 == pytest.approx(0.5)
    assert result.map_50_95 == pytest.approx(0.5)


def test_a_lower_scored_box_on_an_image_without_truth_costs_nothing():
    # ranked: the true positive first (precision 1 at recall 1), the false positive after it
    result = coco_map([[BOX], [[0.0, 0.0, 5.0, 5.0]]], [[0.9], [0.5]], [[BOX], EMPTY])
    assert result.map_50 == pytest.approx(1.0)


def test_no_truth_box_anywhere_is_nan():
    result = coco_map([[BOX], EMPTY], [[0.9], NO_SCORES], [EMPTY, EMPTY])
    assert math.isnan(result.map_50) and math.isnan(result.map_50_95)


def _summarize_with_default_params(preds, scores, truths) -> tuple[float, float]:
    """pycocotools run as its README does (default params, summarize): stats[1], stats[0]."""
    images = [{"id": i + 1} for i in range(len(preds))]
    gt, dt = [], []
    for i, (pred, score, truth) in enumerate(zip(preds, scores, truths, strict=True)):
        for x1, y1, x2, y2 in truth:
            box = [x1, y1, x2 - x1, y2 - y1]
            gt.append({"id": len(gt) + 1, "image_id": i + 1, "category_id": 1, "bbox": box,
                       "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
        for (x1, y1, x2, y2), s in zip(pred, score, strict=True):
            dt.append({"image_id": i + 1, "category_id": 1, "score": s,
                       "bbox": [x1, y1, x2 - x1, y2 - y1]})  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        truth_set = COCO()
        truth_set.dataset = {"images": images, "annotations": gt, "categories": [{"id": 1}]}
        truth_set.createIndex()
        evaluation = COCOeval(truth_set, truth_set.loadRes(dt), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats[1], evaluation.stats[0]


def test_equals_pycocotools_summarize_with_its_default_parameters():
    rng = np.random.default_rng(0)
    preds, scores, truths = [], [], []
    for _ in range(40):  # pixel boxes of a 1024 px image, some images without truth
        truth = rng.uniform(0, 600, (int(rng.integers(0, 3)), 2))
        truth = np.concatenate([truth, truth + rng.uniform(50, 400, truth.shape)], axis=1)
        jitter = rng.normal(0, 30, (truth.shape[0], 4))
        extra = rng.uniform(0, 500, (int(rng.integers(0, 3)), 2))
        false = np.concatenate([extra, extra + 200], axis=1)
        pred = np.concatenate([truth + jitter, false]).clip(0, 1024)
        preds.append(pred.tolist())
        scores.append(rng.uniform(0, 1, len(pred)).tolist())
        truths.append(truth.tolist())
    result = coco_map(preds, scores, truths)
    map_50, map_50_95 = _summarize_with_default_params(preds, scores, truths)
    assert 0.0 < result.map_50_95 < result.map_50 < 1.0  # a case that tells thresholds apart
    assert result.map_50 == pytest.approx(map_50, abs=1e-12)
    assert result.map_50_95 == pytest.approx(map_50_95, abs=1e-12)


def test_pycocotools_progress_does_not_reach_stdout(capsys):
    coco_map([[BOX]], [[0.9]], [[BOX]])
    assert capsys.readouterr().out == ""


def test_inputs_are_checked_naming_the_image():
    with pytest.raises(InputValueError, match="same images"):
        coco_map([EMPTY], [NO_SCORES, NO_SCORES], [EMPTY])
    with pytest.raises(InputValueError, match=r"truths\[1\]"):
        coco_map([EMPTY, EMPTY], [NO_SCORES, NO_SCORES], [EMPTY, [[0.0, 0.0, math.nan, 1.0]]])
    with pytest.raises(InputValueError, match=r"scores\[0\]"):
        coco_map([[BOX]], [[0.9, 0.8]], [[BOX]])
    with pytest.raises(InputValueError, match=r"preds\[0\].*x1 <= x2"):
        coco_map([[[10.0, 0.0, 0.0, 10.0]]], [[0.9]], [[BOX]])


def test_evaluate_predictions_reports_coco_map():
    # image 0: IoU exactly 0.5 (pred 20 x 10 px inside truth 20 x 20 px at 100 px) scored 0.9,
    # and a miss scored 0.3; image 1: a truth, no prediction; image 2: a prediction only (0.8).
    # At IoU 0.5, ranked 0.9 (TP), 0.8 (FP), 0.3 (FP) over 2 truths: precision 1 up to recall
    # 1/2, then none: AP@0.5 = 51 / 101 (recall levels 0 .. 0.50); no match at IoU > 0.5.
    preds = [[[0.0, 0.0, 0.2, 0.1], [0.5, 0.5, 0.9, 0.9]], EMPTY, [[0.4, 0.4, 0.6, 0.8]]]
    scores = [[0.9, 0.3], NO_SCORES, [0.8]]
    truths = [[[0.0, 0.0, 0.2, 0.2]], [[0.1, 0.1, 0.2, 0.2]], EMPTY]
    result = evaluate_predictions(preds, scores, truths, (100, 100))
    assert result.coco_map_50 == pytest.approx(51 / 101)
    assert result.coco_map_50_95 == pytest.approx(51 / 101 / 10)
