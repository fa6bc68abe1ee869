"""From DICOM files (or the uint8 image cache) to training tensors, boxes in sync with pixels.

One sample: the uint8 image [S, S] of `cxrbox.data.preprocess.load_model_image` (decoded from the
DICOM, or the same bytes read from `cxrbox.data.cache`) with its boxes scaled from original to S px
pixels, through
`cxrbox.data.augment.apply_transforms` seeded by (seed, epoch, index), then to a float32 tensor
[1, S, S] in [0, 1] and boxes ordered, clipped (`cxrbox.boxes.order_and_clip_xyxy`) and
normalized to [0, 1]. Boxes lost on the way are counted in `n_dropped`, never silent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cxrbox.boxes import normalize_xyxy, order_and_clip_xyxy
from cxrbox.data.augment import apply_transforms, augmentation_seed
from cxrbox.data.cache import ImageCache
from cxrbox.data.dicom import find_dicom_files
from cxrbox.data.labels import count_out_of_bounds
from cxrbox.data.preprocess import load_model_image, to_unit_float
from cxrbox.errors import DataError, InputValueError, listed
from cxrbox.options import DEFAULT_INTENSITY

if TYPE_CHECKING:
    import albumentations as A

log = logging.getLogger("cxrbox.data.dataset")


class Sample(NamedTuple):
    """One training sample.

    image (Tensor[1, S, S]): float32 in [0, 1].
    boxes (Tensor[K, 4]): float32 xyxy, normalized to [0, 1], ordered and clipped (K may be 0).
    patient_id (str): the RSNA patientId.
    orig_size (tuple[int, int]): (H, W) of the original DICOM.
    n_dropped (int): boxes of this patient lost to clipping or augmentation.
    """

    image: Tensor
    boxes: Tensor
    patient_id: str
    orig_size: tuple[int, int]
    n_dropped: int


class Batch(NamedTuple):
    """A collated batch: images [B, 1, S, S], boxes list of B Tensor[K_i, 4] normalized xyxy,
    patient_ids list of B str, orig_sizes Tensor[B, 2] long (H, W), n_dropped total (int)."""

    images: Tensor
    boxes: list[Tensor]
    patient_ids: list[str]
    orig_sizes: Tensor
    n_dropped: int


class LabelProblems(NamedTuple):
    """Counts of suspicious label boxes (pixel xyxy).

    negative_width / negative_height: x2 < x1 / y2 < y1 as read (a negative RSNA width/height).
    out_of_bounds: boxes with a corner outside [0, W] x [0, H] of their image.
    unsized: boxes of patients with no known image size (not checked for bounds).
    """

    n_boxes: int
    negative_width: int
    negative_height: int
    out_of_bounds: int
    unsized: int


def _as_boxes(patient_id: str, boxes: object) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float32)
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise InputValueError(
            f"labels[{patient_id!r}] must be [K, 4] xyxy pixels, got shape {array.shape}"
        )
    return array


class RSNADataset(Dataset):
    """Samples in the order of `labels`' keys.

    Args:
        images_dir: folder of `<patientId>.dcm` (not read when `cache` is given; may be None).
        labels: patientId -> float32 [K, 4] xyxy in original pixels (`read_rsna_labels`).
        transforms: from `cxrbox.data.augment.build_transforms`.
        cache: an ImageCache (or the path of one) holding every labelled patient.
        seed: augmentation seed; with `set_epoch`, sample i of epoch e always gets the same
            random draw, whichever DataLoader worker loads it.
        intensity: `load_pixels`' rule for DICOMs without a window (`cxrbox.data.dicom`).
        image_size: side S of the model input made from each DICOM (`load_model_image`);
            None: the side of the transforms' first `A.Resize` step.

    Raises DataError when a labelled patient has no DICOM (or is missing from the cache),
    listing how many and the first few.
    """

    def __init__(
        self,
        images_dir: str | Path | None,
        labels: Mapping[str, object],
        transforms: A.Compose,
        cache: ImageCache | str | Path | None = None,
        seed: int = 0,
        intensity: str = DEFAULT_INTENSITY,
        image_size: int | None = None,
    ) -> None:
        self.patient_ids: list[str] = list(labels)
        self.labels = {pid: _as_boxes(pid, labels[pid]) for pid in self.patient_ids}
        self.transforms = transforms
        self.seed = seed
        self.intensity = intensity
        self.epoch = 0
        self.images_dir = Path(images_dir) if images_dir is not None else None
        self.files: dict[str, Path] = {}
        self.image_size = image_size
        if cache is not None:
            self.cache: ImageCache | None = (
                cache if isinstance(cache, ImageCache) else ImageCache.open(cache)
            )
            self.cache.require(self.patient_ids)
            log.info(
                "%d images from cache %s (%d images, %d px)",
                len(self.patient_ids),
                self.cache.path,
                len(self.cache),
                self.cache.size,
            )
            return
        self.cache = None
        if self.image_size is None:
            self.image_size = _resize_side(transforms)
        if self.images_dir is None:
            raise InputValueError("RSNADataset: give images_dir, cache, or both")
        found = find_dicom_files(self.images_dir)
        missing = [pid for pid in self.patient_ids if pid not in found]
        if missing:
            raise DataError(
                f"{self.images_dir}: {len(missing)} of {len(self.patient_ids)} labelled patients "
                f"have no <patientId>.dcm file: {listed(missing)}"
            )
        self.files = {pid: found[pid] for pid in self.patient_ids}

    def __len__(self) -> int:
        return len(self.patient_ids)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation draws of `epoch` (call before each epoch)."""
        if epoch < 0:
            raise InputValueError(f"set_epoch: epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """Untransformed (image [H, W], boxes [K, 4] pixel xyxy of that image, original (H, W)).

        The image is uint8 [S, S] from `load_model_image` (or the same bytes from the cache)
        and the boxes are scaled to it.
        """
        patient_id = self.patient_ids[index]
        boxes = self.labels[patient_id]
        if self.cache is None:
            assert self.image_size is not None  # set in __init__ whenever there is no cache
            image, (orig_h, orig_w) = load_model_image(
                self.files[patient_id], self.image_size, intensity=self.intensity
            )
        else:
            image = self.cache.get(patient_id)
            orig_h, orig_w = self.cache.orig_size(patient_id)
        rows, cols = image.shape
        scale = np.array([cols / orig_w, rows / orig_h] * 2, dtype=np.float32)
        return image, boxes * scale, (orig_h, orig_w)

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"RSNADataset index {index} out of range [0, {len(self)})")
        image, boxes, orig_size = self.load(index)
        seed = augmentation_seed(self.seed, self.epoch, index)
        out = apply_transforms(self.transforms, image, boxes, seed=seed)
        return to_sample(out.image, out.boxes, self.patient_ids[index], orig_size, out.n_dropped)


def _resize_side(transforms: A.Compose) -> int:
    """The output side of the first `A.Resize` of `transforms` (what `build_transforms` makes)."""
    import albumentations as A

    for step in getattr(transforms, "transforms", []):
        if isinstance(step, A.Resize) and step.height == step.width:
            return int(step.height)
    raise InputValueError(
        "RSNADataset: give image_size, or transforms that start with a square A.Resize "
        "(cxrbox.data.augment.build_transforms)"
    )


def to_sample(
    image: np.ndarray,
    boxes: np.ndarray,
    patient_id: str,
    orig_size: tuple[int, int],
    n_dropped: int,
) -> Sample:
    """Transformed numpy image [S, S] (uint8 or float32) and pixel boxes [K, 4] -> Sample."""
    height, width = image.shape
    tensor = torch.from_numpy(to_unit_float(image))
    pixel_boxes = torch.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    clipped = order_and_clip_xyxy(pixel_boxes, width, height)
    normalized = normalize_xyxy(clipped, width, height)
    return Sample(tensor.unsqueeze(0), normalized, patient_id, orig_size, int(n_dropped))


def collate_samples(batch: Sequence[Sample]) -> Batch:
    """Stack images; keep boxes as a list (K varies, K = 0 allowed); sum n_dropped."""
    if len(batch) == 0:
        raise InputValueError("collate_samples: got an empty batch")
    return Batch(
        images=torch.stack([s.image for s in batch]),
        boxes=[s.boxes for s in batch],
        patient_ids=[s.patient_id for s in batch],
        orig_sizes=torch.tensor([list(s.orig_size) for s in batch], dtype=torch.long),
        n_dropped=sum(int(s.n_dropped) for s in batch),
    )


def split_by_patient(
    labels: Mapping[str, Any], val_fraction: float, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split labels into (train, val) by patient, stratified by positive (K > 0) / negative.

    A patient is one key, so it lands in exactly one split. The draw depends only on the set
    of patients, their positivity and `seed` (not on dict order); each split keeps the input
    order. Raises DataError when either split would be empty.
    """
    if not 0.0 < val_fraction < 1.0:
        raise InputValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ids = list(labels)
    n_val = round(len(ids) * val_fraction)
    if n_val == 0 or n_val == len(ids):
        side = "validation" if n_val == 0 else "training"
        raise DataError(
            f"{len(ids)} labelled patient(s) split with val_fraction {val_fraction} leave the "
            f"{side} split empty; label more patients, change val_fraction, or give "
            "--val-images and --val-labels"
        )
    positive = sorted(pid for pid in ids if np.size(labels[pid]) > 0)
    negative = sorted(pid for pid in ids if np.size(labels[pid]) == 0)
    n_val_pos = min(round(len(positive) * val_fraction), len(positive), n_val)
    n_val_neg = min(n_val - n_val_pos, len(negative))
    n_val_pos = n_val - n_val_neg  # a short negative stratum hands its share to the positives
    rng = np.random.default_rng(seed)
    val = {positive[i] for i in rng.permutation(len(positive))[:n_val_pos]}
    val |= {negative[i] for i in rng.permutation(len(negative))[:n_val_neg]}
    train_labels = {pid: labels[pid] for pid in ids if pid not in val}
    val_labels = {pid: labels[pid] for pid in ids if pid in val}
    return train_labels, val_labels


def count_label_problems(
    labels: Mapping[str, object], image_sizes: Mapping[str, tuple[int, int]]
) -> LabelProblems:
    """Count negative widths/heights and out-of-bounds boxes.

    labels: patientId -> [K, 4] pixel xyxy as read; image_sizes: patientId -> (H, W).
    """
    boxes = {pid: _as_boxes(pid, raw) for pid, raw in labels.items()}
    n_boxes = sum(len(b) for b in boxes.values())
    neg_w = sum(int((b[:, 2] < b[:, 0]).sum()) for b in boxes.values())
    neg_h = sum(int((b[:, 3] < b[:, 1]).sum()) for b in boxes.values())
    sized = {pid: b for pid, b in boxes.items() if len(b) and pid in image_sizes}
    unsized = sum(len(b) for pid, b in boxes.items() if pid not in image_sizes)
    oob = count_out_of_bounds(sized, {pid: image_sizes[pid] for pid in sized})
    return LabelProblems(n_boxes, neg_w, neg_h, oob, unsized)
