"""What `cxrbox train` tells about a run, end to end: a pooled head trained briefly on tiny
data predicts one box for every validation image, and the collapse alarm says so (run log,
summary; --fail-on-collapse stops the run); the live epoch lines carry an ETA that the run
log does not; --no-plots names no plots folder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cxrbox.config import save_config
from cxrbox.engine.checkpoint import load_checkpoint
from cxrbox.engine.runlog import read_records
from cxrbox.engine.train import train
from cxrbox.errors import CollapseError


@pytest.fixture(scope="module")
def pooled_run(tiny_rsna, tmp_path_factory):
    """`cxrbox train --head pooled --no-plots`, 2 epochs at 64 px on 24 images (3 steps each,
    warmup 1 epoch); returns (run dir, the finished process)."""
    from tests.integration.conftest import tiny_config_for

    folder = tmp_path_factory.mktemp("verdict")
    save_config(tiny_config_for(tiny_rsna, folder / "run"), folder / "c.json")
    args = ["train", "--config", str(folder / "c.json"), "--head", "pooled", "--no-plots"]
    result = subprocess.run(
        [sys.executable, "-m", "cxrbox", *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return folder / "run", result


def test_a_collapsed_validation_raises_the_collapse_alarm(pooled_run):
    run_dir, _ = pooled_run
    last = list(read_records(run_dir, "epoch"))[-1]
    assert max(last["val_std_cx"], last["val_std_cy"]) < 0.02  # one box for every image
    alarms = [r for r in read_records(run_dir, "event") if r["name"] == "collapse"]
    assert [a["step"] for a in alarms] == [last["step"]]  # epoch 1 ended inside the warmup
    assert alarms[0]["message"].startswith("validation at epoch 2:")


def test_the_summary_names_the_collapse_and_never_says_no_collapse(pooled_run):
    _, result = pooled_run
    assert "alarms raised: 1 (collapse)" in result.stdout
    assert "last collapse alarm, step 5: validation at epoch 2:" in result.stdout
    assert "no collapse" not in result.stdout


def test_each_live_epoch_line_but_the_last_has_the_eta_of_the_run(pooled_run):
    run_dir, result = pooled_run
    lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    assert " ETA " in lines[0] and lines[0].endswith("(1 more epoch)")
    assert "ETA" not in lines[1]
    assert "ETA" not in result.stdout  # the summary's table
    assert not [k for r in read_records(run_dir) for k in r if "eta" in k.lower()]


def test_no_plots_names_no_plots_folder(pooled_run):
    run_dir, result = pooled_run
    assert "plots" not in result.stdout
    assert not (run_dir / "plots").exists()


def test_fail_on_collapse_stops_at_a_collapsed_validation(tiny_config):
    """The step monitor needs 20 collapsed steps (there are 6): the validation stops the run,
    before epoch 2's checkpoint, as a step alarm stops it before the next one."""
    config = tiny_config.replace(head="pooled", fail_on_collapse=True)
    with pytest.raises(CollapseError, match="validation at epoch 2: the top boxes' centres"):
        train(config, progress=False)
    assert load_checkpoint(f"{config.out}/last.pt")["epoch"] == 1
    assert [r["name"] for r in read_records(config.out, "event")] == ["collapse"]
