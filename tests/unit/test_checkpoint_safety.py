"""A checkpoint whose pickle would run code is refused by every command that reads checkpoints."""

from __future__ import annotations

import os

import pytest
import torch

from cxrbox.cli import main
from cxrbox.engine import checkpoint
from cxrbox.errors import CheckpointError


class RunsCode:
    """Unpickling this calls os.mkdir(marker): observable, harmless."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def evil_run(tmp_path):
    """A run dir whose last.pt looks like a cxrbox checkpoint but pickles a code call."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    marker = tmp_path / "code-ran"
    state = {"version": checkpoint.CHECKPOINT_VERSION, "model": {}, "config": RunsCode(marker)}
    torch.save(state, run_dir / "last.pt")
    (run_dir / "config.json").write_text("{}\n")
    (run_dir / "metrics.jsonl").write_text('{"kind": "run", "step": -1}\n')
    return run_dir, marker


def test_load_checkpoint_refuses_code_without_running_it(evil_run):
    run_dir, marker = evil_run
    with pytest.raises(CheckpointError, match="refused"):
        checkpoint.load_checkpoint(run_dir / "last.pt")
    assert not marker.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--resume", "{run}"],
        ["eval", "--checkpoint", "{run}/last.pt", "--images", "{run}", "--labels", "x.csv"],
        ["predict", "--checkpoint", "{run}/last.pt", "--images", "{run}", "--out", "{run}/s.csv"],
    ],
    ids=["train-resume", "eval", "predict"],
)
def test_every_checkpoint_reader_refuses_code(evil_run, argv, capsys):
    run_dir, marker = evil_run
    code = main([arg.format(run=run_dir) for arg in argv])
    assert code == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


def test_plot_does_not_read_checkpoints(evil_run):
    run_dir, marker = evil_run
    main(["plot", str(run_dir)])  # no step records: a DataError, but the checkpoint stays shut
    assert not marker.exists()
