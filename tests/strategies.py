"""Shared hypothesis strategies for the test suite.

Boxes are xyxy tuples of Python floats `(x1, y1, x2, y2)` in continuous coordinates (width =
x2 - x1); `box_tensors` / `matched_box_tensors` turn a box strategy into Tensor[N, 4] batches.
Pixel boxes live in a `width x height` image, normalized boxes in the unit square.

Others may append strategies at the end of this module; do not edit the existing ones (tests
across the suite rely on what they generate).
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

Box = tuple[float, float, float, float]


def coordinates(low: float, high: float) -> st.SearchStrategy[float]:
    """Finite floats in [low, high], no subnormals."""
    return st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def image_sizes(min_side: int = 16, max_side: int = 2048) -> st.SearchStrategy[tuple[int, int]]:
    """(width, height) of an image in pixels, each side in [min_side, max_side]."""
    side = st.integers(min_side, max_side)
    return st.tuples(side, side)


@st.composite
def _ordered_span(draw: st.DrawFn, extent: float, min_size: float) -> tuple[float, float]:
    """(lo, hi) with 0 <= lo, lo + min_size <= hi <= extent."""
    lo = draw(coordinates(0.0, extent - min_size))
    hi = draw(coordinates(min(lo + min_size, extent), extent))
    return lo, hi


@st.composite
def ordered_boxes(
    draw: st.DrawFn, width: float = 1.0, height: float = 1.0, min_size: float = 0.0
) -> Box:
    """An ordered box inside [0, width] x [0, height] with both sides >= min_size.

    min_size > 0 gives boxes with x1 < x2 and y1 < y2 strictly (no tied corners).
    """
    x1, x2 = draw(_ordered_span(width, min_size))
    y1, y2 = draw(_ordered_span(height, min_size))
    return (x1, y1, x2, y2)


def normalized_boxes(min_size: float = 0.0) -> st.SearchStrategy[Box]:
    """An ordered box in the unit square with both sides >= min_size."""
    return ordered_boxes(1.0, 1.0, min_size)


@st.composite
def pixel_boxes_with_image(draw: st.DrawFn, min_size: float = 1.0) -> tuple[Box, tuple[int, int]]:
    """(box, (width, height)): an ordered pixel box with sides >= min_size inside its image."""
    width, height = draw(image_sizes())
    return draw(ordered_boxes(float(width), float(height), min_size)), (width, height)


@st.composite
def unordered_boxes(draw: st.DrawFn, width: float = 1.0, height: float = 1.0) -> Box:
    """Four coordinates inside the image in any corner order (x1 > x2 and/or y1 > y2 allowed)."""
    x1, x2 = draw(coordinates(0.0, width)), draw(coordinates(0.0, width))
    y1, y2 = draw(coordinates(0.0, height)), draw(coordinates(0.0, height))
    return (x1, y1, x2, y2)


@st.composite
def loose_boxes(draw: st.DrawFn, width: float = 1.0, height: float = 1.0) -> Box:
    """Four coordinates in [-width, 2 width] x [-height, 2 height] in any corner order.

    The box may lie partly or entirely outside the image, on any side, or be degenerate.
    """
    x1, x2 = draw(coordinates(-width, 2 * width)), draw(coordinates(-width, 2 * width))
    y1, y2 = draw(coordinates(-height, 2 * height)), draw(coordinates(-height, 2 * height))
    return (x1, y1, x2, y2)


@st.composite
def boxes_partly_outside(
    draw: st.DrawFn, width: float = 1.0, height: float = 1.0, min_size: float = 0.0
) -> Box:
    """An ordered box with at least one side strictly outside the image, the rest inside.

    Pushed-out sides lie at least 1e-3 of the image extent beyond the border (never on it), so
    clipping them is unambiguous.
    """
    x1, y1, x2, y2 = draw(ordered_boxes(width, height, min_size))
    sides = draw(st.sets(st.sampled_from(("x1", "y1", "x2", "y2")), min_size=1))
    if "x1" in sides:
        x1 = -draw(coordinates(1e-3 * width, width))
    if "y1" in sides:
        y1 = -draw(coordinates(1e-3 * height, height))
    if "x2" in sides:
        x2 = width + draw(coordinates(1e-3 * width, width))
    if "y2" in sides:
        y2 = height + draw(coordinates(1e-3 * height, height))
    return (x1, y1, x2, y2)


@st.composite
def degenerate_boxes(draw: st.DrawFn, width: float = 1.0, height: float = 1.0) -> Box:
    """A box inside the image with zero width, zero height, or both (a point)."""
    x1, y1, x2, y2 = draw(ordered_boxes(width, height))
    kind = draw(st.sampled_from(("zero_width", "zero_height", "point")))
    if kind in ("zero_width", "point"):
        x2 = x1
    if kind in ("zero_height", "point"):
        y2 = y1
    return (x1, y1, x2, y2)


def box_tensors(
    boxes: st.SearchStrategy[Box],
    min_n: int = 0,
    max_n: int = 8,
    dtype: torch.dtype = torch.float64,
) -> st.SearchStrategy[torch.Tensor]:
    """Tensor[N, 4] of boxes drawn from `boxes`, min_n <= N <= max_n."""
    return st.lists(boxes, min_size=min_n, max_size=max_n).map(
        lambda rows: torch.tensor(rows, dtype=dtype).reshape(-1, 4)
    )


@st.composite
def matched_box_tensors(
    draw: st.DrawFn,
    boxes1: st.SearchStrategy[Box],
    boxes2: st.SearchStrategy[Box] | None = None,
    min_n: int = 1,
    max_n: int = 8,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b), both Tensor[N, 4] with the same N: a from boxes1, b from boxes2 (or boxes1)."""
    n = draw(st.integers(min_n, max_n))
    a = draw(box_tensors(boxes1, n, n, dtype))
    b = draw(box_tensors(boxes1 if boxes2 is None else boxes2, n, n, dtype))
    return a, b


