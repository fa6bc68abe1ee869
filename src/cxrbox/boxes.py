"""Box geometry: format conversions, clipping, flips and the IoU family (torch, differentiable).

Conventions:
- xyxy `(x1, y1, x2, y2)` is canonical; every other format is in the function name
  (`xywh` is RSNA/COCO top-left x, y, width, height; `cxcywh` is centre x, y, width, height).
- Coordinates are continuous: width = x2 - x1, height = y2 - y1, no +1.
- Pixel boxes live in [0, W] x [0, H]; normalized boxes live in [0, 1] x [0, 1], and functions
  that take an image size are called with width = height = 1 for them.
- Functions are batched over leading dimensions (`Tensor[..., 4]`) unless the docstring says
  pairwise, where inputs are exactly `Tensor[N, 4]` and `Tensor[M, 4]`.

Validation: shapes are always checked (metadata only, free). The data-dependent checks (finite
values; ordered corners or non-negative sizes where a function requires them) run when
`validate=True` and the tensor is on the CPU. They are skipped for tensors on an accelerator,
because reading their result would force a host sync on every call (losses run every training
step); there NaN/Inf propagate into the output, never masked, and the training loop's single
per-step finite-loss check reports them. Pass `validate=False` to skip them on CPU as well.

IoU family: the definitions of the GIoU paper (Rezatofighi et al. 2019) and the DIoU/CIoU paper
(Zheng et al. 2020) as torchvision.ops defines them, with `eps` added to every denominator so
degenerate boxes (zero width or height, points) give finite values and gradients: the union, the
enclosing area, the enclosing diagonal and the box heights in CIoU's aspect term. CIoU's
trade-off weight alpha is computed without gradient, as in the paper and torchvision. Half and
bfloat16 inputs are computed in float32 and returned in their own dtype. Integer boxes (any
width, signed or not) are widened to int64 before any arithmetic, so areas, sizes and flips are
exact; their IoUs are computed in float64 and returned as float32.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import torch
from torch import Tensor

from cxrbox.errors import BoxFormatError, InputValueError

IouKind = Literal["iou", "giou", "diou", "ciou"]
IOU_KINDS: tuple[str, ...] = ("iou", "giou", "diou", "ciou")

_ASPECT_SCALE = 4.0 / math.pi**2


# --------------------------------------------------------------------------------------------
# validation


def check_box_shape(name: str, boxes: Tensor, rank: int | None = None) -> None:
    """Raise BoxFormatError unless `boxes` is a Tensor[..., 4] (Tensor[N, 4] if rank=2).

    `name` is the argument name the message reports.
    """
    if not isinstance(boxes, Tensor):
        raise BoxFormatError(f"{name} must be a torch.Tensor of boxes, got {type(boxes).__name__}")
    shape = tuple(boxes.shape)
    if rank == 2 and (boxes.ndim != 2 or shape[-1] != 4):
        raise BoxFormatError(f"{name} must have shape [N, 4], got {shape}")
    if boxes.ndim == 0 or shape[-1] != 4:
        raise BoxFormatError(f"{name} must have shape [..., 4], got {shape}")


def check_box_values(
    name: str, boxes: Tensor, validate: bool, require: Literal["", "xyxy", "wh"] = ""
) -> None:
    """Raise BoxFormatError on NaN/Inf (and on `require` violations); CPU tensors only.

    Skipped when `validate` is False or the tensor is not on the CPU (see the module docstring).
    require="xyxy": corners ordered (x1 <= x2, y1 <= y2); require="wh": entries 2, 3
    (width, height) are >= 0.
    """
    if not validate or boxes.device.type != "cpu" or boxes.numel() == 0:
        return
    shape = tuple(boxes.shape)
    if boxes.is_floating_point():
        finite = torch.isfinite(boxes)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise BoxFormatError(
                f"{name} must hold finite values, got NaN/Inf in {bad} of {boxes.numel()} "
                f"entries (shape {shape}); check the labels or the model output that produced it"
            )
    if require == "xyxy":
        bad = int(((boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])).sum())
        if bad:
            raise BoxFormatError(
                f"{name} must be ordered xyxy (x1 <= x2, y1 <= y2), got {bad} unordered boxes "
                f"(shape {shape}); pass them through order_and_clip_xyxy first"
            )
    elif require == "wh":
        bad = int(((boxes[..., 2] < 0) | (boxes[..., 3] < 0)).sum())
        if bad:
            raise BoxFormatError(
                f"{name} must have width and height >= 0, got {bad} boxes with a negative size "
                f"(shape {shape}); check the label file's width/height columns"
            )


def _check_size(name: str, value: float) -> None:
    """Raise InputValueError unless `value` is a finite number > 0 (an image width or height)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputValueError(f"{name} must be a number > 0, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise InputValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_eps(eps: float) -> None:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < math.inf:
        raise InputValueError(f"eps must be a finite number > 0, got {eps!r}")


def widen(boxes: Tensor) -> Tensor:
    """Integer boxes as int64, floating boxes unchanged: sums, differences and products of
    int8/int16/int32/uint8 coordinates are exact (torchvision widens before arithmetic too).
    """
    if boxes.is_floating_point() or boxes.dtype == torch.int64:
        return boxes
    return boxes.to(torch.int64)


def _halvable(boxes: Tensor) -> Tensor:
    """Integer boxes as float64 (centres are halves; every int32 sum is exact in float64)."""
    return boxes if boxes.is_floating_point() else boxes.to(torch.float64)


# --------------------------------------------------------------------------------------------
# format conversions


def xywh_to_xyxy(boxes: Tensor, *, validate: bool = True) -> Tensor:
    """(x, y, w, h), top-left corner and size (RSNA/COCO) -> xyxy.

    boxes (Tensor[..., 4]): xywh, w >= 0 and h >= 0. Returns Tensor[..., 4].
    """
    check_box_shape("boxes", boxes)
    check_box_values("boxes", boxes, validate, require="wh")
    x, y, w, h = widen(boxes).unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def xyxy_to_xywh(boxes: Tensor, *, validate: bool = True) -> Tensor:
    """xyxy -> (x, y, w, h) top-left corner and size. boxes (Tensor[..., 4]) -> Tensor[..., 4]."""
    check_box_shape("boxes", boxes)
    check_box_values("boxes", boxes, validate)
    x1, y1, x2, y2 = widen(boxes).unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def xyxy_to_cxcywh(boxes: Tensor, *, validate: bool = True) -> Tensor:
    """xyxy -> (cx, cy, w, h) centre and size. boxes (Tensor[..., 4]) -> Tensor[..., 4]
    (float64 for integer boxes)."""
    check_box_shape("boxes", boxes)
    check_box_values("boxes", boxes, validate)
    x1, y1, x2, y2 = _halvable(boxes).unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: Tensor, *, validate: bool = True) -> Tensor:
    """(cx, cy, w, h) centre and size -> xyxy.

    boxes (Tensor[..., 4]): cxcywh, w >= 0 and h >= 0. Returns Tensor[..., 4].
    """
    check_box_shape("boxes", boxes)
    check_box_values("boxes", boxes, validate, require="wh")
    cx, cy, w, h = _halvable(boxes).unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def normalize_xyxy(boxes: Tensor, width: float, height: float, *, validate: bool = True) -> Tensor:
    """Pixel xyxy in a width x height image -> normalized xyxy (divide x by W, y by H).

    boxes (Tensor[..., 4]): xyxy, pixels. Returns Tensor[..., 4], normalized.
    """
    check_box_shape("boxes", boxes)
    _check_size("width", width)
    _check_size("height", height)
    check_box_values("boxes", boxes, validate)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1 / width, y1 / height, x2 / width, y2 / height), dim=-1)


