"""`cxrbox eval` and `cxrbox predict` off a terminal: a line of progress on stderr (see
tests/unit/test_progress.py for the bar on a terminal). In process, on an untrained model."""

from __future__ import annotations

import pytest
import torch
from tests.dicom_factory import write_random_dicoms

import cxrbox.progress
from cxrbox.config import TrainConfig


@pytest.fixture
def every_update(monkeypatch):
    """A line after every update off a terminal (the default waits 10 s between lines)."""
    monkeypatch.setattr(cxrbox.progress, "EVERY_S", 0.0)


@pytest.fixture
def untrained_checkpoint(tmp_path):
    """A cxrbox checkpoint of an untrained small model, and a folder of 3 DICOMs with labels."""
    from cxrbox.engine.checkpoint import save_checkpoint
    from cxrbox.modeling.model import build_model

    config = TrainConfig(image_size=64, width=0.25, batch_size=2, ema=False)
    torch.manual_seed(0)
    model = build_model(config.head, config.norm, config.width, stride=config.stride)
    save_checkpoint({"config": config.to_dict(), "model": model.state_dict()}, tmp_path / "m.pt")
    ids = ["a", "b", "c"]
    write_random_dicoms(tmp_path / "images", {pid: (64, 64) for pid in ids})
    (tmp_path / "labels.csv").write_text(
        "patientId,x,y,width,height,Target\n" + "".join(f"{pid},,,,,0\n" for pid in ids)
    )
    return tmp_path


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_report_their_images_on_stderr(
    untrained_checkpoint, command, capsys, every_update
):
    from cxrbox import cli

    folder = untrained_checkpoint
    argv = [command, "--model", str(folder / "m.pt"), "--images", str(folder / "images")]
    argv += ["--labels", str(folder / "labels.csv")] if command == "eval" else []
    argv += ["--out", str(folder / "sub.csv")] if command == "predict" else []
    assert cli.main(argv) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(command)]
    assert lines[0].startswith(f"{command}: 2/3 img (66%) after ")
    assert lines[-1].startswith(f"{command}: 3/3 img (100%) done in ")
