"""The diagnosis checklist behind `cxrbox diagnose`: one `CheckResult` per high-risk area.

Checks, in order (`CHECK_NAMES`), each on the configuration and ITS data:
- labels: labelled patients without a DICOM, unreadable headers, negative sizes, boxes outside
  their image (headers of at most `MAX_SIZED_FILES` positive images), patients in both the
  train and val split;
- box_sync: every box of up to `BOX_SYNC_SAMPLES` positive samples painted at the image's real
  size and run through the TRAINING transforms (`probes.check_box_sync(cases=...)`);
- position_sensitivity: a blob fitted at stride-aligned positions must be found at held-out
  ones (`probes.check_position_sensitivity`; the original pooled head fails);
- optimizer_step, gradient_flow: one step / one backward on `PROBE_BATCH` real images;
- lr_schedule: the configured warmup + cosine at the data's steps per epoch;
- overfit: one real single-box positive sample at `OVERFIT_SIZE` px rolled to 16 positions,
  fitted on 8 for `DEFAULT_OVERFIT_STEPS` steps, followed to the 8 others.
`quick` skips position_sensitivity and overfit (the two that train, ~1 min each on CPU).
The probes run on CPU whatever `config.device` says: their batches are tiny, and the probes
feed host tensors.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from cxrbox.config import TrainConfig
from cxrbox.data.augment import build_transforms, clip_input_boxes
from cxrbox.data.dataset import RSNADataset, collate_samples, count_label_problems
from cxrbox.data.dicom import find_dicom_files, read_image_size
from cxrbox.data.labels import read_rsna_labels
from cxrbox.data.loaders import DataSource, resolve_data, train_val_labels
from cxrbox.diagnostics.probes import (
    check_box_sync,
    check_gradient_flow,
    check_lr_schedule,
    check_optimizer_step,
    check_overfit,
    check_position_sensitivity,
)
from cxrbox.errors import DataError, DicomError, listed
from cxrbox.testing import (
    DEFAULT_OVERFIT_THRESHOLDS,
    CheckResult,
    ShiftedCopies,
    Status,
    shifted_copies,
)
from cxrbox.testing.learning import DEFAULT_OVERFIT_STEPS

CHECK_NAMES = (
    "labels", "box_sync", "position_sensitivity", "optimizer_step", "gradient_flow",
    "lr_schedule", "overfit",
)  # fmt: skip
QUICK_SKIPS = ("position_sensitivity", "overfit")
MAX_SIZED_FILES = 2000  # DICOM headers read for the bounds check (a random sample beyond it)
BOX_SYNC_SAMPLES = 20  # positive samples whose boxes go through the training transforms
PROBE_BATCH = 8  # images of the optimizer-step and gradient-flow probes
OVERFIT_SIZE = 128  # px of the overfit probe's image (the size its thresholds were set at)
OVERFIT_CANDIDATES = 10  # single-box positives tried until one leaves enough positions
_LISTED = 3


@dataclass(frozen=True)
class ChecklistData:
    """A configuration's data, read once.

    labels / val_labels: patientId -> float32 [K, 4] pixel xyxy (val_labels None: the trainer
    splits `labels` by patient). files / val_files: patientId -> DICOM path found on disk.
    """

    source: DataSource
    labels: dict[str, np.ndarray]
    val_labels: dict[str, np.ndarray] | None
    files: dict[str, Path]
    val_files: dict[str, Path]

    def positives(self) -> list[str]:
        """Training patients with at least one box and a DICOM, in label order."""
        return [pid for pid, boxes in self.labels.items() if len(boxes) and pid in self.files]


def load_checklist_data(config: TrainConfig) -> ChecklistData:
    """Labels and DICOM listings of the config's data (built-in synthetic set without images)."""
    source = resolve_data(config)
    labels = read_rsna_labels(source.labels)
    if not labels:
        raise DataError(f"{source.labels}: no labelled patients")
    val_labels, val_images = source.val_labels, source.val_images
    if val_labels is None or val_images is None:  # a validation set needs both
        val_labels = val_images = None
    return ChecklistData(
        source=source,
        labels=labels,
        val_labels=read_rsna_labels(val_labels) if val_labels is not None else None,
        files=find_dicom_files(source.images),
        val_files=find_dicom_files(val_images) if val_images is not None else {},
    )


