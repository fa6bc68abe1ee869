"""Augmented boxes follow the image: the painted-box invariant, for any box transform."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch

from cxrbox.boxes import box_iou
from cxrbox.data.augment import apply_transforms
from cxrbox.testing.result import CheckResult, raise_if_failed


def run_transform(
    transform: Any, image: np.ndarray, box: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(image [H', W'], boxes float64 [K', 4] pixel xyxy) of one seeded transform call.

    An albumentations Compose is called with bboxes (pascal_voc) and a "labels" field; any
    other callable as transform(image, boxes) after seeding numpy, random and torch.
    """
    if isinstance(transform, A.BaseCompose):
        out = apply_transforms(transform, image, box, seed=seed)
        return np.asarray(out.image), np.asarray(out.boxes, np.float64).reshape(-1, 4)
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)
    image_out, boxes_out = transform(image, box)
    if isinstance(image_out, torch.Tensor):
        image_out = image_out.detach().cpu().numpy()
    if isinstance(boxes_out, torch.Tensor):
        boxes_out = boxes_out.detach().cpu().numpy()
    image_out = np.asarray(image_out).squeeze()
    return image_out, np.asarray(boxes_out, np.float64).reshape(-1, 4)


def random_rectangle(image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A blank uint8 [S, S] image with one filled rectangle (255) and its box float32 [1, 4]."""
    rng = np.random.default_rng(seed)
    image = np.zeros((image_size, image_size), np.uint8)
    x1, y1 = rng.integers(10, image_size // 2, size=2)
    w, h = rng.integers(image_size // 8, image_size // 3, size=2)
    image[y1 : y1 + h, x1 : x1 + w] = 255
    return image, np.array([[x1, y1, x1 + w, y1 + h]], np.float32)


def check_boxes_follow_transforms(
    transform: Any,
    image_size: int = 256,
    n_seeds: int = 50,
    *,
    cases: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> CheckResult:
    """`transform` moves a painted rectangle and its box together.

    The output box must contain the transformed rectangle (2 px slack) and fit it (IoU >= 0.6:
    rotation by up to 7 degrees enlarges the enclosing box), for `n_seeds` seeds. A rectangle
    is "painted" where the output image is > 128 (a float image in [0, 1] is scaled by 255).
    `cases` replaces the random rectangles: (image uint8 [H, W] with ONE filled rectangle of
    255, its box float32 [1, 4] pixel xyxy), e.g. a data set's real boxes at their real image
    size; case i runs with seed i, and `n_seeds` is ignored. A case whose box and rectangle both
    left the image counts as in sync.
    """
    if cases is None:
        cases = [random_rectangle(image_size, seed) for seed in range(n_seeds)]
    n_seeds = len(cases)
    worst_iou, misses = 1.0, 0
    for seed, (image, box) in enumerate(cases):
        out_image, out_boxes = run_transform(transform, image, box, seed)
        if out_image.dtype != np.uint8 and out_image.max(initial=0) <= 1.0:
            out_image = out_image * 255
        ys, xs = np.nonzero(out_image > 128)
        if out_boxes.shape[0] == 0 and xs.size == 0:
            continue  # both pushed out of the image together
        if out_boxes.shape[0] != 1 or xs.size == 0:
            misses += 1
            continue
        painted = torch.tensor(
            [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float64
        )
        got = torch.from_numpy(out_boxes[:1])
        contains = bool(
            (got[0, :2] <= painted[0, :2] + 2).all() and (got[0, 2:] >= painted[0, 2:] - 2).all()
        )
        iou = float(box_iou(got, painted, validate=False)[0, 0])
        worst_iou = min(worst_iou, iou)
        if not contains or iou < 0.6:
            misses += 1
    numbers = {"n_seeds": n_seeds, "misaligned": misses, "worst_iou": worst_iou}
    if misses:
        return CheckResult(
            "box_sync",
            "fail",
            f"{misses} of {n_seeds} augmented samples have a box that does not match the "
            f"transformed image (worst IoU {worst_iou:.2f})",
            numbers,
        )
    return CheckResult(
        "box_sync",
        "pass",
        f"{n_seeds} augmented samples: boxes follow the image (worst IoU {worst_iou:.2f})",
        numbers,
    )


def assert_boxes_follow_transforms(
    transform: Any, image_size: int = 256, n_seeds: int = 50
) -> CheckResult:
    """Raise AssertionError unless `transform` (an albumentations Compose with bboxes and a
    "labels" field, or a callable (image uint8 [H, W], boxes float32 [K, 4] pixel xyxy) ->
    (image, boxes)) keeps a painted rectangle inside its box for `n_seeds` seeds (a flip that
    moves the image but not the boxes fails)."""
    return raise_if_failed(check_boxes_follow_transforms(transform, image_size, n_seeds))
