"""cxrbox.boxes: format conversions, normalization, flips, clipping, area and input checks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tests.strategies import (
    box_tensors,
    boxes_partly_outside,
    image_sizes,
    loose_boxes,
    normalized_boxes,
    ordered_boxes,
    pixel_boxes_with_image,
    unordered_boxes,
)

from cxrbox.boxes import (
    box_area,
    cxcywh_to_xyxy,
    denormalize_xyxy,
    hflip_xyxy,
    normalize_xyxy,
    order_and_clip_xyxy,
    vflip_xyxy,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)
from cxrbox.errors import BoxFormatError, CxrboxError, InputValueError

PIXEL_BOXES = box_tensors(ordered_boxes(1024.0, 1024.0), max_n=6)


# ------------------------------------------------------------------ hand-worked conversions


def test_xywh_to_xyxy_adds_size_to_top_left_corner() -> None:
    out = xywh_to_xyxy(torch.tensor([[10.0, 20.0, 30.0, 40.0]]))
    assert out.tolist() == [[10.0, 20.0, 40.0, 60.0]]


def test_xyxy_to_cxcywh_gives_centre_and_size() -> None:
    out = xyxy_to_cxcywh(torch.tensor([[10.0, 20.0, 40.0, 60.0]]))
    assert out.tolist() == [[25.0, 40.0, 30.0, 40.0]]


def test_conversions_keep_leading_batch_dimensions() -> None:
    boxes = torch.rand(2, 3, 5, 4)
    for convert in (xywh_to_xyxy, xyxy_to_xywh, xyxy_to_cxcywh, cxcywh_to_xyxy):
        assert convert(boxes).shape == (2, 3, 5, 4)


def test_normalize_divides_x_by_width_and_y_by_height() -> None:
    out = normalize_xyxy(torch.tensor([[256.0, 128.0, 512.0, 384.0]]), width=1024, height=512)
    assert out.tolist() == [[0.25, 0.25, 0.5, 0.75]]


def test_hflip_maps_x1_to_width_minus_x2() -> None:
    out = hflip_xyxy(torch.tensor([[10.0, 20.0, 40.0, 60.0]]), width=100)
    assert out.tolist() == [[60.0, 20.0, 90.0, 60.0]]


def test_vflip_maps_y1_to_height_minus_y2() -> None:
    out = vflip_xyxy(torch.tensor([[10.0, 20.0, 40.0, 60.0]]), height=100)
    assert out.tolist() == [[10.0, 40.0, 40.0, 80.0]]


def test_order_and_clip_clamps_x_to_width_and_y_to_height() -> None:
    boxes = torch.tensor([[-10.0, -10.0, 700.0, 700.0], [1100.0, 600.0, 1200.0, 650.0]])
    clipped = order_and_clip_xyxy(boxes, 1024, 512)
    assert clipped.tolist() == [[0.0, 0.0, 700.0, 512.0], [1024.0, 512.0, 1024.0, 512.0]]


def test_order_and_clip_sorts_corners_then_clamps() -> None:
    boxes = torch.tensor([[1.25, 0.75, -0.5, 0.25]])
    assert order_and_clip_xyxy(boxes, 1, 1).tolist() == [[0.0, 0.25, 1.0, 0.75]]


def test_box_area_is_width_times_height() -> None:
    assert box_area(torch.tensor([[1.0, 2.0, 4.0, 7.0]])).tolist() == [15.0]


# ------------------------------------------------------------------ round trips (properties)


@given(PIXEL_BOXES)
def test_xyxy_xywh_round_trip(boxes: torch.Tensor) -> None:
    torch.testing.assert_close(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)


@given(PIXEL_BOXES)
def test_xyxy_cxcywh_round_trip(boxes: torch.Tensor) -> None:
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)


@given(box_tensors(normalized_boxes()))
def test_xywh_xyxy_round_trip(boxes_xyxy: torch.Tensor) -> None:
    boxes = xyxy_to_xywh(boxes_xyxy)
    torch.testing.assert_close(xyxy_to_xywh(xywh_to_xyxy(boxes)), boxes)


@given(box_tensors(normalized_boxes()))
def test_cxcywh_xyxy_round_trip(boxes_xyxy: torch.Tensor) -> None:
    boxes = xyxy_to_cxcywh(boxes_xyxy)
    torch.testing.assert_close(xyxy_to_cxcywh(cxcywh_to_xyxy(boxes)), boxes)


@given(pixel_boxes_with_image())
def test_denormalize_inverts_normalize(box_and_size: tuple) -> None:
    box, (width, height) = box_and_size
    boxes = torch.tensor([box], dtype=torch.float64)
    normalized = normalize_xyxy(boxes, width, height)
    torch.testing.assert_close(denormalize_xyxy(normalized, width, height), boxes)


@given(box_tensors(normalized_boxes()), image_sizes())
def test_normalize_inverts_denormalize(boxes: torch.Tensor, size: tuple[int, int]) -> None:
    pixels = denormalize_xyxy(boxes, *size)
    torch.testing.assert_close(normalize_xyxy(pixels, *size), boxes)


@given(pixel_boxes_with_image())
def test_normalized_pixel_box_lies_in_unit_square(box_and_size: tuple) -> None:
    box, (width, height) = box_and_size
    normalized = normalize_xyxy(torch.tensor([box], dtype=torch.float64), width, height)
    assert bool(((normalized >= 0) & (normalized <= 1)).all())


# ------------------------------------------------------------------ flips (properties)


@given(PIXEL_BOXES, st.integers(1024, 4096))
def test_hflip_twice_is_identity(boxes: torch.Tensor, width: int) -> None:
    torch.testing.assert_close(hflip_xyxy(hflip_xyxy(boxes, width), width), boxes)


@given(PIXEL_BOXES, st.integers(1024, 4096))
def test_vflip_twice_is_identity(boxes: torch.Tensor, height: int) -> None:
    torch.testing.assert_close(vflip_xyxy(vflip_xyxy(boxes, height), height), boxes)


@given(PIXEL_BOXES, st.integers(1024, 4096))
def test_hflip_maps_x1_to_w_minus_x2_and_keeps_y(boxes: torch.Tensor, width: int) -> None:
    flipped = hflip_xyxy(boxes, width)
    torch.testing.assert_close(flipped[:, 0], width - boxes[:, 2])
    torch.testing.assert_close(flipped[:, 2], width - boxes[:, 0])
    torch.testing.assert_close(flipped[:, 1::2], boxes[:, 1::2])


@given(PIXEL_BOXES)
def test_hflip_keeps_boxes_ordered_inside_and_same_area(boxes: torch.Tensor) -> None:
    flipped = hflip_xyxy(boxes, 1024)
    torch.testing.assert_close(order_and_clip_xyxy(flipped, 1024, 1024), flipped)
    torch.testing.assert_close(box_area(flipped), box_area(boxes))


# ------------------------------------------------------------------ clipping (properties)


def _image_and_boxes_beyond_it(size: tuple[int, int]) -> st.SearchStrategy:
    """(size, boxes): boxes anywhere around the image, or boxes partly outside it."""
    boxes = loose_boxes(*size) | boxes_partly_outside(*size)
    return st.tuples(st.just(size), box_tensors(boxes))


IMAGE_AND_LOOSE_BOXES = image_sizes().flatmap(_image_and_boxes_beyond_it)


@given(IMAGE_AND_LOOSE_BOXES)
def test_order_and_clip_yields_ordered_boxes_inside_image(image_and_boxes: tuple) -> None:
    (width, height), boxes = image_and_boxes
    x1, y1, x2, y2 = order_and_clip_xyxy(boxes, width, height).unbind(-1)
    assert bool(((0 <= x1) & (x1 <= x2) & (x2 <= width)).all())
    assert bool(((0 <= y1) & (y1 <= y2) & (y2 <= height)).all())


@given(IMAGE_AND_LOOSE_BOXES)
def test_order_and_clip_is_idempotent(image_and_boxes: tuple) -> None:
    (width, height), boxes = image_and_boxes
    once = order_and_clip_xyxy(boxes, width, height)
    assert torch.equal(order_and_clip_xyxy(once, width, height), once)


@given(box_tensors(ordered_boxes(1024.0, 512.0)))
def test_order_and_clip_leaves_ordered_inside_boxes_unchanged(boxes: torch.Tensor) -> None:
    assert torch.equal(order_and_clip_xyxy(boxes, 1024, 512), boxes)


@given(box_tensors(unordered_boxes(), min_n=1))
def test_order_and_clip_gradient_reaches_every_inside_coordinate(boxes: torch.Tensor) -> None:
    boxes.requires_grad_(True)
    order_and_clip_xyxy(boxes, 1, 1).sum().backward()
    assert boxes.grad is not None
    torch.testing.assert_close(boxes.grad, torch.ones_like(boxes))


def test_order_and_clip_gives_no_gradient_to_coordinates_outside() -> None:
    boxes = torch.tensor([[-0.5, 0.2, 0.6, 1.5]], requires_grad=True)
    order_and_clip_xyxy(boxes, 1, 1).sum().backward()
    assert boxes.grad is not None
    assert boxes.grad.tolist() == [[0.0, 1.0, 1.0, 0.0]]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "convert",
    [xywh_to_xyxy, xyxy_to_xywh, xyxy_to_cxcywh, cxcywh_to_xyxy, box_area],
)
def test_wrong_last_dimension_raises_box_format_error_naming_shape(convert) -> None:
    with pytest.raises(BoxFormatError, match=r"boxes must have shape \[\.\.\., 4\], got \(3, 5\)"):
        convert(torch.zeros(3, 5))


def test_scalar_tensor_raises_box_format_error() -> None:
    with pytest.raises(BoxFormatError, match=r"boxes must have shape \[\.\.\., 4\], got \(\)"):
        xyxy_to_cxcywh(torch.tensor(1.0))


def test_non_tensor_raises_box_format_error() -> None:
    with pytest.raises(BoxFormatError, match=r"boxes must be a torch\.Tensor"):
        xyxy_to_cxcywh([[0.0, 0.0, 1.0, 1.0]])  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize(
    "call",
    [
        lambda b: xywh_to_xyxy(b),
        lambda b: xyxy_to_cxcywh(b),
        lambda b: normalize_xyxy(b, 512, 512),
        lambda b: order_and_clip_xyxy(b, 1, 1),
        lambda b: hflip_xyxy(b, 1),
    ],
)
def test_non_finite_boxes_raise_box_format_error(call, bad: float) -> None:
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.2, bad, 0.3, 0.4]])
    with pytest.raises(BoxFormatError, match=r"boxes must hold finite values.*\(2, 4\)") as info:
        call(boxes)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, CxrboxError)


def test_validate_false_skips_the_finite_check_and_propagates_nan() -> None:
    boxes = torch.tensor([[0.1, float("nan"), 0.5, 0.5]])
    assert bool(order_and_clip_xyxy(boxes, 1, 1, validate=False).isnan().any())


@pytest.mark.parametrize("convert", [xywh_to_xyxy, cxcywh_to_xyxy])
def test_negative_size_raises_box_format_error(convert) -> None:
    with pytest.raises(BoxFormatError, match=r"boxes must have width and height >= 0.*\(1, 4\)"):
        convert(torch.tensor([[10.0, 10.0, -5.0, 5.0]]))


def test_box_area_rejects_unordered_corners() -> None:
    with pytest.raises(BoxFormatError, match="boxes must be ordered xyxy"):
        box_area(torch.tensor([[5.0, 0.0, 1.0, 1.0]]))


@pytest.mark.parametrize("size", [0, -1.0, float("nan"), float("inf"), True, "512"])
def test_bad_image_size_raises_input_value_error_naming_it(size) -> None:
    with pytest.raises(InputValueError, match="width must be"):
        normalize_xyxy(torch.zeros(1, 4), size, 512)
