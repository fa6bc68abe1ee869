"""`cxrbox synth` end to end, in a subprocess as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
from pydicom.uid import JPEGBaseline8Bit

from cxrbox.data.labels import read_rsna_labels


def synth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cxrbox", "synth", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_synth_writes_images_and_labels(tmp_path: Path):
    out = tmp_path / "data"
    result = synth("--out", str(out), "--n", "5", "--seed", "1")
    assert result.returncode == 0, result.stderr
    files = sorted((out / "stage_2_train_images").glob("*.dcm"))
    assert len(files) == 5
    labels = read_rsna_labels(out / "stage_2_train_labels.csv")
    assert set(labels) == {p.stem for p in files}
    assert pydicom.dcmread(files[0]).Rows == 1024
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "5 images" in lines[0]
    assert f"{sum(len(b) for b in labels.values())} boxes" in lines[0]


def test_synth_jpeg_option_writes_jpeg_baseline(tmp_path: Path):
    out = tmp_path / "data"
    result = synth("--out", str(out), "--n", "2", "--seed", "3", "--size", "128", "--jpeg")
    assert result.returncode == 0, result.stderr
    for path in (out / "stage_2_train_images").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        assert (ds.Rows, ds.Columns) == (128, 128)


def test_synth_bad_argument_exits_2_with_a_message(tmp_path: Path):
    result = synth("--out", str(tmp_path / "data"), "--n", "0")
    assert result.returncode == 2
    assert "argument --n: expected an integer >= 1, got 0" in result.stderr
    assert not (tmp_path / "data").exists()
