"""Folders with some unreadable DICOMs: `cxrbox predict` / `cxrbox eval --on-error skip`.

`--on-error fail` (the default) stops at the first unreadable file with a DicomError naming it
(exit code 2), as training does: metrics over a silently smaller set, or a submission with
missing rows, are worse than a stop. `--on-error skip` first decodes every file once (one extra
decode per image), goes on without the unreadable ones, lists them with their reason in a CSV
sidecar (patientId,path,reason), counts them in the summary and exits with SKIPPED_EXIT_CODE.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cxrbox.atomic_write import atomic_path
from cxrbox.errors import DicomError

ON_ERROR_CHOICES = ("fail", "skip")
SKIPPED_EXIT_CODE = 3  # success, but some files were skipped (2: an error stopped the command)


@dataclass(frozen=True)
class Skipped:
    patient_id: str
    path: Path
    reason: str


def find_unreadable(files: Mapping[str, Path], intensity: str) -> list[Skipped]:
    """Decode each file of `files` (patientId -> path); the ones that raise DicomError."""
    from cxrbox.data.dicom import load_pixels  # here, so that `cxrbox --help` does not load pydicom

    skipped = []
    for patient_id, path in files.items():
        try:
            load_pixels(path, intensity=intensity)
        except DicomError as exc:
            skipped.append(Skipped(patient_id, Path(path), str(exc)))
    return skipped


def write_skipped(path: str | Path, skipped: list[Skipped]) -> Path:
    """Write the sidecar CSV (patientId,path,reason) atomically; returns its path."""
    path = Path(path)
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patientId", "path", "reason"])
        writer.writerows([s.patient_id, str(s.path), s.reason] for s in skipped)
    return path
