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


def as_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A grey uint8 [H, W] image as [H, W] (channels 1) or [H, W, C] (the same plane C times)."""
    return image if channels == 1 else np.repeat(image[:, :, None], channels, axis=2)


def plane(image: Any) -> np.ndarray:
    """One [H, W] plane (max over channels) of a transform's output image: numpy [H, W] or
    [H, W, C], a tensor [H, W] or [C, H, W] (a leading or trailing axis of 1 is dropped)."""
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        if array.ndim == 3:
            array = array.max(axis=0)
    else:
        array = np.asarray(image)
        if array.ndim == 3:
            array = array.max(axis=2)
    return array.squeeze() if array.ndim > 2 else array


def run_transform(
    transform: Any, image: np.ndarray, box: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(image [H', W'], boxes float64 [K', 4] pixel xyxy) of one seeded transform call.

    An albumentations Compose is called with bboxes (pascal_voc) and a "labels" field; any
    other callable as transform(image, boxes) after seeding numpy, random and torch. The image
    in is uint8 [H, W] or [H, W, C]; the image out is reduced to one plane (`plane`).
    """
    if isinstance(transform, A.BaseCompose) and image.ndim == 2:
        out = apply_transforms(transform, image, box, seed=seed)
        return plane(out.image), np.asarray(out.boxes, np.float64).reshape(-1, 4)
    if isinstance(transform, A.BaseCompose):
        return run_compose(transform, image, box, seed)
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)
    image_out, boxes_out = transform(image, box)
    if isinstance(boxes_out, torch.Tensor):
        boxes_out = boxes_out.detach().cpu().numpy()
    return plane(image_out), np.asarray(boxes_out, np.float64).reshape(-1, 4)


def run_compose(
    transform: A.BaseCompose, image: np.ndarray, boxes: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """An albumentations Compose called as it is, seeded: boxes pascal_voc with "labels"."""
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = transform(image=image, bboxes=boxes, labels=np.arange(len(boxes)))
    return plane(out["image"]), np.asarray(out["bboxes"], np.float64).reshape(-1, 4)


def random_rectangle(image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A blank uint8 [S, S] image with one filled rectangle (255) and its box float32 [1, 4]."""
    rng = np.random.default_rng(seed)
    image = np.zeros((image_size, image_size), np.uint8)
    x1, y1 = rng.integers(10, image_size // 2, size=2)
    w, h = rng.integers(image_size // 8, image_size // 3, size=2)
    image[y1 : y1 + h, x1 : x1 + w] = 255
    return image, np.array([[x1, y1, x1 + w, y1 + h]], np.float32)


PAINTED_DIFFERENCE = 64  # of 255: the rectangle, even darkened by 40 %, differs by ~150


def _as_255(image: np.ndarray) -> np.ndarray:
    """float64 image on the 0-255 scale (a float image with max <= 1 is scaled by 255)."""
    out = image.astype(np.float64)
    if image.dtype != np.uint8 and out.max(initial=0) <= 1.0:
        out = out * 255
    return out


def check_boxes_follow_transforms(
    transform: Any,
    image_size: int = 256,
    n_seeds: int = 50,
    *,
    cases: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    channels: int = 1,
) -> CheckResult:
    """`transform` moves a painted rectangle and its box together.

    The output box must contain the transformed rectangle (2 px slack) and fit it (IoU >= 0.6:
    rotation by up to 7 degrees enlarges the enclosing box), for `n_seeds` seeds. A rectangle
    is "painted" where the output differs by more than `PAINTED_DIFFERENCE` from the output of
    the same call (same seed, same box) on a blank image: photometric changes, a fill colour
    (Ultralytics pads with 114) or noise cancel out (a float image in [0, 1] is scaled by 255).
    `cases` replaces the random rectangles: (image uint8 [H, W] with ONE filled rectangle of
    255, its box float32 [1, 4] pixel xyxy), e.g. a data set's real boxes at their real image
    size; case i runs with seed i, and `n_seeds` is ignored. A case whose box and rectangle both
    left the image counts as in sync. channels > 1: the images go in as [H, W, C] (the same
    plane repeated), as an RGB pipeline reads them.
    """
    if cases is None:
        cases = [random_rectangle(image_size, seed) for seed in range(n_seeds)]
    n_seeds = len(cases)
    worst_iou, misses = 1.0, 0
    for seed, (image, box) in enumerate(cases):
        out_image, out_boxes = run_transform(transform, as_channels(image, channels), box, seed)
        blank, _ = run_transform(transform, as_channels(np.zeros_like(image), channels), box, seed)
        ys, xs = np.nonzero(np.abs(_as_255(out_image) - _as_255(blank)) > PAINTED_DIFFERENCE)
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
