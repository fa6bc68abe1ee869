"""cxrbox.data.synthetic.rsna_like: determinism, RSNA layout, DICOM headers, labels, realism."""

from __future__ import annotations

import itertools
import uuid

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from cxrbox.data.dicom import load_pixels
from cxrbox.data.labels import read_rsna_labels
from cxrbox.data.synthetic.anatomy import Radiograph, render_radiograph
from cxrbox.data.synthetic.rsna_like import (
    IMAGES_DIRNAME,
    LABELS_FILENAME,
    SyntheticSummary,
    image_rng,
    plan_patients,
    write_rsna_like,
)
from cxrbox.errors import DataError, InputValueError

SIZE = 128  # written data sets: small, so the tests stay fast
N_FILES, SEED = 6, 11
STAT_SIZE, STAT_N, STAT_SEED = 256, 60, 0  # the statistics sample


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSummary:
    return write_rsna_like(tmp_path_factory.mktemp("synth") / "a", N_FILES, SEED, image_size=SIZE)


@pytest.fixture(scope="module")
def sample() -> list[Radiograph]:
    plan = plan_patients(STAT_N, STAT_SEED, 1 / 3)
    return [
        render_radiograph(image_rng(STAT_SEED, i), STAT_SIZE, k)
        for i, (_, k, *_) in enumerate(plan)
    ]


@pytest.fixture(scope="module")
def pairs() -> list[tuple[Radiograph, Radiograph]]:
    """(without, with one opacity) renders of the same patients: same anatomy and detector."""
    return [
        (
            render_radiograph(image_rng(7, i), STAT_SIZE, 0),
            render_radiograph(image_rng(7, i), STAT_SIZE, 1),
        )
        for i in range(12)
    ]


def dcm_bytes(summary: SyntheticSummary) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(summary.images_dir.glob("*.dcm"))}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return float(iw * ih / (area - iw * ih))


