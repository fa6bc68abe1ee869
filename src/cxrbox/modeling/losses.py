"""Box-regression losses on matched pairs of normalized xyxy boxes (pred[i] against target[i]).

Every loss first puts both inputs through `order_and_clip_xyxy(boxes, 1, 1)`, so all branches
(IoU family, corner L1, centre/size L1) see one coordinate system: ordered corners inside the
unit square. A coordinate strictly outside [0, 1] therefore gets no gradient; the model's output
range should keep it inside (a sigmoid does).

Values and gradients stay finite for degenerate boxes (zero width or height, points, identical
boxes, boxes far apart): see `cxrbox.boxes` for where eps enters. For near-zero-size predicted
boxes CIoU's aspect term has gradients up to about 1/eps in magnitude (as in torchvision and
ultralytics, which use the same eps); they are finite, and gradient clipping bounds them.

Validation follows `cxrbox.boxes`: shapes always, finite values on CPU tensors unless
`validate=False`; on accelerators NaN/Inf reach the loss value, which the training loop checks.
Inputs must be floating point; the IoU family computes half/bfloat16 in float32 internally and
every loss is returned in the input dtype.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from cxrbox.boxes import (
    check_box_shape,
    check_box_values,
    elementwise_box_iou,
    order_and_clip_xyxy,
    xyxy_to_cxcywh,
)
from cxrbox.errors import BoxFormatError, InputValueError

Reduction = Literal["none", "mean", "sum"]
REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise InputValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _prepare(pred: Tensor, target: Tensor, validate: bool) -> tuple[Tensor, Tensor]:
    """Check floating [N, 4] pairs, then order and clip both into [0, 1]^2."""
    check_box_shape("pred", pred, rank=2)
    check_box_shape("target", target, rank=2)
    if pred.shape != target.shape:
        raise BoxFormatError(
            f"pred and target must have the same shape [N, 4], got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    for name, boxes in (("pred", pred), ("target", target)):
        if not boxes.is_floating_point():
            raise BoxFormatError(f"{name} must be a floating-point tensor, got {boxes.dtype}")
        check_box_values(name, boxes, validate)
    pred = order_and_clip_xyxy(pred, 1, 1, validate=False)
    target = order_and_clip_xyxy(target, 1, 1, validate=False)
    return pred, target


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    """loss (Tensor[N]) -> Tensor[N] ("none") or a scalar; an empty mean is 0 on the graph."""
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else loss.sum() * 0.0
    return loss


def _iou_loss(
    kind: str, pred: Tensor, target: Tensor, reduction: str, eps: float, validate: bool
) -> Tensor:
    _check_reduction(reduction)
    p, t = _prepare(pred, target, validate)
    loss = 1 - elementwise_box_iou(p, t, kind, eps, validate=False)  # type: ignore[arg-type]
    return _reduce(loss, reduction)


def giou_loss(
    pred: Tensor,
    target: Tensor,
    reduction: Reduction = "none",
    eps: float = 1e-7,
    *,
    validate: bool = True,
) -> Tensor:
    """1 - GIoU of matched pairs, in [0, 2].

    pred, target (Tensor[N, 4]): xyxy, normalized, any corner order. Returns Tensor[N] for
    reduction="none", else a scalar.
    """
    return _iou_loss("giou", pred, target, reduction, eps, validate)


def diou_loss(
    pred: Tensor,
    target: Tensor,
    reduction: Reduction = "none",
    eps: float = 1e-7,
    *,
    validate: bool = True,
) -> Tensor:
    """1 - DIoU of matched pairs, in [0, 2].

    pred, target (Tensor[N, 4]): xyxy, normalized, any corner order. Returns Tensor[N] for
    reduction="none", else a scalar.
    """
    return _iou_loss("diou", pred, target, reduction, eps, validate)


def ciou_loss(
    pred: Tensor,
    target: Tensor,
    reduction: Reduction = "none",
    eps: float = 1e-7,
    *,
    validate: bool = True,
) -> Tensor:
    """1 - CIoU of matched pairs, in [0, 2.5]; alpha is a constant in backward (paper).

    pred, target (Tensor[N, 4]): xyxy, normalized, any corner order. Returns Tensor[N] for
    reduction="none", else a scalar.
    """
    return _iou_loss("ciou", pred, target, reduction, eps, validate)


def l1_corner_loss(
    pred: Tensor, target: Tensor, reduction: Reduction = "none", *, validate: bool = True
) -> Tensor:
    """Mean absolute difference of the 4 corner coordinates per box.

    pred, target (Tensor[N, 4]): xyxy, normalized, any corner order. Returns Tensor[N] for
    reduction="none", else a scalar.
    """
    _check_reduction(reduction)
    p, t = _prepare(pred, target, validate)
    loss = (p - t).abs().mean(dim=-1)  # [N]
    return _reduce(loss, reduction)


def l1_center_size_loss(
    pred: Tensor, target: Tensor, reduction: Reduction = "none", *, validate: bool = True
) -> Tensor:
    """Mean absolute difference of (cx, cy, w, h) per box, from the ordered, clipped boxes.

    pred, target (Tensor[N, 4]): xyxy, normalized, any corner order. Returns Tensor[N] for
    reduction="none", else a scalar.
    """
    _check_reduction(reduction)
    p, t = _prepare(pred, target, validate)
    p_cxcywh = xyxy_to_cxcywh(p, validate=False)
    t_cxcywh = xyxy_to_cxcywh(t, validate=False)
    loss = (p_cxcywh - t_cxcywh).abs().mean(dim=-1)  # [N]
    return _reduce(loss, reduction)
