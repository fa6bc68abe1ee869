"""Integer boxes: every geometry function widens before arithmetic, so results are exact for
any integer dtype (torchvision's tests expect box_area of an int8 [0, 0, 100, 100] = 10000)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cxrbox.boxes import (
    box_area,
    box_iou,
    hflip_xyxy,
    vflip_xyxy,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)

INTEGER_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)
# Largest coordinate each dtype can hold.
DTYPE_MAX = {torch.int8: 127, torch.uint8: 255, torch.int16: 32767, torch.int32: 2**31 - 1,
             torch.int64: 2**31 - 1}  # fmt: skip


@st.composite
def integer_boxes(draw: st.DrawFn, dtype: torch.dtype) -> list[int]:
    high = DTYPE_MAX[dtype]
    x1, x2 = sorted(draw(st.lists(st.integers(0, high), min_size=2, max_size=2)))
    y1, y2 = sorted(draw(st.lists(st.integers(0, high), min_size=2, max_size=2)))
    return [x1, y1, x2, y2]


def test_box_area_of_int8_box_is_exact() -> None:
    assert box_area(torch.tensor([[0, 0, 100, 100]], dtype=torch.int8)).tolist() == [10000]


def test_box_area_of_int16_box_is_exact() -> None:
    assert box_area(torch.tensor([[0, 0, 200, 200]], dtype=torch.int16)).tolist() == [40000]


@pytest.mark.parametrize("dtype", INTEGER_DTYPES, ids=str)
@given(data=st.data())
def test_integer_geometry_matches_python_integers(dtype: torch.dtype, data: st.DataObject) -> None:
    x1, y1, x2, y2 = box = data.draw(integer_boxes(dtype))
    boxes = torch.tensor([box], dtype=dtype)
    assert box_area(boxes).tolist() == [(x2 - x1) * (y2 - y1)]
    assert xyxy_to_xywh(boxes).tolist() == [[x1, y1, x2 - x1, y2 - y1]]
    assert xyxy_to_cxcywh(boxes)[0, 2:].tolist() == [x2 - x1, y2 - y1]
    width = DTYPE_MAX[dtype]
    assert hflip_xyxy(boxes, width).tolist() == [[width - x2, y1, width - x1, y2]]
    assert vflip_xyxy(boxes, width).tolist() == [[x1, width - y2, x2, width - y1]]


@pytest.mark.parametrize("dtype", INTEGER_DTYPES, ids=str)
@given(data=st.data())
def test_integer_xywh_to_xyxy_does_not_overflow(dtype: torch.dtype, data: st.DataObject) -> None:
    high = DTYPE_MAX[dtype]
    x, w = data.draw(st.integers(0, high)), data.draw(st.integers(0, high))
    boxes = torch.tensor([[x, x, w, w]], dtype=dtype)
    assert xywh_to_xyxy(boxes).tolist() == [[x, x, x + w, x + w]]


@pytest.mark.parametrize("dtype", INTEGER_DTYPES, ids=str)
def test_integer_iou_equals_float64_iou(dtype: torch.dtype) -> None:
    a = torch.tensor([[0, 0, 100, 100]], dtype=dtype)
    b = torch.tensor([[50, 50, 120, 120]], dtype=dtype)
    expected = box_iou(a.double(), b.double())
    assert box_iou(a, b).dtype == torch.float32
    torch.testing.assert_close(box_iou(a, b).double(), expected, rtol=1e-6, atol=0)
