"""What COCO mAP adds to each validation: `coco_map` on 150 validation images, 4 detections
each (the default top_k), a third of the images with 1-2 truth boxes.

Run: `pytest tests/benchmarks/test_bench_coco.py --benchmark-enable`; the mean is the time added
per epoch. Disabled (the default addopts), the benchmark runs its function once.
"""

from __future__ import annotations

import numpy as np
import pytest

from cxrbox.evaluation.coco import coco_map

pytestmark = pytest.mark.benchmark(group="evaluation")

N_IMAGES, TOP_K = 150, 4


def validation_like(seed: int = 0) -> tuple[list, list, list]:
    """Pixel xyxy detections and truths of a 1024 px validation split."""
    rng = np.random.default_rng(seed)
    preds, scores, truths = [], [], []
    for i in range(N_IMAGES):
        corner = rng.uniform(0, 600, (TOP_K, 2))
        preds.append(np.concatenate([corner, corner + rng.uniform(50, 400, (TOP_K, 2))], 1))
        scores.append(rng.uniform(0, 1, TOP_K))
        k = int(rng.integers(1, 3)) if i % 3 == 0 else 0
        corner = rng.uniform(0, 600, (k, 2))
        truths.append(np.concatenate([corner, corner + rng.uniform(50, 400, (k, 2))], 1))
    return preds, scores, truths


def test_coco_map_of_a_150_image_validation(benchmark):
    preds, scores, truths = validation_like()
    result = benchmark(coco_map, preds, scores, truths)
    assert 0.0 <= result.map_50_95 <= result.map_50 <= 1.0
