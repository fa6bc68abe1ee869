"""Checkpoints: atomic writes and clear errors."""

from __future__ import annotations

import pytest
import torch

from cxrbox import checkpoint
from cxrbox.checkpoint import load_checkpoint, save_checkpoint
from cxrbox.errors import CheckpointError


def test_round_trip(tmp_path):
    save_checkpoint({"epoch": 3, "weights": torch.arange(4)}, tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 3
    assert torch.equal(state["weights"], torch.arange(4))


def test_failure_during_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)

    def crash(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_damaged_checkpoint_is_a_checkpoint_error(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "bad.pt")


def test_foreign_torch_file_is_rejected(tmp_path):
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a cxrbox checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_rng_state_round_trip():
    state = checkpoint.capture_rng_state()
    expected = torch.rand(3)
    torch.rand(5)
    checkpoint.restore_rng_state(state)
    assert torch.equal(torch.rand(3), expected)
