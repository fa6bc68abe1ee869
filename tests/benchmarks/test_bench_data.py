"""Per-image cost of the data path on ONE core (torch and OpenCV limited to one thread).

Run: `pytest tests/benchmarks/test_bench_data.py --benchmark-enable`; images/s = 1 / mean.
Disabled (the default addopts), each benchmark runs its function once on the same small data.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from tests.dicom_factory import make_dicom

from cxrbox.data.augment import apply_transforms, build_transforms
from cxrbox.data.cache import ImageCache, build_cache
from cxrbox.data.dataset import RSNADataset
from cxrbox.data.dicom import load_pixels

pytestmark = pytest.mark.benchmark(group="data")

ORIG = 1024
SIZE = 512
N_FILES = 2


def chest_like(seed: int, side: int = ORIG) -> np.ndarray:
    """uint8 [side, side]: smooth shading plus mild noise (compresses like a radiograph)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    shading = 0.5 + 0.3 * np.sin(3 * xx + seed) * np.cos(2 * yy)
    noise = cv2.GaussianBlur(rng.normal(0, 0.05, (side, side)), (0, 0), 3)
    return np.clip((shading + noise) * 255, 0, 255).astype(np.uint8)


@pytest.fixture(autouse=True)
def one_core() -> Iterator[None]:
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv_threads)


@pytest.fixture(scope="module")
def dicoms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench")
    for syntax in ("explicit", "jpeg_baseline"):
        folder = root / syntax
        folder.mkdir()
        for i in range(N_FILES):
            make_dicom(folder / f"p{i}.dcm", chest_like(i), transfer_syntax=syntax)
    return {"explicit": root / "explicit", "jpeg_baseline": root / "jpeg_baseline"}


LABELS = {f"p{i}": np.array([[200 + 20 * i, 300, 450, 700]], np.float32) for i in range(N_FILES)}


@pytest.mark.parametrize("syntax", ["explicit", "jpeg_baseline"])
def test_bench_load_pixels_1024(benchmark, dicoms: dict[str, Path], syntax: str) -> None:
    paths = itertools.cycle(sorted(dicoms[syntax].glob("*.dcm")))
    image = benchmark(lambda: load_pixels(next(paths)))
    assert image.shape == (ORIG, ORIG)


@pytest.mark.parametrize("n_boxes", [1, 0], ids=["positive", "negative"])
@pytest.mark.parametrize("source", ["uint8_512_cache", "float32_1024_dicom"])
def test_bench_train_transforms_512(benchmark, source: str, n_boxes: int) -> None:
    """Positive and negative images cost differently: albumentations' box bookkeeping is a
    large share of a positive image's cost, and most RSNA images are negative."""
    if source == "uint8_512_cache":
        image = cv2.resize(chest_like(0), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        boxes = LABELS["p0"][:n_boxes] / 2
    else:
        image = chest_like(0).astype(np.float32) / 255
        boxes = LABELS["p0"][:n_boxes]
    transforms = build_transforms(True, SIZE)
    seeds = itertools.count()
    out = benchmark(lambda: apply_transforms(transforms, image, boxes, seed=next(seeds)))
    assert out.image.shape == (SIZE, SIZE)


def test_bench_getitem_from_dicom(benchmark, dicoms: dict[str, Path]) -> None:
    dataset = RSNADataset(dicoms["explicit"], LABELS, build_transforms(True, SIZE))
    index = itertools.cycle(range(N_FILES))
    sample = benchmark(lambda: dataset[next(index)])
    assert sample.image.shape == (1, SIZE, SIZE)


def test_bench_getitem_from_cache(benchmark, dicoms: dict[str, Path], tmp_path: Path) -> None:
    path = build_cache(dicoms["explicit"], list(LABELS), SIZE, tmp_path / "c.npy")
    dataset = RSNADataset(None, LABELS, build_transforms(True, SIZE), cache=ImageCache.open(path))
    index = itertools.cycle(range(N_FILES))
    sample = benchmark(lambda: dataset[next(index)])
    assert sample.image.shape == (1, SIZE, SIZE)
