"""Target assignment and the training loss, all on one coordinate system.

Each ground-truth box goes to the grid cell that holds its centre. When two boxes of one image
have their centres in the same cell, the cell keeps the LARGER box (by area) and the other is
counted in `LossParts.collisions` (logged every step): a grid cell predicts one box. At 256 px
the grid is 8x8 (cells of 12.5% of the image; 16x16 and 6.25% with `stride` 16), and RSNA
boxes of one image are separate opacities, so collisions are rare; the count makes them
visible rather than silent.

Loss = w_obj * BCE(objectness, every cell)
     + ramp * w_iou * (1 - GIoU | DIoU | CIoU)      on the assigned cells
     + w_corner * L1(corners) + w_center_size * L1(cx, cy, w, h)   on the assigned cells.
Box branches compare the decoded prediction with the target through `cxrbox.modeling.losses`, which
puts both through `order_and_clip_xyxy` first: one set of clipped, ordered, normalized boxes for
every branch (the original code mixed raw sigmoid centres with clipped corners).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cxrbox.boxes import box_area
from cxrbox.errors import ConfigError
from cxrbox.modeling import losses
from cxrbox.modeling.decode import GridCoding, cell_of, decode_grid
from cxrbox.options import IOU_LOSS_NAMES

IOU_LOSSES: dict[str, Callable[..., torch.Tensor]] = dict(
    zip(IOU_LOSS_NAMES, (losses.giou_loss, losses.diou_loss, losses.ciou_loss), strict=True)
)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss branches; `iou_kind` picks the IoU-family loss."""

    objectness: float = 1.0
    iou: float = 2.0
    corner: float = 5.0
    center_size: float = 5.0
    iou_kind: str = "giou"

    def __post_init__(self) -> None:
        if self.iou_kind not in IOU_LOSSES:
            raise ConfigError(
                f"iou_kind must be one of {sorted(IOU_LOSSES)}, got {self.iou_kind!r}"
            )


@dataclass(frozen=True)
class GridTargets:
    """Per-cell targets for a batch, cells flattened row-major like `decode_grid`.

    positive (Tensor[B, Hg*Wg] bool): the cell holds a box centre.
    boxes (Tensor[B, Hg*Wg, 4]): the assigned normalized xyxy box (zeros where not positive).
    collisions (int): boxes that lost their cell to a larger box of the same image.
    """

    positive: Tensor
    boxes: Tensor
    collisions: int

    def to(self, device: torch.device | str, non_blocking: bool = False) -> GridTargets:
        return GridTargets(
            positive=self.positive.to(device, non_blocking=non_blocking),
            boxes=self.boxes.to(device, non_blocking=non_blocking),
            collisions=self.collisions,
        )


@dataclass(frozen=True)
class LossParts:
    """The total loss (differentiable) and each branch as a detached tensor for logging."""

    total: Tensor
    objectness: Tensor
    iou: Tensor
    corner: Tensor
    center_size: Tensor
    n_positive: Tensor
    collisions: int

    def stacked(self) -> Tensor:
        """[7] on the loss's device, in the order of `LOSS_VALUE_NAMES` (no host sync)."""
        return torch.stack(
            [
                self.total.detach(),
                self.objectness,
                self.iou,
                self.corner,
                self.center_size,
                self.n_positive.float(),
                self.total.new_tensor(float(self.collisions)),
            ]
        )

    def as_floats(self) -> dict[str, float]:
        """Host values for logging (one sync)."""
        return loss_values_as_floats(self.stacked().tolist())


LOSS_VALUE_NAMES = (
    "loss", "loss_objectness", "loss_iou", "loss_corner", "loss_center_size", "n_positive",
    "target_collisions",
)  # fmt: skip
N_MEAN_VALUES = 5  # the losses: averaged over data-parallel ranks; the counts after them add up


def loss_values_as_floats(values: list[float]) -> dict[str, float]:
    """`LossParts.stacked()` read on the host -> the step record's loss fields."""
    return dict(zip(LOSS_VALUE_NAMES, values, strict=True))


