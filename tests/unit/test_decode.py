"""cxrbox.modeling.decode: grid decode, cell assignment, NMS, post-processing, the RSNA string."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cxrbox.errors import BoxFormatError, ConfigError, InputValueError
from cxrbox.modeling.decode import (
    LOG_CLAMP,
    Detections,
    GridCoding,
    cell_of,
    decode_detections,
    decode_grid,
    nms,
    postprocess,
    to_rsna_prediction_string,
)
from cxrbox.options import STRIDES

# The grid side of each stride at the default 256 px: 16 (stride 16) and 8 (stride 32).
GRID_SIDES = pytest.mark.parametrize(
    "grid", [256 // s for s in STRIDES], ids=[f"stride{s}" for s in STRIDES]
)

# --- decode_grid ---------------------------------------------------------------------------


def test_decode_grid_matches_hand_computed_2x2():
    raw = torch.zeros(1, 5, 2, 2, dtype=torch.float64)
    raw[0, 0, 0, 1] = math.log(3.0)  # objectness sigmoid(ln 3) = 0.75
    raw[0, 1, 0, 1] = math.log(3.0)  # tx: sigmoid = 0.75 -> cx = (1 + 0.75) / 2 = 0.875
    raw[0, 3, 1, 1] = math.log(2.0)  # tw: w = 0.25 * 2 = 0.5
    raw[0, 4, 1, 1] = math.log(4.0)  # th: h = 0.25 * 4 = 1.0 -> y from 0.25 to 1.25, clipped to 1
    boxes, scores = decode_grid(raw)
    # cell (row, col) -> index row * 2 + col; tx = ty = 0 put the centre mid-cell
    expected = torch.tensor(
        [
            [0.125, 0.125, 0.375, 0.375],  # (0, 0): centre (0.25, 0.25), side 0.25
            [0.75, 0.125, 1.0, 0.375],  # (0, 1): centre (0.875, 0.25), x2 = 1.0
            [0.125, 0.625, 0.375, 0.875],  # (1, 0): centre (0.25, 0.75)
            [0.5, 0.25, 1.0, 1.0],  # (1, 1): centre (0.75, 0.75), 0.5 x 1.0, clipped
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(boxes[0], expected)
    torch.testing.assert_close(scores[0], torch.tensor([0.5, 0.75, 0.5, 0.5], dtype=torch.float64))


def test_decode_grid_flattens_cells_row_major_on_a_non_square_grid():
    boxes, _ = decode_grid(torch.zeros(1, 5, 2, 3))
    centres_x = (boxes[0, :, 0] + boxes[0, :, 2]) / 2
    centres_y = (boxes[0, :, 1] + boxes[0, :, 3]) / 2
    # index i * 3 + j holds cell (i, j): cx = (j + 0.5) / 3, cy = (i + 0.5) / 2
    torch.testing.assert_close(centres_x, torch.tensor([1, 3, 5, 1, 3, 5]) / 6)
    torch.testing.assert_close(centres_y, torch.tensor([1, 1, 1, 3, 3, 3]) / 4)


def test_decode_grid_uses_the_coding_priors():
    boxes, _ = decode_grid(torch.zeros(1, 5, 1, 1), GridCoding(prior_w=0.5, prior_h=0.1))
    torch.testing.assert_close(boxes[0, 0], torch.tensor([0.25, 0.45, 0.75, 0.55]))


def test_decode_grid_clamps_log_size():
    raw = torch.zeros(1, 5, 1, 1, dtype=torch.float64)
    raw[0, 3] = -50.0  # clamped to -LOG_CLAMP: w = 0.25 * exp(-4)
    raw[0, 4] = -3.0  # inside the clamp: h = 0.25 * exp(-3)
    boxes, _ = decode_grid(raw)
    w = boxes[0, 0, 2] - boxes[0, 0, 0]
    h = boxes[0, 0, 3] - boxes[0, 0, 1]
    assert w.item() == pytest.approx(0.25 * math.exp(-LOG_CLAMP))
    assert h.item() == pytest.approx(0.25 * math.exp(-3.0))


@GRID_SIDES
@given(seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.1, 1.0, 10.0, 100.0]))
def test_decode_grid_boxes_stay_inside_unit_square(grid, seed, scale):
    raw = torch.randn(3, 5, grid, grid, generator=torch.Generator().manual_seed(seed)) * scale
    boxes, scores = decode_grid(raw)
    assert boxes.shape == (3, grid * grid, 4) and scores.shape == (3, grid * grid)
    assert bool((boxes >= 0).all()) and bool((boxes <= 1).all())
    assert bool((boxes[..., 2] >= boxes[..., 0]).all()) and bool(
        (boxes[..., 3] >= boxes[..., 1]).all()
    )


def test_decode_grid_passes_gradcheck_in_float64():
    gen = torch.Generator().manual_seed(0)
    raw = (0.3 * torch.randn(2, 5, 2, 2, generator=gen, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda r: decode_grid(r), (raw,))


def test_decode_grid_gives_every_channel_a_gradient():
    raw = (0.1 * torch.randn(2, 5, 3, 3)).requires_grad_()
    boxes, scores = decode_grid(raw)
    # weight the corners unequally: a plain sum of x1 + x2 cancels the size's gradient
    (boxes * torch.tensor([1.0, 2.0, 3.0, 5.0])).sum().add(scores.sum()).backward()
    per_channel = raw.grad.abs().sum(dim=(0, 2, 3))  # [5]
    assert bool((per_channel > 0).all())


def test_decode_grid_propagates_nan_instead_of_raising():
    raw = torch.zeros(1, 5, 2, 2)
    raw[0, 1, 0, 0] = math.nan
    boxes, _ = decode_grid(raw)
    assert bool(torch.isnan(boxes[0, 0]).any())


@GRID_SIDES
@given(seed=st.integers(0, 2**32 - 1))
def test_decoded_centres_lie_in_their_own_cell_row_major(grid, seed):
    # Any offsets (sigmoid in (0, 1), kept off 0 and 1), tiny boxes (log size clamped), so
    # clipping keeps every centre in its cell: cell_of finds the cell the box was decoded from.
    raw = torch.zeros(1, 5, grid, grid, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    raw[0, 1:3] = 12 * torch.rand(2, grid, grid, generator=generator, dtype=torch.float64) - 6
    raw[0, 3:] = -2 * LOG_CLAMP
    boxes, _ = decode_grid(raw)
    rows, cols = cell_of(boxes[0], grid, grid)
    assert torch.equal(rows * grid + cols, torch.arange(grid * grid))


@pytest.mark.parametrize("shape", [(5, 2, 2), (1, 4, 2, 2), (1, 6, 1, 1)])
def test_decode_grid_rejects_wrong_raw_shape(shape):
    with pytest.raises(InputValueError, match="raw"):
        decode_grid(torch.zeros(shape))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"prior_w": 0.0}, "prior_w"),
        ({"prior_h": 1.5}, "prior_h"),
        ({"log_clamp": 0.0}, "log_clamp"),
    ],
)
def test_grid_coding_rejects_invalid_values(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        GridCoding(**kwargs)


# --- cell_of -------------------------------------------------------------------------------


def _centred(cx: float, cy: float, half: float = 0.0) -> list[float]:
    return [cx - half, cy - half, cx + half, cy + half]


def test_cell_of_puts_centres_on_the_far_edge_in_the_last_cell():
    boxes = torch.tensor([_centred(1.0, 1.0), _centred(0.0, 0.0), _centred(1.0, 0.0)])
    rows, cols = cell_of(boxes, 4, 8)
    assert rows.tolist() == [3, 0, 0]
    assert cols.tolist() == [7, 0, 7]


def test_cell_of_puts_centre_on_a_border_in_the_cell_below_right():
    # 0.5 on a 2-grid is the border between cells 0 and 1; 0.25 on a 4-grid between 0 and 1
    rows, cols = cell_of(torch.tensor([_centred(0.5, 0.25, 0.1)]), 4, 2)
    assert (rows.item(), cols.item()) == (1, 1)


def test_cell_of_uses_rows_for_y_and_cols_for_x():
    # centre (0.9, 0.1) on a 3 x 5 grid: row floor(0.1*3)=0, col floor(0.9*5)=4
    rows, cols = cell_of(torch.tensor([_centred(0.9, 0.1, 0.05)]), 3, 5)
    assert (rows.item(), cols.item()) == (0, 4)
    assert rows.dtype == torch.long and cols.dtype == torch.long


def test_cell_of_empty_input_gives_empty_indices():
    rows, cols = cell_of(torch.zeros(0, 4), 16, 16)
    assert rows.shape == (0,) and cols.shape == (0,)


def test_cell_of_rejects_centres_outside_the_image():
    with pytest.raises(BoxFormatError, match="centres"):
        cell_of(torch.tensor([_centred(1.2, 0.5, 0.1)]), 4, 4)


# --- nms -----------------------------------------------------------------------------------


def _iou_py(a: list[float], b: list[float], eps: float = 1e-7) -> float:
    """Plain-Python IoU with the same operation order and eps as cxrbox.boxes.box_iou."""
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(
        min(a[3], b[3]) - max(a[1], b[1]), 0.0
    )
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / (union + eps)


def _nms_reference(boxes: list[list[float]], scores: list[float], thr: float) -> list[int]:
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(_iou_py(boxes[i], boxes[k]) <= thr for k in kept):
            kept.append(i)
    return kept


@st.composite
def _scored_boxes(draw):
    """Integer-grid boxes (many overlaps, identical and zero-area boxes) with tied scores."""
    n = draw(st.integers(0, 25))
    boxes = []
    for _ in range(n):
        x1, x2 = sorted(draw(st.integers(0, 8)) for _ in range(2))
        y1, y2 = sorted(draw(st.integers(0, 8)) for _ in range(2))
        boxes.append([float(x1), float(y1), float(x2), float(y2)])
    scores = [draw(st.sampled_from([0.1, 0.5, 0.5, 0.9])) for _ in range(n)]
    return boxes, scores


@given(data=_scored_boxes(), thr=st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
def test_nms_matches_brute_force_reference(data, thr):
    boxes, scores = data
    keep = nms(torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4), torch.tensor(scores), thr)
    assert keep.tolist() == _nms_reference(boxes, scores, thr)


@given(data=_scored_boxes(), thr=st.sampled_from([0.0, 0.5, 1.0]), max_keep=st.integers(1, 5))
def test_nms_max_keep_returns_prefix_of_full_result(data, thr, max_keep):
    boxes, scores = data
    keep = nms(
        torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
        torch.tensor(scores),
        thr,
        max_keep=max_keep,
    )
    assert keep.tolist() == _nms_reference(boxes, scores, thr)[:max_keep]


def test_nms_matches_reference_on_seeded_random_boxes():
    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(300, 2, generator=gen, dtype=torch.float64)
    wh = 0.3 * torch.rand(300, 2, generator=gen, dtype=torch.float64)
    boxes = torch.cat((xy, xy + wh), dim=1)
    scores = torch.rand(300, generator=gen, dtype=torch.float64)
    keep = nms(boxes, scores, 0.4)
    assert keep.tolist() == _nms_reference(boxes.tolist(), scores.tolist(), 0.4)


def test_nms_keeps_first_index_among_identical_tied_boxes():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3 + [[2.0, 2.0, 3.0, 3.0]])
    keep = nms(boxes, torch.tensor([0.5, 0.5, 0.5, 0.2]), 0.5)
    assert keep.tolist() == [0, 3]


def test_nms_empty_input_returns_empty_long_tensor():
    keep = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.long


def test_nms_rejects_invalid_max_keep():
    with pytest.raises(ConfigError, match="max_keep"):
        nms(torch.zeros(1, 4), torch.zeros(1), 0.5, max_keep=0)


def test_nms_rejects_unordered_boxes():
    with pytest.raises(BoxFormatError, match="ordered"):
        nms(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), torch.tensor([0.5]), 0.5)


# --- postprocess ---------------------------------------------------------------------------


def _batch(rows: list[tuple[list[float], float]]) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = torch.tensor([[b for b, _ in rows]])
    scores = torch.tensor([[s for _, s in rows]])
    return boxes, scores


def test_postprocess_keeps_scores_at_the_threshold_and_drops_below():
    boxes, scores = _batch([([0.0, 0.0, 0.1, 0.1], 0.3), ([0.5, 0.5, 0.6, 0.6], 0.29)])
    (det,) = postprocess(boxes, scores, score_threshold=0.3)
    assert det.scores.tolist() == pytest.approx([0.3])


def test_postprocess_suppresses_overlaps_and_sorts_by_score():
    boxes, scores = _batch(
        [
            ([0.0, 0.0, 0.2, 0.2], 0.6),
            ([0.0, 0.0, 0.2, 0.21], 0.9),  # IoU with the first 0.2*0.2/(0.2*0.21) = 0.95
            ([0.5, 0.5, 0.7, 0.7], 0.7),
        ]
    )
    (det,) = postprocess(boxes, scores, score_threshold=0.1, iou_threshold=0.5)
    assert det.scores.tolist() == pytest.approx([0.9, 0.7])
    torch.testing.assert_close(det.boxes, boxes[0, [1, 2]])


def test_postprocess_truncates_to_top_k():
    rows = [([0.1 * i, 0.0, 0.1 * i + 0.05, 0.05], 0.5 + 0.05 * i) for i in range(6)]
    boxes, scores = _batch(rows)
    (det,) = postprocess(boxes, scores, score_threshold=0.0, top_k=2)
    assert det.scores.tolist() == pytest.approx([0.75, 0.7])


def test_postprocess_gives_empty_detections_when_nothing_passes():
    boxes, scores = _batch([([0.0, 0.0, 0.1, 0.1], 0.1)])
    (det,) = postprocess(boxes, scores, score_threshold=0.5)
    assert det.boxes.shape == (0, 4) and det.scores.shape == (0,)


def test_postprocess_rejects_non_finite_boxes():
    boxes, scores = _batch([([0.0, 0.0, math.nan, 0.1], 0.5)])
    with pytest.raises(BoxFormatError, match="finite"):
        postprocess(boxes, scores)


def test_postprocess_returns_one_detections_per_image():
    boxes, scores = decode_grid(torch.randn(3, 5, 4, 4))
    out = postprocess(boxes, scores, score_threshold=0.0, top_k=4)
    assert len(out) == 3
    assert all(isinstance(d, Detections) and d.boxes.shape[0] <= 4 for d in out)


def test_decode_detections_equals_decode_then_postprocess():
    gen = torch.Generator().manual_seed(1)
    raw = torch.randn(2, 5, 3, 3, generator=gen)
    raw[:, 3:] += 1.0  # large boxes, so NMS suppresses some
    expected = postprocess(*decode_grid(raw), 0.2, 0.5, 3)
    got = decode_detections(raw, GridCoding(), 0.2, 0.5, 3)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a.boxes, b.boxes)
        torch.testing.assert_close(a.scores, b.scores)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"iou_threshold": -0.1}, "iou_threshold"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_postprocess_rejects_invalid_options(kwargs, name):
    boxes, scores = _batch([([0.0, 0.0, 0.1, 0.1], 0.5)])
    with pytest.raises(ConfigError, match=name):
        postprocess(boxes, scores, **kwargs)


# --- to_rsna_prediction_string --------------------------------------------------------------


def test_prediction_string_matches_hand_formatted_pixels():
    det = Detections(
        boxes=torch.tensor([[0.1, 0.2, 0.3, 0.5], [0.5, 0.5, 0.75, 1.0]], dtype=torch.float64),
        scores=torch.tensor([0.95123, 0.5]),
    )
    # 1024 px: x1 102.4->102, y1 204.8->205, x2 307.2->307, y2 512 -> w 205, h 307;
    # second: 512 512, x2 768, y2 1024 -> w 256, h 512
    assert (
        to_rsna_prediction_string(det, 1024, 1024)
        == "0.9512 102 205 205 307 0.5000 512 512 256 512"
    )


def test_prediction_string_scales_x_by_width_and_y_by_height():
    det = Detections(boxes=torch.tensor([[0.5, 0.5, 1.0, 1.0]]), scores=torch.tensor([1.0]))
    assert to_rsna_prediction_string(det, 800, 600) == "1.0000 400 300 400 300"


def test_prediction_string_rounds_half_up():
    # 0.25 * 2 = 0.5 px -> 1 (Python's round() would give 0)
    det = Detections(boxes=torch.tensor([[0.25, 0.25, 1.0, 1.0]]), scores=torch.tensor([0.5]))
    assert to_rsna_prediction_string(det, 2, 2) == "0.5000 1 1 1 1"


def test_prediction_string_of_no_detections_is_empty():
    det = Detections(boxes=torch.zeros(0, 4), scores=torch.zeros(0))
    assert to_rsna_prediction_string(det, 1024, 1024) == ""


@pytest.mark.parametrize(
    ("width", "height", "name"), [(0, 1024, "width"), (1024, math.nan, "height")]
)
def test_prediction_string_rejects_invalid_image_size(width, height, name):
    det = Detections(boxes=torch.zeros(0, 4), scores=torch.zeros(0))
    with pytest.raises(InputValueError, match=name):
        to_rsna_prediction_string(det, width, height)
