"""`cxrbox cache` and `cxrbox viz-data` as a user runs them: subprocesses on a synthetic set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrbox.data.synthetic.rsna_like import write_rsna_like

N_IMAGES = 6
IMAGE_SIZE = 256


@pytest.fixture(scope="module")
def rsna_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    write_rsna_like(root, N_IMAGES, seed=0, image_size=IMAGE_SIZE)
    return root


def cxrbox(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cxrbox", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cache_command_writes_an_openable_cache(rsna_like: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache.npy"
    result = cxrbox(
        "cache",
        "--images", rsna_like / "stage_2_train_images",
        "--labels", rsna_like / "stage_2_train_labels.csv",
        "--size", 64,
        "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"({N_IMAGES} images, 64 px)" in result.stdout
    array = np.load(out)
    assert array.shape == (N_IMAGES, 64, 64)
    assert array.dtype == np.uint8
    assert array.std() > 1.0
    assert len(json.loads(out.with_suffix(".json").read_text())["patient_ids"]) == N_IMAGES


def test_cache_command_reports_a_missing_folder_as_an_error(tmp_path: Path) -> None:
    result = cxrbox(
        "cache", "--images", tmp_path / "nope", "--size", 64, "--out", tmp_path / "c.npy"
    )
    assert result.returncode == 2
    assert "nope" in result.stderr


def test_viz_data_writes_a_non_blank_sheet(rsna_like: Path, tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    result = cxrbox(
        "viz-data",
        "--images", rsna_like / "stage_2_train_images",
        "--labels", rsna_like / "stage_2_train_labels.csv",
        "--out", out,
        "--n", 4,
        "--size", 128,
        "--seed", 1,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "negative width 0, negative height 0" in result.stdout
    assert "boxes dropped" in result.stdout
    with Image.open(out) as image:
        image.verify()
    pixels = np.asarray(Image.open(out).convert("L"), dtype=np.float32)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels.var() > 100.0  # not a blank canvas
