"""A synthetic, RSNA-like pneumonia data set: DICOM radiographs plus the labels CSV.

`write_rsna_like(out_dir, n_images, seed)` writes the Kaggle RSNA layout,
`out_dir/stage_2_train_images/<patientId>.dcm` and `out_dir/stage_2_train_labels.csv`, so the
rest of cxrbox reads it exactly as it reads the real release. Images come from
`cxrbox.data.synthetic.anatomy.render_radiograph`.

Determinism: a plan (patientIds, which images are positive, boxes per image, view, sex, age) is
drawn from `SeedSequence(seed, spawn_key=(0,))`, and image i from
`SeedSequence(seed, spawn_key=(1, i))`, so a seed gives byte-identical files whatever `workers`
is. Exactly round(n_images * positive_fraction) images are drawn positive; an image can come out
with fewer boxes than planned only if its opacities cannot be placed apart (rare).
"""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrbox.data.synthetic.anatomy import MIN_IMAGE_SIZE, render_radiograph
from cxrbox.data.synthetic.opacity import BOX_COUNT_PROBS
from cxrbox.errors import CxrboxError, DataError, InputValueError

IMAGES_DIRNAME = "stage_2_train_images"
LABELS_FILENAME = "stage_2_train_labels.csv"
TRANSFER_SYNTAXES = ("explicit", "jpeg")
_RSNA_PIXEL_SPACING_MM = 0.143  # at 1024 px, as in the RSNA release


@dataclass(frozen=True)
class SyntheticSummary:
    """What `write_rsna_like` wrote."""

    out_dir: Path
    images_dir: Path
    labels_csv: Path
    n_images: int
    n_positive: int
    n_boxes: int
    image_size: int
    transfer_syntax: str
    seconds: float

    def line(self) -> str:
        """One-line human summary."""
        per_image = 1000.0 * self.seconds / max(self.n_images, 1)
        return (
            f"wrote {self.n_images} images ({self.image_size} px, {self.transfer_syntax}) "
            f"to {self.out_dir}: {self.n_positive} positive, {self.n_boxes} boxes, "
            f"{self.seconds:.1f} s ({per_image:.0f} ms/image)"
        )


@dataclass(frozen=True)
class _Task:
    """Everything needed to render and write image `index` (picklable for the process pool)."""

    index: int
    seed: int
    patient_id: str
    n_boxes: int
    view: str
    sex: str
    age: int
    path: str
    image_size: int
    transfer_syntax: str
    jpeg_quality: int