def denormalize_xyxy(
    boxes: Tensor, width: float, height: float, *, validate: bool = True
) -> Tensor:
    """Normalized xyxy -> pixel xyxy in a width x height image (multiply x by W, y by H).

    boxes (Tensor[..., 4]): xyxy, normalized. Returns Tensor[..., 4], pixels.
    """
    check_box_shape("boxes", boxes)
    _check_size("width", width)
    _check_size("height", height)
    check_box_values("boxes", boxes, validate)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1 * width, y1 * height, x2 * width, y2 * height), dim=-1)


# --------------------------------------------------------------------------------------------
# geometry on xyxy


def order_and_clip_xyxy(
    boxes: Tensor, width: float, height: float, *, validate: bool = True
) -> Tensor:
    """Sort corners (x1 <= x2, y1 <= y2), then clamp into [0, width] x [0, height].

    Sorting uses torch.minimum/maximum so gradients reach whichever corner is smaller; a
    coordinate strictly outside the image gets zero gradient from the clamp. Normalized boxes
    use width = height = 1.
    boxes (Tensor[..., 4]): xyxy, any corner order. Returns Tensor[..., 4], ordered, inside.
    """
    check_box_shape("boxes", boxes)
    _check_size("width", width)
    _check_size("height", height)
    check_box_values("boxes", boxes, validate)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(
        (
            torch.minimum(x1, x2).clamp(0, width),
            torch.minimum(y1, y2).clamp(0, height),
            torch.maximum(x1, x2).clamp(0, width),
            torch.maximum(y1, y2).clamp(0, height),
        ),
        dim=-1,
    )