def check_labels(
    data: ChecklistData, config: TrainConfig, max_sized: int = MAX_SIZED_FILES
) -> CheckResult:
    """Files, bounds and split of the labels: fail for missing/unreadable DICOMs or patients in
    both splits, warn for negative sizes or out-of-bounds boxes (the trainer clips those)."""
    val_labels = data.val_labels or {}
    missing = [pid for pid in data.labels if pid not in data.files]
    missing += [pid for pid in val_labels if pid not in data.val_files]
    sets = [(data.labels, data.files), (val_labels, data.val_files)]
    positive = [
        (pid, files[pid])
        for labels, files in sets
        for pid, boxes in labels.items()
        if len(boxes) and pid in files
    ]
    sample = positive
    if len(positive) > max_sized:
        rng = np.random.default_rng(config.seed)
        sample = [positive[i] for i in sorted(rng.choice(len(positive), max_sized, replace=False))]
    sizes: dict[str, tuple[int, int]] = {}
    unreadable: list[str] = []
    for pid, path in sample:
        try:
            sizes[pid] = read_image_size(path)
        except DicomError:
            unreadable.append(pid)
    everything = {**data.labels, **val_labels}
    problems = count_label_problems(everything, sizes)
    # read_rsna_labels rejects width/height <= 0, so these are 0 for a CSV; counted from the
    # arrays anyway. A zero-size box is dropped by the transforms.
    zero_size = sum(
        int(((b[:, 2] == b[:, 0]) | (b[:, 3] == b[:, 1])).sum())
        for b in everything.values()
        if len(b)
    )
    n_degenerate = problems.negative_width + problems.negative_height + zero_size
    try:
        train, val = train_val_labels(data.labels, data.val_labels, config)
        overlap = sorted(set(train) & set(val))
        split_error = None
    except DataError as exc:
        train, val, overlap, split_error = {}, {}, [], str(exc)

    checked = problems.n_boxes - problems.unsized
    sampled = (
        f" (headers of {len(sample)} of {len(positive)} positive images sampled)"
        if len(sample) < len(positive)
        else ""
    )
    n_patients = len(data.labels) + len(val_labels)
    n_positive = sum(len(b) > 0 for b in (*data.labels.values(), *val_labels.values()))
    summary = (
        f"{n_patients} patients ({n_positive} positive, {problems.n_boxes} boxes); "
        f"missing DICOMs {len(missing)}; negative or zero sizes {n_degenerate}; out of bounds "
        f"{problems.out_of_bounds} of {checked} boxes{sampled}; train/val {len(train)}/{len(val)}"
        f", in both {len(overlap)}"
    )
    failures = []
    if missing:
        failures.append(
            f"{len(missing)} labelled patients have no DICOM: {listed(missing, _LISTED)}"
        )
    if unreadable:
        failures.append(
            f"{len(unreadable)} unreadable DICOM headers: {listed(unreadable, _LISTED)}"
        )
    if overlap:
        failures.append(
            f"{len(overlap)} patients in both train and val: {listed(overlap, _LISTED)}"
        )
    if split_error:
        failures.append(split_error)
    cautions = []
    if n_degenerate:
        cautions.append(f"{n_degenerate} boxes with a negative or zero width/height")
    if problems.out_of_bounds:
        cautions.append(f"{problems.out_of_bounds} boxes reach outside their image (clipped)")
    numbers = {
        "n_patients": n_patients,
        "n_positive": n_positive,
        "n_boxes": problems.n_boxes,
        "missing_dicoms": len(missing),
        "unreadable_headers": len(unreadable),
        "negative_width": problems.negative_width,
        "negative_height": problems.negative_height,
        "zero_size": zero_size,
        "out_of_bounds": problems.out_of_bounds,
        "boxes_checked": checked,
        "images_sized": len(sizes),
        "n_train": len(train),
        "n_val": len(val),
        "in_both_splits": len(overlap),
    }
    if failures:
        return CheckResult("labels", "fail", "; ".join(failures) + f" -- {summary}", numbers)
    if cautions:
        return CheckResult("labels", "warn", "; ".join(cautions) + f" -- {summary}", numbers)
    return CheckResult("labels", "pass", summary, numbers)


