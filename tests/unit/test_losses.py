"""cxrbox.modeling.losses: one coordinate system, hand-worked values, gradcheck, degenerate."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from tests.strategies import (
    boxes_partly_outside,
    degenerate_boxes,
    loose_boxes,
    matched_box_tensors,
    normalized_boxes,
    unordered_boxes,
)

from cxrbox.boxes import elementwise_box_iou, order_and_clip_xyxy, xyxy_to_cxcywh
from cxrbox.errors import BoxFormatError, CxrboxError, InputValueError
from cxrbox.modeling.losses import (
    ciou_loss,
    diou_loss,
    giou_loss,
    l1_center_size_loss,
    l1_corner_loss,
)

Loss = Callable[..., torch.Tensor]
LOSSES: dict[str, Loss] = {
    "giou": giou_loss,
    "diou": diou_loss,
    "ciou": ciou_loss,
    "l1_corner": l1_corner_loss,
    "l1_center_size": l1_center_size_loss,
}


def _direct(name: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each loss's formula applied to the boxes as given, without order_and_clip_xyxy."""
    if name == "l1_corner":
        return (pred - target).abs().mean(-1)
    if name == "l1_center_size":
        return (xyxy_to_cxcywh(pred) - xyxy_to_cxcywh(target)).abs().mean(-1)
    return 1 - elementwise_box_iou(pred, target, name)  # type: ignore[arg-type]


