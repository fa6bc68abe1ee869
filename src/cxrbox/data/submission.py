"""Kaggle's sample submission: the patients a submission must list, in the order it lists them.

The RSNA archive ships `stage_2_sample_submission.csv` (header `patientId,PredictionString`, one
row per test image, in no sorted order). A submission is accepted when it has exactly these rows;
`cxrbox predict --sample-submission FILE` writes its rows in this file's order
(`submission_order`) and refuses to start when a listed patient has no DICOM.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from cxrbox.errors import DataError, listed

SUBMISSION_HEADER: tuple[str, str] = ("patientId", "PredictionString")


def read_sample_submission(path: str | Path) -> list[str]:
    """The patientIds of a sample submission CSV, in file order.

    Raises DataError naming the file (and 1-based line) when it cannot be read, its header is
    not `patientId,PredictionString`, a patientId is empty or listed twice, or it lists none.
    """
    path = Path(path)
    ids: list[str] = []
    seen: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != SUBMISSION_HEADER:
                raise DataError(
                    f"{path}: not a sample submission: header {header!r}, expected "
                    f"{','.join(SUBMISSION_HEADER)}"
                )
            for row in reader:
                if not row:
                    continue
                line = reader.line_num
                pid = row[0].strip()
                if not pid:
                    raise DataError(f"{path}:{line}: empty patientId")
                if pid in seen:
                    raise DataError(f"{path}:{line}: patientId {pid!r} already on line {seen[pid]}")
                seen[pid] = line
                ids.append(pid)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the sample submission ({exc.strerror})") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from exc
    if not ids:
        raise DataError(f"{path}: the sample submission lists no patient")
    return ids


def submission_order(
    sample_ids: list[str], files: Mapping[str, Path], images: str | Path, sample: str | Path
) -> list[str]:
    """`sample_ids` (from `read_sample_submission(sample)`), checked against the DICOMs found in
    `images` (`files`: patientId -> path); raises DataError naming the missing patients."""
    missing = [pid for pid in sample_ids if pid not in files]
    if missing:
        raise DataError(
            f"{images}: {len(missing)} of the {len(sample_ids)} patients of {sample} have no "
            f"<patientId>.dcm file: {listed(missing)}"
        )
    return list(sample_ids)
