"""`cxrbox predict --out`: the previous submission or the complete new one, never a part of one.

A bad option, an unreadable file in the folder or Ctrl-C at any moment leaves the previous
`--out` as it was (or none, when there was none); an empty folder is an error naming it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from cxrbox.cli import main

PREVIOUS = b"patientId,PredictionString\nan-earlier-complete-submission,\n"
N_INTERRUPTS = 8
COPIES = 6


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_score_threshold_outside_0_1_is_refused_before_out_is_touched(
    tiny_checkpoint, tiny_rsna, tmp_path, capsys
):
    out = tmp_path / "submission.csv"
    out.write_bytes(PREVIOUS)
    images = tiny_rsna / "stage_2_train_images"
    argv = ["predict", "--model", str(tiny_checkpoint), "--images", str(images),
            "--out", str(out), "--score-threshold", "1.5"]  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert "--score-threshold: expected a number in [0, 1]" in capsys.readouterr().err
    assert out.read_bytes() == PREVIOUS


def test_an_empty_folder_is_an_error_naming_it(tiny_checkpoint, tmp_path, capsys):
    empty = tmp_path / "no-images"
    empty.mkdir()
    out = tmp_path / "submission.csv"
    assert main(["predict", "--model", str(tiny_checkpoint), "--images", str(empty),
                 "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert str(empty) in err and "no *.dcm files" in err
    assert not out.exists()


def test_an_unreadable_file_leaves_the_previous_submission_whole(
    tiny_checkpoint, tiny_rsna, tmp_path, capsys
):
    images = tmp_path / "images"
    shutil.copytree(tiny_rsna / "stage_2_train_images", images)
    names = sorted(p.name for p in images.glob("*.dcm"))
    (images / f"{names[len(names) // 2][:-4]}z.dcm").write_text("not a DICOM\n")  # mid-folder
    out = tmp_path / "submission.csv"
    out.write_bytes(PREVIOUS)
    argv = ["predict", "--model", str(tiny_checkpoint), "--images", str(images), "--out", str(out)]
    assert main(argv) == 2
    assert "not a DICOM file" in capsys.readouterr().err
    assert out.read_bytes() == PREVIOUS
    assert _leftovers(tmp_path) == []


def _start_predict(checkpoint, images, out) -> subprocess.Popen:
    args = ["predict", "--model", str(checkpoint), "--images", str(images), "--out", str(out),
            "--score-threshold", "0"]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "cxrbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_ctrl_c_at_random_moments_never_leaves_a_partial_submission(
    tiny_checkpoint, tiny_rsna, tmp_path
):
    """SIGINT at N random moments while a subprocess writes (after the model is loaded, within
    the time an uninterrupted run in this process took): each time `--out` is the previous file
    (none at first) or the complete new one, and no temporary file is left."""
    images = tmp_path / "images"  # the tiny set 6 times over: the writing takes a while
    images.mkdir()
    for path in sorted((tiny_rsna / "stage_2_train_images").glob("*.dcm")):
        for copy in range(COPIES):
            shutil.copy(path, images / f"{path.stem}-{copy}.dcm")
    reference = tmp_path / "reference.csv"
    started = time.monotonic()
    assert main(["predict", "--model", str(tiny_checkpoint), "--images", str(images),
                 "--out", str(reference), "--score-threshold", "0"]) == 0  # fmt: skip
    window = time.monotonic() - started  # loading the model and writing, imports done
    complete = reference.read_bytes()
    assert complete.count(b"\n") == 1 + 32 * COPIES

    runs = tmp_path / "runs"
    runs.mkdir()
    out = runs / "submission.csv"
    rng = random.Random(20)
    codes = []
    for attempt in range(N_INTERRUPTS):
        previous = None if attempt == 0 else PREVIOUS
        if previous is not None:
            out.write_bytes(previous)
        process = _start_predict(tiny_checkpoint, images, out)
        process.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.8 * window))  # 0.8: a later run may write faster
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=120)
        # 130: cxrbox stopped; 0: it had finished; -SIGINT: it was exiting (past cxrbox's main)
        assert code in (0, 130, -signal.SIGINT), f"attempt {attempt}: exit code {code}"
        found = out.read_bytes() if out.exists() else None
        assert found in (previous, complete), f"attempt {attempt}: a partial --out"
        assert _leftovers(runs) == [], f"attempt {attempt}"
        codes.append(code)
    assert codes.count(130) >= 2, codes  # not vacuous: Ctrl-C landed while it was writing
