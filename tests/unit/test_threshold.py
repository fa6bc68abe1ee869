"""cxrbox.evaluation.threshold: the one-pass sweep against re-scoring at every threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.reference_metrics import rsna_true_positives
from tests.strategies import rsna_image

from cxrbox.errors import InputValueError
from cxrbox.evaluation.metrics import RSNA_IOU_THRESHOLDS, rsna_map
from cxrbox.evaluation.threshold import SWEEP_THRESHOLDS, ThresholdSweep, sweep_score_thresholds

SCORE_BARS = [0.0, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]  # on, between and beyond the drawn scores


def _arrays(images):
    preds = [np.array(p).reshape(-1, 4) for p, _, _ in images]
    scores = [np.array(s, dtype=float) for _, s, _ in images]
    truths = [np.array(t).reshape(-1, 4) for _, _, t in images]
    return preds, scores, truths


def _kept(images, bar):
    """Each image with only its predictions scoring >= bar (brute force: filter, then score)."""
    return [
        ([p for p, s in zip(ps, ss, strict=True) if s >= bar], [s for s in ss if s >= bar], ts)
        for ps, ss, ts in images
    ]


@given(images=st.lists(rsna_image(), min_size=1, max_size=5))
def test_sweep_rsna_map_equals_rescoring_the_filtered_boxes_at_each_threshold(images):
    sweep = sweep_score_thresholds(*_arrays(images), thresholds=SCORE_BARS)
    for bar, got in zip(SCORE_BARS, sweep.rsna_map, strict=True):
        expected = rsna_map(*_arrays(_kept(images, bar)))
        if math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected, abs=1e-12), bar


@given(images=st.lists(rsna_image(), min_size=1, max_size=5))
def test_sweep_precision_and_recall_equal_plain_loop_counts(images):
    sweep = sweep_score_thresholds(*_arrays(images), thresholds=SCORE_BARS)
    n_truth = sum(len(t) for _, _, t in images)
    for k, bar in enumerate(SCORE_BARS):
        kept = _kept(images, bar)
        n_kept = sum(len(p) for p, _, _ in kept)
        tp = [sum(rsna_true_positives(p, s, t, iou) for p, s, t in kept)
              for iou in RSNA_IOU_THRESHOLDS]  # fmt: skip
        precision = np.mean([v / n_kept for v in tp]) if n_kept else 1.0
        assert sweep.precision[k] == pytest.approx(precision, abs=1e-12), bar
        if n_truth:
            assert sweep.recall[k] == pytest.approx(np.mean(tp) / n_truth, abs=1e-12), bar
        else:
            assert math.isnan(sweep.recall[k])


def test_a_high_threshold_wins_when_the_low_scores_are_false_positives_on_negatives():
    truth = [[0.1, 0.1, 0.4, 0.4]]
    preds = [np.array(truth), np.array([[0.5, 0.5, 0.8, 0.8]])]
    scores = [np.array([0.9]), np.array([0.4])]  # a confident hit, a weak false alarm
    truths = [np.array(truth), np.zeros((0, 4))]
    sweep = sweep_score_thresholds(preds, scores, truths)
    # <= 0.4 keeps the false alarm (the negative image scores 0): mAP 0.5; above it, 1.0
    assert sweep.best_threshold == 0.45
    assert sweep.best_rsna_map == 1.0
    assert sweep.rsna_map[SWEEP_THRESHOLDS.index(0.4)] == 0.5
    assert sweep.recall[SWEEP_THRESHOLDS.index(0.95)] == 0.0


def test_best_takes_the_lowest_threshold_among_ties_and_never_a_nan():
    sweep = ThresholdSweep([0.1, 0.2, 0.3, 0.4], [math.nan, 0.5, 0.7, 0.7], [1.0] * 4,
                           [1.0] * 4, n_images=3)  # fmt: skip
    assert sweep.best_threshold == 0.3
    assert sweep.record()["best_threshold"] == 0.3


def test_default_sweep_thresholds_are_exact_decimals_from_005_to_095():
    assert SWEEP_THRESHOLDS[0] == 0.05 and SWEEP_THRESHOLDS[-1] == 0.95
    assert 0.3 in SWEEP_THRESHOLDS and len(SWEEP_THRESHOLDS) == 19


def test_thresholds_outside_the_unit_interval_are_rejected():
    with pytest.raises(InputValueError, match="thresholds"):
        sweep_score_thresholds([np.zeros((0, 4))], [np.zeros(0)], [np.zeros((0, 4))], [1.5])