def box_sync_cases(
    labels: Mapping[str, np.ndarray], files: Mapping[str, Path], patient_ids: list[str]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """One case per box: a blank uint8 image of the patient's real size [H, W] with the box
    (clipped, rounded to whole pixels) filled with 255, and that box float32 [1, 4] pixel xyxy."""
    cases = []
    for pid in patient_ids:
        try:
            rows, cols = read_image_size(files[pid])
        except DicomError:  # reported by the labels check
            continue
        clipped, _ = clip_input_boxes(labels[pid], cols, rows)
        for box in np.rint(clipped).astype(int):
            x1, y1, x2, y2 = (int(v) for v in box)
            if x2 <= x1 or y2 <= y1:
                continue
            image = np.zeros((rows, cols), np.uint8)
            image[y1:y2, x1:x2] = 255
            cases.append((image, np.array([[x1, y1, x2, y2]], np.float32)))
    return cases


def check_data_box_sync(
    data: ChecklistData, config: TrainConfig, n_samples: int = BOX_SYNC_SAMPLES
) -> CheckResult:
    """The training transforms at `config.image_size` on the data's real boxes."""
    rng = np.random.default_rng(config.seed)
    positives = data.positives()
    chosen = [positives[i] for i in rng.permutation(len(positives))[:n_samples]]
    transforms = build_transforms(train=True, size=config.image_size)
    cases = box_sync_cases(data.labels, data.files, chosen)
    if not cases:
        result = check_box_sync(config.image_size, transforms=transforms)
        note = "no positive sample with a DICOM: checked random rectangles instead"
        status: Status = "fail" if result.status == "fail" else "warn"
        return dataclasses.replace(result, status=status, message=f"{note}; {result.message}")
    result = check_box_sync(config.image_size, transforms=transforms, cases=cases)
    note = (
        f" (each box of {len(chosen)} positive images painted at its original size, training "
        f"transforms at {config.image_size} px)"
    )
    numbers = {**result.numbers, "n_images": len(chosen)}
    return dataclasses.replace(result, message=result.message + note, numbers=numbers)


def load_probe_batch(
    data: ChecklistData, config: TrainConfig, n: int = PROBE_BATCH
) -> tuple[Tensor, list[Tensor], str]:
    """Up to `n` training images (positives first) through the eval transforms at
    `config.image_size`: (images [B, 1, S, S], B boxes [K, 4] normalized xyxy, a description).
    Fewer than 2 images with a DICOM: the overfit probe's synthetic batch instead."""
    positives = data.positives()
    negatives = [pid for pid, b in data.labels.items() if not len(b) and pid in data.files]
    chosen = (positives + negatives)[:n]
    if len(chosen) < 2:
        copies = shifted_copies()
        return copies.images, copies.boxes, "a synthetic batch (fewer than 2 data images)"
    dataset = RSNADataset(
        data.source.images,
        {pid: data.labels[pid] for pid in chosen},
        build_transforms(train=False, size=config.image_size),
        seed=config.seed,
    )
    batch = collate_samples([dataset[i] for i in range(len(dataset))])
    return batch.images, batch.boxes, f"{len(chosen)} data images at {config.image_size} px"


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Training steps per epoch as the trainer's loader makes them (last partial batch dropped
    when there is more than one batch)."""
    return max(1, n_train // batch_size)


def overfit_copies(
    data: ChecklistData, config: TrainConfig, size: int = OVERFIT_SIZE
) -> tuple[ShiftedCopies, str]:
    """A real single-box positive sample at `size` px rolled to 16 positions (8 fitted, 8 held
    out), with a description; the built-in synthetic radiograph when no sample allows it."""
    single = [pid for pid in data.positives() if len(data.labels[pid]) == 1]
    rng = np.random.default_rng(config.seed)
    candidates = [single[i] for i in rng.permutation(len(single))[:OVERFIT_CANDIDATES]]
    if candidates:
        dataset = RSNADataset(
            data.source.images,
            {pid: data.labels[pid] for pid in candidates},
            build_transforms(train=False, size=size),
            seed=config.seed,
        )
        for index in range(len(dataset)):
            sample = dataset[index]
            if len(sample.boxes) != 1:
                continue
            box = sample.boxes[0].numpy() * size  # pixel xyxy
            try:
                copies = shifted_copies(
                    image_size=size,
                    seed=config.seed,
                    source=sample.image[0].numpy(),
                    source_box=box,
                )
            except ValueError:  # the box is too large to leave 16 positions
                continue
            return copies, f"patient {sample.patient_id} at {size} px"
    copies = shifted_copies(image_size=size, seed=config.seed)
    return copies, "the built-in synthetic radiograph (no data sample leaves 16 positions)"


def check_data_overfit(data: ChecklistData, config: TrainConfig) -> CheckResult:
    copies, described = overfit_copies(data, config)
    result = check_overfit(config, copies, DEFAULT_OVERFIT_STEPS, DEFAULT_OVERFIT_THRESHOLDS)
    return dataclasses.replace(result, message=f"{result.message} ({described})")


def run_checklist(
    config: TrainConfig,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[CheckResult]:
    """Run every check (`quick`: all but `QUICK_SKIPS`) in `CHECK_NAMES` order.

    `progress(name)` is called before each check. Each result's numbers gain `seconds`.
    """
    config = config.replace(device="cpu")
    data = load_checklist_data(config)
    batch: list = []

    def probe_batch() -> tuple[Tensor, list[Tensor], str]:
        if not batch:
            batch.extend(load_probe_batch(data, config))
        return batch[0], batch[1], batch[2]

    def optimizer_step() -> CheckResult:
        images, boxes, described = probe_batch()
        result = check_optimizer_step(config, images, boxes)
        return dataclasses.replace(result, message=f"{result.message} ({described})")

    def gradient_flow() -> CheckResult:
        images, boxes, described = probe_batch()
        result = check_gradient_flow(config, images, boxes)
        return dataclasses.replace(result, message=f"{result.message} ({described})")

    def lr_schedule() -> CheckResult:
        try:
            n_train = len(train_val_labels(data.labels, data.val_labels, config)[0])
        except DataError:
            n_train = len(data.labels)
        steps = steps_per_epoch(n_train, config.batch_size)
        with warnings.catch_warnings():  # the dry run steps the scheduler without the optimizer
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            result = check_lr_schedule(config, steps)
        numbers = {**result.numbers, "steps_per_epoch": steps}
        return dataclasses.replace(
            result,
            message=f"{result.message} ({n_train} training images, batch {config.batch_size})",
            numbers=numbers,
        )

    checks: dict[str, Callable[[], CheckResult]] = {
        "labels": lambda: check_labels(data, config),
        "box_sync": lambda: check_data_box_sync(data, config),
        "position_sensitivity": lambda: check_position_sensitivity(config),
        "optimizer_step": optimizer_step,
        "gradient_flow": gradient_flow,
        "lr_schedule": lr_schedule,
        "overfit": lambda: check_data_overfit(data, config),
    }
    results = []
    for name in CHECK_NAMES:
        if quick and name in QUICK_SKIPS:
            continue
        if progress is not None:
            progress(name)
        started = time.perf_counter()
        result = checks[name]()
        seconds = round(time.perf_counter() - started, 2)
        results.append(dataclasses.replace(result, numbers={**result.numbers, "seconds": seconds}))
    return results
