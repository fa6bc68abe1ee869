"""cxrbox.boxes IoU family: hand-worked geometry, a brute-force reference, properties, dtypes."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tests.strategies import (
    box_tensors,
    degenerate_boxes,
    matched_box_tensors,
    normalized_boxes,
    ordered_boxes,
)

from cxrbox.boxes import (
    box_iou,
    complete_box_iou,
    distance_box_iou,
    elementwise_box_iou,
    generalized_box_iou,
)
from cxrbox.errors import BoxFormatError, CxrboxError, InputValueError

PAIRWISE = {
    "iou": box_iou,
    "giou": generalized_box_iou,
    "diou": distance_box_iou,
    "ciou": complete_box_iou,
}
SQRT3 = math.sqrt(3.0)
# negligible against the areas of SIZED_BOXES even scaled by 0.01, so exact identities hold
TINY_EPS = 1e-300

ANY_BOXES = box_tensors(normalized_boxes() | degenerate_boxes(), max_n=6)
SIZED_BOXES = box_tensors(normalized_boxes(min_size=0.05), min_n=1, max_n=6)


def _reference(a: list[float], b: list[float], kind: str, eps: float = 1e-7) -> float:
    """One pair, plain Python floats, written from the GIoU and DIoU/CIoU papers."""
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a, b
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    iou = inter / (union + eps)
    cw, ch = max(ax2, bx2) - min(ax1, bx1), max(ay2, by2) - min(ay1, by1)
    if kind == "iou":
        return iou
    if kind == "giou":
        return iou - (cw * ch - union) / (cw * ch + eps)
    rho2 = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2) ** 2 + ((ay1 + ay2) / 2 - (by1 + by2) / 2) ** 2
    diou = iou - rho2 / (cw**2 + ch**2 + eps)
    if kind == "diou":
        return diou
    angle_a = math.atan((ax2 - ax1) / (ay2 - ay1 + eps))
    angle_b = math.atan((bx2 - bx1) / (by2 - by1 + eps))
    v = 4 / math.pi**2 * (angle_b - angle_a) ** 2
    alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


def _close(actual: torch.Tensor, expected: torch.Tensor, kind: str, **tolerances: float) -> None:
    """assert_close whose failure message starts with the IoU kind."""
    torch.testing.assert_close(
        actual, expected, msg=lambda message: f"{kind}: {message}", **tolerances
    )


def _t(rows: list[list[float]], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


# ------------------------------------------------------------------ hand-worked geometry


def test_unit_squares_offset_by_half_have_iou_one_third() -> None:
    iou = box_iou(_t([[0, 0, 1, 1]]), _t([[0.5, 0, 1.5, 1]]))
    torch.testing.assert_close(iou, _t([[1 / 3]]))


def test_disjoint_unit_squares_one_apart_have_giou_minus_one_third() -> None:
    # enclosing box 3 x 1, union 2: GIoU = 0 - (3 - 2) / 3
    giou = generalized_box_iou(_t([[0, 0, 1, 1]]), _t([[2, 0, 3, 1]]))
    torch.testing.assert_close(giou, _t([[-1 / 3]]))


def test_nested_boxes_have_giou_equal_to_iou() -> None:
    # the enclosing box is the outer box, so the GIoU penalty vanishes: IoU = 1/4
    giou = generalized_box_iou(_t([[0, 0, 2, 2]]), _t([[0, 0, 1, 1]]))
    torch.testing.assert_close(giou, _t([[0.25]]))


def test_far_apart_boxes_have_giou_near_minus_one() -> None:
    # enclosing 100 x 1, union 2: GIoU = -(100 - 2) / 100
    giou = generalized_box_iou(_t([[0, 0, 1, 1]]), _t([[99, 0, 100, 1]]))
    torch.testing.assert_close(giou, _t([[-0.98]]))


def test_diou_subtracts_centre_distance_over_enclosing_diagonal() -> None:
    # centres 0.5 apart: rho^2 = 1/4; enclosing 1.5 x 1: c^2 = 13/4; IoU = 1/3
    diou = distance_box_iou(_t([[0, 0, 1, 1]]), _t([[0.5, 0, 1.5, 1]]))
    torch.testing.assert_close(diou, _t([[1 / 3 - 1 / 13]]))


def test_ciou_subtracts_aspect_term_for_concentric_boxes() -> None:
    # a unit square inside a sqrt(3) x 1 box, same centre: IoU = 1/sqrt(3), rho = 0;
    # aspect angles pi/4 and pi/3: v = 4/pi^2 (pi/12)^2 = 1/36
    iou, v = 1 / SQRT3, 1 / 36
    expected = iou - v / (1 - iou + v) * v
    ciou = complete_box_iou(_t([[-0.5, -0.5, 0.5, 0.5]]), _t([[-SQRT3 / 2, -0.5, SQRT3 / 2, 0.5]]))
    torch.testing.assert_close(ciou, _t([[expected]]))


def test_ciou_equals_diou_for_boxes_of_equal_aspect_ratio() -> None:
    a, b = _t([[0, 0, 1, 2]]), _t([[0.5, 0.5, 2.5, 4.5]])
    torch.testing.assert_close(complete_box_iou(a, b), distance_box_iou(a, b))


# ------------------------------------------------------------------ reference and vectorisation


# Property tests loop over the four kinds inside one example (4x fewer hypothesis runs);
# assert_close's msg names the kind that failed.


@given(a=ANY_BOXES, b=ANY_BOXES)
def test_pairwise_matches_brute_force_loop(a: torch.Tensor, b: torch.Tensor) -> None:
    for kind, pairwise in PAIRWISE.items():
        expected = _t([[_reference(r, s, kind) for s in b.tolist()] for r in a.tolist()]).reshape(
            len(a), len(b)
        )
        _close(pairwise(a, b), expected, kind, rtol=1e-9, atol=1e-12)


@given(pair=matched_box_tensors(normalized_boxes() | degenerate_boxes()))
def test_elementwise_is_diagonal_of_pairwise(pair: tuple) -> None:
    a, b = pair
    for kind, pairwise in PAIRWISE.items():
        elementwise = elementwise_box_iou(a, b, kind)  # type: ignore[arg-type]
        _close(elementwise, pairwise(a, b).diagonal(), kind)


def test_elementwise_keeps_leading_batch_dimensions() -> None:
    # sorted rows have x1 <= y1 <= x2 <= y2, so they are ordered xyxy boxes
    a, b = torch.rand(2, 3, 4).sort(-1).values, torch.rand(2, 3, 4).sort(-1).values
    assert elementwise_box_iou(a, b, "ciou").shape == (2, 3)


# ------------------------------------------------------------------ properties


@given(a=ANY_BOXES, b=ANY_BOXES)
def test_iou_is_symmetric(a: torch.Tensor, b: torch.Tensor) -> None:
    assert torch.equal(box_iou(a, b), box_iou(b, a).T)


@given(a=ANY_BOXES, b=ANY_BOXES)
def test_iou_lies_in_unit_interval(a: torch.Tensor, b: torch.Tensor) -> None:
    iou = box_iou(a, b)
    assert bool(((iou >= 0) & (iou <= 1)).all())


@given(SIZED_BOXES)
def test_iou_of_box_with_itself_is_one(boxes: torch.Tensor) -> None:
    iou = box_iou(boxes, boxes, eps=TINY_EPS).diagonal()
    torch.testing.assert_close(iou, torch.ones_like(iou))


@given(a=ANY_BOXES, b=ANY_BOXES)
def test_giou_lies_in_minus_one_one_and_below_iou(a: torch.Tensor, b: torch.Tensor) -> None:
    giou = generalized_box_iou(a, b)
    assert bool(((giou >= -1) & (giou <= 1)).all())
    assert bool((giou <= box_iou(a, b) + 1e-12).all())


@given(a=ANY_BOXES, b=ANY_BOXES)
def test_diou_is_at_most_iou(a: torch.Tensor, b: torch.Tensor) -> None:
    assert bool((distance_box_iou(a, b) <= box_iou(a, b)).all())


@given(a=ANY_BOXES, b=ANY_BOXES)
def test_ciou_is_at_most_diou(a: torch.Tensor, b: torch.Tensor) -> None:
    assert bool((complete_box_iou(a, b) <= distance_box_iou(a, b)).all())


@given(
    a=SIZED_BOXES,
    b=SIZED_BOXES,
    shift=st.tuples(st.floats(-50, 50), st.floats(-50, 50)),
)
def test_iou_family_unchanged_when_both_boxes_translated(
    a: torch.Tensor, b: torch.Tensor, shift: tuple[float, float]
) -> None:
    offset = _t([[shift[0], shift[1], shift[0], shift[1]]])
    for kind, pairwise in PAIRWISE.items():
        moved = pairwise(a + offset, b + offset, eps=TINY_EPS)
        expected = pairwise(a, b, eps=TINY_EPS)
        _close(moved, expected, kind, rtol=1e-9, atol=1e-9)


@given(a=SIZED_BOXES, b=SIZED_BOXES, scale=st.floats(0.01, 1000))
def test_iou_family_unchanged_when_both_boxes_scaled(
    a: torch.Tensor, b: torch.Tensor, scale: float
) -> None:
    for kind, pairwise in PAIRWISE.items():
        scaled = pairwise(a * scale, b * scale, eps=TINY_EPS)
        expected = pairwise(a, b, eps=TINY_EPS)
        _close(scaled, expected, kind, rtol=1e-9, atol=1e-9)


@given(a=box_tensors(degenerate_boxes(), min_n=1), b=box_tensors(degenerate_boxes(), min_n=1))
def test_degenerate_boxes_give_finite_values(a: torch.Tensor, b: torch.Tensor) -> None:
    for kind, pairwise in PAIRWISE.items():
        assert bool(pairwise(a, b).isfinite().all()), kind


@pytest.mark.parametrize("kind", PAIRWISE)
def test_identical_points_give_finite_values(kind: str) -> None:
    point = _t([[0.3, 0.3, 0.3, 0.3]])
    assert bool(PAIRWISE[kind](point, point).isfinite().all())


# ------------------------------------------------------------------ empty inputs, dtypes


@pytest.mark.parametrize("kind", PAIRWISE)
def test_empty_inputs_give_empty_matrix_and_backprop(kind: str) -> None:
    a = torch.zeros(0, 4, dtype=torch.float64, requires_grad=True)
    b = _t([[0, 0, 1, 1], [0, 0, 2, 2]])
    out = PAIRWISE[kind](a, b)
    assert out.shape == (0, 2)
    out.sum().backward()
    assert a.grad is not None and a.grad.shape == (0, 4)


@given(pair=matched_box_tensors(ordered_boxes(512.0, 512.0, min_size=8.0)))
def test_float32_matches_float64(pair: tuple) -> None:
    a, b = pair
    for kind, pairwise in PAIRWISE.items():
        out32 = pairwise(a.float(), b.float())
        assert out32.dtype == torch.float32, kind
        expected = pairwise(a, b).float()
        _close(out32, expected, kind, rtol=1e-4, atol=1e-5)


@given(pair=matched_box_tensors(normalized_boxes(min_size=0.25)))
def test_bfloat16_forward_matches_float64_loosely(pair: tuple) -> None:
    # rounding the inputs to bfloat16 moves a normalized corner by up to 2^-9: on boxes with
    # sides >= 0.25 the IoU family stays within a few percent
    a, b = pair
    for kind, pairwise in PAIRWISE.items():
        out16 = pairwise(a.bfloat16(), b.bfloat16())
        assert out16.dtype == torch.bfloat16, kind
        _close(out16.double(), pairwise(a, b), kind, rtol=3e-2, atol=3e-2)


@given(pair=matched_box_tensors(ordered_boxes(512.0, 512.0, min_size=8.0)))
def test_bfloat16_is_computed_in_float32_and_rounded_once(pair: tuple) -> None:
    # the float64 result on the same (rounded) inputs, rounded to bfloat16: at most one
    # bfloat16 step (2^-8 relative) away when nothing but the final cast rounds in bfloat16
    a16, b16 = pair[0].bfloat16(), pair[1].bfloat16()
    for kind, pairwise in PAIRWISE.items():
        expected = pairwise(a16.double(), b16.double()).bfloat16().double()
        _close(pairwise(a16, b16).double(), expected, kind, rtol=2**-7, atol=1e-4)


def test_integer_boxes_give_float32_iou() -> None:
    iou = box_iou(torch.tensor([[0, 0, 2, 2]]), torch.tensor([[1, 0, 3, 2]]))
    assert iou.dtype == torch.float32
    torch.testing.assert_close(iou, torch.tensor([[1 / 3]]))


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), (3, 5)])
@pytest.mark.parametrize("kind", PAIRWISE)
def test_pairwise_rejects_anything_but_n_by_4(kind: str, shape: tuple) -> None:
    message = r"boxes2 must have shape \[N, 4\], got " + re.escape(str(shape))
    with pytest.raises(BoxFormatError, match=message) as info:
        PAIRWISE[kind](torch.zeros(2, 4), torch.zeros(shape))
    assert isinstance(info.value, ValueError) and isinstance(info.value, CxrboxError)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("kind", PAIRWISE)
def test_pairwise_rejects_non_finite_boxes(kind: str, bad: float) -> None:
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, bad, 1.0], [0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(BoxFormatError, match=r"boxes1 must hold finite values.*\(3, 4\)"):
        PAIRWISE[kind](boxes, torch.zeros(1, 4))


def test_pairwise_rejects_unordered_corners() -> None:
    with pytest.raises(BoxFormatError, match=r"boxes2 must be ordered xyxy.*order_and_clip_xyxy"):
        box_iou(torch.zeros(1, 4), torch.tensor([[0.0, 0.5, 1.0, 0.2]]))


def test_elementwise_rejects_mismatched_shapes() -> None:
    with pytest.raises(BoxFormatError, match=r"same shape.*\(2, 4\) and \(3, 4\)"):
        elementwise_box_iou(torch.zeros(2, 4), torch.zeros(3, 4))


def test_elementwise_rejects_unknown_kind() -> None:
    with pytest.raises(InputValueError, match=r"kind must be one of .* got 'aiou'"):
        elementwise_box_iou(torch.zeros(2, 4), torch.zeros(2, 4), "aiou")  # type: ignore[arg-type]


@pytest.mark.parametrize("eps", [0.0, -1e-7, float("nan"), float("inf")])
def test_bad_eps_raises_input_value_error(eps: float) -> None:
    with pytest.raises(InputValueError, match="eps must be a finite number > 0"):
        box_iou(torch.zeros(1, 4), torch.zeros(1, 4), eps=eps)
