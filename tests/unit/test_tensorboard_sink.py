"""The run log's fan-out and the TensorBoard sink's mapping of records, without the tensorboard
package (a recording stand-in for SummaryWriter); the real event files are checked in
tests/integration/test_tensorboard.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.patches import Rectangle

from cxrbox.cli import main
from cxrbox.engine.plots import VAL_SAMPLES_NAME
from cxrbox.engine.runlog import JSONL_NAME, RunLog
from cxrbox.engine.tensorboard_sink import ALARMS_TAG, VAL_IMAGE_TAG, TensorBoardSink

STEP = {"epoch": 1, "step": 4, "loss": 0.5, "lr": 1e-3, "grad_clipped": True, "layers": {"a": 1}}
EPOCH = {"epoch": 2, "step": 7, "train_loss": 0.4, "val_mean_iou": 0.3, "seconds": 1.5}


class RecordingWriter:
    """Stands in for SummaryWriter: remembers each call as (method, args)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, method: str):
        return lambda *args: self.calls.append((method, args))


def sink_calls(tmp_path: Path, kind: str, record: dict) -> list[tuple[str, tuple[Any, ...]]]:
    writer = RecordingWriter()
    TensorBoardSink(writer, tmp_path, score_threshold=0.3).write(kind, record)
    return writer.calls


def test_runlog_hands_each_record_to_every_sink_after_writing_its_line(tmp_path):
    seen: list[tuple[str, dict, int]] = []

    class Sink:
        closed = False

        def write(self, kind: str, record: dict) -> None:
            lines = (tmp_path / JSONL_NAME).read_text().splitlines()
            seen.append((kind, record, len(lines)))

        def close(self) -> None:
            Sink.closed = True

    with RunLog(tmp_path, ["step", "loss"], sinks=[Sink()]) as runlog:
        runlog.write("step", {"step": 0, "loss": 1.0})
        runlog.write("event", {"step": 0, "name": "collapse"})
    assert seen == [
        ("step", {"step": 0, "loss": 1.0}, 1),
        ("event", {"step": 0, "name": "collapse"}, 2),
    ]
    assert Sink.closed


def test_step_records_become_one_scalar_per_numeric_field_at_the_step(tmp_path):
    assert sink_calls(tmp_path, "step", STEP) == [
        ("add_scalar", ("step/loss", 0.5, 4)),
        ("add_scalar", ("step/lr", 1e-3, 4)),
        ("add_scalar", ("step/grad_clipped", 1.0, 4)),
    ]


def test_epoch_records_are_scalars_at_the_epochs_last_step_then_a_flush(tmp_path):
    assert sink_calls(tmp_path, "epoch", EPOCH) == [
        ("add_scalar", ("epoch/train_loss", 0.4, 7)),
        ("add_scalar", ("epoch/val_mean_iou", 0.3, 7)),
        ("add_scalar", ("epoch/seconds", 1.5, 7)),
        ("flush", ()),
    ]


def test_an_alarm_becomes_text_at_its_step(tmp_path):
    event = {"step": 9, "name": "collapse", "level": "error", "message": "one box for all"}
    assert sink_calls(tmp_path, "event", event) == [
        ("add_text", (ALARMS_TAG, "**collapse** (error): one box for all", 9))
    ]


def test_val_samples_become_one_figure_with_the_boxes_in_pixels(tmp_path):
    np.savez_compressed(tmp_path / VAL_SAMPLES_NAME, images=np.zeros((2, 32, 32), np.uint8))
    record = {
        "epoch": 1,
        "step": 2,
        "truth": [[[0.25, 0.25, 0.5, 0.75]], []],
        "boxes": [[], [[0.0, 0.5, 0.5, 1.0]]],
        "scores": [[], [0.9]],
    }
    [(method, (tag, figure, step))] = sink_calls(tmp_path, "val_samples", record)
    assert (method, tag, step) == ("add_figure", VAL_IMAGE_TAG, 2)
    drawn = [
        [
            (p.get_x(), p.get_y(), p.get_width(), p.get_height())
            for p in ax.patches
            if isinstance(p, Rectangle)
        ]
        for ax in figure.axes
    ]
    assert drawn == [[(8.0, 8.0, 8.0, 16.0)], [(0.0, 16.0, 16.0, 16.0)]]


def test_tensorboard_without_the_package_fails_at_start_naming_the_extra(
    tmp_path, monkeypatch, capsys
):
    for name in [
        m for m in sys.modules if m.startswith(("tensorboard", "torch.utils.tensorboard"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` fails
    out = tmp_path / "run"
    missing = str(tmp_path / "no-images")  # reached only if the option were ignored
    argv = ["train", "--tensorboard", "--images", missing, "--labels", missing, "--out", str(out)]
    assert main(argv) == 2
    assert "pip install 'cxrbox[tensorboard]'" in capsys.readouterr().err
    assert not out.exists()  # nothing was started
