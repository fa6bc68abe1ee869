"""cxrbox.data.labels: RSNA label CSV reading, validation with line numbers, writing, summaries."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cxrbox import errors
from cxrbox.data.labels import (
    LabelError,
    LabelSummary,
    count_out_of_bounds,
    read_rsna_labels,
    summarize_labels,
    write_rsna_labels,
)

HEADER = "patientId,x,y,width,height,Target\n"


def write_csv(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def boxes_of(*rows: list[float]) -> np.ndarray:
    return np.array(rows, dtype=np.float32).reshape(-1, 4)


# --- reading -------------------------------------------------------------------------------


def test_positive_row_becomes_float32_xyxy_box(tmp_path):
    path = write_csv(tmp_path, HEADER + "a,10,20,30,40,1\n")
    labels = read_rsna_labels(path)
    assert labels["a"].dtype == np.float32
    np.testing.assert_array_equal(labels["a"], boxes_of([10, 20, 40, 60]))


def test_fractional_coordinates_are_kept(tmp_path):
    path = write_csv(tmp_path, HEADER + "a,264.5,152.25,213.5,379.75,1\n")
    np.testing.assert_array_equal(
        read_rsna_labels(path)["a"], boxes_of([264.5, 152.25, 478.0, 532.0])
    )


def test_negative_row_becomes_empty_0x4_float32_array(tmp_path):
    path = write_csv(tmp_path, HEADER + "neg,,,,,0\n")
    boxes = read_rsna_labels(path)["neg"]
    assert boxes.shape == (0, 4)
    assert boxes.dtype == np.float32


def test_several_rows_for_one_patient_become_several_boxes(tmp_path):
    path = write_csv(tmp_path, HEADER + "a,10,20,30,40,1\nb,,,,,0\na,100,200,10,10,1\n")
    np.testing.assert_array_equal(
        read_rsna_labels(path)["a"], boxes_of([10, 20, 40, 60], [100, 200, 110, 210])
    )


def test_duplicate_rows_for_a_patient_become_duplicate_boxes(tmp_path):
    path = write_csv(tmp_path, HEADER + "a,10,20,30,40,1\na,10,20,30,40,1\n")
    np.testing.assert_array_equal(
        read_rsna_labels(path)["a"], boxes_of([10, 20, 40, 60], [10, 20, 40, 60])
    )


def test_patients_keep_file_order(tmp_path):
    path = write_csv(tmp_path, HEADER + "zz,,,,,0\naa,1,1,2,2,1\nmm,,,,,0\naa,5,5,2,2,1\n")
    assert list(read_rsna_labels(path)) == ["zz", "aa", "mm"]


def test_column_order_is_free_and_extra_columns_are_ignored(tmp_path):
    text = "Target,height,note,width,y,x,patientId\n1,40,hello,30,20,10,a\n0,,x,,,,b\n"
    labels = read_rsna_labels(write_csv(tmp_path, text))
    np.testing.assert_array_equal(labels["a"], boxes_of([10, 20, 40, 60]))
    assert labels["b"].shape == (0, 4)


def test_blank_lines_are_skipped(tmp_path):
    path = write_csv(tmp_path, HEADER + "\na,10,20,30,40,1\n\n\nb,,,,,0\n")
    assert list(read_rsna_labels(path)) == ["a", "b"]


def test_utf8_byte_order_mark_before_header_is_accepted(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + "a,1,2,3,4,1\n").encode())
    np.testing.assert_array_equal(read_rsna_labels(path)["a"], boxes_of([1, 2, 4, 6]))


def test_box_past_the_image_is_kept_as_read(tmp_path):
    path = write_csv(tmp_path, HEADER + "a,1000,-5,100,50,1\n")
    np.testing.assert_array_equal(read_rsna_labels(path)["a"], boxes_of([1000, -5, 1100, 45]))


def test_label_error_is_reexported_from_errors():
    assert LabelError is errors.LabelError


@pytest.mark.parametrize("text", [HEADER, HEADER + "\n\n"])
def test_a_header_without_rows_is_an_error_naming_the_file_and_the_rows_expected(tmp_path, text):
    path = write_csv(tmp_path, text, name="only_header.csv")
    with pytest.raises(LabelError, match=r"only_header\.csv: a header and no label rows; expected"):
        read_rsna_labels(path)


# Each malformed input: (file text, 1-based line of the fault, fragment of the reason).
MALFORMED = {
    "empty_file": ("", 1, "empty file"),
    "missing_column": ("patientId,x,y,width,Target\na,1,2,3,1\n", 1, "missing column(s) height"),
    "duplicate_column": ("patientId,x,x,y,width,height,Target\n", 1, "duplicate column(s) x"),
    "too_few_fields": (HEADER + "a,1,2,3,4,1\nb,1,2,3\n", 3, "expected 6 fields"),
    "too_many_fields": (HEADER + "a,1,2,3,4,1,9\n", 2, "expected 6 fields"),
    "empty_patient_id": (HEADER + "a,1,2,3,4,1\n ,1,2,3,4,1\n", 3, "empty patientId"),
    "non_numeric_x": (HEADER + "a,1,2,3,4,1\na,abc,2,3,4,1\n", 3, "x='abc' is not a number"),
    "non_numeric_height": (HEADER + "a,1,2,3,4x,1\n", 2, "height='4x' is not a number"),
    "nan_y": (HEADER + "a,1,nan,3,4,1\n", 2, "y='nan' is not finite"),
    "inf_width": (HEADER + "a,1,2,inf,4,1\n", 2, "width='inf' is not finite"),
    "float32_overflow": (HEADER + "a,1,2,1e39,4,1\n", 2, "float32 range"),
    "zero_width": (HEADER + "a,1,2,0,4,1\n", 2, "width and height must be > 0"),
    "negative_height": (HEADER + "a,1,2,3,-4,1\n", 2, "width and height must be > 0"),
    "target_two": (HEADER + "a,1,2,3,4,2\n", 2, "Target='2', expected 0 or 1"),
    "target_fraction": (HEADER + "a,1,2,3,4,0.5\n", 2, "Target='0.5', expected 0 or 1"),
    "target_text": (HEADER + "a,1,2,3,4,yes\n", 2, "Target='yes' is not a number"),
    "target_empty": (HEADER + "a,1,2,3,4,\n", 2, "Target='' is not a number"),
    "positive_without_coords": (HEADER + "a,,,,,1\n", 2, "Target=1 row needs x, y, width"),
    "positive_with_some_coords": (HEADER + "a,1,2,,4,1\n", 2, "Target=1 row needs x, y, width"),
    "negative_with_coords": (HEADER + "a,1,2,3,4,0\n", 2, "Target=0 row must leave"),
    "negative_with_one_coord": (HEADER + "a,,,3,,0\n", 2, "Target=0 row must leave"),
    "negative_then_positive": (
        HEADER + "a,,,,,0\nb,,,,,0\na,1,2,3,4,1\n",
        4,
        "has a Target=0 row (line 2) and Target=1 rows",
    ),
    "positive_then_negative": (
        HEADER + "a,1,2,3,4,1\na,,,,,0\n",
        3,
        "has Target=1 rows and a Target=0 row",
    ),
    "line_counts_blank_lines": (HEADER + "\n\na,1,2,3,4,7\n", 4, "expected 0 or 1"),
    "nul_byte": (HEADER + "a,1,2\x00,3,4,1\n", 2, "y='2\\x00' is not a number"),
    "stray_quote": (HEADER + 'a,"1"x,2,3,4,1\n', 2, "malformed CSV"),
    "unclosed_quote": (HEADER + 'a,1,2,3,4,1\nb,"1,2,3,4,1\n', 3, "malformed CSV"),
}


@pytest.mark.parametrize(("text", "line", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_csv_raises_label_error_naming_file_and_line(tmp_path, text, line, reason):
    path = write_csv(tmp_path, text)
    with pytest.raises(LabelError, match=re.escape(f"{path}:{line}: ")) as excinfo:
        read_rsna_labels(path)
    assert reason in str(excinfo.value)


def test_missing_file_raises_label_error_naming_it(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(LabelError, match=re.escape(str(path))):
        read_rsna_labels(path)


def test_non_utf8_file_raises_label_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(HEADER.encode() + b"caf\xe9,1,2,3,4,1\n")
    with pytest.raises(LabelError, match="not UTF-8"):
        read_rsna_labels(path)


# --- writing -------------------------------------------------------------------------------


def test_write_uses_rsna_format_with_compact_numbers(tmp_path):
    labels = {
        "a": boxes_of([10, 20, 40, 60], [264.5, 0.25, 300, 1.5], [10, 0.5, 20.5, 2]),
        "n": np.zeros((0, 4), np.float32),
    }
    text = write_rsna_labels(tmp_path / "out.csv", labels).read_text()
    assert text.splitlines() == [
        "patientId,x,y,width,height,Target",
        "a,10,20,30,40,1",
        "a,264.5,0.25,35.5,1.25,1",
        "a,10,0.5,10.5,1.5,1",
        "n,,,,,0",
    ]
    assert text.endswith("n,,,,,0\n")


def test_write_prints_short_text_for_float32_values(tmp_path):
    labels = {"a": boxes_of([308.2, 712.2, 339.5, 1002.5])}
    line = write_rsna_labels(tmp_path / "out.csv", labels).read_text().splitlines()[1]
    assert line == "a,308.2,712.2,31.3,290.3,1"


def test_write_then_read_round_trips_integer_boxes_exactly(tmp_path):
    rng = np.random.default_rng(0)
    xy = rng.integers(-50, 1024, (300, 2))
    wh = rng.integers(1, 600, (300, 2))
    all_boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    labels = {f"p{i}": all_boxes[i : i + i % 4] for i in range(0, 300, 4)}  # 0-3 boxes each
    back = read_rsna_labels(write_rsna_labels(tmp_path / "out.csv", labels))
    assert list(back) == list(labels)
    for pid, boxes in labels.items():
        np.testing.assert_array_equal(back[pid], boxes)


# Pixel-like float32 coordinates: 0 or at least 2**-10 in magnitude, so x2 - x1 is exact in
# float64 (the documented condition for an exact round trip).
float32_coords = st.floats(-2048, 4096, width=32).filter(lambda v: v == 0 or abs(v) >= 2**-10)


@st.composite
def float32_boxes(draw) -> np.ndarray:
    x1, y1, x2, y2 = (draw(float32_coords) for _ in range(4))
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    box = np.array([[x1, y1, x2, y2]], dtype=np.float32)
    return box[(box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])]


@given(boxes=st.lists(float32_boxes(), min_size=1, max_size=5))
def test_write_then_read_round_trips_any_float32_box_exactly(tmp_path_factory, boxes):
    labels = {f"p{i}": b for i, b in enumerate(boxes)}
    path = tmp_path_factory.mktemp("rt") / "out.csv"
    back = read_rsna_labels(write_rsna_labels(path, labels))
    for pid, b in labels.items():
        np.testing.assert_array_equal(back[pid], b)


@pytest.mark.parametrize(
    "boxes",
    [
        np.array([[10, 10, 5, 20]], np.float32),  # x2 < x1
        np.array([[10, 10, 20, 10]], np.float32),  # zero height
        np.array([[np.nan, 0, 1, 1]], np.float32),
        np.array([[0, 0, np.inf, 1]], np.float32),
        np.zeros((2, 3), np.float32),
        np.zeros(4, np.float32),
    ],
    ids=["inverted", "zero_height", "nan", "inf", "shape_2x3", "shape_4"],
)
def test_write_rejects_boxes_the_reader_would_refuse(tmp_path, boxes):
    with pytest.raises(errors.InputValueError, match="'bad'"):
        write_rsna_labels(tmp_path / "out.csv", {"ok": boxes_of([0, 0, 1, 1]), "bad": boxes})


# --- counts --------------------------------------------------------------------------------


LABELS = {
    "in": boxes_of([0, 0, 100, 50]),  # touches the top-left corner: inside
    "edge": boxes_of([10, 10, 200, 100]),  # x2 == W, y2 == H: inside
    "out": boxes_of([-1, 0, 10, 10], [0, 0, 10, 101], [5, 5, 6, 6]),  # 2 of 3 outside
    "wide": boxes_of([150, 0, 201, 10]),  # x2 > W
    "neg": np.zeros((0, 4), np.float32),
}


def test_count_out_of_bounds_with_one_size_for_all():
    assert count_out_of_bounds(LABELS, (100, 200)) == 3


def test_count_out_of_bounds_uses_rows_as_height_and_columns_as_width():
    labels = {"a": boxes_of([0, 0, 150, 50])}  # 150 wide, 50 high
    assert count_out_of_bounds(labels, (100, 200)) == 0
    assert count_out_of_bounds(labels, (200, 100)) == 1


def test_count_out_of_bounds_with_per_image_sizes():
    sizes = {pid: (100, 200) for pid in LABELS}
    sizes |= {"wide": (100, 300), "edge": (99, 200), "out": (200, 200)}
    # "wide" now fits, "edge" now sticks out, "out" keeps only its x1 < 0 box outside
    assert count_out_of_bounds(LABELS, sizes) == 2


def test_count_out_of_bounds_requires_a_size_for_every_patient():
    with pytest.raises(errors.DataError, match="'out'"):
        count_out_of_bounds(LABELS, {"in": (100, 200), "edge": (100, 200)})


def test_summarize_labels_counts_images_boxes_and_histogram():
    summary = summarize_labels(LABELS)
    assert summary == LabelSummary(
        n_images=5, n_positive=4, n_boxes=6, boxes_per_image={0: 1, 1: 3, 3: 1}
    )
    assert summary.n_negative == 1


def test_summarize_empty_labels_is_all_zero():
    assert summarize_labels({}) == LabelSummary(0, 0, 0, {})
