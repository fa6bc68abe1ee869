"""Data-parallel training (gloo, 2 CPU processes) equals the single-process run.

Every 2-rank run here is a real job: `cxrbox train --nproc 2` (torchrun's elastic agent) or two
`python -m cxrbox train` processes joined through RANK / WORLD_SIZE / MASTER_* as torchrun sets
them. 112 synthetic images at 64 px: 91 train (5 steps of 16 per epoch; with 2 ranks one
image of each epoch is cut so that both have 45), 21 validation (shards of 11 and 10).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cxrbox.config import TrainConfig
from cxrbox.data.loaders import EpochShuffleSampler, build_loaders
from cxrbox.data.synthetic.rsna_like import write_rsna_like
from cxrbox.deploy.inference import load_trained_model
from cxrbox.engine.runlog import read_records
from cxrbox.engine.train import train
from cxrbox.evaluation.evaluate import evaluate, flat_metrics

RUN_TIMEOUT_S = 300  # a 2-epoch 2-rank run takes ~50 s on 2 loaded cores


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp_data")
    write_rsna_like(root, 112, seed=7, image_size=128, positive_fraction=0.5)
    return root


def _config(data: Path, out: Path, batch_size: int, **changes) -> TrainConfig:
    return TrainConfig(
        images=str(data / "stage_2_train_images"),
        labels=str(data / "stage_2_train_labels.csv"),
        out=str(out),
        image_size=64,
        norm="group",
        val_fraction=0.19,
        epochs=2,
        batch_size=batch_size,
        plots=False,
        **changes,
    )


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1", **extra}


def _cli(config_file: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cxrbox", "train", "--config", str(config_file), "--quiet", *args]


def _write_config(config: TrainConfig, path: Path) -> Path:
    path.write_text(json.dumps(config.to_dict()))
    return path


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_records(run_dir, "step")]


@pytest.fixture(scope="module")
def one_process_run(ddp_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    return train(_config(ddp_data, out, batch_size=16), progress=False).run_dir


@pytest.fixture(scope="module")
def two_rank_run(ddp_data, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("two")
    config_file = _write_config(_config(ddp_data, home / "run", batch_size=8), home / "c.json")
    done = subprocess.run(
        _cli(config_file, "--nproc", "2", "--tensorboard"),
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return home / "run"


def test_two_ranks_of_8_give_the_losses_of_one_process_of_16(one_process_run, two_rank_run):
    one, two = _losses(one_process_run), _losses(two_rank_run)
    assert len(one) == len(two) >= 6
    assert two == pytest.approx(one, abs=1e-5, rel=0)


def test_two_ranks_of_8_end_with_the_model_of_one_process_of_16(one_process_run, two_rank_run):
    """Same function to 1e-5, and all but a few weights to 1e-5.

    AdamW scales each weight's step by its own gradient size, so where a gradient is made of
    cancelling terms (conv weights feeding GroupNorm) the rounding of a different summation order
    becomes a step of up to lr: measured 210 of 1.77 M weights off by more than 1e-5 (max 1e-4),
    while the outputs agree to 4e-6.
    """
    one, config, _ = load_trained_model(one_process_run / "last.pt")
    two, _, _ = load_trained_model(two_rank_run / "last.pt")
    images = next(iter(build_loaders(config).val)).images
    with torch.no_grad():
        torch.testing.assert_close(two(images), one(images), atol=1e-5, rtol=0)
    w1 = torch.cat([p.detach().flatten() for p in one.parameters()])
    w2 = torch.cat([p.detach().flatten() for p in two.parameters()])
    off = (w2 - w1).abs()
    assert (off > 1e-5).float().mean().item() < 1e-3
    assert off.max().item() < 1e-3


def test_two_rank_validation_equals_one_process_evaluation_of_its_checkpoint(two_rank_run):
    model, config, coding = load_trained_model(two_rank_run / "best.pt")
    best_epoch = torch.load(two_rank_run / "best.pt", weights_only=False)["epoch"]
    logged = next(r for r in read_records(two_rank_run, "epoch") if r["epoch"] == best_epoch)
    # The ranks compute on one thread (OMP_NUM_THREADS=1 in `_env`); a convolution's rounding
    # depends on its thread count, so the single process uses one thread too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = flat_metrics(
            evaluate(model, build_loaders(config).val, coding, config, torch.device("cpu"))
        )
    finally:
        torch.set_num_threads(threads)
    assert logged["val_n_images"] == single["n_images"] == 21
    for name, value in single.items():
        assert logged[f"val_{name}"] == value or (
            math.isnan(value) and math.isnan(logged[f"val_{name}"])
        ), name


def test_only_rank_0_writes_and_the_run_has_one_record_per_step(two_rank_run):
    steps = [r["step"] for r in read_records(two_rank_run, "step")]
    assert steps == list(range(10))
    assert sorted(p.name for p in two_rank_run.glob("*.pt")) == ["best.pt", "last.pt"]
    assert len(list(two_rank_run.glob("events.out.tfevents.*"))) == 1  # --tensorboard


def test_every_epoch_trains_on_a_new_order(ddp_data, tmp_path, monkeypatch):
    """The trainer sets the sampler's epoch (a rank that did not would repeat one order)."""
    orders = []
    real_iter = EpochShuffleSampler.__iter__

    def recording_iter(self):
        order = list(real_iter(self))
        orders.append(order)
        return iter(order)

    monkeypatch.setattr(EpochShuffleSampler, "__iter__", recording_iter)
    train(_config(ddp_data, tmp_path / "run", batch_size=16, augment=False), progress=False)
    assert len(orders) == 2
    assert orders[0] != orders[1]
    assert sorted(orders[0]) == sorted(orders[1])