def _t(rows: list[list[float]], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


def _close(actual: torch.Tensor, expected: torch.Tensor, name: str, **tolerances: float) -> None:
    """assert_close whose failure message starts with the loss name."""
    torch.testing.assert_close(
        actual, expected, msg=lambda message: f"{name}: {message}", **tolerances
    )


def _value_and_grad(loss: Loss, pred: torch.Tensor, target: torch.Tensor):
    pred = pred.detach().clone().requires_grad_(True)
    value = loss(pred, target)
    value.sum().backward()
    return value.detach(), pred.grad


# strictly ordered (no tied corners, so min/max route each gradient to one corner)
STRICT_PAIRS = matched_box_tensors(normalized_boxes(min_size=1e-3))
# generic boxes for gradcheck: no tied coordinates between or within boxes, no touching edges
GRADCHECK_PRED = [[0.10, 0.20, 0.50, 0.70], [0.30, 0.12, 0.62, 0.41], [0.05, 0.52, 0.33, 0.91]]
GRADCHECK_TARGET = [[0.15, 0.25, 0.55, 0.60], [0.51, 0.31, 0.93, 0.83], [0.61, 0.63, 0.95, 0.82]]
SQRT3 = math.sqrt(3.0)


# ------------------------------------------------------------------ hand-worked values


def test_giou_loss_of_disjoint_boxes() -> None:
    # enclosing 0.75 x 0.25, union 2 x 0.0625: GIoU = -(0.1875 - 0.125) / 0.1875 = -1/3
    loss = giou_loss(_t([[0, 0, 0.25, 0.25]]), _t([[0.5, 0, 0.75, 0.25]]))
    torch.testing.assert_close(loss, _t([4 / 3]))


def test_diou_loss_of_squares_offset_by_half() -> None:
    # IoU 1/3; rho^2 = 0.0625; enclosing 0.75 x 0.5: c^2 = 0.8125 -> DIoU = 1/3 - 1/13
    loss = diou_loss(_t([[0, 0, 0.5, 0.5]]), _t([[0.25, 0, 0.75, 0.5]]))
    torch.testing.assert_close(loss, _t([1 - (1 / 3 - 1 / 13)]))


def test_ciou_loss_adds_aspect_term_for_concentric_boxes() -> None:
    # a 0.5 square inside a (sqrt(3)/2) x 0.5 box, same centre: IoU = 1/sqrt(3), rho = 0,
    # aspect angles pi/4 and pi/3: v = 1/36, alpha = v / (1 - IoU + v)
    iou, v = 1 / SQRT3, 1 / 36
    pred = _t([[0.25, 0.25, 0.75, 0.75]])
    target = _t([[0.5 - SQRT3 / 4, 0.25, 0.5 + SQRT3 / 4, 0.75]])
    torch.testing.assert_close(ciou_loss(pred, target), _t([1 - iou + v / (1 - iou + v) * v]))


def test_l1_corner_loss_is_mean_abs_corner_difference() -> None:
    loss = l1_corner_loss(_t([[0.125, 0.25, 0.5, 0.75]]), _t([[0.25, 0.25, 0.375, 1.0]]))
    torch.testing.assert_close(loss, _t([(0.125 + 0 + 0.125 + 0.25) / 4]))


def test_l1_center_size_loss_is_mean_abs_cxcywh_difference() -> None:
    # centres (0.3125, 0.5) and (0.3125, 0.625); sizes (0.375, 0.5) and (0.125, 0.75)
    loss = l1_center_size_loss(_t([[0.125, 0.25, 0.5, 0.75]]), _t([[0.25, 0.25, 0.375, 1.0]]))
    torch.testing.assert_close(loss, _t([(0 + 0.125 + 0.25 + 0.25) / 4]))


def test_l1_center_size_loss_uses_clipped_box_not_raw_centre() -> None:
    # raw centre x is 0, the clipped box [0, 0, 0.5, 0.5] has centre 0.25 = the target's
    loss = l1_center_size_loss(_t([[-0.5, 0, 0.5, 0.5]]), _t([[0, 0, 0.5, 0.5]]))
    torch.testing.assert_close(loss, _t([0.0]))


@given(pair=matched_box_tensors(unordered_boxes(), normalized_boxes()))
def test_every_loss_ignores_corner_order(pair: tuple) -> None:
    pred, target = pair
    for name, loss in LOSSES.items():
        _close(loss(pred, target), loss(order_and_clip_xyxy(pred, 1, 1), target), name)


# ------------------------------------------------------------------ one coordinate system


@given(pair=STRICT_PAIRS)
def test_inside_boxes_give_same_value_and_gradient_with_and_without_clipping(pair: tuple) -> None:
    pred, target = pair
    for name, loss in LOSSES.items():
        value, grad = _value_and_grad(loss, pred, target)
        direct_value, direct_grad = _value_and_grad(
            lambda p, t, n=name: _direct(n, p, t), pred, target
        )
        _close(value, direct_value, name)
        _close(grad, direct_grad, name)


@given(pair=matched_box_tensors(boxes_partly_outside() | loose_boxes(), normalized_boxes()))
def test_partly_outside_boxes_have_the_loss_of_their_clipped_boxes(pair: tuple) -> None:
    pred, target = pair
    clipped = order_and_clip_xyxy(pred, 1, 1)
    for name, loss in LOSSES.items():
        _close(loss(pred, target), _direct(name, clipped, target), name)


@given(pair=matched_box_tensors(boxes_partly_outside(min_size=1e-3), normalized_boxes()))
def test_no_gradient_reaches_coordinates_outside_the_image(pair: tuple) -> None:
    pred, target = pair
    outside = (pred < 0) | (pred > 1)
    clipped = order_and_clip_xyxy(pred, 1, 1)
    for name, loss in LOSSES.items():
        _, grad = _value_and_grad(loss, pred, target)
        _, clipped_grad = _value_and_grad(lambda p, t, n=name: _direct(n, p, t), clipped, target)
        assert bool((grad[outside] == 0).all()), name
        _close(grad[~outside], clipped_grad[~outside], name)


@given(pair=matched_box_tensors(normalized_boxes(), boxes_partly_outside()))
def test_targets_are_clipped_like_predictions(pair: tuple) -> None:
    pred, target = pair
    clipped = order_and_clip_xyxy(target, 1, 1)
    for name, loss in LOSSES.items():
        _close(loss(pred, target), _direct(name, pred, clipped), name)


@given(pair=matched_box_tensors(unordered_boxes(), unordered_boxes()))
def test_iou_losses_lie_in_their_ranges(pair: tuple) -> None:
    # GIoU, DIoU in [-1, 1]; CIoU = DIoU - alpha * v with alpha * v <= 1/2 at IoU = 0
    pred, target = pair
    for name, upper in (("giou", 2.0), ("diou", 2.0), ("ciou", 2.5)):
        value = LOSSES[name](pred, target)
        assert bool(((value >= 0) & (value <= upper)).all()), name


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("name", ["giou", "diou", "l1_corner", "l1_center_size"])
def test_gradcheck_float64(name: str) -> None:
    pred = _t(GRADCHECK_PRED).requires_grad_(True)
    target = _t(GRADCHECK_TARGET).requires_grad_(True)
    assert torch.autograd.gradcheck(LOSSES[name], (pred, target))


def _aspect_v(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    wp, hp = pred[:, 2] - pred[:, 0], pred[:, 3] - pred[:, 1]
    wt, ht = target[:, 2] - target[:, 0], target[:, 3] - target[:, 1]
    return 4 / math.pi**2 * (torch.atan(wt / (ht + eps)) - torch.atan(wp / (hp + eps))) ** 2


def _alpha(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    v = _aspect_v(pred, target, eps)
    return v / (1 - elementwise_box_iou(pred, target) + v + eps)


def test_gradcheck_float64_ciou_with_alpha_constant() -> None:
    # CIoU's backward treats alpha as a constant (paper). Add alpha0 * v - alpha * v without
    # gradient: the value becomes 1 - DIoU + alpha0 * v, whose true derivative is exactly what
    # ciou_loss's backward must produce at the point where alpha = alpha0.
    pred = _t(GRADCHECK_PRED).requires_grad_(True)
    target = _t(GRADCHECK_TARGET).requires_grad_(True)
    alpha0 = _alpha(pred, target).detach()
    assert bool((alpha0 > 1e-3).all())  # the aspect term is active at this point

    def ciou_with_alpha_frozen(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            correction = (alpha0 - _alpha(p, t)) * _aspect_v(p, t)
        return ciou_loss(p, t) + correction

    assert torch.autograd.gradcheck(ciou_with_alpha_frozen, (pred, target))


DEGENERATE_CASES = {
    "zero_width": ([0.3, 0.2, 0.3, 0.6], [0.2, 0.2, 0.5, 0.5]),
    "zero_height": ([0.2, 0.4, 0.6, 0.4], [0.2, 0.2, 0.5, 0.5]),
    "point": ([0.4, 0.4, 0.4, 0.4], [0.2, 0.2, 0.5, 0.5]),
    "same_point": ([0.4, 0.4, 0.4, 0.4], [0.4, 0.4, 0.4, 0.4]),
    "zero_width_vs_zero_height": ([0.3, 0.2, 0.3, 0.6], [0.1, 0.4, 0.6, 0.4]),
    "identical": ([0.2, 0.3, 0.6, 0.7], [0.2, 0.3, 0.6, 0.7]),
    "far_apart": ([0.0, 0.0, 0.01, 0.01], [0.99, 0.99, 1.0, 1.0]),
    "beyond_bottom_right": ([1.2, 1.3, 1.5, 1.6], [0.2, 0.2, 0.5, 0.5]),
    "beyond_top_left": ([-0.5, -0.6, -0.2, -0.1], [0.2, 0.2, 0.5, 0.5]),
    "whole_image": ([0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", DEGENERATE_CASES)
def test_degenerate_boxes_give_finite_values_and_gradients(case: str, dtype: torch.dtype) -> None:
    pred_row, target_row = DEGENERATE_CASES[case]
    for name, loss in LOSSES.items():
        pred = _t([pred_row], dtype).requires_grad_(True)
        target = _t([target_row], dtype).requires_grad_(True)
        value = loss(pred, target)
        value.sum().backward()
        assert bool(value.isfinite().all()), name
        assert bool(pred.grad.isfinite().all()), name
        assert bool(target.grad.isfinite().all()), name


@given(pair=matched_box_tensors(degenerate_boxes(), degenerate_boxes() | normalized_boxes()))
def test_random_degenerate_boxes_give_finite_gradients(pair: tuple) -> None:
    pred, target = (boxes.float() for boxes in pair)
    for name, loss in LOSSES.items():
        value, grad = _value_and_grad(loss, pred, target)
        assert bool(value.isfinite().all()) and bool(grad.isfinite().all()), name


# ------------------------------------------------------------------ reductions, empty, dtypes


@given(pair=STRICT_PAIRS)
def test_mean_and_sum_reduce_the_per_box_losses(pair: tuple) -> None:
    pred, target = pair
    for name, loss in LOSSES.items():
        per_box = loss(pred, target, "none")
        _close(loss(pred, target, "mean"), per_box.mean(), name)
        _close(loss(pred, target, "sum"), per_box.sum(), name)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_empty_input_gives_empty_or_zero_loss_that_backprops(reduction: str) -> None:
    for name, loss in LOSSES.items():
        pred = torch.zeros(0, 4, requires_grad=True)
        value = loss(pred, torch.zeros(0, 4), reduction)
        assert value.shape == ((0,) if reduction == "none" else ()), name
        assert bool(value.isfinite().all()) and float(value.detach().sum()) == 0.0, name
        value.sum().backward()
        assert pred.grad is not None and pred.grad.shape == (0, 4), name


@given(pair=STRICT_PAIRS)
def test_float32_matches_float64(pair: tuple) -> None:
    pred, target = pair
    for name, loss in LOSSES.items():
        out32 = loss(pred.float(), target.float())
        assert out32.dtype == torch.float32, name
        _close(out32, loss(pred, target).float(), name, rtol=1e-4, atol=1e-4)


@given(pair=STRICT_PAIRS)
def test_bfloat16_forward_matches_float64_loosely(pair: tuple) -> None:
    pred, target = (boxes.bfloat16() for boxes in pair)
    for name, loss in LOSSES.items():
        out16 = loss(pred, target)
        assert out16.dtype == torch.bfloat16, name
        expected = loss(pred.double(), target.double())
        _close(out16.double(), expected, name, rtol=2e-2, atol=2e-2)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", LOSSES)
def test_invalid_reduction_raises_input_value_error_naming_it(name: str) -> None:
    with pytest.raises(InputValueError, match=r"reduction must be one of .* got 'avg'"):
        LOSSES[name](torch.zeros(1, 4), torch.zeros(1, 4), "avg")


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), (3, 5)])
@pytest.mark.parametrize("name", LOSSES)
def test_wrong_shape_raises_box_format_error_naming_argument(name: str, shape: tuple) -> None:
    with pytest.raises(BoxFormatError, match=r"target must have shape \[N, 4\], got") as info:
        LOSSES[name](torch.zeros(3, 4), torch.zeros(shape))
    assert str(shape) in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, CxrboxError)


@pytest.mark.parametrize("name", LOSSES)
def test_mismatched_pair_count_raises_box_format_error(name: str) -> None:
    with pytest.raises(BoxFormatError, match=r"same shape.*\(2, 4\) and \(3, 4\)"):
        LOSSES[name](torch.zeros(2, 4), torch.zeros(3, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", LOSSES)
def test_non_finite_pred_raises_box_format_error(name: str, bad: float) -> None:
    pred = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.1, bad, 0.5, 0.5]])
    with pytest.raises(BoxFormatError, match=r"pred must hold finite values.*\(2, 4\)"):
        LOSSES[name](pred, torch.zeros(2, 4))


@pytest.mark.parametrize("name", LOSSES)
def test_integer_boxes_raise_box_format_error(name: str) -> None:
    with pytest.raises(BoxFormatError, match="pred must be a floating-point tensor"):
        LOSSES[name](torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2, 4))


@pytest.mark.parametrize("name", LOSSES)
def test_validate_false_lets_nan_reach_the_loss(name: str) -> None:
    # never masked: the training loop's finite-loss check must see it
    pred = torch.tensor([[0.1, float("nan"), 0.5, 0.5]])
    value = LOSSES[name](pred, torch.tensor([[0.1, 0.1, 0.4, 0.4]]), validate=False)
    assert bool(value.isnan().all())


@pytest.mark.gpu
def test_losses_on_cuda_do_not_synchronize_with_the_host() -> None:
    pred = torch.rand(64, 4, device="cuda", requires_grad=True)
    target = torch.rand(64, 4, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for loss in LOSSES.values():
            loss(pred, target, "mean").backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
