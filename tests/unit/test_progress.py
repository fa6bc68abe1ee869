"""Long work is never silent: a tqdm bar on a terminal, a plain line every few seconds off one
(logs, CI, pipes); eval, predict and export report through it."""

from __future__ import annotations

import io
from itertools import count

import numpy as np
import pytest
import torch
from tests.dicom_factory import write_random_dicoms

import cxrbox.progress
from cxrbox.config import TrainConfig
from cxrbox.progress import Progress, track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def ticking(step_s: float):
    """A clock that advances `step_s` seconds each time it is read."""
    times = count()
    return lambda: next(times) * step_s


def test_off_a_terminal_a_line_every_ten_seconds_then_the_total():
    stream = io.StringIO()
    items = list(track(range(10), 10, "eval", "img", stream=stream, clock=ticking(3.0)))
    assert items == list(range(10))
    # the clock is read at the start (0 s) and after each item (3 s, 6 s, ...)
    assert stream.getvalue().splitlines() == [
        "eval: 4/10 img (40%) after 12 s",
        "eval: 8/10 img (80%) after 24 s",
        "eval: 10/10 img (100%) done in 33 s",
    ]


def test_off_a_terminal_short_work_prints_nothing():
    stream = io.StringIO()
    list(track(range(10), 10, "eval", "img", stream=stream, clock=ticking(0.5)))
    assert stream.getvalue() == ""


def test_sizes_count_images_per_batch_and_an_unknown_total_shows_the_count():
    stream = io.StringIO()
    batches = [[1] * 16, [1] * 16, [1] * 5]
    list(
        track(batches, None, "predict", "img", size=len, stream=stream, every_s=0, clock=ticking(1))
    )
    assert stream.getvalue().splitlines()[:3] == [
        "predict: 16 img after 1 s",
        "predict: 32 img after 2 s",
        "predict: 37 img after 3 s",
    ]


def test_on_a_terminal_it_is_a_tqdm_bar():
    stream = Terminal()
    list(track(range(5), 5, "eval", "img", stream=stream, every_s=0))
    text = stream.getvalue()
    assert "\r" in text and "eval:   0%|" in text and "0/5 [" in text  # tqdm's bar
    assert "after" not in text and "done in" not in text  # no plain lines


def test_progress_as_a_context_manager_counts_by_hand():
    stream = io.StringIO()
    with Progress(60, "int8 position probe", "step", stream=stream, clock=ticking(4.0)) as bar:
        for _ in range(60):
            bar.update()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "int8 position probe: 3/60 step (5%) after 12 s"
    assert lines[-1] == "int8 position probe: 60/60 step (100%) done in 244 s"


@pytest.fixture
def every_update(monkeypatch):
    """A line after every update off a terminal (the default waits 10 s between lines)."""
    monkeypatch.setattr(cxrbox.progress, "EVERY_S", 0.0)


def test_predict_batches_reports_the_images_done_on_stderr(tmp_path, capsys, every_update):
    from cxrbox.evaluation.evaluate import folder_loader, predict_batches
    from cxrbox.modeling.decode import GridCoding

    ids = [f"p{i}" for i in range(5)]
    write_random_dicoms(tmp_path, {pid: (64, 64) for pid in ids})
    config = TrainConfig(image_size=64, batch_size=2, channels_last=False)
    labels = {pid: np.zeros((0, 4), np.float32) for pid in ids}
    loader = folder_loader(tmp_path, labels, config)

    def model(images):
        return torch.zeros(len(images), 5, 2, 2)

    predictions = predict_batches(model, loader, GridCoding(), config, "cpu", progress="eval")
    assert [p.patient_id for p in predictions] == ids
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("eval: ")]
    assert [line.split(" after ")[0] for line in lines[:3]] == [
        "eval: 2/5 img (40%)",
        "eval: 4/5 img (80%)",
        "eval: 5/5 img (100%)",
    ]
    assert lines[-1].startswith("eval: 5/5 img (100%) done in ")


def test_predict_batches_is_silent_without_a_label(tmp_path, capsys, every_update):
    from cxrbox.evaluation.evaluate import folder_loader, predict_batches
    from cxrbox.modeling.decode import GridCoding

    write_random_dicoms(tmp_path, {"a": (64, 64)})
    config = TrainConfig(image_size=64, channels_last=False)
    loader = folder_loader(tmp_path, {"a": np.zeros((0, 4), np.float32)}, config)
    list(
        predict_batches(lambda x: torch.zeros(len(x), 5, 2, 2), loader, GridCoding(), config, "cpu")
    )
    assert capsys.readouterr().err == ""


def test_int8_calibration_reports_the_images_run(capsys, every_update):
    from cxrbox.deploy.quantize import _Batches

    reader = _Batches(np.zeros((40, 1, 8, 8), np.float32), progress="int8 calibration")
    sizes = []
    while (batch := reader.get_next()) is not None:
        sizes.append(len(batch["images"]))
    assert sizes == [16, 16, 8]
    lines = [line.split(" after ")[0] for line in capsys.readouterr().err.splitlines()]
    assert lines[:3] == [
        "int8 calibration: 16/40 img (40%)",
        "int8 calibration: 32/40 img (80%)",
        "int8 calibration: 40/40 img (100%)",
    ]


def test_the_probe_counts_each_training_step_of_the_detector():
    from cxrbox.diagnostics.probes import counting_steps
    from cxrbox.testing import Detector

    calls = []
    detector = Detector(
        build=lambda: torch.nn.Linear(1, 1),
        loss=lambda model, images, boxes: torch.zeros(()),
        predict=lambda model, images: [],
        optimizer=lambda model: torch.optim.SGD(model.parameters(), lr=0.1),
        train_step=lambda *args: calls.append(args) or 0.25,
    )
    progress = Progress(3, "probe", "step", stream=io.StringIO())
    counted = counting_steps(detector, progress)
    assert [counted.step(None, None, None, None) for _ in range(3)] == [0.25] * 3
    assert progress.n == 3 and len(calls) == 3


@pytest.mark.parametrize(
    ("used", "asked", "labels", "expected"),
    [
        (48, 256, None,
         "int8 calibration on 48 image(s) (256 asked; the run's training split has only 48)"),
        (256, 256, None, "int8 calibration on 256 image(s)"),
        (3, 10, "calib.csv", "int8 calibration on 3 image(s) (10 asked; calib.csv has only 3)"),
    ],
)  # fmt: skip
def test_the_calibration_count_used_is_said_with_the_count_asked(used, asked, labels, expected):
    from cxrbox.deploy.pipeline import calibration_note

    assert calibration_note(used, asked, labels) == expected


def test_the_parity_report_says_how_many_calibration_images_were_used():
    from cxrbox.deploy.parity import format_report

    report = {
        "models": {},
        "quantization": {
            "settings": "U8S8+reduce_range",
            "calibration_images": 48,
            "calibration_images_asked": 256,
        },
    }
    assert "int8 U8S8+reduce_range: calibrated on 48 images (256 asked)" in format_report(report)