def box_mask(shape: tuple[int, int], box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = np.round(box).astype(int)
    mask = np.zeros(shape, dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def lung_label(image: Radiograph, region: np.ndarray) -> int:
    """The lung (1 image-left, 2 image-right) covering most of `region` (bool [S, S])."""
    votes = np.bincount(image.lungs[region], minlength=3)[1:]
    return 1 + int(votes.argmax())


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_writes_identical_files(written, tmp_path):
    again = write_rsna_like(tmp_path / "b", N_FILES, SEED, image_size=SIZE)
    assert dcm_bytes(again) == dcm_bytes(written)
    assert again.labels_csv.read_bytes() == written.labels_csv.read_bytes()


def test_different_seed_gives_other_patients_and_pixels(written, tmp_path):
    other = write_rsna_like(tmp_path / "c", N_FILES, SEED + 1, image_size=SIZE)
    assert not set(dcm_bytes(other)) & set(dcm_bytes(written))
    pixels = {pydicom.dcmread(p).PixelData for p in written.images_dir.glob("*.dcm")}
    assert not pixels & {pydicom.dcmread(p).PixelData for p in other.images_dir.glob("*.dcm")}


def test_worker_count_does_not_change_the_files(written, tmp_path):
    pooled = write_rsna_like(tmp_path / "d", N_FILES, SEED, image_size=SIZE, workers=2)
    assert dcm_bytes(pooled) == dcm_bytes(written)
    assert pooled.labels_csv.read_bytes() == written.labels_csv.read_bytes()


def test_render_is_a_function_of_the_seed():
    a = render_radiograph(image_rng(3, 0), SIZE, 2)
    b = render_radiograph(image_rng(3, 0), SIZE, 2)
    assert np.array_equal(a.pixels, b.pixels)
    assert np.array_equal(a.boxes, b.boxes)


# --- layout, CSV and DICOM -----------------------------------------------------------------


def test_layout_matches_the_rsna_release(written):
    assert (
        written.images_dir
        == written.out_dir / IMAGES_DIRNAME
        == written.out_dir / ("stage_2_train_images")
    )
    assert written.labels_csv == written.out_dir / LABELS_FILENAME
    assert LABELS_FILENAME == "stage_2_train_labels.csv"
    assert len(list(written.images_dir.glob("*.dcm"))) == N_FILES


def test_csv_lists_every_image_with_its_rendered_boxes(written):
    labels = read_rsna_labels(written.labels_csv)
    plan = plan_patients(N_FILES, SEED, 1 / 3)
    assert list(labels) == [pid for pid, *_ in plan]
    assert set(labels) == {p.stem for p in written.images_dir.glob("*.dcm")}
    for i, (pid, k, *_) in enumerate(plan):
        np.testing.assert_array_equal(
            labels[pid], render_radiograph(image_rng(SEED, i), SIZE, k).boxes
        )


def test_summary_counts_what_the_csv_holds(written):
    labels = read_rsna_labels(written.labels_csv)
    assert written.n_images == len(labels) == N_FILES
    assert written.n_positive == sum(len(b) > 0 for b in labels.values())
    assert written.n_boxes == sum(len(b) for b in labels.values())
    assert f"{N_FILES} images" in written.line()


def test_written_pixels_are_the_rendered_image(written):
    for i, (pid, k, *_) in enumerate(plan_patients(N_FILES, SEED, 1 / 3)):
        ds = pydicom.dcmread(written.images_dir / f"{pid}.dcm")
        expected = render_radiograph(image_rng(SEED, i), SIZE, k).pixels
        np.testing.assert_array_equal(ds.pixel_array, expected)


def test_dicom_header_is_an_8_bit_monochrome2_cr_image(written):
    for path in written.images_dir.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.Modality == "CR"
        assert ds.SOPClassUID == ComputedRadiographyImageStorage
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.SamplesPerPixel == 1
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (8, 8, 7)
        assert ds.PixelRepresentation == 0
        assert (ds.Rows, ds.Columns) == (SIZE, SIZE)
        assert ds.PatientID == path.stem
        assert ds.ViewPosition in ("PA", "AP")


def test_dicom_uids_are_valid_and_distinct(written):
    datasets = [pydicom.dcmread(p) for p in written.images_dir.glob("*.dcm")]
    for ds in datasets:
        for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
            assert UID(uid).is_valid
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert len({ds.StudyInstanceUID for ds in datasets}) == len(datasets)


def test_cxrbox_dicom_reader_loads_the_files(written):
    for path in written.images_dir.glob("*.dcm"):
        expected = pydicom.dcmread(path).pixel_array / 255.0
        np.testing.assert_allclose(load_pixels(path), expected, atol=1e-6)


def test_jpeg_files_decode_close_to_the_uncompressed_ones(written, tmp_path):
    jpeg = write_rsna_like(tmp_path / "j", N_FILES, SEED, image_size=SIZE, transfer_syntax="jpeg")
    assert jpeg.labels_csv.read_bytes() == written.labels_csv.read_bytes()
    for path in written.images_dir.glob("*.dcm"):
        ds = pydicom.dcmread(jpeg.images_dir / path.name)
        assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        decoded = pixel_array(ds, decoding_plugin="pillow").astype(int)
        diff = np.abs(decoded - pydicom.dcmread(path).pixel_array.astype(int))
        assert diff.mean() < 3.0
        assert np.percentile(diff, 99) < 16


def test_patient_ids_are_unique_uuid4_strings():
    ids = [pid for pid, *_ in plan_patients(300, 5, 1 / 3)]
    assert len(set(ids)) == len(ids)
    for pid in ids:
        assert str(uuid.UUID(pid)) == pid
        assert uuid.UUID(pid).version == 4


# --- output folder -------------------------------------------------------------------------


def test_refuses_to_mix_with_another_data_set(tmp_path):
    first = write_rsna_like(tmp_path, 2, 1, image_size=64)
    before = dcm_bytes(first)
    with pytest.raises(DataError, match="another data set"):
        write_rsna_like(tmp_path, 2, 2, image_size=64)
    assert dcm_bytes(first) == before


def test_rerun_with_the_same_arguments_rewrites_in_place(tmp_path):
    first = dcm_bytes(write_rsna_like(tmp_path, 3, 1, image_size=64))
    assert dcm_bytes(write_rsna_like(tmp_path, 3, 1, image_size=64)) == first


def test_overwrite_replaces_another_data_set(tmp_path):
    write_rsna_like(tmp_path, 2, 1, image_size=64)
    second = write_rsna_like(tmp_path, 3, 2, image_size=64, overwrite=True)
    stems = {p.stem for p in second.images_dir.glob("*.dcm")}
    assert (
        stems
        == set(read_rsna_labels(second.labels_csv))
        == {p for p, *_ in plan_patients(3, 2, 1 / 3)}
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_images": 0},
        {"seed": -1},
        {"image_size": 32},
        {"image_size": 256.0},
        {"positive_fraction": 1.5},
        {"transfer_syntax": "jpeg2000"},
        {"jpeg_quality": 0},
        {"workers": 0},
    ],
)
def test_write_rejects_bad_arguments_before_touching_disk(tmp_path, kwargs):
    args = {"n_images": 2, "seed": 0, "image_size": 64} | kwargs
    with pytest.raises(InputValueError, match=next(iter(kwargs))):
        write_rsna_like(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("size", "n"), [(32, 0), (64.0, 0), (True, 0), (64, 5), (64, -1)])
def test_render_rejects_bad_arguments(size, n):
    with pytest.raises(InputValueError):
        render_radiograph(np.random.default_rng(0), size, n)


# --- label statistics ----------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.25, 1 / 3, 0.9, 1.0])
def test_plan_has_exactly_the_asked_positive_fraction(fraction):
    plan = plan_patients(120, 4, fraction)
    assert sum(k > 0 for _, k, *_ in plan) == round(120 * fraction)


def test_rendered_positive_fraction_is_near_one_third(sample):
    positives = sum(len(r.boxes) > 0 for r in sample)
    assert abs(positives / STAT_N - 1 / 3) <= 0.05


def test_box_counts_are_rsna_like(sample):
    counts = np.array([len(r.boxes) for r in sample])
    assert counts.min() >= 0 and counts.max() <= 4
    positive = counts[counts > 0]
    assert np.mean((positive == 1) | (positive == 2)) >= 0.8
    assert np.any(positive == 1) and np.any(positive == 2)


def test_box_sides_are_mostly_10_to_40_percent_of_the_image(sample):
    boxes = np.concatenate([r.boxes for r in sample]) / STAT_SIZE
    sides = np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    assert np.mean((sides >= 0.1) & (sides <= 0.4)) >= 0.8
    assert sides.min() >= 0.05 and sides.max() <= 0.5


def test_boxes_lie_inside_the_image(sample):
    boxes = np.concatenate([r.boxes for r in sample])
    assert boxes.dtype == np.float32
    assert np.all(boxes >= 0) and np.all(boxes <= STAT_SIZE)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])