def test_stopped_two_rank_run_resumes_exactly(ddp_data, two_rank_run, tmp_path):
    config_file = _write_config(
        _config(ddp_data, tmp_path / "run", batch_size=8), tmp_path / "c.json"
    )
    first = subprocess.Popen(
        _cli(config_file, "--nproc", "2"),
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    last = tmp_path / "run" / "last.pt"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not last.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the agent and both ranks, mid epoch 2
    first.wait(timeout=30)
    assert torch.load(last, weights_only=False)["epoch"] == 1, "the run finished before the stop"

    resumed = subprocess.run(
        _cli(config_file, "--nproc", "2", "--resume", str(tmp_path / "run")),
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _losses(tmp_path / "run") == pytest.approx(_losses(two_rank_run), abs=1e-6, rel=0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_bad_dicom_on_rank_1_ends_both_ranks_with_its_error(ddp_data, tmp_path):
    """Rank 1's first image is garbage: rank 1 raises DicomError, rank 0 must not wait forever."""
    images = tmp_path / "images"
    images.mkdir()
    for dicom in (ddp_data / "stage_2_train_images").iterdir():
        (images / dicom.name).symlink_to(dicom)
    config = _config(ddp_data, tmp_path / "run", batch_size=8, use_cache=False)
    config = config.replace(images=str(images))
    train_set = build_loaders(config).train.dataset
    sampler = EpochShuffleSampler(len(train_set), config.seed, rank=1, world_size=2)
    bad = images / f"{train_set.patient_ids[next(iter(sampler))]}.dcm"
    bad.unlink()
    bad.write_bytes(b"not a dicom")
    config_file = _write_config(config, tmp_path / "c.json")

    port = str(_free_port())
    ranks = [
        subprocess.Popen(
            _cli(config_file),
            env=_env(
                tmp_path,
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE="2",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
                CXRBOX_COLLECTIVE_TIMEOUT_S="30",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        errors = [p.communicate(timeout=180)[1] for p in ranks]
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    assert [p.returncode != 0 for p in ranks] == [True, True], errors
    assert bad.name in errors[1], errors[1][-2000:]
