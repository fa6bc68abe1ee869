"""Target assignment and the training loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from tests.strategies import box_tensors, normalized_boxes

from cxrbox.boxes import box_area
from cxrbox.errors import ConfigError
from cxrbox.modeling import losses
from cxrbox.modeling.decode import GridCoding, decode_grid
from cxrbox.modeling.objective import LossWeights, assign_targets, compute_loss
from cxrbox.options import STRIDES

# The grid side of each stride at the default 256 px: 16 (stride 16) and 8 (stride 32).
GRID_SIDES = pytest.mark.parametrize(
    "grid", [256 // s for s in STRIDES], ids=[f"stride{s}" for s in STRIDES]
)
# Boxes the decode can reproduce: sides within prior * exp(+-LOG_CLAMP) of the 0.25 prior.
DECODABLE_BOXES = box_tensors(normalized_boxes(min_size=0.01), min_n=1, max_n=6)


def _off_cell_borders(boxes: torch.Tensor, grid: int, margin: float = 1e-3) -> bool:
    """Every centre at least `margin` of a cell from a cell border (no float32 ties there)."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2 * grid  # [K, 2] in cells
    frac = centres - centres.floor()
    return bool(((frac > margin) & (frac < 1 - margin)).all())


def test_box_goes_to_the_cell_holding_its_centre():
    box = torch.tensor([[0.55, 0.30, 0.70, 0.45]])  # centre (0.625, 0.375) -> row 1, col 2 of 4x4
    targets = assign_targets([box], 4, 4)
    assert targets.positive.nonzero().tolist() == [[0, 1 * 4 + 2]]
    torch.testing.assert_close(targets.boxes[0, 6], box[0])
    assert targets.collisions == 0


def test_two_centres_in_one_cell_keep_the_larger_box_and_count_the_collision():
    small = [0.05, 0.05, 0.15, 0.15]
    large = [0.00, 0.00, 0.22, 0.20]  # both centres in cell (0, 0) of a 4x4 grid
    for order in ([small, large], [large, small]):
        targets = assign_targets([torch.tensor(order)], 4, 4)
        assert int(targets.positive.sum()) == 1
        torch.testing.assert_close(targets.boxes[0, 0], torch.tensor(large))
        assert targets.collisions == 1


def test_images_without_boxes_have_no_positive_cells():
    targets = assign_targets([torch.zeros(0, 4), torch.tensor([[0.1, 0.1, 0.3, 0.3]])], 2, 2)
    assert targets.positive[0].sum() == 0
    assert targets.positive[1].sum() == 1


@GRID_SIDES
@given(boxes=DECODABLE_BOXES)
def test_each_cell_keeps_the_largest_box_centred_in_it(grid, boxes):
    assume(_off_cell_borders(boxes, grid))
    targets = assign_targets([boxes], grid, grid)
    by_cell: dict[int, list[list[float]]] = {}  # brute force: cell -> the boxes centred in it
    for x1, y1, x2, y2 in boxes.float().tolist():
        row, col = math.floor((y1 + y2) / 2 * grid), math.floor((x1 + x2) / 2 * grid)
        by_cell.setdefault(row * grid + col, []).append([x1, y1, x2, y2])
    assert targets.positive[0].nonzero().flatten().tolist() == sorted(by_cell)
    assert targets.collisions == len(boxes) - len(by_cell)
    for cell, candidates in by_cell.items():
        kept = targets.boxes[0, cell]
        assert kept.tolist() in candidates
        assert box_area(kept[None]).item() == max(box_area(torch.tensor(candidates)).tolist())


@GRID_SIDES
@given(boxes=DECODABLE_BOXES)
def test_the_raw_that_decodes_to_the_targets_has_zero_box_losses(grid, boxes):
    assume(_off_cell_borders(boxes, grid))
    targets = assign_targets([boxes], grid, grid)
    assigned = targets.boxes[0, targets.positive[0]].double()  # [P, 4], row-major cell order
    coding = GridCoding()
    raw = _raw_for_boxes([assigned], grid, coding)
    decoded, _ = decode_grid(raw, coding)
    torch.testing.assert_close(decoded[0, targets.positive[0]], assigned)
    parts = compute_loss(raw, targets, coding=coding)
    assert parts.corner.item() == pytest.approx(0.0, abs=1e-6)
    assert parts.center_size.item() == pytest.approx(0.0, abs=1e-6)


def _raw_for_boxes(boxes: list[torch.Tensor], grid: int, coding: GridCoding) -> torch.Tensor:
    """Raw head output whose decode puts exactly each image's boxes ([K_i, 4], one per cell)
    in the cells of their centres; every other cell scores ~0."""
    raw = torch.zeros(len(boxes), 5, grid, grid, dtype=torch.float64)
    raw[:, 0] = -10.0
    for i, image_boxes in enumerate(boxes):
        for x1, y1, x2, y2 in image_boxes.tolist():
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            row, col = int(cy * grid), int(cx * grid)
            raw[i, 0, row, col] = 10.0
            offsets = torch.tensor([cx * grid - col, cy * grid - row], dtype=torch.float64)
            sizes = torch.tensor([w / coding.prior_w, h / coding.prior_h], dtype=torch.float64)
            raw[i, 1:3, row, col] = torch.logit(offsets)
            raw[i, 3:, row, col] = torch.log(sizes)
    return raw