def test_opacities_of_one_image_stay_apart():
    # Four per image, two per lung: overlaps would show here.
    for i in range(8):
        boxes = render_radiograph(image_rng(9, i), STAT_SIZE, 4).boxes
        assert len(boxes) >= 3
        for a, b in itertools.combinations(boxes, 2):
            assert iou(a, b) < 0.15


def test_two_opacities_usually_take_one_lung_each(sample):
    pairs = [r for r in sample if len(r.boxes) == 2]
    apart = [len({lung_label(r, box_mask(r.lungs.shape, b)) for b in r.boxes}) == 2 for r in pairs]
    assert len(pairs) >= 5
    assert np.mean(apart) >= 0.8


# --- realism -------------------------------------------------------------------------------


def test_opacity_is_brighter_than_the_rest_of_its_lung(sample):
    margins = []
    for image in sample:
        for box in image.boxes:
            inside = box_mask(image.lungs.shape, box) & (image.lungs > 0)
            lung = image.lungs == lung_label(image, inside)
            pix = image.pixels.astype(float)
            margins.append(pix[inside & lung].mean() - pix[lung & ~inside].mean())
    assert np.mean(np.array(margins) > 0) >= 0.9
    assert np.median(margins) > 8


def test_opacity_is_textured_not_flat(sample):
    for image in sample:
        for box in image.boxes:
            inside = box_mask(image.lungs.shape, box) & (image.lungs > 0)
            assert image.pixels[inside].std() > 8


def test_opacity_brightens_pixels_only_around_its_box(pairs):
    for clear, sick in pairs:
        (box,) = sick.boxes
        gain = sick.pixels.astype(int) - clear.pixels.astype(int)
        inside = box_mask(gain.shape, box)
        assert gain.min() >= 0  # an opacity only adds density
        assert gain[inside].mean() > 8
        assert gain[inside].sum() >= 0.6 * gain.sum()


def test_opacity_has_patchy_texture(pairs):
    # Band-pass energy of the opacity's own brightening, relative to its mean, inside the lung
    # part of the box: ~0.25 with the patchy texture, ~0.1 for a smooth blob.
    ratios = []
    for clear, sick in pairs:
        gain = sick.pixels.astype(np.float32) - clear.pixels.astype(np.float32)
        band = cv2.GaussianBlur(gain, (0, 0), 2) - cv2.GaussianBlur(gain, (0, 0), 8)
        lung_core = cv2.erode((sick.lungs > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        inside = box_mask(gain.shape, sick.boxes[0]) & lung_core
        ratios.append(band[inside].std() / gain[inside].mean())
    assert np.median(ratios) > 0.18


def test_negatives_have_anatomy_and_no_boxes():
    image = render_radiograph(image_rng(7, 0), STAT_SIZE, 0)
    assert image.boxes.shape == (0, 4)
    assert {1, 2} <= set(np.unique(image.lungs))
    assert image.pixels.std() > 30


def test_lungs_are_darker_than_the_mediastinum(sample):
    for image in sample:
        left, right = image.lungs == 1, image.lungs == 2
        rows = np.flatnonzero(left.any(axis=1) & right.any(axis=1))
        between = [
            image.pixels[y, np.flatnonzero(left[y]).max() + 1 : np.flatnonzero(right[y]).min()]
            for y in rows
        ]
        mediastinum = np.concatenate(between).mean()
        assert image.pixels[left | right].mean() + 40 < mediastinum


def test_lung_brightness_alone_does_not_tell_positives(sample):
    means = np.array([r.pixels[r.lungs > 0].mean() for r in sample])
    positive = np.array([len(r.boxes) > 0 for r in sample])
    assert means[~positive].max() > means[positive].min()
    assert means[positive].max() > means[~positive].min()


def test_anatomy_moves_between_patients(sample):
    centres = np.array([np.argwhere(r.lungs > 0).mean(axis=0) for r in sample])  # [N, 2] y, x
    assert np.all(centres.std(axis=0) > 0.015 * STAT_SIZE)


def test_images_use_a_wide_intensity_range(sample):
    for image in sample:
        lo, hi = np.percentile(image.pixels, [1, 99])
        assert lo < 60 and hi > 180
