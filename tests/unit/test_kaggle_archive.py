"""The synthetic stand-in for the RSNA Kaggle archive (`cxrbox synth --layout kaggle`) and the
sample-submission reader that `cxrbox predict --sample-submission` orders rows by."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cxrbox.data.dicom import find_dicom_files
from cxrbox.data.labels import read_rsna_labels
from cxrbox.data.submission import read_sample_submission, submission_order
from cxrbox.data.synthetic.kaggle_archive import (
    CLASSES,
    SAMPLE_PREDICTION,
    KaggleArchiveSummary,
    write_kaggle_archive,
)
from cxrbox.errors import DataError, InputValueError

N_TRAIN, N_TEST, SEED, SIZE = 8, 6, 3, 64


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> KaggleArchiveSummary:
    out = tmp_path_factory.mktemp("kaggle") / "rsna"
    return write_kaggle_archive(out, N_TRAIN, N_TEST, SEED, image_size=SIZE, positive_fraction=0.5)


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_archive_has_the_real_archives_names(archive: KaggleArchiveSummary):
    names = {p.name for p in archive.train.out_dir.iterdir()}
    assert names == {
        "stage_2_train_images", "stage_2_test_images", "stage_2_train_labels.csv",
        "stage_2_detailed_class_info.csv", "stage_2_sample_submission.csv",
    }  # fmt: skip


def test_test_images_are_unlabelled_and_apart_from_the_training_images(archive):
    train = find_dicom_files(archive.train.images_dir)
    test = find_dicom_files(archive.test_images_dir)
    assert (len(train), len(test)) == (N_TRAIN, N_TEST)
    assert not set(train) & set(test)
    assert set(read_rsna_labels(archive.train.labels_csv)) == set(train)


def test_class_info_has_one_row_per_label_row_and_lung_opacity_exactly_for_boxes(archive):
    labels = _rows(archive.train.labels_csv)
    info = _rows(archive.class_info_csv)
    assert info[0] == ["patientId", "class"]
    assert [r[0] for r in info[1:]] == [r[0] for r in labels[1:]]
    for label, (_, name) in zip(labels[1:], info[1:], strict=True):
        assert name in CLASSES
        assert (name == "Lung Opacity") == (label[-1] == "1")


def test_sample_submission_lists_every_test_image_once_in_an_unsorted_order(archive):
    rows = _rows(archive.sample_submission_csv)
    assert rows[0] == ["patientId", "PredictionString"]
    ids = [r[0] for r in rows[1:]]
    assert sorted(ids) == sorted(find_dicom_files(archive.test_images_dir))
    assert ids != sorted(ids)  # a submission written in file-name order would not match
    assert {r[1] for r in rows[1:]} == {SAMPLE_PREDICTION}


def test_same_seed_gives_the_same_archive(archive: KaggleArchiveSummary, tmp_path: Path):
    again = write_kaggle_archive(
        tmp_path / "again", N_TRAIN, N_TEST, SEED, image_size=SIZE, positive_fraction=0.5
    )
    for name in ("stage_2_train_labels.csv", "stage_2_detailed_class_info.csv",
                 "stage_2_sample_submission.csv"):  # fmt: skip
        assert (again.train.out_dir / name).read_bytes() == (
            archive.train.out_dir / name
        ).read_bytes()
    first = sorted(archive.test_images_dir.iterdir())
    assert [p.read_bytes() for p in sorted(again.test_images_dir.iterdir())] == [
        p.read_bytes() for p in first
    ]


def test_archive_refuses_test_images_of_another_data_set(tmp_path: Path):
    (tmp_path / "stage_2_test_images").mkdir()
    (tmp_path / "stage_2_test_images" / "someone-else.dcm").write_bytes(b"")
    with pytest.raises(DataError, match=r"stage_2_test_images: holds 1 \.dcm files of other"):
        write_kaggle_archive(tmp_path, 2, 1, 0, image_size=SIZE)


def test_archive_needs_a_test_image(tmp_path: Path):
    with pytest.raises(InputValueError, match="n_test"):
        write_kaggle_archive(tmp_path, 2, 0, 0, image_size=SIZE)


# --- the sample submission -----------------------------------------------------------------


def test_sample_submission_ids_keep_the_files_order(tmp_path: Path):
    path = tmp_path / "s.csv"
    path.write_text("patientId,PredictionString\nb,0.5 0 0 100 100\na,0.5 0 0 100 100\n")
    assert read_sample_submission(path) == ["b", "a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("patientId,x\na,1\n", "header.*expected patientId,PredictionString"),
        ("patientId,PredictionString\na,\nb,\na,\n", r"s.csv:4: patientId 'a' already on line 2"),
        ("patientId,PredictionString\n,0.5 0 0 1 1\n", r"s.csv:2: empty patientId"),
        ("patientId,PredictionString\n", "lists no patient"),
    ],
)
def test_a_malformed_sample_submission_is_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_sample_submission(path)


def test_patients_of_the_sample_without_a_dicom_are_named(tmp_path: Path):
    files = {"a": tmp_path / "a.dcm", "c": tmp_path / "c.dcm"}
    assert submission_order(["c", "a"], files, "imgs", "s.csv") == ["c", "a"]
    with pytest.raises(DataError, match=r"imgs: 2 of the 3 patients of s.csv .*: b, d"):
        submission_order(["b", "a", "d"], files, "imgs", "s.csv")


def test_synth_refuses_n_test_without_the_kaggle_layout(tmp_path: Path, capsys):
    from cxrbox.cli import main

    assert main(["synth", "--out", str(tmp_path), "--n", "2", "--n-test", "1"]) == 2
    assert "--n-test is for --layout kaggle" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
