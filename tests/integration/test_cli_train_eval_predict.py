"""`cxrbox train -> eval --json -> predict` end to end in subprocesses on a tiny synthetic set."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from cxrbox.data.dicom import find_dicom_files
from cxrbox.engine.checkpoint import load_checkpoint
from cxrbox.evaluation.threshold import SWEEP_THRESHOLDS


def _cxrbox(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cxrbox", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
    )


@pytest.fixture(scope="module")
def trained_run(tiny_rsna, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    config = run_dir.parent / "tiny.toml"
    config.write_text("image_size = 64\nwidth = 0.5\nbatch_size = 8\nval_fraction = 0.25\n")
    images, labels = tiny_rsna / "stage_2_train_images", tiny_rsna / "stage_2_train_labels.csv"
    result = _cxrbox(
        "train", "--images", str(images), "--labels", str(labels), "--out", str(run_dir),
        "--epochs", "2", "--config", str(config), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return run_dir, images, labels, result


def test_train_prints_a_summary_and_writes_the_run(trained_run):
    run_dir, _, _, result = trained_run
    assert "cxrbox train: 2 epoch(s)" in result.stdout
    assert "best epoch" in result.stdout
    assert (run_dir / "best.pt").exists() and (run_dir / "plots" / "lr.png").exists()
    assert (run_dir / "plots" / "threshold.png").exists()


def test_eval_json_has_the_documented_keys(trained_run):
    run_dir, images, labels, _ = trained_run
    result = _cxrbox(
        "eval", "--checkpoint", str(run_dir / "best.pt"), "--images", str(images),
        "--labels", str(labels), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"mean_iou", "mae_px", "rsna_map", "n_images", "prediction_std"} <= set(report)
    assert 0.0 <= report["coco_map_50_95"] <= report["coco_map_50"] <= 1.0
    assert set(report["prediction_std"]) == {"cx", "cy", "w", "h"}
    assert report["n_images"] == 32
    assert 0.0 <= report["mean_iou"] <= 1.0


def test_predict_writes_an_rsna_submission(trained_run, tmp_path):
    run_dir, images, _, _ = trained_run
    out = tmp_path / "submission.csv"
    result = _cxrbox(
        "predict", "--checkpoint", str(run_dir / "last.pt"), "--images", str(images),
        "--out", str(out), "--score-threshold", "0.0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["patientId"] for r in rows] == sorted(find_dicom_files(images))
    # Threshold 0: every image gets its top-k boxes as "conf x y w h" groups in 256 px pixels.
    for row in rows:
        values = row["PredictionString"].split()
        assert values and len(values) % 5 == 0
        conf, x, y, w, h = (float(v) for v in values[:5])
        assert 0.0 <= conf <= 1.0 and 0 <= x and x + w <= 256 and 0 <= y and y + h <= 256


def _confidences(path) -> list[float]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [float(v) for r in rows for v in r["PredictionString"].split()[::5]]


def test_predict_and_eval_use_the_checkpoints_tuned_threshold_and_say_so(trained_run, tmp_path):
    run_dir, images, labels, _ = trained_run
    stored = load_checkpoint(run_dir / "best.pt")["score_threshold"]
    assert stored["tuned"] and stored["value"] in SWEEP_THRESHOLDS
    default, everything = tmp_path / "default.csv", tmp_path / "all.csv"
    result = _cxrbox("predict", "--model", str(run_dir / "best.pt"), "--images", str(images),
                     "--out", str(default))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"score threshold {stored['value']:g} (tuned on validation" in result.stdout
    _cxrbox("predict", "--model", str(run_dir / "best.pt"), "--images", str(images),
            "--out", str(everything), "--score-threshold", "0")  # fmt: skip
    # the stored threshold keeps exactly the boxes of the unthresholded run that reach it
    assert _confidences(default) == [c for c in _confidences(everything) if c >= stored["value"]]
    report = json.loads(
        _cxrbox(
            "eval",
            "--model",
            str(run_dir / "best.pt"),
            "--images",
            str(images),
            "--labels",
            str(labels),
            "--json",
        ).stdout
    )
    assert report["score_threshold"] == stored["value"]
    assert "tuned on validation" in report["score_threshold_note"]


def test_errors_exit_2_with_a_message(tmp_path):
    result = _cxrbox("eval", "--checkpoint", str(tmp_path / "missing.pt"), "--images", ".",
                     "--labels", "x.csv")  # fmt: skip
    assert result.returncode == 2
    assert "missing.pt" in result.stderr
