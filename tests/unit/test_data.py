"""cxrbox.data.dataset: samples, the cache path, collation, splits and label checks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.dicom_factory import write_random_dicoms
from torch.utils.data import DataLoader

from cxrbox.data.augment import build_transforms
from cxrbox.data.cache import build_cache
from cxrbox.data.dataset import (
    RSNADataset,
    Sample,
    collate_samples,
    count_label_problems,
    split_by_patient,
)
from cxrbox.errors import DataError, InputValueError

SIZE = 32


def box(*xyxy: float) -> np.ndarray:
    return np.array([xyxy], dtype=np.float32)


NONE = np.zeros((0, 4), np.float32)
LABELS = {
    "p0": box(8, 10, 40, 50),
    "p1": NONE,
    "p2": np.concatenate([box(2, 2, 20, 30), box(30, 40, 60, 70)]),
    "p3": box(-5, 50, 70, 90),  # sticks out of its 64 x 80 image: clipped
}
SHAPES = {"p0": (64, 64), "p1": (64, 64), "p2": (80, 64), "p3": (64, 80)}


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    return write_random_dicoms(tmp_path / "images", SHAPES)


def test_sample_has_documented_shapes_and_dtypes(images_dir: Path) -> None:
    sample = RSNADataset(images_dir, LABELS, build_transforms(True, SIZE))[2]
    assert isinstance(sample, Sample)
    assert sample.image.shape == (1, SIZE, SIZE)
    assert sample.image.dtype == torch.float32
    assert sample.boxes.dtype == torch.float32
    assert sample.boxes.shape[1] == 4
    assert sample.patient_id == "p2"
    assert sample.orig_size == SHAPES["p2"]
    assert isinstance(sample.n_dropped, int)


@pytest.mark.parametrize("use_cache", [False, True], ids=["dicom", "cache"])
def test_image_values_span_the_unit_range(
    images_dir: Path, tmp_path: Path, use_cache: bool
) -> None:
    cache = build_cache(images_dir, list(LABELS), SIZE, tmp_path / "c.npy") if use_cache else None
    dataset = RSNADataset(images_dir, LABELS, build_transforms(False, SIZE), cache=cache)
    for i in range(len(dataset)):
        image = dataset[i].image
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert float(image.max()) > 0.5  # the noise images reach near white


def test_boxes_are_normalized_ordered_and_inside(images_dir: Path) -> None:
    dataset = RSNADataset(images_dir, LABELS, build_transforms(True, SIZE), seed=5)
    for epoch in range(10):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            boxes = dataset[i].boxes
            assert bool(((boxes >= 0) & (boxes <= 1)).all())
            assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())


def test_eval_boxes_are_the_labels_scaled_and_clipped(images_dir: Path) -> None:
    dataset = RSNADataset(images_dir, LABELS, build_transforms(False, SIZE))
    expected = torch.tensor([[0, 50 / 64, 70 / 80, 1]])  # p3 is 64 rows x 80 columns
    torch.testing.assert_close(dataset[3].boxes, expected)


def test_samples_follow_label_order(images_dir: Path) -> None:
    labels = {pid: LABELS[pid] for pid in ["p3", "p0", "p2"]}
    dataset = RSNADataset(images_dir, labels, build_transforms(False, SIZE))
    assert [dataset[i].patient_id for i in range(len(dataset))] == ["p3", "p0", "p2"]


def test_missing_dicoms_raise_naming_count_patients_and_folder(images_dir: Path) -> None:
    labels = {**LABELS, "lost1": NONE, "lost2": box(1, 1, 5, 5)}
    with pytest.raises(DataError) as info:
        RSNADataset(images_dir, labels, build_transforms(False, SIZE))
    message = str(info.value)
    assert "2 of 6" in message
    assert "lost1" in message and "lost2" in message
    assert str(images_dir) in message


def test_labels_of_wrong_shape_raise(images_dir: Path) -> None:
    with pytest.raises(InputValueError, match="p0"):
        RSNADataset(images_dir, {"p0": np.zeros((2, 3))}, build_transforms(False, SIZE))


def test_same_seed_and_epoch_give_the_same_sample(images_dir: Path) -> None:
    a = RSNADataset(images_dir, LABELS, build_transforms(True, SIZE), seed=3)
    b = RSNADataset(images_dir, LABELS, build_transforms(True, SIZE), seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    _ = b[0]  # another index first: draws must not depend on the call history
    torch.testing.assert_close(a[2].image, b[2].image, rtol=0, atol=0)
    torch.testing.assert_close(a[2].boxes, b[2].boxes, rtol=0, atol=0)


def test_epochs_and_seeds_change_the_augmentation(images_dir: Path) -> None:
    dataset = RSNADataset(images_dir, LABELS, build_transforms(True, SIZE), seed=3)
    draws = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        draws.add(dataset[0].image.numpy().tobytes())
    other = RSNADataset(images_dir, LABELS, build_transforms(True, SIZE), seed=4)
    draws.add(other[0].image.numpy().tobytes())
    assert len(draws) >= 5


def test_cache_and_dicom_paths_give_identical_eval_inputs(images_dir: Path, tmp_path: Path) -> None:
    """One preprocessing function (cxrbox.data.preprocess): validation from the cache and eval from
    the DICOMs see bit-identical input tensors."""
    path = build_cache(images_dir, list(LABELS), SIZE, tmp_path / "c.npy")
    from_dicom = RSNADataset(images_dir, LABELS, build_transforms(False, SIZE))
    from_cache = RSNADataset(None, LABELS, build_transforms(False, SIZE), cache=path)
    for i in range(len(LABELS)):
        a, b = from_dicom[i], from_cache[i]
        torch.testing.assert_close(a.image, b.image, atol=0, rtol=0)
        torch.testing.assert_close(a.boxes, b.boxes, atol=1e-5, rtol=0)
        assert a.orig_size == b.orig_size


def test_cache_path_logs_its_use(
    images_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = build_cache(images_dir, list(LABELS), SIZE, tmp_path / "c.npy")
    subset = dict(list(LABELS.items())[:3])  # a split uses part of the cache; both counts shown
    with caplog.at_level(logging.INFO, logger="cxrbox.data.dataset"):
        RSNADataset(None, subset, build_transforms(False, SIZE), cache=path)
    assert f"3 images from cache {path} (4 images, {SIZE} px)" in caplog.messages


def test_cache_missing_a_labelled_patient_raises(images_dir: Path, tmp_path: Path) -> None:
    path = build_cache(images_dir, ["p0", "p1"], SIZE, tmp_path / "c.npy")
    with pytest.raises(DataError, match=r"stale: 2 of 4 patients.*p2, p3"):
        RSNADataset(images_dir, LABELS, build_transforms(False, SIZE), cache=path)


def test_index_out_of_range_raises_index_error(images_dir: Path) -> None:
    dataset = RSNADataset(images_dir, LABELS, build_transforms(False, SIZE))
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_negative_epoch_is_rejected(images_dir: Path) -> None:
    dataset = RSNADataset(images_dir, LABELS, build_transforms(False, SIZE))
    with pytest.raises(InputValueError):
        dataset.set_epoch(-1)


def test_dataloader_workers_reproduce_single_process_batches(
    images_dir: Path, tmp_path: Path
) -> None:
    path = build_cache(images_dir, list(LABELS), SIZE, tmp_path / "c.npy")
    dataset = RSNADataset(None, LABELS, build_transforms(True, SIZE), cache=path, seed=9)
    dataset.set_epoch(2)

    def load(workers: int) -> list:
        loader = DataLoader(dataset, batch_size=2, num_workers=workers, collate_fn=collate_samples)
        return list(loader)

    for one, two in zip(load(0), load(2), strict=True):
        torch.testing.assert_close(one.images, two.images, rtol=0, atol=0)
        for a, b in zip(one.boxes, two.boxes, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------------- collate


def fake_sample(pid: str, k: int, dropped: int, orig: tuple[int, int]) -> Sample:
    return Sample(torch.rand(1, 8, 8), torch.rand(k, 4), pid, orig, dropped)


def test_collate_stacks_images_and_keeps_variable_box_counts() -> None:
    batch = collate_samples(
        [
            fake_sample("a", 2, 1, (10, 20)),
            fake_sample("b", 0, 0, (30, 40)),
            fake_sample("c", 1, 2, (5, 6)),
        ]
    )
    assert batch.images.shape == (3, 1, 8, 8)
    assert [tuple(b.shape) for b in batch.boxes] == [(2, 4), (0, 4), (1, 4)]
    assert batch.patient_ids == ["a", "b", "c"]
    assert batch.orig_sizes.dtype == torch.long
    assert batch.orig_sizes.tolist() == [[10, 20], [30, 40], [5, 6]]
    assert batch.n_dropped == 3


def test_collate_rejects_an_empty_batch() -> None:
    with pytest.raises(InputValueError):
        collate_samples([])


def test_collate_works_on_dataset_samples(images_dir: Path) -> None:
    dataset = RSNADataset(images_dir, LABELS, build_transforms(True, SIZE))
    batch = collate_samples([dataset[i] for i in range(len(dataset))])
    assert batch.images.shape == (4, 1, SIZE, SIZE)
    assert len(batch.boxes[1]) == 0


# ------------------------------------------------------------------------------------ split


def many_labels(n_pos: int, n_neg: int) -> dict[str, np.ndarray]:
    labels = {f"pos{i:03d}": box(1, 1, 5, 5) for i in range(n_pos)}
    labels.update({f"neg{i:03d}": NONE for i in range(n_neg)})
    return labels


def test_split_puts_each_patient_in_exactly_one_side() -> None:
    labels = many_labels(30, 70)
    train, val = split_by_patient(labels, 0.2, seed=0)
    assert not set(train) & set(val)
    assert set(train) | set(val) == set(labels)
    assert len(val) == 20


def test_split_is_deterministic_for_a_seed_and_ignores_dict_order() -> None:
    labels = many_labels(30, 70)
    shuffled = dict(reversed(list(labels.items())))
    assert set(split_by_patient(labels, 0.2, 7)[1]) == set(split_by_patient(shuffled, 0.2, 7)[1])


def test_split_differs_between_seeds() -> None:
    labels = many_labels(30, 70)
    assert set(split_by_patient(labels, 0.2, 1)[1]) != set(split_by_patient(labels, 0.2, 2)[1])


def test_split_is_stratified_by_positive_and_negative() -> None:
    labels = many_labels(30, 70)
    for seed in range(5):
        _, val = split_by_patient(labels, 0.2, seed)
        assert sum(pid.startswith("pos") for pid in val) == 6
        assert sum(pid.startswith("neg") for pid in val) == 14


def test_split_keeps_input_order_within_each_side() -> None:
    labels = many_labels(10, 10)
    train, val = split_by_patient(labels, 0.3, 0)
    order = list(labels)
    assert list(train) == sorted(train, key=order.index)
    assert list(val) == sorted(val, key=order.index)


@pytest.mark.parametrize(("n", "fraction"), [(3, 0.1), (3, 0.9)])
def test_split_that_would_leave_a_side_empty_raises(n: int, fraction: float) -> None:
    with pytest.raises(DataError, match="empty"):
        split_by_patient(many_labels(n, 0), fraction, 0)


def test_a_split_left_empty_names_the_label_file_and_the_ways_out() -> None:
    from cxrbox.config import TrainConfig
    from cxrbox.data.loaders import train_val_labels

    config = TrainConfig(images="imgs", labels="few.csv", val_fraction=0.2)
    with pytest.raises(DataError) as info:
        train_val_labels(many_labels(1, 1), None, config)
    message = str(info.value)
    assert message.startswith("few.csv: 2 labelled patient(s) split with val_fraction 0.2 leave")
    assert "--val-images and --val-labels" in message
    assert "split_by_patient" not in message


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_rejects_fraction_outside_open_unit_interval(fraction: float) -> None:
    with pytest.raises(InputValueError):
        split_by_patient(many_labels(5, 5), fraction, 0)


# ------------------------------------------------------------------------------ label checks


def test_count_label_problems_counts_each_kind() -> None:
    labels = {
        "ok": box(1, 1, 5, 5),
        "negw": box(5, 1, 1, 5),
        "negh": box(1, 5, 5, 1),
        "oob": np.concatenate([box(-1, 1, 5, 5), box(1, 1, 11, 5)]),
        "nosize": box(1, 1, 2, 2),
        "neg": NONE,
    }
    sizes = {pid: (10, 10) for pid in labels if pid != "nosize"}
    problems = count_label_problems(labels, sizes)
    assert problems.n_boxes == 6
    assert problems.negative_width == 1
    assert problems.negative_height == 1
    assert problems.out_of_bounds == 2
    assert problems.unsized == 1