def box_area(boxes: Tensor, *, validate: bool = True) -> Tensor:
    """Area (x2 - x1) * (y2 - y1). boxes (Tensor[..., 4]): xyxy, ordered. Returns Tensor[...]:
    int64 for integer boxes (exact: widened first), the input's dtype for floating ones."""
    check_box_shape("boxes", boxes)
    check_box_values("boxes", boxes, validate, require="xyxy")
    x1, y1, x2, y2 = widen(boxes).unbind(-1)
    return (x2 - x1) * (y2 - y1)


def hflip_xyxy(boxes: Tensor, width: float, *, validate: bool = True) -> Tensor:
    """Boxes of a horizontally flipped width-wide image: x1' = W - x2, x2' = W - x1.

    boxes (Tensor[..., 4]): xyxy. Returns Tensor[..., 4], ordered if the input was.
    """
    check_box_shape("boxes", boxes)
    _check_size("width", width)
    check_box_values("boxes", boxes, validate)
    x1, y1, x2, y2 = widen(boxes).unbind(-1)
    return torch.stack((width - x2, y1, width - x1, y2), dim=-1)


def vflip_xyxy(boxes: Tensor, height: float, *, validate: bool = True) -> Tensor:
    """Boxes of a vertically flipped height-tall image: y1' = H - y2, y2' = H - y1.

    boxes (Tensor[..., 4]): xyxy. Returns Tensor[..., 4], ordered if the input was.
    """
    check_box_shape("boxes", boxes)
    _check_size("height", height)
    check_box_values("boxes", boxes, validate)
    x1, y1, x2, y2 = widen(boxes).unbind(-1)
    return torch.stack((x1, height - y2, x2, height - y1), dim=-1)


