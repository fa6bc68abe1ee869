"""Shifted copies: one image at many positions, so only position tells them apart."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cxrbox.errors import InputValueError


@dataclass(frozen=True)
class ShiftedCopies:
    """One radiograph at many positions, split into a fitted batch and held-out positions.

    images (Tensor[B, 1, S, S]) float32 in [0, 1]; boxes: B tensors [1, 4], normalized xyxy.
    """

    images: Tensor
    boxes: list[Tensor]
    heldout_images: Tensor
    heldout_boxes: list[Tensor]


def shifted_copies(
    n_fit: int = 8,
    n_heldout: int = 8,
    image_size: int = 128,
    seed: int = 0,
    step: int = 16,
    *,
    source: np.ndarray | None = None,
    source_box: np.ndarray | None = None,
) -> ShiftedCopies:
    """A synthetic radiograph with one opacity, rolled by multiples of `step` px.

    Every image holds the same content at another place, so only position tells them apart.
    A head that cannot see position (the original global-pooling head) can at best memorise the
    fitted images from border artefacts; on held-out positions it cannot follow the opacity:
    the original stall in miniature. A spatial head follows it everywhere.

    `source` (ndarray[S, S], uint8 or float32 in [0, 1], S = image_size) with `source_box`
    (pixel xyxy [4] or [1, 4], inside the image) replaces the synthetic radiograph, e.g. a real
    positive sample resized to S px. Raises ValueError when fewer than n_fit + n_heldout
    positions keep the box inside the image.
    """
    if source is None:
        from cxrbox.data.synthetic.anatomy import render_radiograph

        radiograph = render_radiograph(np.random.default_rng(seed), image_size, n_opacities=1)
        pixels, first_box = radiograph.pixels, radiograph.boxes[:1]  # [S, S] uint8, [1, 4]
    else:
        pixels, first_box = _check_source(source, source_box, image_size)
    x1, y1, x2, y2 = first_box[0]
    xs = np.arange(-(int(x1) // step), int(image_size - x2) // step + 1) * step  # allowed dx
    ys = np.arange(-(int(y1) // step), int(image_size - y2) // step + 1) * step  # allowed dy
    shifts = [(int(dx), int(dy)) for dy in ys for dx in xs]
    if len(shifts) < n_fit + n_heldout:
        raise ValueError(f"only {len(shifts)} positions for {n_fit + n_heldout} images")
    order = np.random.default_rng(seed).permutation(len(shifts))
    scale = 255.0 if pixels.dtype == np.uint8 else 1.0

    def render(indices: np.ndarray) -> tuple[Tensor, list[Tensor]]:
        images, boxes = [], []
        for index in indices:
            dx, dy = shifts[index]
            rolled = np.roll(pixels, (dy, dx), axis=(0, 1))
            images.append(torch.from_numpy(rolled).float().div(scale)[None])
            box = first_box + np.array([dx, dy, dx, dy], np.float32)
            boxes.append(torch.from_numpy(box).float() / image_size)
        return torch.stack(images), boxes

    fit = render(order[:n_fit])
    heldout = render(order[n_fit : n_fit + n_heldout])
    return ShiftedCopies(*fit, *heldout)


def _check_source(
    source: np.ndarray, source_box: np.ndarray | None, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a `shifted_copies` source: (pixels [S, S], box float32 [1, 4] pixel xyxy)."""
    if source.shape != (image_size, image_size) or source.dtype not in (np.uint8, np.float32):
        raise InputValueError(
            f"shifted_copies: source must be uint8 or float32 [{image_size}, {image_size}], "
            f"got {source.dtype} {source.shape}"
        )
    if source_box is None:
        raise InputValueError("shifted_copies: a source image needs its source_box")
    box = np.asarray(source_box, dtype=np.float32).reshape(1, 4)
    x1, y1, x2, y2 = box[0]
    if not (0 <= x1 < x2 <= image_size and 0 <= y1 < y2 <= image_size):
        raise InputValueError(
            f"shifted_copies: source_box must be pixel xyxy inside the {image_size} px image, "
            f"got {box[0].tolist()}"
        )
    return source, box


def multi_scale_batch(
    image_size: int = 128,
    fractions: tuple[float, ...] = (0.125, 0.25, 0.5, 0.85),
    per_scale: int = 2,
    seed: int = 0,
) -> tuple[Tensor, list[Tensor]]:
    """A batch with objects at several scales, for the one-step checks of a multi-scale head
    (a feature pyramid assigns each object to the level of its size, so a batch of one object
    size leaves the other levels without a positive).

    Returns (images [B, 1, S, S] float32 in [0, 1], B boxes [1, 4] normalized xyxy) with
    B = len(fractions) x per_scale: image i holds one bright square of side fractions[i //
    per_scale] x S at a random place on a dim noisy background.
    """
    if not fractions or any(not 0 < f <= 1 for f in fractions) or per_scale < 1:
        raise InputValueError(
            f"multi_scale_batch: fractions must be in (0, 1] and per_scale >= 1, got "
            f"{fractions}, {per_scale}"
        )
    rng = np.random.default_rng(seed)
    images, boxes = [], []
    for fraction in fractions:
        side = max(2, round(fraction * image_size))
        for _ in range(per_scale):
            image = rng.uniform(0.0, 0.2, (image_size, image_size)).astype(np.float32)
            x1, y1 = rng.integers(0, image_size - side + 1, size=2)
            image[y1 : y1 + side, x1 : x1 + side] = rng.uniform(0.8, 1.0)
            images.append(torch.from_numpy(image)[None])
            box = np.array([[x1, y1, x1 + side, y1 + side]], np.float32) / image_size
            boxes.append(torch.from_numpy(box))
    return torch.stack(images), boxes
