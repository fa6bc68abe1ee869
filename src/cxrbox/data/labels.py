"""Read and write RSNA pneumonia box labels (`stage_2_train_labels.csv` format).

The CSV has a header naming at least `patientId,x,y,width,height,Target` (any order, extra
columns ignored). Each row is one box in pixels (x, y = top-left corner) with Target=1, or one
negative image with Target=0 and empty x, y, width, height. Several rows for one patient are
several boxes. In memory, labels are `{patientId: float32 [N, 4]}` xyxy pixel boxes
(x, y, x + width, y + height), N = 0 for a negative image, in the file's patient order.
Boxes reaching past the image are kept as read (the real CSV has a few); they are clipped later.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from cxrbox.atomic_write import atomic_path
from cxrbox.errors import DataError, InputValueError, LabelError

__all__ = [
    "COLUMNS",
    "LabelError",
    "LabelSummary",
    "count_out_of_bounds",
    "read_rsna_labels",
    "summarize_labels",
    "write_rsna_labels",
]

COLUMNS: tuple[str, ...] = ("patientId", "x", "y", "width", "height", "Target")
_COORDS = ("x", "y", "width", "height")
_TARGETS = {"0": 0, "1": 1}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class LabelSummary:
    """Counts over a label set; `boxes_per_image` maps a box count to how many images have it."""

    n_images: int
    n_positive: int
    n_boxes: int
    boxes_per_image: dict[int, int]

    @property
    def n_negative(self) -> int:
        return self.n_images - self.n_positive


def read_rsna_labels(csv_path: str | Path) -> dict[str, np.ndarray]:
    """Return {patientId: boxes float32 [N, 4] xyxy pixels} from an RSNA label CSV.

    Raises `LabelError` naming the file and 1-based line (the header is line 1) for a missing
    column, a wrong number of fields, bad CSV quoting, an empty patientId, a non-numeric or
    non-finite value (also beyond float32), width/height <= 0, Target not 0/1, Target
    inconsistent with the coordinates, or a patient with both a Target=0 row and Target=1 rows;
    also for a file that cannot be opened, is not UTF-8, or has a header and no rows.
    """
    path = Path(csv_path)
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    negative_line: dict[str, int] = {}  # patientId -> line of its Target=0 row
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, strict=True)  # a stray quote is an error, not data
            header = next(reader, None)
            i_pid, i_x, i_y, i_w, i_h, i_target = _column_index(path, header)
            n_fields = len(header)  # type: ignore[arg-type]
            for row in reader:
                line = reader.line_num
                if len(row) != n_fields:
                    if not row:
                        continue  # blank line
                    _fail(
                        path, line, f"expected {n_fields} fields as in the header, got {len(row)}"
                    )
                pid = row[i_pid].strip()
                if not pid:
                    _fail(path, line, "empty patientId")
                target = _TARGETS.get(row[i_target].strip())
                if target is None:
                    target = _parse_target(path, line, row[i_target])
                coords = (row[i_x], row[i_y], row[i_w], row[i_h])
                pid_boxes = boxes.setdefault(pid, [])
                if target == 0:
                    if any(c.strip() for c in coords):
                        _fail(path, line, "Target=0 row must leave x, y, width, height empty")
                    if pid_boxes:
                        _fail(path, line, f"patient {pid!r} has Target=1 rows and a Target=0 row")
                    negative_line.setdefault(pid, line)
                    continue
                if pid in negative_line:
                    _fail(
                        path,
                        line,
                        f"patient {pid!r} has a Target=0 row (line {negative_line[pid]}) "
                        "and Target=1 rows",
                    )
                pid_boxes.append(_parse_box(path, line, coords))
    except OSError as exc:
        raise LabelError(f"{path}: cannot read label file ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise LabelError(f"{path}: not UTF-8 text ({exc})") from exc
    except csv.Error as exc:
        raise LabelError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc
    if not boxes:
        raise LabelError(
            f"{path}: a header and no label rows; expected a row per box "
            f"({','.join(COLUMNS)}), or one with Target 0 and no box for a patient without any"
        )
    return {pid: np.array(rows, dtype=np.float32).reshape(-1, 4) for pid, rows in boxes.items()}


def write_rsna_labels(path: str | Path, labels: Mapping[str, np.ndarray]) -> Path:
    """Write `labels` ({patientId: [N, 4] xyxy pixels}) as an RSNA label CSV (atomic); returns it.

    A negative (N = 0) becomes one row with empty coordinates and Target 0. Boxes are taken as
    float32 (what the reader returns) and must be finite with x1 < x2, y1 < y2, else
    `InputValueError`. Numbers are written compactly (integers without ".0", "308.2" rather
    than "308.20001220703125") yet so that `read_rsna_labels` gives back the same float32 boxes
    whenever x1 + (x2 - x1) is exact in float64: always for integer boxes and for pixel
    coordinates; not for a degenerate box like x1 = -1, x2 = 1e-38, which reads back as x2 = 0.
    """
    path = Path(path)
    rows: list[tuple[str, ...]] = []
    for pid, boxes in labels.items():
        if not pid:
            raise InputValueError("write_rsna_labels: empty patientId")
        shape = np.shape(boxes)
        if len(shape) != 2 or shape[1] != 4:
            raise InputValueError(f"labels[{pid!r}]: expected boxes [N, 4], got shape {shape}")
        if shape[0] == 0:
            rows.append((pid, "", "", "", "", "0"))
            continue
        # float32 first: that is what the reader returns, so validity is judged there
        for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float32).astype(np.float64).tolist():
            if not (math.isfinite(x1 + y1 + x2 + y2) and x1 < x2 and y1 < y2):
                raise InputValueError(
                    f"labels[{pid!r}]: box {[x1, y1, x2, y2]} must be finite with x1 < x2, y1 < y2"
                )
            x_text, w_text = _start_and_size(x1, x2)
            y_text, h_text = _start_and_size(y1, y2)
            rows.append((pid, x_text, y_text, w_text, h_text, "1"))
    with atomic_path(path, suffix=".csv") as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


def count_out_of_bounds(
    labels: Mapping[str, np.ndarray],
    image_sizes: Mapping[str, tuple[int, int]] | tuple[int, int],
) -> int:
    """Return how many boxes reach outside their image (x1 < 0, y1 < 0, x2 > W or y2 > H).

    `image_sizes` is (rows, columns) for every image, or {patientId: (rows, columns)}; a
    patient missing from the mapping raises `DataError`.
    """
    count = 0
    for pid, boxes in labels.items():
        if isinstance(image_sizes, Mapping):
            if pid not in image_sizes:
                raise DataError(f"count_out_of_bounds: no image size for patient {pid!r}")
            rows, cols = image_sizes[pid]
        else:
            rows, cols = image_sizes
        b = np.asarray(boxes)
        outside = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > cols) | (b[:, 3] > rows)
        count += int(outside.sum())
    return count


def summarize_labels(labels: Mapping[str, np.ndarray]) -> LabelSummary:
    """Return image, positive-image and box counts and the boxes-per-image histogram."""
    per_image = Counter(len(boxes) for boxes in labels.values())
    return LabelSummary(
        n_images=len(labels),
        n_positive=sum(n for k, n in per_image.items() if k > 0),
        n_boxes=sum(k * n for k, n in per_image.items()),
        boxes_per_image=dict(sorted(per_image.items())),
    )


def _column_index(path: Path, header: list[str] | None) -> list[int]:
    """Return the positions of `COLUMNS` in `header` (line 1)."""
    if not header:
        _fail(path, 1, f"empty file, expected a header with columns {','.join(COLUMNS)}")
    names = [name.strip() for name in header]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        _fail(path, 1, f"duplicate column(s) {', '.join(duplicates)} in the header")
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        _fail(path, 1, f"missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
    return [names.index(c) for c in COLUMNS]


def _parse_box(
    path: Path, line: int, coords: tuple[str, str, str, str]
) -> tuple[float, float, float, float]:
    """Return (x1, y1, x2, y2) from the x, y, width, height fields of a Target=1 row."""
    try:
        x, y, w, h = map(float, coords)
    except ValueError:
        if not all(c.strip() for c in coords):
            _fail(path, line, "Target=1 row needs x, y, width and height")
        x, y, w, h = (_parse_number(path, line, c, v) for c, v in zip(_COORDS, coords, strict=True))
    if not all(map(math.isfinite, (x, y, w, h))):
        name, text = next(
            (c, v) for c, v in zip(_COORDS, coords, strict=True) if not math.isfinite(float(v))
        )
        _fail(path, line, f"{name}={text.strip()!r} is not finite")
    if w <= 0 or h <= 0:
        _fail(path, line, f"width and height must be > 0, got {w:g} and {h:g}")
    x2, y2 = x + w, y + h
    if max(-x, -y, x2, y2) > _FLOAT32_MAX:
        _fail(path, line, "box exceeds the float32 range")
    return x, y, x2, y2


def _parse_number(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        _fail(path, line, f"{column}={text.strip()!r} is not a number")
    if not math.isfinite(value):
        _fail(path, line, f"{column}={text.strip()!r} is not finite")
    return value


def _parse_target(path: Path, line: int, text: str) -> int:
    value = _parse_number(path, line, "Target", text.strip())
    if value not in (0.0, 1.0):
        _fail(path, line, f"Target={text.strip()!r}, expected 0 or 1")
    return int(value)


def _start_and_size(lo: float, hi: float) -> tuple[str, str]:
    """Return compact texts (start, size) that `read_rsna_labels` turns back into float32 lo, hi.

    The reader keeps float32(start) and float32(start + size): the shortest float32 text is
    tried first, the exact float64 text is the fallback.
    """
    if lo.is_integer() and hi.is_integer():  # exact in float64, the common case
        return str(int(lo)), str(int(hi - lo))
    start_text = str(np.float32(lo))
    if np.float32(float(start_text)) != np.float32(lo):
        start_text = repr(lo)
    start = float(start_text)
    size = hi - start
    size_text = str(np.float32(size))
    if np.float32(start + float(size_text)) != np.float32(hi):
        size_text = repr(size)
    return _drop_point_zero(start_text), _drop_point_zero(size_text)


def _drop_point_zero(text: str) -> str:
    return text[:-2] if text.endswith(".0") else text


def _fail(path: Path, line: int, reason: str) -> NoReturn:
    raise LabelError(f"{path}:{line}: {reason}")
