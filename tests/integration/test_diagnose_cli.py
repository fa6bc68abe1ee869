"""`cxrbox diagnose` end to end, in a subprocess as a user runs it, on a tiny synthetic set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxrbox.diagnostics.checklist import CHECK_NAMES, QUICK_SKIPS

# One thread: on a small shared machine, torch's default thread pool spends most of a probe
# waiting for busy cores (measured ~20x slower under load).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


@pytest.fixture(scope="module")
def small_config(tmp_path_factory) -> Path:
    """128 px, a quarter-width model: each full checklist runs in seconds, not minutes."""
    path = tmp_path_factory.mktemp("diagnose") / "small.json"
    path.write_text(json.dumps({"image_size": 128, "width": 0.25}))
    return path


def diagnose(data: Path, config: Path, *args: str, labels: Path | None = None):
    labels = labels or data / "stage_2_train_labels.csv"
    return subprocess.run(
        [sys.executable, "-m", "cxrbox", "diagnose", "--images",
         str(data / "stage_2_train_images"), "--labels", str(labels), "--config", str(config),
         *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )  # fmt: skip


def by_name(stdout: str) -> dict[str, dict]:
    checks = json.loads(stdout)  # stdout holds the JSON array and nothing else
    assert isinstance(checks, list)
    return {c["name"]: c for c in checks}


def with_extra_rows(tiny_rsna: Path, tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text((tiny_rsna / "stage_2_train_labels.csv").read_text() + "".join(rows))
    return path


def test_grid_head_passes_every_check(tiny_rsna, small_config):
    result = diagnose(tiny_rsna, small_config, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = json.loads(result.stdout)
    assert [c["name"] for c in checks] == list(CHECK_NAMES)
    assert {c["name"]: c["status"] for c in checks} == dict.fromkeys(CHECK_NAMES, "pass")
    assert all(c["message"] for c in checks)


def test_pooled_head_fails_position_sensitivity_and_exits_1(tiny_rsna, small_config):
    result = diagnose(tiny_rsna, small_config, "--json", "--head", "pooled")
    assert result.returncode == 1, result.stderr
    checks = by_name(result.stdout)
    assert checks["position_sensitivity"]["status"] == "fail"
    assert checks["position_sensitivity"]["heldout_mean_iou"] < 0.5
    assert checks["labels"]["status"] == "pass"  # the data are fine; the head is not


def test_labelled_patient_without_dicom_fails_labels_and_exits_1(tiny_rsna, small_config, tmp_path):
    labels = with_extra_rows(tiny_rsna, tmp_path, "ghost-patient,,,,,0\n")
    result = diagnose(tiny_rsna, small_config, "--json", "--quick", labels=labels)
    assert result.returncode == 1, result.stderr
    checks = by_name(result.stdout)
    assert checks["labels"]["status"] == "fail"
    assert checks["labels"]["missing_dicoms"] == 1
    assert "ghost-patient" in checks["labels"]["message"]
    assert checks["box_sync"]["status"] == "pass"  # the other checks still run


def test_box_outside_its_image_warns_and_exits_0(tiny_rsna, small_config, tmp_path):
    pid = next(p.stem for p in sorted((tiny_rsna / "stage_2_train_images").glob("*.dcm")))
    labels = with_extra_rows(tiny_rsna, tmp_path, f"{pid},200,200,100,40,1\n")  # x2 = 300 > 256
    result = diagnose(tiny_rsna, small_config, "--json", "--quick", labels=labels)
    assert result.returncode == 0, result.stderr
    checks = by_name(result.stdout)
    assert checks["labels"]["status"] == "warn"
    assert checks["labels"]["out_of_bounds"] == 1


def test_quick_text_output_has_one_line_per_check_and_a_summary(tiny_rsna, small_config):
    result = diagnose(tiny_rsna, small_config, "--quick")
    assert result.returncode == 0, result.stderr
    *lines, summary = result.stdout.strip().splitlines()
    expected = [name for name in CHECK_NAMES if name not in QUICK_SKIPS]
    assert [line.split()[:2] for line in lines] == [["PASS", name] for name in expected]
    assert summary.startswith(f"{len(expected)} checks: {len(expected)} pass, 0 warn, 0 fail")
    assert "running labels ..." in result.stderr


def test_missing_image_folder_exits_2_with_a_message(tiny_rsna, small_config, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cxrbox", "diagnose", "--images", str(tmp_path / "nope"),
         "--labels", str(tiny_rsna / "stage_2_train_labels.csv"), "--config", str(small_config)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )  # fmt: skip
    assert result.returncode == 2
    assert "nope" in result.stderr and "does not exist" in result.stderr
