"""cxrbox.evaluation.metrics: hand-computed cases, RSNA rules, a brute-force matching reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tests.reference_metrics import rsna_reference
from tests.strategies import rsna_image

from cxrbox.errors import BoxFormatError, InputValueError
from cxrbox.evaluation.metrics import (
    RSNA_IOU_THRESHOLDS,
    corner_mae,
    evaluate_predictions,
    mean_iou,
    prediction_spread,
    rsna_image_score,
    rsna_map,
)

EMPTY = np.zeros((0, 4))
NO_SCORES = np.zeros(0)


def _strip(x1: float, x2: float) -> list[float]:
    """A box spanning x1..x2 and y 0..1, so its IoU is the 1-D interval IoU."""
    return [x1, 0.0, x2, 1.0]


# --- mean_iou ------------------------------------------------------------------------------


def test_mean_iou_ignores_better_prediction_beyond_top_k():
    # one truth -> k = 1: only the 0.9 prediction counts (IoU 2/4 = 0.5), not the exact 0.1 one
    truth = [[0.0, 0.0, 2.0, 2.0]]
    preds = [[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 2.0, 2.0]]
    assert mean_iou([preds], [[0.9, 0.1]], [truth]) == pytest.approx(0.5)


def test_mean_iou_takes_best_iou_within_top_k():
    # two truths -> k = 2: truth 0 has IoU 1 with the 0.8 box; truth 1 overlaps only the 0.7 box,
    # which is third by score -> 0; the 0.9 box overlaps nothing. Mean (1 + 0) / 2.
    truths = [[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]]
    preds = [[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 4.0], [5.0, 5.0, 6.0, 6.0]]
    assert mean_iou([preds], [[0.8, 0.7, 0.9]], [truths]) == pytest.approx(0.5)


def test_mean_iou_averages_per_box_not_per_image():
    # image A: one truth, IoU 0.5. Image B: truth 0 IoU 1, truth 1 IoU 1/(1+2-1) = 0.5.
    # per box (0.5 + 1 + 0.5) / 3 = 0.6667; per image would be (0.5 + 0.75) / 2 = 0.625
    a = ([[0.0, 0.0, 2.0, 1.0]], [0.9], [[0.0, 0.0, 2.0, 2.0]])
    b = (
        [[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 4.0]],
        [0.8, 0.7],
        [[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]],
    )
    got = mean_iou([a[0], b[0]], [a[1], b[1]], [a[2], b[2]])
    assert got == pytest.approx(2.0 / 3.0)


def test_mean_iou_counts_truth_without_prediction_as_zero():
    # image with IoU 0.5 plus an image with a truth and no prediction: (0.5 + 0) / 2
    got = mean_iou(
        [[[0.0, 0.0, 2.0, 1.0]], EMPTY],
        [[0.9], NO_SCORES],
        [[[0.0, 0.0, 2.0, 2.0]], [[0.0, 0.0, 1.0, 1.0]]],
    )
    assert got == pytest.approx(0.25)


def test_mean_iou_ignores_images_without_truth():
    got = mean_iou(
        [[[0.0, 0.0, 2.0, 1.0]], [[0.0, 0.0, 1.0, 1.0]]],
        [[0.9], [0.99]],
        [[[0.0, 0.0, 2.0, 2.0]], EMPTY],
    )
    assert got == pytest.approx(0.5)


def test_mean_iou_is_nan_without_positive_images():
    assert math.isnan(mean_iou([[[0.0, 0.0, 1.0, 1.0]]], [[0.5]], [EMPTY]))
    assert math.isnan(mean_iou([], [], []))


def test_mean_iou_accepts_torch_tensors():
    # model outputs: float32 and requiring grad; integer truth boxes
    pred = torch.tensor([[0.0, 0.0, 2.0, 1.0]], requires_grad=True)
    score = torch.tensor([0.9], requires_grad=True)
    got = mean_iou([pred], [score], [torch.tensor([[0, 0, 2, 2]])])
    assert got == pytest.approx(0.5)


# --- corner_mae ----------------------------------------------------------------------------


def test_corner_mae_is_in_pixels_of_width_and_height():
    # errors x1 0, y1 0, x2 0.05 * 1000 = 50, y2 0.1 * 500 = 50 -> mean 25 px
    got = corner_mae([[[0.1, 0.2, 0.35, 0.5]]], [[0.9]], [[[0.1, 0.2, 0.3, 0.4]]], (1000, 500))
    assert got == pytest.approx(25.0)


def test_corner_mae_uses_per_image_sizes():
    # both images off by 0.1 in x1 only: 0.1 * 100 / 4 = 2.5 and 0.1 * 300 / 4 = 7.5 -> 5
    pred, truth = [[0.1, 0.0, 0.5, 0.5]], [[0.2, 0.0, 0.5, 0.5]]
    got = corner_mae([pred, pred], [[0.5], [0.5]], [truth, truth], [(100, 100), (300, 300)])
    assert got == pytest.approx(5.0)


def test_corner_mae_matches_each_truth_to_its_best_iou_prediction():
    # predictions listed in the other order than the truths; each truth takes its own exact
    # match (error 0), not the prediction at the same position
    truths = [[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7]]
    preds = [[0.5, 0.5, 0.7, 0.7], [0.0, 0.0, 0.2, 0.2]]
    assert corner_mae([preds], [[0.9, 0.8]], [truths], (1024, 1024)) == pytest.approx(0.0)


def test_corner_mae_excludes_truths_of_images_without_prediction():
    pred, truth = [[0.1, 0.2, 0.35, 0.5]], [[0.1, 0.2, 0.3, 0.4]]
    got = corner_mae([pred, EMPTY], [[0.9], NO_SCORES], [truth, truth], (1000, 500))
    assert got == pytest.approx(25.0)
    assert math.isnan(corner_mae([EMPTY], [NO_SCORES], [truth], (1000, 500)))


def test_corner_mae_rejects_wrong_number_of_image_sizes():
    pred = [[0.1, 0.2, 0.3, 0.4]]
    with pytest.raises(InputValueError, match="image_sizes"):
        corner_mae([pred], [[0.5]], [pred], [(10, 10), (10, 10)])


# --- rsna_map ------------------------------------------------------------------------------


def test_rsna_perfect_prediction_scores_one():
    box = [[10.0, 10.0, 50.0, 60.0]]
    assert rsna_map([box], [[0.9]], [box]) == pytest.approx(1.0)


def test_rsna_counts_high_confidence_false_positive():
    # the 0.9 box misses (FP), the 0.5 box hits (TP): 1 / (1 + 1 + 0) at every threshold
    truth = [[0.0, 0.0, 10.0, 10.0]]
    preds = [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]
    assert rsna_map([preds], [[0.5, 0.9]], [truth]) == pytest.approx(0.5)


def test_rsna_confidence_order_decides_which_truth_a_box_takes():
    # T1 = [0, 10], T2 = [4, 14]; P_hi = [1, 11]: IoU T1 9/11 = .818, T2 7/13 = .538;
    # P_lo = [0, 10]: IoU T1 1, T2 6/14 = .429.
    truths = [_strip(0, 10), _strip(4, 14)]
    preds = [_strip(1, 11), _strip(0, 10)]
    # P_hi first takes T1; P_lo then reaches T2 only at t = .40 -> TP 2 there (score 1), else
    # TP 1, FP 1, FN 1 (1/3): (1 + 7/3) / 8 = 0.416667
    assert rsna_map([preds], [[0.9, 0.5]], [truths]) == pytest.approx((1 + 7 / 3) / 8)
    # P_lo first takes T1; P_hi reaches T2 at t = .40, .45, .50: (3 + 5/3) / 8 = 0.583333
    assert rsna_map([preds], [[0.5, 0.9]], [truths]) == pytest.approx((3 + 5 / 3) / 8)


def test_rsna_prediction_takes_the_unmatched_truth_with_highest_iou():
    # T1 = [0, 10], T2 = [4, 14]; P_hi = [3, 13]: IoU T1 7/13 = .538, T2 9/11 = .818;
    # P_lo = [4, 14]: IoU T2 1, T1 6/14 = .429.
    truths = [_strip(0, 10), _strip(4, 14)]
    preds = [_strip(3, 13), _strip(4, 14)]
    # P_hi takes T2 (its best, not T1 which comes first); P_lo then reaches T1 only at t = .40:
    # (1 + 7 * 1/3) / 8. Taking the first unmatched truth would give (3 + 5/3) / 8.
    assert rsna_map([preds], [[0.9, 0.5]], [truths]) == pytest.approx((1 + 7 / 3) / 8)


def test_rsna_matches_each_truth_at_most_once():
    # two identical predictions on one truth: TP 1, FP 1 -> 1/2 at every threshold
    box = [[0.0, 0.0, 5.0, 5.0]]
    assert rsna_map([box + box], [[0.9, 0.8]], [box]) == pytest.approx(0.5)


def test_rsna_requires_iou_strictly_greater_than_threshold():
    # IoU exactly 1 / 2 = 0.5
    truth, pred = [[0.0, 0.0, 2.0, 1.0]], [[0.0, 0.0, 1.0, 1.0]]
    assert rsna_map([pred], [[0.9]], [truth], thresholds=[0.5]) == 0.0
    assert rsna_map([pred], [[0.9]], [truth], thresholds=[0.45]) == 1.0
    # default thresholds: hits at .40 and .45 only -> 2 / 8
    assert rsna_map([pred], [[0.9]], [truth]) == pytest.approx(0.25)


def test_rsna_default_thresholds_are_exact_decimals():
    # IoU exactly 13 / 20 = 0.65: np.arange(0.40, 0.751, 0.05) holds 0.6499999999999999, which
    # would count it as a hit at "0.65". Hits at .40 .. .60 only -> 5 / 8.
    truth, pred = [_strip(0, 20)], [_strip(0, 13)]
    assert rsna_map([pred], [[0.9]], [truth]) == pytest.approx(5 / 8)
    assert RSNA_IOU_THRESHOLDS == pytest.approx(np.arange(0.40, 0.751, 0.05))


def test_rsna_skips_images_without_truth_or_prediction():
    box = [[0.0, 0.0, 1.0, 1.0]]
    assert rsna_map([box, EMPTY], [[0.9], NO_SCORES], [box, EMPTY]) == pytest.approx(1.0)
    assert rsna_image_score(EMPTY, NO_SCORES, EMPTY) is None


def test_rsna_scores_prediction_without_truth_as_zero():
    box = [[0.0, 0.0, 1.0, 1.0]]
    assert rsna_map([box, box], [[0.9], [0.1]], [box, EMPTY]) == pytest.approx(0.5)


def test_rsna_scores_truth_without_prediction_as_zero():
    box = [[0.0, 0.0, 1.0, 1.0]]
    assert rsna_map([box, EMPTY], [[0.9], NO_SCORES], [box, box]) == pytest.approx(0.5)


def test_rsna_is_nan_when_no_image_is_scored():
    assert math.isnan(rsna_map([EMPTY], [NO_SCORES], [EMPTY]))


def test_rsna_rejects_thresholds_outside_unit_interval():
    box = [[0.0, 0.0, 1.0, 1.0]]
    with pytest.raises(InputValueError, match="thresholds"):
        rsna_map([box], [[0.9]], [box], thresholds=[0.5, 1.5])


@given(
    image=rsna_image(),
    thresholds=st.lists(st.sampled_from([0.0, 0.25, 0.4, 0.5, 0.75]), min_size=1, max_size=3),
)
def test_rsna_image_score_matches_brute_force_reference(image, thresholds):
    preds, scores, truths = image
    got = rsna_image_score(
        np.array(preds).reshape(-1, 4), scores, np.array(truths).reshape(-1, 4), thresholds
    )
    expected = rsna_reference(preds, scores, truths, thresholds)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-12)


def test_rsna_equal_scores_keep_index_order():
    # the configuration of test_rsna_confidence_order_decides_which_truth_a_box_takes with tied
    # scores: the box listed first goes first
    truths = [_strip(0, 10), _strip(4, 14)]
    p_hi, p_lo = _strip(1, 11), _strip(0, 10)
    assert rsna_map([[p_hi, p_lo]], [[0.5, 0.5]], [truths]) == pytest.approx((1 + 7 / 3) / 8)
    assert rsna_map([[p_lo, p_hi]], [[0.5, 0.5]], [truths]) == pytest.approx((3 + 5 / 3) / 8)


# --- prediction_spread ---------------------------------------------------------------------


def test_prediction_spread_matches_hand_computed_std():
    # cx .1 .4 -> std .15; cy .1 .5 -> .2; w .2 .4 -> .1; h .2 .2 -> 0 (population std)
    boxes = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.2, 0.4, 0.6, 0.6]], dtype=torch.float64)
    got = prediction_spread(boxes)
    assert got == pytest.approx({"cx": 0.15, "cy": 0.2, "w": 0.1, "h": 0.0})


def test_prediction_spread_of_identical_boxes_is_zero():
    boxes = torch.tensor([[0.3, 0.3, 0.6, 0.7]] * 5)
    assert prediction_spread(boxes) == {"cx": 0.0, "cy": 0.0, "w": 0.0, "h": 0.0}


def test_prediction_spread_of_no_boxes_is_nan():
    assert all(math.isnan(v) for v in prediction_spread(EMPTY).values())


# --- evaluate_predictions ------------------------------------------------------------------


def test_evaluate_predictions_bundles_every_metric():
    # image 0: IoU 0.5 with the truth (pred [0, .2] x [0, .1] vs truth [0, .2] x [0, .2]) and a
    # second, lower-scored miss; image 1: a truth and no prediction; image 2: a prediction only.
    preds = [[[0.0, 0.0, 0.2, 0.1], [0.5, 0.5, 0.9, 0.9]], EMPTY, [[0.4, 0.4, 0.6, 0.8]]]
    scores = [[0.9, 0.3], NO_SCORES, [0.8]]
    truths = [[[0.0, 0.0, 0.2, 0.2]], [[0.1, 0.1, 0.2, 0.2]], EMPTY]
    result = evaluate_predictions(preds, scores, truths, (100, 100))
    assert result.mean_iou == pytest.approx(0.25)  # (0.5 + 0) / 2 truth boxes; k = 1
    assert result.mae_px == pytest.approx(2.5)  # y2 off by 0.1 * 100 / 4; image 1 excluded
    # image 0: TP 1, FP 1 at .40 and .45 (IoU 0.5, strict >) -> 1/2, else 0 -> (2 * 1/2) / 8;
    # images 1 and 2 score 0 -> 0.125 / 3
    assert result.rsna_map == pytest.approx(0.125 / 3)
    assert (result.n_images, result.n_positive, result.n_missed) == (3, 2, 1)
    # top boxes: cx .1, .5 -> std .2; cy .05, .6 -> .275; w .2 .2 -> 0; h .1, .4 -> .15
    assert result.prediction_std == pytest.approx({"cx": 0.2, "cy": 0.275, "w": 0.0, "h": 0.15})


# --- input validation ----------------------------------------------------------------------


def test_metrics_reject_lists_of_different_lengths():
    with pytest.raises(InputValueError, match="same images"):
        mean_iou([EMPTY, EMPTY], [NO_SCORES], [EMPTY, EMPTY])


def test_metrics_reject_scores_not_one_per_box():
    with pytest.raises(InputValueError, match=r"scores\[0\]"):
        mean_iou([[[0.0, 0.0, 1.0, 1.0]]], [[0.5, 0.4]], [EMPTY])


def test_metrics_reject_non_finite_boxes_naming_the_image():
    with pytest.raises(BoxFormatError, match=r"truths\[1\]"):
        rsna_map([EMPTY, EMPTY], [NO_SCORES, NO_SCORES], [EMPTY, [[0.0, 0.0, math.nan, 1.0]]])


def test_metrics_reject_unordered_boxes():
    with pytest.raises(BoxFormatError, match=r"preds\[0\]"):
        mean_iou([[[1.0, 0.0, 0.0, 1.0]]], [[0.5]], [EMPTY])
