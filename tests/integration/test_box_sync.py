"""The box-sync invariant: after augmentation the box is where the object is.

A bright filled rectangle on a dark noisy image is its own ground truth: after the training
transforms, the bounding box of the bright pixels must match the transformed box (IoU >= 0.9
without rotation) or, with rotation, lie inside it (the "largest_box" rule) up to 2 px. The
check runs over hundreds of seeds, directly and through `RSNADataset.__getitem__`, and is shown
to catch a flip applied to the image but not to the boxes.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from tests.dicom_factory import make_dicom

from cxrbox.boxes import box_iou, denormalize_xyxy
from cxrbox.data.augment import apply_transforms, build_transforms
from cxrbox.data.cache import build_cache
from cxrbox.data.dataset import RSNADataset

N_SEEDS = 240
IN_SIDE = 384
OUT_SIDE = 256
SLACK_PX = 2.0


def rectangle_scene(seed: int, side: int = IN_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [side, side] dark noise with one bright rectangle; its box [1, 4] pixel xyxy.

    Rectangles reach the edges often, so clipping is exercised as well.
    """
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (side, side), dtype=np.uint8)
    w, h = rng.integers(side // 6, side // 2, size=2)
    x1 = int(rng.integers(0, side - w + 1))
    y1 = int(rng.integers(0, side - h + 1))
    image[y1 : y1 + h, x1 : x1 + w] = 255
    return image, np.array([[x1, y1, x1 + w, y1 + h]], dtype=np.float32)


def bright_box(image: np.ndarray) -> np.ndarray | None:
    """Pixel xyxy around the pixels closer to the rectangle's level than to the background."""
    pixels = image.astype(np.float32)
    level_hi = np.percentile(pixels, 99.5)
    level_lo = np.median(pixels)
    ys, xs = np.nonzero(pixels > (level_hi + level_lo) / 2)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(box_iou(torch.from_numpy(a.reshape(1, 4)), torch.from_numpy(b.reshape(1, 4))))


def misalignment(image: np.ndarray, boxes: np.ndarray, rotated: bool) -> str | None:
    """Why `boxes` (pixel xyxy, one box or none) disagree with the rectangle in `image`."""
    target = bright_box(image)
    if len(boxes) == 0:
        if target is not None and min(target[2] - target[0], target[3] - target[1]) > SLACK_PX:
            return f"box dropped but the rectangle is visible at {target}"
        return None
    box = boxes[0]
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"non-positive width or height: {box}"
    if target is None:
        return f"box {box} but no rectangle in the image"
    overlap = iou(box, target)
    if not rotated:
        return None if overlap >= 0.9 else f"IoU {overlap:.3f} < 0.9: box {box}, pixels {target}"
    contains = (box[:2] <= target[:2] + SLACK_PX).all() and (box[2:] >= target[2:] - SLACK_PX).all()
    if not contains:
        return f"box {box} does not contain the rectangle's pixels {target}"
    return None if overlap >= 0.75 else f"IoU {overlap:.3f}: box {box} far looser than {target}"


def failing_seeds(transforms: A.Compose, rotated: bool, n: int = N_SEEDS) -> list[str]:
    failures = []
    for seed in range(n):
        image, boxes = rectangle_scene(seed)
        out = apply_transforms(transforms, image, boxes, seed=seed)
        assert out.n_dropped == 1 - len(out.boxes)
        why = misalignment(out.image, out.boxes, rotated)
        if why:
            failures.append(f"seed {seed}: {why}")
    return failures


def test_boxes_match_the_rectangle_without_rotation() -> None:
    transforms = build_transforms(True, OUT_SIDE, rotate=0.0, affine_p=0.9)
    assert failing_seeds(transforms, rotated=False) == []


def test_boxes_contain_the_rectangle_with_rotation() -> None:
    transforms = build_transforms(True, OUT_SIDE, affine_p=0.9)
    assert failing_seeds(transforms, rotated=True) == []


def test_check_catches_a_flip_applied_to_the_image_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(A.HorizontalFlip, "apply_to_bboxes", lambda self, bboxes, **p: bboxes)
    transforms = build_transforms(True, OUT_SIDE, rotate=0.0, hflip_p=1.0)
    failures = failing_seeds(transforms, rotated=False, n=40)
    assert len(failures) > 30  # only a centred rectangle survives a flip of its box alone


def test_check_catches_an_affine_that_skips_the_boxes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(A.Affine, "apply_to_bboxes", lambda self, bboxes, **p: bboxes)
    transforms = build_transforms(True, OUT_SIDE, hflip_p=0.0, affine_p=1.0)
    assert len(failing_seeds(transforms, rotated=True, n=40)) > 20


def test_output_boxes_never_have_negative_size() -> None:
    transforms = build_transforms(True, 128, affine_p=1.0, scale=(0.7, 1.3), translate=0.3)
    rng = np.random.default_rng(0)
    for seed in range(300):
        corners = rng.uniform(-40, 300, size=(5, 4)).astype(np.float32)  # unordered, outside
        out = apply_transforms(transforms, np.zeros((256, 256), np.uint8), corners, seed=seed)
        assert (out.boxes[:, 2] - out.boxes[:, 0] > 0).all()
        assert (out.boxes[:, 3] - out.boxes[:, 1] > 0).all()
        assert out.n_dropped + len(out.boxes) == 5


# ------------------------------------------------------------------------ through the dataset

N_PATIENTS = 6
N_EPOCHS = 40  # 240 samples


@pytest.fixture(scope="module")
def rectangle_dicoms(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("rects") / "images"
    folder.mkdir()
    labels = {}
    for i in range(N_PATIENTS):
        image, boxes = rectangle_scene(1000 + i)
        make_dicom(folder / f"rect{i}.dcm", image)
        labels[f"rect{i}"] = boxes
    return folder, labels


def dataset_failures(dataset: RSNADataset) -> list[str]:
    failures = []
    for epoch in range(N_EPOCHS):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            sample = dataset[i]
            _, height, width = sample.image.shape
            image = (sample.image[0].numpy() * 255).round().astype(np.uint8)
            boxes = denormalize_xyxy(sample.boxes, width, height).numpy()
            why = misalignment(image, boxes, rotated=True)
            if why:
                failures.append(f"epoch {epoch} {sample.patient_id}: {why}")
    return failures


def test_dataset_samples_from_dicom_keep_boxes_on_the_rectangle(rectangle_dicoms) -> None:
    folder, labels = rectangle_dicoms
    dataset = RSNADataset(folder, labels, build_transforms(True, OUT_SIDE), seed=1)
    assert dataset_failures(dataset) == []


def test_dataset_samples_from_cache_keep_boxes_on_the_rectangle(rectangle_dicoms, tmp_path) -> None:
    folder, labels = rectangle_dicoms
    cache = build_cache(folder, list(labels), OUT_SIDE, tmp_path / "c.npy")
    dataset = RSNADataset(None, labels, build_transforms(True, OUT_SIDE), cache=cache, seed=2)
    assert dataset_failures(dataset) == []