# --------------------------------------------------------------------------------------------
# IoU family: one implementation, used pairwise (broadcast) and elementwise (matched pairs)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32/float64 stay; half and bfloat16 are computed in float32; integer boxes in
    float64 (every int32 coordinate, and its products, exact)."""
    if dtype in (torch.float32, torch.float64):
        return dtype
    return torch.float32 if dtype.is_floating_point else torch.float64


def _result_dtype(dtype: torch.dtype) -> torch.dtype:
    """Floating inputs get their own dtype back; integer inputs get float32."""
    return dtype if dtype.is_floating_point else torch.float32


def _iou_family(boxes1: Tensor, boxes2: Tensor, kind: str, eps: float) -> Tensor:
    """IoU, GIoU, DIoU or CIoU of broadcastable ordered xyxy boxes, without value checks.

    The single implementation behind the pairwise functions and `elementwise_box_iou` (which
    the losses call). boxes1, boxes2 (Tensor[..., 4]): xyxy, ordered, float32/float64,
    broadcastable. Returns Tensor[broadcast(...)] in the inputs' dtype.
    """
    if kind not in IOU_KINDS:
        raise InputValueError(f"kind must be one of {IOU_KINDS}, got {kind!r}")
    x1, y1, x2, y2 = boxes1.unbind(-1)
    u1, v1, u2, v2 = boxes2.unbind(-1)
    w1, h1 = x2 - x1, y2 - y1
    w2, h2 = u2 - u1, v2 - v1

    inter = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp(min=0) * (
        torch.minimum(y2, v2) - torch.maximum(y1, v1)
    ).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter
    iou = inter / (union + eps)
    if kind == "iou":
        return iou

    # smallest enclosing box
    enclose_w = (torch.maximum(x2, u2) - torch.minimum(x1, u1)).clamp(min=0)
    enclose_h = (torch.maximum(y2, v2) - torch.minimum(y1, v1)).clamp(min=0)
    if kind == "giou":
        enclose_area = enclose_w * enclose_h
        return iou - (enclose_area - union) / (enclose_area + eps)

    # squared centre distance over squared enclosing diagonal
    centre_dist2 = ((x1 + x2 - u1 - u2) ** 2 + (y1 + y2 - v1 - v2) ** 2) / 4
    diou = iou - centre_dist2 / (enclose_w**2 + enclose_h**2 + eps)
    if kind == "diou":
        return diou

    # aspect-ratio consistency v; alpha is a constant in backward (paper, torchvision)
    v = _ASPECT_SCALE * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


def elementwise_box_iou(
    boxes1: Tensor,
    boxes2: Tensor,
    kind: IouKind = "iou",
    eps: float = 1e-7,
    *,
    validate: bool = True,
) -> Tensor:
    """IoU-family value of matched pairs (boxes1[i] with boxes2[i]).

    boxes1, boxes2 (Tensor[..., 4]): xyxy, ordered, same shape. kind: "iou" | "giou" | "diou" |
    "ciou". Returns Tensor[...] in [0, 1] for iou, [-1, 1] for giou, [-1, 1] for diou and
    [-1.5, 1] for ciou (alpha * v <= 1/2 when IoU = 0).
    """
    check_box_shape("boxes1", boxes1)
    check_box_shape("boxes2", boxes2)
    if boxes1.shape != boxes2.shape:
        raise BoxFormatError(
            f"boxes1 and boxes2 must have the same shape [..., 4], got "
            f"{tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    return _checked_iou_family(boxes1, boxes2, kind, eps, validate, pairwise=False)


def _checked_iou_family(
    boxes1: Tensor, boxes2: Tensor, kind: str, eps: float, validate: bool, pairwise: bool
) -> Tensor:
    """Value checks on the shape-checked inputs, dtype handling, then `_iou_family`."""
    _check_eps(eps)
    check_box_values("boxes1", boxes1, validate, require="xyxy")
    check_box_values("boxes2", boxes2, validate, require="xyxy")
    dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    work = _compute_dtype(dtype)
    boxes1, boxes2 = boxes1.to(work), boxes2.to(work)
    if pairwise:
        # [N, 1, 4] against [1, M, 4] broadcasts to [N, M]
        boxes1, boxes2 = boxes1[:, None, :], boxes2[None, :, :]
    return _iou_family(boxes1, boxes2, kind, eps).to(_result_dtype(dtype))


def _pairwise(boxes1: Tensor, boxes2: Tensor, kind: str, eps: float, validate: bool) -> Tensor:
    check_box_shape("boxes1", boxes1, rank=2)
    check_box_shape("boxes2", boxes2, rank=2)
    return _checked_iou_family(boxes1, boxes2, kind, eps, validate, pairwise=True)


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7, *, validate: bool = True) -> Tensor:
    """Pairwise IoU = inter / (union + eps).

    boxes1 (Tensor[N, 4]), boxes2 (Tensor[M, 4]): xyxy, ordered. Returns Tensor[N, M] in [0, 1].
    """
    return _pairwise(boxes1, boxes2, "iou", eps, validate)


def generalized_box_iou(
    boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7, *, validate: bool = True
) -> Tensor:
    """Pairwise GIoU = IoU - (C - union) / (C + eps), C the smallest enclosing box's area.

    boxes1 (Tensor[N, 4]), boxes2 (Tensor[M, 4]): xyxy, ordered. Returns Tensor[N, M] in [-1, 1].
    """
    return _pairwise(boxes1, boxes2, "giou", eps, validate)


def distance_box_iou(
    boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7, *, validate: bool = True
) -> Tensor:
    """Pairwise DIoU = IoU - rho^2 / (c^2 + eps).

    rho is the distance between the box centres, c the enclosing box's diagonal.
    boxes1 (Tensor[N, 4]), boxes2 (Tensor[M, 4]): xyxy, ordered. Returns Tensor[N, M] in [-1, 1].
    """
    return _pairwise(boxes1, boxes2, "diou", eps, validate)


def complete_box_iou(
    boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7, *, validate: bool = True
) -> Tensor:
    """Pairwise CIoU = DIoU - alpha * v.

    v = 4/pi^2 (atan(w2 / (h2 + eps)) - atan(w1 / (h1 + eps)))^2 and
    alpha = v / (1 - IoU + v + eps), computed without gradient.
    boxes1 (Tensor[N, 4]), boxes2 (Tensor[M, 4]): xyxy, ordered. Returns Tensor[N, M] in [-1.5, 1].
    """
    return _pairwise(boxes1, boxes2, "ciou", eps, validate)
