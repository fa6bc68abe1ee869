"""cxrbox.data.augment: shapes, the eval path, dropped-box counting, seeding."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from cxrbox.data.augment import (
    MIN_BOX_PX,
    apply_transforms,
    augmentation_seed,
    box_params,
    build_transforms,
    clip_input_boxes,
)
from cxrbox.errors import BoxFormatError, InputValueError

BOXES = np.array([[10, 20, 60, 90], [100, 30, 150, 70]], dtype=np.float32)


def noisy_image(dtype: type, height: int = 200, width: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype is np.uint8:
        return rng.integers(0, 256, (height, width), dtype=np.uint8)
    return rng.random((height, width), dtype=np.float32)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_output_is_square_of_requested_size_and_keeps_dtype(train: bool, dtype: type) -> None:
    out = apply_transforms(build_transforms(train, size=64), noisy_image(dtype), BOXES, seed=3)
    assert out.image.shape == (64, 64)
    assert out.image.dtype == dtype
    assert out.boxes.dtype == np.float32
    assert out.boxes.shape[1] == 4


def test_float_output_stays_in_unit_range() -> None:
    t = build_transforms(True, size=64, brightness=0.5, contrast=0.5, color_p=1.0)
    for seed in range(10):
        out = apply_transforms(t, noisy_image(np.float32), BOXES, seed=seed)
        assert out.image.min() >= 0.0
        assert out.image.max() <= 1.0


def test_eval_transforms_are_a_single_resize() -> None:
    t = build_transforms(False, size=64)
    assert [type(step) for step in t.transforms] == [A.Resize]


def test_eval_transforms_ignore_the_seed() -> None:
    t = build_transforms(False, size=64)
    image = noisy_image(np.uint8)
    a = apply_transforms(t, image, BOXES, seed=1)
    b = apply_transforms(t, image, BOXES, seed=2)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)


def test_eval_boxes_scale_by_size_over_side_even_when_not_square() -> None:
    image = noisy_image(np.uint8, height=100, width=400)
    out = apply_transforms(build_transforms(False, size=50), image, BOXES, seed=0)
    expected = BOXES * np.array([50 / 400, 50 / 100, 50 / 400, 50 / 100], dtype=np.float32)
    np.testing.assert_allclose(out.boxes, expected, atol=1e-4)
    assert out.n_dropped == 0


def test_box_pushed_outside_by_translation_is_dropped_and_counted() -> None:
    shift_right = A.Compose(
        [A.Affine(translate_px={"x": 100, "y": 0}, p=1.0)], bbox_params=box_params()
    )
    boxes = np.array([[10, 10, 40, 40], [150, 20, 190, 60]], dtype=np.float32)
    out = apply_transforms(shift_right, noisy_image(np.uint8), boxes, seed=0)
    assert out.n_dropped == 1
    np.testing.assert_allclose(out.boxes, [[110, 10, 140, 40]], atol=1e-3)


def test_mirrored_copies_from_a_reflecting_border_do_not_hide_a_drop() -> None:
    shift_right = A.Compose(
        [A.Affine(translate_px={"x": 60, "y": 0}, border_mode=cv2.BORDER_REFLECT_101, p=1.0)],
        bbox_params=box_params(),
    )
    boxes = np.array([[5, 10, 40, 40], [150, 10, 190, 40]], dtype=np.float32)
    out = apply_transforms(shift_right, noisy_image(np.uint8), boxes, seed=0)
    assert len(out.boxes) == 2  # box 0 and its mirror image; box 1 left the image
    assert out.n_dropped == 1


def test_box_thinner_than_min_after_clipping_is_dropped_and_counted() -> None:
    shift_right = A.Compose(
        [A.Affine(translate_px={"x": 100, "y": 0}, p=1.0)], bbox_params=box_params()
    )
    x1 = 100 - MIN_BOX_PX / 2  # shifted to 200 - MIN_BOX_PX / 2: a sliver at the right edge
    boxes = np.array([[x1, 10, 150, 40]], dtype=np.float32)
    out = apply_transforms(shift_right, noisy_image(np.uint8), boxes, seed=0)
    assert out.n_dropped == 1
    assert len(out.boxes) == 0


def test_degenerate_input_boxes_are_dropped_and_counted() -> None:
    boxes = np.array([[10, 10, 10, 50], [10, 10, 50, 50], [-30, 5, -10, 40]], dtype=np.float32)
    out = apply_transforms(build_transforms(False, size=200), noisy_image(np.uint8), boxes)
    assert out.n_dropped == 2
    np.testing.assert_allclose(out.boxes, [[10, 10, 50, 50]], atol=1e-3)


def test_empty_boxes_give_empty_output_and_no_drops() -> None:
    t = build_transforms(True, size=64)
    out = apply_transforms(t, noisy_image(np.uint8), np.zeros((0, 4), np.float32), seed=0)
    assert out.boxes.shape == (0, 4)
    assert out.n_dropped == 0


def test_input_boxes_are_ordered_and_clipped() -> None:
    boxes = np.array([[60, 90, 10, 20], [-5, 150, 250, 120]], dtype=np.float32)
    clipped, kept = clip_input_boxes(boxes, width=200, height=140)
    np.testing.assert_array_equal(clipped, [[10, 20, 60, 90], [0, 120, 200, 140]])
    np.testing.assert_array_equal(kept, [0, 1])


@pytest.mark.parametrize(
    "boxes", [np.zeros((3, 3)), np.array([[0, 0, np.nan, 5]]), np.array([[0, 0, np.inf, 5]])]
)
def test_malformed_boxes_raise_box_format_error(boxes: np.ndarray) -> None:
    with pytest.raises(BoxFormatError):
        apply_transforms(build_transforms(False, 32), noisy_image(np.uint8), boxes)


@pytest.mark.parametrize(
    "image", [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.int16)], ids=["rgb", "int16"]
)
def test_non_grayscale_or_odd_dtype_image_raises(image: np.ndarray) -> None:
    with pytest.raises(InputValueError):
        apply_transforms(build_transforms(False, 32), image, BOXES)


def test_same_seed_gives_same_augmentation_whatever_came_before() -> None:
    t = build_transforms(True, 64)
    image = noisy_image(np.uint8)
    a = apply_transforms(t, image, BOXES, seed=11)
    for other in range(3):
        apply_transforms(t, image, BOXES, seed=other)
    b = apply_transforms(t, image, BOXES, seed=11)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)


def test_different_seeds_give_different_augmentations() -> None:
    t = build_transforms(True, 64)
    image = noisy_image(np.uint8)
    outputs = {apply_transforms(t, image, BOXES, seed=s).boxes.tobytes() for s in range(8)}
    assert len(outputs) > 4


def test_flip_and_affine_are_drawn_independently() -> None:
    t = build_transforms(True, 64, hflip_p=0.5, affine_p=0.5)
    flip, affine = t.transforms[1], t.transforms[2]
    seen = set()
    for seed in range(64):
        apply_transforms(t, noisy_image(np.uint8, 32, 32), BOXES[:0], seed=seed)
        seen.add((bool(flip.params), bool(affine.params)))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


def test_augmentation_seed_is_a_pure_function_of_seed_epoch_index() -> None:
    assert augmentation_seed(1, 2, 3) == augmentation_seed(1, 2, 3)
    seeds = {augmentation_seed(s, e, i) for s in range(3) for e in range(3) for i in range(3)}
    assert len(seeds) == 27


def test_augmentation_seed_rejects_negative_values() -> None:
    with pytest.raises(InputValueError):
        augmentation_seed(0, -1, 0)


def test_affine_uses_the_containing_rotation_method() -> None:
    affine = build_transforms(True, 64).transforms[2]
    assert isinstance(affine, A.Affine)
    assert affine.rotate_method == "largest_box"


def test_tiny_size_is_rejected() -> None:
    with pytest.raises(InputValueError):
        build_transforms(False, size=4)
