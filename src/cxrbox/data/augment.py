"""Image + box transforms (albumentations 2), with every dropped box counted.

`build_transforms(train, size)` returns an `A.Compose` over a grayscale image [H, W] (float32 in
[0, 1] from `cxrbox.data.dicom.load_pixels`, or uint8 from `cxrbox.data.cache`) and pixel xyxy boxes
("pascal_voc"); call it through `apply_transforms`, which clips the input boxes, seeds the
randomness and returns how many boxes were lost on the way (albumentations drops silently).

Geometry:
- `A.Resize` to `size` x `size` first. RSNA images are square (1024 px); a non-square image is
  resized WITHOUT keeping its aspect ratio, and its boxes scale by (size / W, size / H).
- Training adds a horizontal flip, a small affine (scale 0.9-1.1, translate +-6 %, rotate +-7
  degrees) with a constant (black) border, and brightness/contrast jitter. A constant border
  matters: with a reflecting border albumentations would add mirrored copies of the boxes.
- Rotated boxes use albumentations' "largest_box" method (the default of `A.Affine` in 2.0):
  the axis-aligned box around the four rotated corners, which CONTAINS the rotated object. The
  "ellipse" method gives a tighter box that can cut off the object's corners.
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

import albumentations as A
import cv2
import numpy as np

from cxrbox.errors import BoxFormatError, InputValueError

# Training-time jitter; `build_transforms` exposes each one so tests can isolate them.
DEFAULT_SCALE = (0.9, 1.1)
DEFAULT_TRANSLATE = 0.06  # fraction of the image side, both directions
DEFAULT_ROTATE = 7.0  # degrees, both directions
DEFAULT_BRIGHTNESS = 0.15
DEFAULT_CONTRAST = 0.15
MIN_BOX_PX = 1.0  # a box narrower or shorter than this (output pixels) is dropped and counted


class Augmented(NamedTuple):
    """One transformed sample.

    image (ndarray[S, S]): same dtype as the input (uint8 or float32 in [0, 1]).
    boxes (ndarray[K', 4]): float32 xyxy in output pixels, clipped to the image.
    n_dropped (int): input boxes with no output box (degenerate on input, pushed out of the
        image, or thinner than `MIN_BOX_PX` after clipping). K' can exceed K - n_dropped only
        with a custom Compose whose reflecting border mirrors boxes.
    """

    image: np.ndarray
    boxes: np.ndarray
    n_dropped: int


def box_params() -> A.BboxParams:
    """Pixel xyxy boxes ("pascal_voc") carrying their input index in the "labels" field.

    Boxes are clipped to the image; thinner than `MIN_BOX_PX` (or fully outside) they are
    dropped, which `apply_transforms` counts.
    """
    return A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        clip=True,
        min_width=MIN_BOX_PX,
        min_height=MIN_BOX_PX,
        # Filter once at the end instead of after every step: the same boxes survive (only the
        # affine can push a box out, and nothing after it moves boxes) at a lower cost.
        check_each_transform=False,
    )


def build_transforms(
    train: bool,
    size: int = 512,
    *,
    hflip_p: float = 0.5,
    affine_p: float = 0.8,
    scale: tuple[float, float] = DEFAULT_SCALE,
    translate: float = DEFAULT_TRANSLATE,
    rotate: float = DEFAULT_ROTATE,
    color_p: float = 0.5,
    brightness: float = DEFAULT_BRIGHTNESS,
    contrast: float = DEFAULT_CONTRAST,
) -> A.Compose:
    """Build the transforms: resize only when `train` is False, plus jitter when True.

    Args:
        train: add flip, affine and brightness/contrast (random) after the resize.
        size: output side S in pixels (the output is square, see the module docstring).
        rotate: max absolute rotation in degrees; 0 gives a rotation-free affine.

    Returns:
        A.Compose taking `image=[H, W]`, `bboxes=[K, 4]` pixel xyxy, `labels=[K]`.
    """
    if size < 8:
        raise InputValueError(f"build_transforms: size must be >= 8 px, got {size}")
    steps: list[Any] = [A.Resize(size, size, interpolation=cv2.INTER_AREA)]
    if train:
        steps += [
            A.HorizontalFlip(p=hflip_p),
            A.Affine(
                scale=scale,
                translate_percent=(-translate, translate),
                rotate=(-rotate, rotate),
                rotate_method="largest_box",
                interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=affine_p,
            ),
            A.RandomBrightnessContrast(
                brightness_limit=brightness, contrast_limit=contrast, p=color_p
            ),
        ]
    return A.Compose(steps, bbox_params=box_params(), seed=0)


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that is a pure function of (seed, epoch, index).

    Each sample of each epoch gets its own stream, so DataLoader workers differ without any
    worker-specific state, and the same `seed` replays the same run.
    """
    if min(seed, epoch, index) < 0:
        raise InputValueError(
            f"augmentation_seed: seed, epoch and index must be >= 0, got {(seed, epoch, index)}"
        )
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def clip_input_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Order and clip pixel boxes to the image; return (boxes [K', 4], kept indices [K']).

    Boxes with zero width or height after clipping are left out (the caller counts them).
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise BoxFormatError(f"boxes must be [K, 4] xyxy pixels, got shape {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise BoxFormatError("boxes hold NaN or Inf; fix the labels before augmenting")
    x1 = np.clip(np.minimum(boxes[:, 0], boxes[:, 2]), 0, width)
    x2 = np.clip(np.maximum(boxes[:, 0], boxes[:, 2]), 0, width)
    y1 = np.clip(np.minimum(boxes[:, 1], boxes[:, 3]), 0, height)
    y2 = np.clip(np.maximum(boxes[:, 1], boxes[:, 3]), 0, height)
    clipped = np.stack([x1, y1, x2, y2], axis=1)
    keep = np.flatnonzero((x2 > x1) & (y2 > y1))
    return clipped[keep], keep


def apply_transforms(
    transforms: A.Compose,
    image: np.ndarray,
    boxes: np.ndarray,
    *,
    seed: int | None = None,
) -> Augmented:
    """Run `transforms` on one image and its boxes and count the boxes lost.

    Args:
        transforms: from `build_transforms` (any Compose with label field "labels" works).
        image (ndarray[H, W]): uint8, or float32 in [0, 1].
        boxes (ndarray[K, 4]): xyxy in pixels of `image`; any order, may stick out.
        seed: when given, the transforms draw from a fresh generator seeded with it (see
            `augmentation_seed`); when None they continue their own stream.

    Returns:
        Augmented(image [S, S], boxes [K', 4] pixel xyxy, n_dropped = K - K').
    """
    if image.ndim != 2:
        raise InputValueError(f"image must be a 2-D grayscale array [H, W], got {image.shape}")
    if image.dtype not in (np.uint8, np.float32):
        raise InputValueError(f"image must be uint8 or float32, got {image.dtype}")
    height, width = image.shape
    kept, index = clip_input_boxes(boxes, width, height)
    n_in = np.size(boxes) // 4  # shape already checked by clip_input_boxes
    if seed is not None:
        # One generator shared by all steps: `set_random_seed` would give every step its own
        # generator with the SAME seed, so the flip and the affine would fire together.
        transforms.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = transforms(image=image, bboxes=kept, labels=index)
    out_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
    # Count by input index, not by length: a reflecting border adds mirrored copies of a box
    # (same index), which must not hide another box's loss.
    n_survived = len(np.unique(np.asarray(out["labels"])))
    return Augmented(out["image"], out_boxes, n_in - n_survived)
