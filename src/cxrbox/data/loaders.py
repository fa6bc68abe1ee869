"""From a TrainConfig to train/val DataLoaders: built-in synthetic data, splits, image caches.

Without `images`, a synthetic RSNA-format set is generated once under `synthetic_dir` (a
`.complete` marker makes an interrupted generation start over) and reused by later runs.
With `use_cache`, DICOMs are decoded and resized once into a memory-mapped uint8 cache beside
the image folder (or in `cache_dir`; see `cxrbox.data.cache.cache_location`), so epochs after
the first never touch DICOM.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from cxrbox.atomic_write import atomic_path
from cxrbox.config import TrainConfig
from cxrbox.data.augment import build_transforms
from cxrbox.data.cache import ImageCache, build_cache, cache_location
from cxrbox.data.dataset import RSNADataset, collate_samples, split_by_patient
from cxrbox.data.labels import read_rsna_labels
from cxrbox.errors import DataError
from cxrbox.options import DEFAULT_INTENSITY

log = logging.getLogger("cxrbox.data.loaders")

IMAGES_SUBDIR = "stage_2_train_images"
LABELS_NAME = "stage_2_train_labels.csv"


@dataclass(frozen=True)
class DataSource:
    """Where a run's data comes from (validation None: split the training labels by patient)."""

    images: Path
    labels: Path
    val_images: Path | None
    val_labels: Path | None
    synthetic: bool


def ensure_synthetic(root: Path, n_images: int, seed: int, image_size: int) -> Path:
    """Generate (once) a synthetic RSNA-format set; returns its folder."""
    folder = root / f"n{n_images}-seed{seed}-px{image_size}"
    marker = folder / ".complete"
    if not marker.exists():
        from cxrbox.data.synthetic.rsna_like import write_rsna_like

        log.info("generating %d synthetic RSNA-format images in %s", n_images, folder)
        write_rsna_like(folder, n_images, seed, image_size=image_size, progress=sys.stderr.isatty())
        with atomic_path(marker) as tmp:
            tmp.write_text("ok\n")
    return folder


def resolve_data(config: TrainConfig) -> DataSource:
    if config.images is not None and config.labels is not None:
        return DataSource(
            images=Path(config.images),
            labels=Path(config.labels),
            val_images=Path(config.val_images) if config.val_images else None,
            val_labels=Path(config.val_labels) if config.val_labels else None,
            synthetic=False,
        )
    folder = ensure_synthetic(
        Path(config.synthetic_dir),
        config.synthetic_n,
        config.synthetic_seed,
        config.synthetic_image_size,
    )
    return DataSource(folder / IMAGES_SUBDIR, folder / LABELS_NAME, None, None, synthetic=True)


def open_or_build_cache(
    images: Path,
    patient_ids: list[str],
    size: int,
    intensity: str = DEFAULT_INTENSITY,
    cache_dir: str | Path | None = None,
) -> ImageCache:
    """The cache of `images` for `size` px (`cache_location`: beside the folder, or in
    `cache_dir`), (re)built when missing, not covering the ids or built with another intensity
    rule."""
    path = cache_location(images, size, cache_dir)
    if path.exists():
        try:
            cache = ImageCache.open(path, intensity=intensity)
            if set(patient_ids) <= set(cache.patient_ids):
                return cache
            log.info("image cache %s does not cover this label set; rebuilding", path)
        except DataError as exc:
            log.info("image cache %s unusable (%s); rebuilding", path, exc)
    build_cache(images, patient_ids, size, path, progress=sys.stderr.isatty(), intensity=intensity)
    return ImageCache.open(path)


class EpochShuffleSampler(Sampler[int]):
    """A permutation drawn from (seed, epoch): the same order whether a run was resumed or not.

    Data-parallel: every rank draws the same permutation and takes positions rank, rank + W,
    ... (W = world_size), so rank r's k-th batch of B holds the samples that one process's k-th
    batch of B*W holds. The permutation is first cut to a multiple of W (fewer than W samples
    of that epoch skipped, as torch's DistributedSampler with drop_last does): every rank has
    the same number of steps. rank 0 of 1 is exactly the single-process order.
    `__iter__` is permute -> shard -> skip: `start` is how many of this rank's samples of the
    epoch were already consumed (a run resumed mid-epoch); they are skipped, so the epoch
    continues where it stopped. It stays set until changed.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise DataError(f"sampler rank must be in [0, {world_size}), got {rank}")
        self.n = n
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        return iter(order[self.rank : self.n_used : self.world_size][self.start :])

    @property
    def n_used(self) -> int:
        """Samples of an epoch handed out over all ranks (n cut to a multiple of world_size)."""
        return self.n - self.n % self.world_size

    def __len__(self) -> int:
        return max(self.n_used // self.world_size - self.start, 0)


class ShardSampler(Sampler[int]):
    """The ranks' validation share: range(n) cut into batches of `batch_size` (as one process
    batches it), rank r taking whole batches r, r + W, ... in order, no padding.

    Every image is predicted in the same batch as in one process, so with the same weights its
    output is the same bit for bit, and nothing is repeated: gathered metrics count every image
    exactly once and equal a single-process evaluation.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, batch_size: int = 1) -> None:
        self.n, self.rank, self.world_size, self.batch_size = n, rank, world_size, batch_size

    def __iter__(self) -> Iterator[int]:
        first_batches = range(
            self.rank * self.batch_size, self.n, self.world_size * self.batch_size
        )
        return (
            i for start in first_batches for i in range(start, min(start + self.batch_size, self.n))
        )

    def __len__(self) -> int:
        return sum(1 for _ in self)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: numpy/random seeded from torch's per-worker seed."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    sampler: EpochShuffleSampler
    source: DataSource
    n_train: int
    n_val: int