def test_perfect_prediction_has_zero_box_losses():
    coding = GridCoding()
    truth = torch.tensor([[0.1, 0.2, 0.4, 0.5], [0.5, 0.55, 0.8, 0.9]], dtype=torch.float64)
    raw = _raw_for_boxes(list(truth[:, None]), 4, coding)
    parts = compute_loss(raw, assign_targets(list(truth[:, None]), 4, 4), coding=coding)
    # 1e-5: the IoU losses divide by (union + eps), a relative bias of eps / area ~ 1e-6 here.
    assert parts.iou.item() == pytest.approx(0.0, abs=1e-5)
    assert parts.corner.item() == pytest.approx(0.0, abs=1e-6)
    assert parts.center_size.item() == pytest.approx(0.0, abs=1e-6)
    assert parts.objectness.item() < 1e-3
    assert parts.n_positive.item() == 2


def test_box_branches_equal_the_losses_on_the_positive_cells_only():
    torch.manual_seed(0)
    raw = torch.randn(3, 5, 4, 4, dtype=torch.float64)
    boxes = [
        torch.tensor([[0.1, 0.1, 0.3, 0.4]]),
        torch.zeros(0, 4),
        torch.tensor([[0.5, 0.5, 0.9, 0.7], [0.05, 0.6, 0.2, 0.95]]),
    ]
    targets = assign_targets(boxes, 4, 4)
    parts = compute_loss(raw, targets, LossWeights(iou_kind="ciou"))
    decoded, _ = decode_grid(raw)
    pred, target = decoded[targets.positive], targets.boxes[targets.positive].double()
    torch.testing.assert_close(
        parts.iou, losses.ciou_loss(pred, target, reduction="mean"), check_dtype=False
    )
    torch.testing.assert_close(parts.corner, losses.l1_corner_loss(pred, target, reduction="mean"))
    torch.testing.assert_close(
        parts.center_size, losses.l1_center_size_loss(pred, target, reduction="mean")
    )


def test_box_gradients_reach_only_positive_cells():
    # Seeded and scaled: with log-sizes near 2 the positive cell's box covers the whole image,
    # every corner is clipped and, by design, no gradient reaches it (2 of 3000 unscaled seeds).
    generator = torch.Generator().manual_seed(0)
    raw = (0.5 * torch.randn(1, 5, 4, 4, generator=generator)).requires_grad_()
    targets = assign_targets([torch.tensor([[0.1, 0.1, 0.3, 0.3]])], 4, 4)
    compute_loss(raw, targets, LossWeights(objectness=0.0)).total.backward()
    box_grad = raw.grad[0, 1:].abs().sum(dim=0).flatten()  # [16]
    assert box_grad[0] > 0
    assert torch.count_nonzero(box_grad[1:]) == 0


def test_iou_ramp_scales_only_the_iou_branch():
    torch.manual_seed(1)
    raw = torch.randn(2, 5, 2, 2)
    targets = assign_targets([torch.tensor([[0.1, 0.1, 0.4, 0.4]]), torch.zeros(0, 4)], 2, 2)
    full = compute_loss(raw, targets, iou_ramp=1.0)
    none = compute_loss(raw, targets, iou_ramp=0.0)
    torch.testing.assert_close(full.total - none.total, LossWeights().iou * full.iou)


def test_a_float64_output_gets_every_loss_branch_in_float64():
    # BCE-with-logits computes in its target's dtype: a float32 mask would round the loss (and
    # its gradient) to float32 and undo the float64 golden run (tests/regression/test_golden.py).
    torch.manual_seed(2)
    raw = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    targets = assign_targets([torch.tensor([[0.1, 0.1, 0.4, 0.4]]), torch.zeros(0, 4)], 4, 4)
    parts = compute_loss(raw, targets)
    branches = (parts.total, parts.objectness, parts.iou, parts.corner, parts.center_size)
    assert {branch.dtype for branch in branches} == {torch.float64}
    logits, mask = raw[:, 0].reshape(2, -1), targets.positive.double()
    expected = F.binary_cross_entropy_with_logits(logits, mask, reduction="sum") / 2
    assert parts.objectness.item() == expected.item()


def test_targets_for_another_grid_are_rejected():
    with pytest.raises(ConfigError, match="grid"):
        compute_loss(torch.zeros(1, 5, 4, 4), assign_targets([torch.zeros(0, 4)], 2, 2))


def test_unknown_iou_loss_is_rejected():
    with pytest.raises(ConfigError, match="iou_kind"):
        LossWeights(iou_kind="iou")
