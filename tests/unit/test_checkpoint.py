"""Checkpoints: atomic writes and clear errors."""

from __future__ import annotations

import errno
import os
import re
import zipfile

import pytest
import torch

from cxrbox.engine import checkpoint
from cxrbox.engine.checkpoint import load_checkpoint, save_checkpoint
from cxrbox.errors import CheckpointError, CheckpointVersionError, CheckpointWriteError


def test_round_trip(tmp_path):
    save_checkpoint({"epoch": 3, "weights": torch.arange(4)}, tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 3
    assert torch.equal(state["weights"], torch.arange(4))


def test_failure_during_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)

    def disk_full(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(CheckpointWriteError, match=r"last\.pt: No space left on device"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_damaged_checkpoint_is_a_checkpoint_error(tmp_path):
    save_checkpoint({"epoch": 1}, tmp_path / "last.pt")
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "bad.pt").write_bytes(data[: len(data) // 2])  # a copy cut short
    with pytest.raises(CheckpointError, match=r"bad\.pt is not a PyTorch checkpoint.*damaged"):
        load_checkpoint(tmp_path / "bad.pt")


@pytest.mark.parametrize(
    ("name", "content", "found"),
    [
        ("notes.pt", b"epochs = 3\n", r"it holds text \(starting 'epochs = 3'\)"),
        ("empty.pt", b"", "the file is empty"),
        ("model.onnx", b"\x08\x07\x12\x07pytorch", "it is an exported ONNX model"),
    ],
)
def test_a_file_that_is_no_checkpoint_says_what_it_holds_and_what_was_expected(
    tmp_path, name, content, found
):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / name)
    message = str(info.value)
    assert re.search(rf"{re.escape(name)} is not a PyTorch checkpoint: {found}", message)
    assert message.endswith("expected a best.pt or last.pt written by `cxrbox train`")


def test_a_folder_given_as_checkpoint_is_named_as_a_folder(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match=r"run is a folder \(expected a best\.pt"):
        load_checkpoint(tmp_path / "run")


def test_a_zip_archive_torch_did_not_write_is_named_so(tmp_path):
    with zipfile.ZipFile(tmp_path / "archive.pt", "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(CheckpointError, match=r"archive\.pt cannot be read by PyTorch \(damaged"):
        load_checkpoint(tmp_path / "archive.pt")


def test_foreign_torch_file_is_rejected(tmp_path):
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a cxrbox checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_newer_format_names_the_file_and_the_version_read(tmp_path):
    torch.save({"version": checkpoint.CHECKPOINT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(
        CheckpointVersionError, match=r"new\.pt has format version 3.*reads version 2"
    ):
        load_checkpoint(tmp_path / "new.pt")


def test_format_1_checkpoint_is_refused_with_the_upgrade_command_and_upgrades(tmp_path):
    import random

    import numpy as np

    old = {
        "version": 1,
        "epoch": 1,
        "rng": {
            "torch": torch.random.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
    }
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(
        CheckpointError, match=r"python -m cxrbox.engine.checkpoint upgrade .*old\.pt"
    ):
        load_checkpoint(tmp_path / "old.pt")
    assert checkpoint.main(["upgrade", str(tmp_path / "old.pt"), str(tmp_path / "new.pt")]) == 0
    state = load_checkpoint(tmp_path / "new.pt")
    assert state["epoch"] == 1
    checkpoint.restore_rng_state(state["rng"])
    assert np.random.get_state()[1].tolist() == old["rng"]["numpy"][1].tolist()
    assert random.getstate() == old["rng"]["python"]


def test_checkpoint_state_loads_with_weights_only(tmp_path):
    import random

    import numpy as np

    random.gauss(0, 1)  # a cached gaussian is part of the python state
    save_checkpoint({"rng": checkpoint.capture_rng_state()}, tmp_path / "rng.pt")
    torch.load(tmp_path / "rng.pt", weights_only=True)
    expected = (np.random.rand(3), random.random(), torch.rand(2))
    checkpoint.restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (np.random.rand(3), random.random(), torch.rand(2))
    assert np.array_equal(expected[0], again[0]) and expected[1] == again[1]
    assert torch.equal(expected[2], again[2])


def test_rng_state_round_trip():
    state = checkpoint.capture_rng_state()
    expected = torch.rand(3)
    torch.rand(5)
    checkpoint.restore_rng_state(state)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(("saved", "expected"), [(None, 32), (16, 16), (32, 32)])
def test_a_checkpoint_loads_the_stride_it_was_saved_with_and_32_without_one(
    tmp_path, saved, expected
):
    from cxrbox.config import TrainConfig
    from cxrbox.deploy.inference import load_trained_model
    from cxrbox.modeling.model import build_model

    config = TrainConfig(width=0.25, channels_last=False, stride=saved or 32).to_dict()
    if saved is None:
        del config["stride"]  # a checkpoint written before the field existed
    weights = build_model(width=0.25, stride=expected).state_dict()
    save_checkpoint({"config": config, "model": weights}, tmp_path / "run.pt")
    model, loaded, _ = load_trained_model(tmp_path / "run.pt")
    assert loaded.stride == expected and model.grid_size(256) == 256 // expected
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