@dataclass(frozen=True)
class Splits:
    """A run's labels: train (in `source.images`) and validation (in `val_images`)."""

    source: DataSource
    train_labels: dict
    val_images: Path
    val_labels: dict


def resolve_splits(config: TrainConfig) -> Splits:
    """The run's train and validation labels (given, or split by patient with the seed)."""
    source = resolve_data(config)
    labels = read_rsna_labels(source.labels)
    val_images, given_val = source.images, None
    if source.val_images is not None and source.val_labels is not None:
        val_images, given_val = source.val_images, read_rsna_labels(source.val_labels)
    train_labels, val_labels = train_val_labels(labels, given_val, config)
    return Splits(source, train_labels, val_images, val_labels)


def train_val_labels(
    labels: dict[str, np.ndarray], val_labels: dict[str, np.ndarray] | None, config: TrainConfig
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(train, val) labels as the trainer builds them: the given validation labels, or a split
    of `labels` by patient with the config's seed and val_fraction (DataError when empty)."""
    if val_labels is not None:
        return labels, val_labels
    try:
        return split_by_patient(labels, config.val_fraction, config.seed)
    except DataError as exc:  # name the file the patients came from
        raise DataError(f"{config.labels or 'the built-in synthetic labels'}: {exc}") from exc


def build_loaders(config: TrainConfig, rank: int = 0, world_size: int = 1) -> Loaders:
    """Train loader (augmented, shuffled per epoch) and val loader (resize only, in order).

    With world_size > 1 both hold this rank's share (`EpochShuffleSampler`, `ShardSampler`);
    `batch_size` is per rank.
    """
    splits = resolve_splits(config)
    source, val_images = splits.source, splits.val_images
    train_labels, val_labels = splits.train_labels, splits.val_labels

    train_cache = val_cache = None
    if config.use_cache:
        ids = list(train_labels) + (list(val_labels) if val_images == source.images else [])
        train_cache = open_or_build_cache(
            source.images, ids, config.image_size, config.intensity, config.cache_dir
        )
        val_cache = (
            train_cache
            if val_images == source.images
            else open_or_build_cache(
                val_images, list(val_labels), config.image_size, config.intensity, config.cache_dir
            )
        )

    train_transforms = build_transforms(train=config.augment, size=config.image_size)
    train_set = RSNADataset(
        source.images,
        train_labels,
        train_transforms,
        cache=train_cache,
        seed=config.seed,
        intensity=config.intensity,
    )
    val_set = RSNADataset(
        val_images,
        val_labels,
        build_transforms(train=False, size=config.image_size),
        cache=val_cache,
        seed=config.seed,
        intensity=config.intensity,
    )
    sampler = EpochShuffleSampler(len(train_set), config.seed, rank, world_size)
    workers: dict[str, Any] = dict(
        num_workers=config.num_workers,
        worker_init_fn=seed_worker if config.num_workers else None,
        # Not persistent: workers must see the epoch `set_epoch` gives the dataset each epoch.
        persistent_workers=False,
        pin_memory=config.device.startswith("cuda"),
    )
    train_loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        collate_fn=collate_samples,
        # A last batch of 1 would break BatchNorm; drop it when there is more than one batch.
        drop_last=len(sampler) > config.batch_size,
        **workers,
    )
    val_sampler = (
        ShardSampler(len(val_set), rank, world_size, config.batch_size) if world_size > 1 else None
    )
    val_loader = DataLoader(
        val_set,
        batch_size=config.batch_size,
        sampler=val_sampler,
        collate_fn=collate_samples,
        **workers,
    )
    return Loaders(train_loader, val_loader, sampler, source, len(train_set), len(val_set))