# --- byte-level fuzzing of input files (DICOM, label CSV) ---------------------------------

DICOM_VRS = [b"AE", b"AS", b"CS", b"DA", b"DS", b"IS", b"LO", b"OB", b"OW", b"SQ", b"UL", b"US",
             b"UN", b"UT", b"FD", b"SS", b"xx"]  # fmt: skip


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes, header_len: int = 512) -> bytes:
    """`data` with 1-3 mutations: truncation, flipped bytes (mostly in the first `header_len`
    bytes), a 2- or 4-byte length field overwritten (often huge), a wrong 2-letter VR, bytes
    inserted or deleted."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        if not out:
            break
        kind = draw(st.sampled_from(["truncate", "flip", "length", "vr", "insert", "delete"]))
        limit = min(len(out), header_len) if draw(st.booleans()) else len(out)
        at = draw(st.integers(0, max(limit - 1, 0)))
        if kind == "truncate":
            del out[at:]
        elif kind == "flip":
            out[at] = draw(st.integers(0, 255))
        elif kind == "length":
            size = draw(st.sampled_from([2, 4]))
            value = draw(st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, 2**31, len(out) * 3]))
            out[at : at + size] = (value % 256**size).to_bytes(size, "little")
        elif kind == "vr":
            out[at : at + 2] = draw(st.sampled_from(DICOM_VRS))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del out[at : at + draw(st.integers(1, 16))]
    return bytes(out)


LABEL_HEADER = "patientId,x,y,width,height,Target"
_LABEL_CELLS = ["", "0", "1", "12.5", "-3", "nan", "NaN", "inf", "-inf", "1e39", "1e308",
                "9" * 400, '"', '""', '"a,b"', "x", " 7 ", "0x10", "1_000", "\x00",
                "é"]  # fmt: skip


@st.composite
def label_csv_bytes(draw: st.DrawFn) -> bytes:
    """An RSNA-like label CSV as bytes: valid rows mixed with odd cells (quotes, NaN, huge or
    non-numeric numbers), columns dropped, a BOM, CRLF endings, latin-1 or UTF-16 encoding,
    then optionally byte-mutated."""
    columns = LABEL_HEADER.split(",")
    if draw(st.booleans()):
        columns = draw(st.permutations(columns))
    if draw(st.integers(0, 4)) == 0:
        columns = [c for c in columns if c != draw(st.sampled_from(columns))]
    rows = [",".join(columns)]
    for i in range(draw(st.integers(0, 6))):
        valid = {"patientId": f"p{i}", "x": "10", "y": "20", "width": "30", "height": "40",
                 "Target": "1"}  # fmt: skip
        cells = [
            draw(st.sampled_from(_LABEL_CELLS)) if draw(st.integers(0, 3)) == 0 else valid[c]
            for c in columns
        ]
        rows.append(",".join(cells))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(rows) + draw(st.sampled_from(["", newline]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.booleans()):
        data = draw(mutated_bytes(data, header_len=64))
    return data


def _floats(boxes: list[list[int]]) -> list[list[float]]:
    return [[float(v) for v in box] for box in boxes]


@st.composite
def rsna_image(draw: st.DrawFn) -> tuple[list[list[float]], list[float], list[list[float]]]:
    """(preds, scores, truths) for one image on an integer grid: predictions are mostly truths
    shifted by -1..1 per corner (IoUs spread around the thresholds; several predictions on one
    truth), some are free boxes; scores tie often. Identical and zero-area boxes occur."""
    coord = st.integers(0, 8)
    shift = st.sampled_from([-1, 0, 0, 1])

    def free_box() -> list[int]:
        x1, y1 = draw(coord), draw(coord)
        return [x1, y1, x1 + draw(st.integers(0, 4)), y1 + draw(st.integers(0, 4))]

    truths = [free_box() for _ in range(draw(st.integers(0, 4)))]
    preds = []
    for _ in range(draw(st.integers(0, 6))):
        if truths and draw(st.booleans()):
            base = draw(st.sampled_from(truths))
            x1, x2 = sorted((base[0] + draw(shift), base[2] + draw(shift)))
            y1, y2 = sorted((base[1] + draw(shift), base[3] + draw(shift)))
            preds.append([x1, y1, x2, y2])
        else:
            preds.append(free_box())
    scores = [draw(st.sampled_from([0.2, 0.5, 0.5, 0.9])) for _ in preds]
    return _floats(preds), scores, _floats(truths)
