"""Folders with some unreadable DICOMs: `predict` / `eval --on-error fail|skip`, and training
still failing fast on a bad file, naming it."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from cxrbox.cli import main
from cxrbox.engine.train import train
from cxrbox.errors import DicomError

BROKEN = {"broken_truncated": "cannot read pixels", "broken_not_dicom": "not a DICOM file"}


@pytest.fixture
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture
def folder(tiny_rsna, tmp_path):
    """The tiny set's DICOMs plus two unreadable ones, and labels for all of them."""
    images = tmp_path / "images"
    shutil.copytree(tiny_rsna / "stage_2_train_images", images)
    good = sorted(images.glob("*.dcm"))[0].read_bytes()
    (images / "broken_truncated.dcm").write_bytes(good[: len(good) // 2])
    (images / "broken_not_dicom.dcm").write_text("patientId,x\n")
    labels = tmp_path / "labels.csv"
    text = (tiny_rsna / "stage_2_train_labels.csv").read_text()
    labels.write_text(text + "".join(f"{pid},,,,,0\n" for pid in BROKEN))
    return images, labels


def test_predict_fails_on_the_first_unreadable_file_by_default(
    checkpoint, folder, tmp_path, capsys
):
    images, _ = folder
    argv = ["predict", "--checkpoint", str(checkpoint), "--images", str(images)]
    assert main([*argv, "--out", str(tmp_path / "s.csv")]) == 2
    assert "broken_" in capsys.readouterr().err


def test_predict_skip_lists_skipped_files_counts_them_and_exits_3(
    checkpoint, folder, tmp_path, capsys
):
    images, _ = folder
    out = tmp_path / "s.csv"
    argv = ["predict", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out)]
    assert main([*argv, "--on-error", "skip"]) == 3
    assert "skipped 2 unreadable file(s)" in capsys.readouterr().out
    with open(out) as handle:
        assert len(list(csv.DictReader(handle))) == 32
    with open(tmp_path / "s.skipped.csv") as handle:
        rows = {r["patientId"]: r for r in csv.DictReader(handle)}
    assert set(rows) == set(BROKEN)
    for pid, reason in BROKEN.items():
        assert reason in rows[pid]["reason"] and rows[pid]["path"].endswith(f"{pid}.dcm")


def test_eval_skip_reports_the_count_and_evaluates_the_rest(checkpoint, folder, tmp_path, capsys):
    images, labels = folder
    sidecar = tmp_path / "skipped.csv"
    argv = ["eval", "--checkpoint", str(checkpoint), "--images", str(images), "--labels",
            str(labels), "--json", "--on-error", "skip", "--skipped", str(sidecar)]  # fmt: skip
    assert main(argv) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["n_images"] == 32 and report["n_skipped"] == 2
    assert report["skipped_file"] == str(sidecar) and sidecar.exists()


def test_training_fails_fast_naming_the_unreadable_file(tiny_config, folder):
    images, labels = folder
    config = tiny_config.replace(images=str(images), labels=str(labels), epochs=1)
    with pytest.raises(DicomError, match=r"broken_(truncated|not_dicom)\.dcm"):
        train(config, progress=False)