def assign_targets(
    boxes: list[Tensor], grid_h: int, grid_w: int, device: torch.device | None = None
) -> GridTargets:
    """Assign each box (list of [K_i, 4] normalized xyxy) to the cell holding its centre."""
    batch = len(boxes)
    n_cells = grid_h * grid_w
    positive = torch.zeros(batch, n_cells, dtype=torch.bool, device=device)
    target = torch.zeros(batch, n_cells, 4, device=device)
    collisions = 0
    for i, image_boxes in enumerate(boxes):
        if image_boxes.numel() == 0:
            continue
        image_boxes = image_boxes.to(device=device, dtype=torch.float32)
        rows, cols = cell_of(image_boxes, grid_h, grid_w)
        cells = rows * grid_w + cols  # [K]
        # Smaller boxes first, so a larger box written later wins a shared cell.
        order = torch.argsort(box_area(image_boxes), stable=True)
        cells, image_boxes = cells[order], image_boxes[order]
        collisions += int(cells.numel() - torch.unique(cells).numel())
        target[i, cells] = image_boxes
        positive[i, cells] = True
    return GridTargets(positive=positive, boxes=target, collisions=collisions)


def compute_loss(
    raw: Tensor,
    targets: GridTargets,
    weights: LossWeights = LossWeights(),
    coding: GridCoding = GridCoding(),
    iou_ramp: float = 1.0,
    box_normaliser: Tensor | None = None,
) -> LossParts:
    """Loss of raw head output [B, 5, Hg, Wg] against `assign_targets(...)` for the same grid.

    Box branches are evaluated on every cell and masked to the positive ones, so the step has
    static shapes and no host synchronisation (cheap: Hg*Wg boxes per image).
    `iou_ramp` in [0, 1] scales the IoU branch (ramped up over the first epochs: early on most
    IoUs are 0 and their gradient is weak, while L1 already points the right way).
    `box_normaliser` divides the box branches (default max(positive cells of this batch, 1));
    data-parallel training passes `cxrbox.engine.distributed.global_box_normaliser`.
    """
    batch, _, grid_h, grid_w = raw.shape
    if targets.positive.shape != (batch, grid_h * grid_w):
        raise ConfigError(
            f"targets are for {tuple(targets.positive.shape)} cells, "
            f"raw output has batch {batch} and a {grid_h}x{grid_w} grid"
        )
    if raw.dtype in (torch.float16, torch.bfloat16):
        raw = raw.float()  # the loss is computed in (at least) float32 under autocast
    pred_boxes, _ = decode_grid(raw, coding)  # [B, N, 4]
    obj_logits = raw[:, 0].reshape(batch, -1)  # [B, N]
    # Targets in the output's dtype: BCE-with-logits computes in its target's dtype, so a
    # float32 mask would silently round a float64 loss (the golden run is float64).
    mask = targets.positive.to(raw.dtype)  # [B, N]
    n_positive = mask.sum()
    denominator = n_positive.clamp(min=1.0) if box_normaliser is None else box_normaliser

    objectness = F.binary_cross_entropy_with_logits(obj_logits, mask, reduction="sum") / batch

    flat_pred = pred_boxes.reshape(-1, 4)  # [B*N, 4]
    flat_target = targets.boxes.to(raw.dtype).reshape(-1, 4)  # [B*N, 4]
    flat_mask = mask.reshape(-1)

    def masked_mean(per_box: Tensor) -> Tensor:
        return (per_box * flat_mask).sum() / denominator

    iou = masked_mean(IOU_LOSSES[weights.iou_kind](flat_pred, flat_target, reduction="none"))
    corner = masked_mean(losses.l1_corner_loss(flat_pred, flat_target, reduction="none"))
    center_size = masked_mean(losses.l1_center_size_loss(flat_pred, flat_target, reduction="none"))

    total = (
        weights.objectness * objectness
        + iou_ramp * weights.iou * iou
        + weights.corner * corner
        + weights.center_size * center_size
    )
    return LossParts(
        total=total,
        objectness=objectness.detach(),
        iou=iou.detach(),
        corner=corner.detach(),
        center_size=center_size.detach(),
        n_positive=n_positive.detach(),
        collisions=targets.collisions,
    )
