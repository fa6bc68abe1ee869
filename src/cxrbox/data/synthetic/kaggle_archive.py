"""A synthetic stand-in for the RSNA Kaggle archive, with the real archive's layout and names.

The real archive (rsna-pneumonia-detection-challenge) unpacks to:

- `stage_2_train_images/<patientId>.dcm`: the labelled radiographs (26,684);
- `stage_2_test_images/<patientId>.dcm`: the unlabelled ones to submit predictions for (3,000);
- `stage_2_train_labels.csv`: `patientId,x,y,width,height,Target`, one row per box, one
  Target=0 row per negative image;
- `stage_2_detailed_class_info.csv`: `patientId,class`, one row per label row, class one of
  `CLASSES` ("Lung Opacity" exactly for Target=1);
- `stage_2_sample_submission.csv`: `patientId,PredictionString`, one row per test image, in an
  order that is not sorted, each with the placeholder `0.5 0 0 100 100`.

`write_kaggle_archive(out_dir, n_train, n_test, seed)` writes all five, so a recipe tested here
runs unchanged on the real download. The images are those of `write_rsna_like` for
`n_train + n_test` patients (the same seed gives the same bytes); the last `n_test` of them
become the test set and their labels are dropped, as the real test set has none.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrbox.atomic_write import atomic_path
from cxrbox.data.submission import SUBMISSION_HEADER
from cxrbox.data.synthetic.rsna_like import SyntheticSummary, plan_patients, write_rsna_like
from cxrbox.errors import DataError, InputValueError

TEST_IMAGES_DIRNAME = "stage_2_test_images"
CLASS_INFO_FILENAME = "stage_2_detailed_class_info.csv"
SAMPLE_SUBMISSION_FILENAME = "stage_2_sample_submission.csv"
CLASSES = ("Lung Opacity", "Normal", "No Lung Opacity / Not Normal")
SAMPLE_PREDICTION = "0.5 0 0 100 100"  # what every row of the real sample submission holds


@dataclass(frozen=True)
class KaggleArchiveSummary:
    """What `write_kaggle_archive` wrote; `train` describes the labelled part."""

    train: SyntheticSummary
    test_images_dir: Path
    class_info_csv: Path
    sample_submission_csv: Path
    n_test: int

    def line(self) -> str:
        """One-line human summary."""
        return (
            f"{self.train.line()}; {self.n_test} unlabelled test images in "
            f"{self.test_images_dir.name}/, {self.class_info_csv.name}, "
            f"{self.sample_submission_csv.name}"
        )


def write_kaggle_archive(
    out_dir: str | Path,
    n_train: int,
    n_test: int,
    seed: int,
    *,
    image_size: int = 1024,
    positive_fraction: float = 1 / 3,
    transfer_syntax: str = "explicit",
    jpeg_quality: int = 95,
    workers: int = 1,
    progress: bool = False,
    overwrite: bool = False,
) -> KaggleArchiveSummary:
    """Write the RSNA archive's five entries under `out_dir` (see the module docstring).

    Arguments as `write_rsna_like`'s. Raises InputValueError for n_test < 1 or a bad argument,
    DataError when `out_dir` holds another data set (unless `overwrite`, which replaces it).
    """
    if not isinstance(n_test, int) or isinstance(n_test, bool) or n_test < 1:
        raise InputValueError(f"n_test: expected an int >= 1, got {n_test!r}")
    if not isinstance(n_train, int) or isinstance(n_train, bool) or n_train < 1:
        raise InputValueError(f"n_train: expected an int >= 1, got {n_train!r}")
    out_dir = Path(out_dir)
    plan_ids = [p[0] for p in plan_patients(n_train + n_test, seed, positive_fraction)]
    test_ids = plan_ids[n_train:]
    test_dir = out_dir / TEST_IMAGES_DIRNAME
    _clear_test_folder(test_dir, set(test_ids), overwrite)
    # Every image is rendered into the train folder first (the generator's own checks against
    # mixing data sets apply); the test images then move out and lose their labels.
    summary = write_rsna_like(
        out_dir, n_train + n_test, seed, image_size=image_size,
        positive_fraction=positive_fraction, transfer_syntax=transfer_syntax,
        jpeg_quality=jpeg_quality, workers=workers, progress=progress, overwrite=overwrite,
    )  # fmt: skip
    from cxrbox.data.labels import read_rsna_labels, write_rsna_labels

    labels = read_rsna_labels(summary.labels_csv)
    test_dir.mkdir(exist_ok=True)
    for pid in test_ids:
        os.replace(summary.images_dir / f"{pid}.dcm", test_dir / f"{pid}.dcm")
    train_labels = {pid: labels[pid] for pid in plan_ids[:n_train]}
    with atomic_path(summary.labels_csv) as tmp:
        write_rsna_labels(tmp, train_labels)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    class_info = out_dir / CLASS_INFO_FILENAME
    with atomic_path(class_info) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patientId", "class"])
        for pid, boxes in train_labels.items():
            negative = CLASSES[1 + int(rng.integers(0, 2))]  # the two negative classes
            writer.writerows([[pid, CLASSES[0] if len(boxes) else negative]] * max(len(boxes), 1))
    sample = out_dir / SAMPLE_SUBMISSION_FILENAME
    with atomic_path(sample) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SUBMISSION_HEADER)
        writer.writerows([test_ids[i], SAMPLE_PREDICTION] for i in rng.permutation(n_test))
    n_boxes = sum(len(b) for b in train_labels.values())
    train = SyntheticSummary(
        out_dir=out_dir,
        images_dir=summary.images_dir,
        labels_csv=summary.labels_csv,
        n_images=n_train,
        n_positive=sum(len(b) > 0 for b in train_labels.values()),
        n_boxes=n_boxes,
        image_size=summary.image_size,
        transfer_syntax=summary.transfer_syntax,
        seconds=summary.seconds,
    )
    return KaggleArchiveSummary(train, test_dir, class_info, sample, n_test)


def _clear_test_folder(test_dir: Path, planned: set[str], overwrite: bool) -> None:
    """Refuse (unless overwrite, which deletes them) .dcm files of other patients in test_dir."""
    if not test_dir.is_dir():
        return
    foreign = [p for p in sorted(test_dir.glob("*.dcm")) if p.stem not in planned]
    if foreign and not overwrite:
        raise DataError(
            f"{test_dir}: holds {len(foreign)} .dcm files of other patients; choose an empty "
            "folder or pass overwrite=True (cxrbox synth --overwrite) to replace them"
        )
    for path in foreign:
        path.unlink()
