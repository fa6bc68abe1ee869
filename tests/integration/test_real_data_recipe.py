"""The real-data recipe (docs/real-data.md) end to end, on a synthetic stand-in with the real
archive's layout and names, read-only as a mounted download is: cache, train (which tunes the
score threshold), eval, predict over the test folder, and a submission whose rows are the
sample submission's, in its order.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.read_only import read_only

from cxrbox.cli import main
from cxrbox.data.cache import cache_path_in
from cxrbox.engine.checkpoint import load_checkpoint

# The recipe's steps, at sizes for a test: 40 training and 12 test images of 128 px, trained at
# 64 px for 2 epochs with a narrow model (the docs use 256 px and the full archive).
TINY = "width = 0.5\nbatch_size = 8\nplots = false\n"


def _cxrbox(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "cxrbox", *args],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("download") / "rsna-pneumonia-detection-challenge"
    result = _cxrbox(
        "synth", "--layout", "kaggle", "--out", str(data), "--n", "40", "--n-test", "12",
        "--size", "128", "--seed", "5", "--positive-fraction", "0.5", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return data


@pytest.fixture(scope="module")
def recipe(archive, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("work")
    caches, run, submission = work / "cache", work / "runs" / "rsna", work / "submission.csv"
    config = work / "tiny.toml"
    config.write_text(TINY)
    train_images = archive / "stage_2_train_images"
    cache = cache_path_in(caches, train_images, 64)
    with read_only(archive) as prefix:
        steps = {
            "cache": _cxrbox(
                "cache",
                "--images",
                str(train_images),
                "--size",
                "64",
                "--cache-dir",
                str(caches),
                "--quiet",
                prefix=tuple(prefix),
            ),
        }
        stamp = cache.stat().st_mtime_ns if cache.exists() else None
        steps |= {
            "train": _cxrbox(
                "train", "--images", str(train_images),
                "--labels", str(archive / "stage_2_train_labels.csv"),
                "--cache-dir", str(caches), "--out", str(run), "--image-size", "64",
                "--epochs", "2", "--config", str(config), "--quiet", prefix=tuple(prefix),
            ),
            "predict": _cxrbox(
                "predict", "--model", str(run / "best.pt"),
                "--images", str(archive / "stage_2_test_images"),
                "--sample-submission", str(archive / "stage_2_sample_submission.csv"),
                "--out", str(submission), prefix=tuple(prefix),
            ),
        }  # fmt: skip
    for name, result in steps.items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
    reused = stamp is not None and cache.stat().st_mtime_ns == stamp
    return {"steps": steps, "run": run, "submission": submission, "cache_reused": reused}


def test_submission_rows_are_the_sample_submissions_in_its_order(archive, recipe):
    sample = _rows(archive / "stage_2_sample_submission.csv")
    submission = _rows(recipe["submission"])
    assert submission[0] == ["patientId", "PredictionString"]
    assert [row[0] for row in submission] == [row[0] for row in sample]
    for _, prediction in submission[1:]:
        values = prediction.split()
        assert len(values) % 5 == 0 and all(0.0 <= float(v) for v in values)


def test_training_used_the_cache_step_and_tuned_the_threshold_predict_uses(recipe):
    assert recipe["cache_reused"]
    assert "cannot write the image cache" not in recipe["steps"]["train"].stderr
    threshold = load_checkpoint(recipe["run"] / "best.pt")["score_threshold"]
    assert threshold["tuned"]
    stdout = recipe["steps"]["predict"].stdout
    assert f"score threshold {threshold['value']:g} (tuned on validation" in stdout


def test_eval_reports_the_rsna_and_coco_map_at_the_tuned_threshold(archive, recipe, capsys):
    code = main([
        "eval", "--model", str(recipe["run"] / "best.pt"),
        "--images", str(archive / "stage_2_train_images"),
        "--labels", str(archive / "stage_2_train_labels.csv"), "--json",
    ])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    tuned = load_checkpoint(recipe["run"] / "best.pt")["score_threshold"]["value"]
    assert report["n_images"] == 40 and report["score_threshold"] == tuned
    assert 0.0 <= report["coco_map_50_95"] <= report["coco_map_50"] <= 1.0
    assert 0.0 <= report["rsna_map"] <= 1.0


def test_predict_names_the_sample_patients_without_a_dicom(archive, recipe, tmp_path, capsys):
    test_images = Path(shutil.copytree(archive / "stage_2_test_images", tmp_path / "test"))
    sample = _rows(archive / "stage_2_sample_submission.csv")
    gone = sample[3][0]
    (test_images / f"{gone}.dcm").unlink()
    out = tmp_path / "submission.csv"
    code = main([
        "predict", "--model", str(recipe["run"] / "best.pt"), "--images", str(test_images),
        "--sample-submission", str(archive / "stage_2_sample_submission.csv"), "--out", str(out),
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert f"1 of the 12 patients of {archive / 'stage_2_sample_submission.csv'}" in err
    assert gone in err
    assert not out.exists()


def test_a_skipped_unreadable_image_keeps_its_row_with_no_box(archive, recipe, tmp_path, capsys):
    test_images = Path(shutil.copytree(archive / "stage_2_test_images", tmp_path / "test"))
    sample = _rows(archive / "stage_2_sample_submission.csv")
    broken = sample[5][0]
    (test_images / f"{broken}.dcm").write_bytes(b"not a DICOM")
    (test_images / "extra-patient.dcm").write_bytes((test_images / f"{sample[1][0]}.dcm")
                                                    .read_bytes())  # fmt: skip
    out = tmp_path / "submission.csv"
    code = main([
        "predict", "--model", str(recipe["run"] / "best.pt"), "--images", str(test_images),
        "--sample-submission", str(archive / "stage_2_sample_submission.csv"), "--out", str(out),
        "--on-error", "skip",
    ])  # fmt: skip
    assert code == 3
    stdout = capsys.readouterr().out
    assert "1 DICOM(s) of" in stdout and "not predicted" in stdout
    submission = _rows(out)
    assert [row[0] for row in submission] == [row[0] for row in sample]
    assert dict(submission[1:])[broken] == ""