def plan_patients(
    n_images: int, seed: int, positive_fraction: float
) -> list[tuple[str, int, str, str, int]]:
    """Per image: (patientId, planned box count, view 'PA'/'AP', sex 'M'/'F', age in years).

    patientIds are RSNA-style UUID4 strings drawn from the seed, unique within the plan.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n_images:
        pid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        if pid not in seen:
            seen.add(pid)
            ids.append(pid)
    positive = np.zeros(n_images, dtype=bool)
    positive[rng.permutation(n_images)[: round(n_images * positive_fraction)]] = True
    counts = rng.choice(np.arange(1, len(BOX_COUNT_PROBS) + 1), size=n_images, p=BOX_COUNT_PROBS)
    counts = np.where(positive, counts, 0)
    views = rng.choice(["PA", "AP"], size=n_images)
    sexes = rng.choice(["M", "F"], size=n_images)
    ages = rng.integers(18, 90, size=n_images)
    return [
        (ids[i], int(counts[i]), str(views[i]), str(sexes[i]), int(ages[i]))
        for i in range(n_images)
    ]


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that draws image `index` of the data set with `seed`."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))


def write_dicom(
    path: str | Path,
    pixels: np.ndarray,
    patient_id: str,
    *,
    transfer_syntax: str = "explicit",
    jpeg_quality: int = 95,
    view: str = "PA",
    sex: str = "O",
    age: int = 50,
) -> None:
    """Write pixels (ndarray[S, S] uint8) as an 8-bit MONOCHROME2 CR DICOM file.

    transfer_syntax: "explicit" (explicit VR little endian, uncompressed) or "jpeg" (JPEG
    Baseline 8-bit, 1.2.840.10008.1.2.4.50, Pillow-encoded at `jpeg_quality`). UIDs derive from
    patient_id, so the same inputs give the same bytes. The file appears atomically.
    """
    from PIL import Image
    from pydicom import dcmwrite
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        ComputedRadiographyImageStorage,
        ExplicitVRLittleEndian,
        JPEGBaseline8Bit,
        generate_uid,
    )

    rows, cols = pixels.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[patient_id, "instance"])
    meta.TransferSyntaxUID = (
        JPEGBaseline8Bit if transfer_syntax == "jpeg" else ExplicitVRLittleEndian
    )
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate, ds.StudyTime = "19010101", "000000.00"
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"view: {view}"
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = sex
    ds.PatientAge = f"{age:03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[patient_id, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[patient_id, "series"])
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    spacing = round(_RSNA_PIXEL_SPACING_MM * 1024 / cols, 6)
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if transfer_syntax == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(
            buf, format="JPEG", quality=jpeg_quality
        )
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
        ds["PixelData"].VR = "OB"
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    dcmwrite(tmp, ds, enforce_file_format=True)
    os.replace(tmp, path)


def _render_task(task: _Task) -> tuple[str, np.ndarray]:
    """Render and write one image; return (patientId, boxes float32 [K, 4] xyxy px)."""
    image = render_radiograph(image_rng(task.seed, task.index), task.image_size, task.n_boxes)
    write_dicom(
        task.path,
        image.pixels,
        task.patient_id,
        transfer_syntax=task.transfer_syntax,
        jpeg_quality=task.jpeg_quality,
        view=task.view,
        sex=task.sex,
        age=task.age,
    )
    return task.patient_id, image.boxes


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; avoid oversubscription


def _check_args(
    n_images: int,
    seed: int,
    image_size: int,
    positive_fraction: float,
    transfer_syntax: str,
    jpeg_quality: int,
    workers: int,
) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if not is_int(n_images) or n_images < 1:
        raise InputValueError(f"n_images: expected an int >= 1, got {n_images!r}")
    if not is_int(seed) or seed < 0:
        raise InputValueError(f"seed: expected an int >= 0, got {seed!r}")
    if not is_int(image_size) or image_size < MIN_IMAGE_SIZE:
        raise InputValueError(
            f"image_size: expected an int >= {MIN_IMAGE_SIZE}, got {image_size!r}"
        )
    if not (isinstance(positive_fraction, int | float) and 0.0 <= positive_fraction <= 1.0):
        raise InputValueError(f"positive_fraction: expected 0 <= f <= 1, got {positive_fraction!r}")
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise InputValueError(
            f"transfer_syntax: expected one of {TRANSFER_SYNTAXES}, got {transfer_syntax!r}"
        )
    if not is_int(jpeg_quality) or not 1 <= jpeg_quality <= 100:
        raise InputValueError(f"jpeg_quality: expected an int in 1..100, got {jpeg_quality!r}")
    if not is_int(workers) or workers < 1:
        raise InputValueError(f"workers: expected an int >= 1, got {workers!r}")


def _prepare_out_dir(out_dir: Path, planned: set[str], overwrite: bool) -> tuple[Path, Path]:
    """Create the layout; refuse (unless overwrite) to mix with a different data set.

    Files of this very plan (an interrupted run with the same arguments) are simply rewritten;
    .dcm files of other patients, or a labels CSV naming other patients, are foreign.
    """
    from cxrbox.data.labels import read_rsna_labels

    images_dir, labels_csv = out_dir / IMAGES_DIRNAME, out_dir / LABELS_FILENAME
    old = sorted(images_dir.glob("*.dcm")) if images_dir.is_dir() else []
    foreign = [p for p in old if p.stem not in planned]
    foreign_csv = False
    if labels_csv.exists():
        try:
            foreign_csv = not set(read_rsna_labels(labels_csv)) <= planned
        except CxrboxError:
            foreign_csv = True
    if (foreign or foreign_csv) and not overwrite:
        what = [f"{len(foreign)} .dcm files of other patients"] if foreign else []
        what += ["a labels CSV of other patients"] if foreign_csv else []
        raise DataError(
            f"{out_dir}: holds another data set ({' and '.join(what)}); choose an empty folder "
            "or pass overwrite=True (cxrbox synth --overwrite) to replace it"
        )
    for p in foreign:
        p.unlink()
    labels_csv.unlink(missing_ok=True)
    images_dir.mkdir(parents=True, exist_ok=True)
    return images_dir, labels_csv


def write_rsna_like(
    out_dir: str | Path,
    n_images: int,
    seed: int,
    *,
    image_size: int = 1024,
    positive_fraction: float = 1 / 3,
    transfer_syntax: str = "explicit",
    jpeg_quality: int = 95,
    workers: int = 1,
    progress: bool = False,
    overwrite: bool = False,
) -> SyntheticSummary:
    """Write n_images synthetic radiographs and their labels in the RSNA layout under out_dir.

    Raises `InputValueError` for a bad argument and `DataError` when out_dir holds another data
    set (.dcm files or a labels CSV of other patients), unless overwrite, which deletes those.
    Rerunning with the same arguments (e.g. after an interruption) rewrites the same files.
    """
    from tqdm import tqdm

    from cxrbox.data.labels import write_rsna_labels

    _check_args(
        n_images, seed, image_size, positive_fraction, transfer_syntax, jpeg_quality, workers
    )
    start = time.perf_counter()
    out_dir = Path(out_dir)
    plan = plan_patients(n_images, seed, positive_fraction)
    images_dir, labels_csv = _prepare_out_dir(out_dir, {p[0] for p in plan}, overwrite)
    tasks = [
        _Task(
            index=i,
            seed=int(seed),
            patient_id=pid,
            n_boxes=k,
            view=view,
            sex=sex,
            age=age,
            path=str(images_dir / f"{pid}.dcm"),
            image_size=int(image_size),
            transfer_syntax=transfer_syntax,
            jpeg_quality=int(jpeg_quality),
        )
        for i, (pid, k, view, sex, age) in enumerate(plan)
    ]
    labels: dict[str, np.ndarray] = {}
    bar = tqdm(total=n_images, unit="img", file=sys.stderr, disable=not progress, mininterval=0.5)
    with bar:
        for pid, boxes in _run(tasks, workers):
            labels[pid] = boxes
            bar.update(1)
    write_rsna_labels(labels_csv, labels)
    return SyntheticSummary(
        out_dir=out_dir,
        images_dir=images_dir,
        labels_csv=labels_csv,
        n_images=n_images,
        n_positive=sum(len(b) > 0 for b in labels.values()),
        n_boxes=sum(len(b) for b in labels.values()),
        image_size=int(image_size),
        transfer_syntax=transfer_syntax,
        seconds=time.perf_counter() - start,
    )


def _run(tasks: list[_Task], workers: int) -> Iterator[tuple[str, np.ndarray]]:
    """Results of `_render_task` in task order, serially or on a spawn-safe process pool."""
    if workers == 1 or len(tasks) == 1:
        yield from map(_render_task, tasks)
        return
    ctx = multiprocessing.get_context("spawn")
    chunk = max(1, min(16, len(tasks) // (workers * 4)))
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
        yield from pool.map(_render_task, tasks, chunksize=chunk)
