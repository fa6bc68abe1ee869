"""The one decode and post-processing path: training eval, eval, predict and the quantized model.

Every head returns `raw: Tensor[B, 5, Hg, Wg]` (a 1x1 grid for the pooled head): channel 0 the
objectness logit, 1-2 the centre offsets (tx, ty), 3-4 the log sizes (tw, th). For the cell at
(row i, col j), in normalized image coordinates (YOLO style):

    cx = (j + sigmoid(tx)) / Wg          w = prior_w * exp(clamp(tw, -log_clamp, log_clamp))
    cy = (i + sigmoid(ty)) / Hg          h = prior_h * exp(clamp(th, -log_clamp, log_clamp))

The box is then ordered and clipped into [0, 1] (`order_and_clip_xyxy`), so every loss, metric
and prediction sees the same clipped xyxy boxes. Cells are flattened row-major (cell index
i * Wg + j), the order `cell_of` and target assignment use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from cxrbox.boxes import box_iou, check_box_shape, check_box_values, order_and_clip_xyxy
from cxrbox.errors import BoxFormatError, ConfigError, InputValueError

__all__ = [
    "DEFAULT_PRIOR",
    "LOG_CLAMP",
    "Detections",
    "GridCoding",
    "cell_of",
    "decode_detections",
    "decode_grid",
    "nms",
    "postprocess",
    "to_rsna_prediction_string",
]

# exp(+-4) spans sizes from prior/55 to prior*55: wide enough for any box, and it keeps an
# untrained head's exp() from overflowing.
LOG_CLAMP = 4.0
# Box side as a fraction of the image when tw = th = 0.
DEFAULT_PRIOR = 0.25
RAW_CHANNELS = 5


@dataclass(frozen=True)
class GridCoding:
    """How raw head outputs map to boxes: prior box side (fraction of the image), log clamp."""

    prior_w: float = DEFAULT_PRIOR
    prior_h: float = DEFAULT_PRIOR
    log_clamp: float = LOG_CLAMP

    def __post_init__(self) -> None:
        for name in ("prior_w", "prior_h"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 < value <= 1.0):
                raise ConfigError(f"GridCoding.{name} must be in (0, 1], got {value!r}")
        if not (math.isfinite(self.log_clamp) and self.log_clamp > 0.0):
            raise ConfigError(f"GridCoding.log_clamp must be > 0, got {self.log_clamp!r}")


class Detections(NamedTuple):
    """One image's detections, sorted by descending score.

    boxes (Tensor[K, 4]): xyxy, normalized. scores (Tensor[K]): in [0, 1].
    """

    boxes: Tensor
    scores: Tensor


def decode_grid(raw: Tensor, coding: GridCoding = GridCoding()) -> tuple[Tensor, Tensor]:
    """Head output -> boxes and objectness scores, one per grid cell (row-major).

    raw (Tensor[B, 5, Hg, Wg]): objectness logit, tx, ty, tw, th.
    Returns boxes (Tensor[B, Hg*Wg, 4]): xyxy, normalized, ordered and clipped into [0, 1];
    scores (Tensor[B, Hg*Wg]): sigmoid(objectness). Differentiable; no host sync (NaN/Inf in
    `raw` propagate to the output, for the training loop's finite-loss check to report).
    """
    if not isinstance(raw, Tensor) or raw.ndim != 4 or raw.shape[1] != RAW_CHANNELS:
        shape = tuple(raw.shape) if isinstance(raw, Tensor) else type(raw).__name__
        raise InputValueError(f"raw must be a Tensor[B, 5, Hg, Wg] head output, got {shape}")
    batch, _, grid_h, grid_w = raw.shape
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, device=raw.device, dtype=raw.dtype),
        torch.arange(grid_w, device=raw.device, dtype=raw.dtype),
        indexing="ij",
    )  # [Hg, Wg] each
    flat = raw.reshape(batch, RAW_CHANNELS, grid_h * grid_w)  # [B, 5, N]
    logit, tx, ty, tw, th = flat.unbind(1)  # [B, N] each
    cx = (cols.reshape(-1) + torch.sigmoid(tx)) / grid_w
    cy = (rows.reshape(-1) + torch.sigmoid(ty)) / grid_h
    c = coding.log_clamp
    half_w = 0.5 * coding.prior_w * torch.exp(tw.clamp(-c, c))
    half_h = 0.5 * coding.prior_h * torch.exp(th.clamp(-c, c))
    boxes = torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)  # [B, N, 4]
    return order_and_clip_xyxy(boxes, 1.0, 1.0, validate=False), torch.sigmoid(logit)


def cell_of(boxes: Tensor, grid_h: int, grid_w: int) -> tuple[Tensor, Tensor]:
    """Grid cell holding each box centre: row = floor(cy * Hg), col = floor(cx * Wg).

    A centre exactly on a cell border goes to the cell below/right of it; a centre on the
    image's right/bottom edge (1.0) goes to the last cell. boxes (Tensor[K, 4]): xyxy,
    normalized, centres in [0, 1] (checked on CPU). Returns rows, cols (LongTensor[K] each).
    """
    check_box_shape("boxes", boxes, rank=2)
    for name, value in (("grid_h", grid_h), ("grid_w", grid_w)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputValueError(f"{name} must be an int >= 1, got {value!r}")
    check_box_values("boxes", boxes, validate=True)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2  # [K]
    cy = (boxes[:, 1] + boxes[:, 3]) / 2  # [K]
    if boxes.device.type == "cpu" and boxes.numel():
        outside = (cx < 0) | (cx > 1) | (cy < 0) | (cy > 1)
        if bool(outside.any()):
            raise BoxFormatError(
                f"boxes must be normalized with centres in [0, 1], got {int(outside.sum())} of "
                f"{boxes.shape[0]} centres outside; normalize and clip the boxes first"
            )
    rows = torch.floor(cy * grid_h).long().clamp(0, grid_h - 1)
    cols = torch.floor(cx * grid_w).long().clamp(0, grid_w - 1)
    return rows, cols


def _check_threshold(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, max_keep: int | None = None) -> Tensor:
    """Greedy non-maximum suppression: drop a box whose IoU with a kept, higher box is > thr.

    boxes (Tensor[N, 4]): xyxy, ordered. scores (Tensor[N]): finite. Equal scores keep index
    order (stable sort). max_keep: stop after that many kept boxes (the first max_keep of the
    full answer). Returns LongTensor[K]: indices kept, by descending score.
    """
    check_box_shape("boxes", boxes, rank=2)
    if not isinstance(scores, Tensor) or scores.shape != boxes.shape[:1]:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise InputValueError(f"scores must be a Tensor[{boxes.shape[0]}], got {shape}")
    _check_threshold("iou_threshold", iou_threshold)
    _check_max_keep("max_keep", max_keep)
    _check_box_and_score_values(boxes, scores)
    return _greedy_nms(boxes, scores, iou_threshold, max_keep)


def _check_max_keep(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")


def _check_box_and_score_values(boxes: Tensor, scores: Tensor) -> None:
    """NaN/Inf and unordered boxes, NaN/Inf scores: BoxFormatError/InputValueError (CPU only)."""
    check_box_values("boxes", boxes, validate=True, require="xyxy")
    if scores.device.type == "cpu" and scores.numel() and not bool(torch.isfinite(scores).all()):
        raise InputValueError("scores must be finite, got NaN/Inf")


def _greedy_nms(
    boxes: Tensor, scores: Tensor, iou_threshold: float, max_keep: int | None
) -> Tensor:
    """`nms` without argument checks. boxes [N, 4], scores [N] -> LongTensor[K]."""
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices  # [N]
    ranked = boxes[order]  # [N, 4]
    over = (box_iou(ranked, ranked, validate=False) > iou_threshold).cpu().numpy()  # [N, N]
    removed = np.zeros(n, dtype=bool)
    kept: list[int] = []
    for i in range(n):
        if removed[i]:
            continue
        kept.append(i)
        if len(kept) == max_keep:
            break
        removed |= over[i]
    return order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]


def postprocess(
    boxes: Tensor,
    scores: Tensor,
    score_threshold: float = 0.3,
    iou_threshold: float = 0.5,
    top_k: int = 4,
) -> list[Detections]:
    """Per image: keep scores >= score_threshold, NMS at iou_threshold, the top_k by score.

    boxes (Tensor[B, N, 4]): xyxy, normalized (from `decode_grid`). scores (Tensor[B, N]).
    Returns B `Detections`, each with K <= top_k boxes sorted by descending score.
    """
    check_box_shape("boxes", boxes)
    if boxes.ndim != 3 or not isinstance(scores, Tensor) or scores.shape != boxes.shape[:2]:
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise InputValueError(
            f"boxes must be Tensor[B, N, 4] and scores Tensor[B, N], got {tuple(boxes.shape)} "
            f"and {got}"
        )
    _check_threshold("score_threshold", score_threshold)
    _check_threshold("iou_threshold", iou_threshold)
    _check_max_keep("top_k", top_k)
    _check_box_and_score_values(boxes, scores)
    out: list[Detections] = []
    for image_boxes, image_scores in zip(boxes, scores, strict=True):
        candidates = torch.nonzero(image_scores >= score_threshold).squeeze(1)  # [C]
        keep = candidates[
            _greedy_nms(image_boxes[candidates], image_scores[candidates], iou_threshold, top_k)
        ]
        out.append(Detections(boxes=image_boxes[keep], scores=image_scores[keep]))
    return out


def decode_detections(
    raw: Tensor,
    coding: GridCoding = GridCoding(),
    score_threshold: float = 0.3,
    iou_threshold: float = 0.5,
    top_k: int = 4,
) -> list[Detections]:
    """`decode_grid` then `postprocess`: raw (Tensor[B, 5, Hg, Wg]) -> B `Detections`."""
    with torch.no_grad():
        boxes, scores = decode_grid(raw, coding)
    return postprocess(boxes, scores, score_threshold, iou_threshold, top_k)


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def to_rsna_prediction_string(detections: Detections, width: float, height: float) -> str:
    """RSNA submission `PredictionString`: "conf x y w h" groups joined by spaces.

    conf with 4 decimals; x, y (top-left), w, h in pixels of the original width x height image,
    integers: the corners are rounded half up, then w = x2 - x1 and h = y2 - y1 of the rounded
    corners. detections.boxes are normalized xyxy. No detections -> "".
    """
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputValueError(f"{name} must be a number > 0, got {type(value).__name__}")
        if not (math.isfinite(value) and value > 0):
            raise InputValueError(f"{name} must be a finite number > 0, got {value!r}")
    check_box_shape("detections.boxes", detections.boxes, rank=2)
    groups = []
    for box, score in zip(detections.boxes.tolist(), detections.scores.tolist(), strict=True):
        x1, x2 = _round_half_up(box[0] * width), _round_half_up(box[2] * width)
        y1, y2 = _round_half_up(box[1] * height), _round_half_up(box[3] * height)
        groups.append(f"{score:.4f} {x1} {y1} {x2 - x1} {y2 - y1}")
    return " ".join(groups)
