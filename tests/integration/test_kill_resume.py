"""kill -9 at any moment: a `cxrbox train` process is killed inside a step, while last.pt is
being written and during evaluation; each time it resumes, and the finished run equals an
uninterrupted one bit for bit, with every step logged exactly once.

Every step also draws from the global torch, numpy and python RNGs (`--rng-draws`, as dropout
or a random augmentation would; cxrbox's own steps draw nothing), so the test also shows that
the RNG states are restored at the right point. Each run is a real subprocess
(`tests/integration/pausing_train.py`: the `cxrbox` entry point with a pause installed) that
dies by SIGKILL. Not forked from pytest: a fork of a process whose thread pools (torch's,
ONNX Runtime's) have run can deadlock in the child.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests.integration import pausing_train

from cxrbox.config import save_config
from cxrbox.engine import train as train_module
from cxrbox.engine.checkpoint import load_checkpoint
from cxrbox.engine.runlog import read_records
from cxrbox.engine.train import train

STARTUP_LIMIT_S = 120

# 24 training images, batch 8: 3 steps per epoch, 6 in all; last.pt every 2 steps and at epoch
# ends. Each kill leaves a different last.pt to resume from:
KILLS = [
    ("step", 3),  # inside step 3 -> last.pt after step 2, mid-epoch 1
    ("save", 2),  # halfway through last.pt after step 4 -> the epoch-1 end checkpoint survives
    ("eval", 1),  # evaluating epoch 2 -> last.pt after step 6, epoch 2 trained, not evaluated
]


def start_cxrbox(where: str, nth: int, ready: Path, args: list[str]) -> subprocess.Popen:
    script = Path(pausing_train.__file__)
    command = [sys.executable, str(script), "--rng-draws", where, str(nth), str(ready), "--"]
    return subprocess.Popen([*command, *args])


def kill_when_ready(process: subprocess.Popen, ready: Path) -> None:
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while not ready.exists():
        if process.poll() is not None:
            pytest.fail(f"cxrbox exited ({process.returncode}) before the pause")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail("cxrbox did not reach the pause in time")
        time.sleep(0.02)
    process.kill()  # SIGKILL
    process.wait()
    assert process.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def reference(tiny_rsna, tmp_path_factory):
    """The uninterrupted run (num_workers does not change results: augmentation is seeded per
    sample, so one reference serves both worker settings)."""
    from tests.integration.conftest import tiny_config_for

    config = tiny_config_for(tiny_rsna, tmp_path_factory.mktemp("reference") / "run")
    config = config.replace(epochs=2, width=0.25, checkpoint_every_steps=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "compute_loss", train_module.compute_loss)
        pausing_train.draw_from_global_rngs(train_module)
        return config, train(config, progress=False).run_dir


@pytest.mark.parametrize("num_workers", [0, 2])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(reference, tmp_path, num_workers):
    config, reference_dir = reference
    run_dir = tmp_path / "killed"
    save_config(config.replace(out=str(run_dir), num_workers=num_workers), tmp_path / "c.json")
    args = ["train", "--config", str(tmp_path / "c.json"), "--quiet"]
    for i, (where, nth) in enumerate(KILLS):
        ready = tmp_path / f"ready-{i}"
        kill_when_ready(start_cxrbox(where, nth, ready, args), ready)
        args = ["train", "--resume", str(run_dir), "--quiet"]
    finished = start_cxrbox("none", 0, tmp_path / "unused", args)
    assert finished.wait(STARTUP_LIMIT_S) == 0

    expected = load_checkpoint(reference_dir / "last.pt")["model"]
    resumed = load_checkpoint(run_dir / "last.pt")["model"]
    for name, tensor in expected.items():
        assert torch.equal(tensor, resumed[name]), name
    steps = list(read_records(run_dir, "step"))
    assert [r["step"] for r in steps] == list(range(6))
    assert [r["loss"] for r in steps] == [r["loss"] for r in read_records(reference_dir, "step")]
    assert [r["epoch"] for r in read_records(run_dir, "epoch")] == [1, 2]
    assert not list(run_dir.glob(".*.tmp"))  # the half-written save was cleaned up on resume


def test_disk_full_stops_training_naming_the_checkpoint_and_keeps_the_previous_one(
    tiny_config, monkeypatch
):
    import errno
    import os

    from cxrbox import atomic_write
    from cxrbox.errors import CheckpointWriteError

    real_fsync, calls = os.fsync, {"n": 0}

    def fsync_fails_on_the_third_checkpoint(fd):
        if ".pt." not in os.readlink(f"/proc/self/fd/{fd}"):  # config.json, val_samples.npz
            return real_fsync(fd)
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(atomic_write.os, "fsync", fsync_fails_on_the_third_checkpoint)
    config = tiny_config.replace(epochs=2, width=0.25, checkpoint_every_steps=1)
    with pytest.raises(CheckpointWriteError, match=r"last\.pt: No space left on device"):
        train(config, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(Path(config.out) / "last.pt")["global_step"] == 2
    assert sorted(p.name for p in Path(config.out).glob("*.pt")) == ["last.pt"]
