"""The training loop end to end on tiny synthetic data: learning, resume, checkpoints, failures."""

from __future__ import annotations

import json

import pytest
import torch
from tests.integration.conftest import crash_in_evaluation

from cxrbox.engine import train as train_module
from cxrbox.engine.checkpoint import load_checkpoint
from cxrbox.engine.runlog import read_records
from cxrbox.engine.train import train
from cxrbox.errors import NonFiniteLossError
from cxrbox.modeling import objective


def _step_losses(run_dir):
    return [r["loss"] for r in read_records(run_dir, "step")]


def test_loss_falls_on_a_tiny_synthetic_set(tiny_config):
    result = train(tiny_config.replace(epochs=6, augment=False), progress=False)
    first, last = result.epochs[0]["train_loss"], result.epochs[-1]["train_loss"]
    # 24 images, 18 steps: the last epoch's mean loss is at most 70% of the first epoch's.
    assert last < 0.7 * first


def test_run_dir_holds_config_metrics_and_checkpoints(tiny_config):
    result = train(tiny_config, progress=False)
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"config.json", "metrics.jsonl", "metrics.csv", "last.pt", "best.pt"} <= names
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["image_size"] == 64
    epochs = list(read_records(result.run_dir, "epoch"))
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(0.0 <= e["val_mean_iou"] <= 1.0 for e in epochs)
    # COCO mAP (pycocotools) next to the RSNA metric, in the JSONL and as CSV columns
    assert all(0.0 <= e["val_coco_map_50_95"] <= e["val_coco_map_50"] <= 1.0 for e in epochs)
    header = (result.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val_rsna_map", "val_coco_map_50", "val_coco_map_50_95"} <= set(header)


def test_same_seed_gives_the_same_run(tiny_config, tmp_path):
    first = train(tiny_config.replace(out=str(tmp_path / "a"), epochs=1), progress=False)
    second = train(tiny_config.replace(out=str(tmp_path / "b"), epochs=1), progress=False)
    assert _step_losses(first.run_dir) == _step_losses(second.run_dir)


def test_ema_changes_what_is_validated_never_what_is_trained(tiny_config, tmp_path):
    """The EMA reads the weights and never writes them: a --no-ema run has the same steps and
    the same raw weights, so its ablation is the raw weights of the same run."""
    on = train(tiny_config.replace(out=str(tmp_path / "on"), epochs=2), progress=False)
    off = train(tiny_config.replace(out=str(tmp_path / "off"), epochs=2, ema=False),
                progress=False)  # fmt: skip
    assert _step_losses(on.run_dir) == _step_losses(off.run_dir)
    on_state, off_state = (load_checkpoint(r.run_dir / "last.pt") for r in (on, off))
    assert "ema" not in off_state
    for name, tensor in on_state["model"].items():
        assert torch.equal(tensor, off_state["model"][name]), name
    averaged = on_state["ema"]["weights"]
    assert any(not torch.equal(averaged[k], v) for k, v in on_state["model"].items())
    assert on.epochs[-1]["val_mean_iou"] != off.epochs[-1]["val_mean_iou"]


def test_resumed_run_continues_exactly(tiny_config, tmp_path, monkeypatch):
    full = train(tiny_config.replace(out=str(tmp_path / "full"), epochs=3), progress=False)
    part = tiny_config.replace(out=str(tmp_path / "part"), epochs=3)

    # Crash during epoch 2's evaluation: epoch 1's checkpoint exists, epoch 2's steps are logged.
    crash_in_evaluation(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train(part, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 1

    resumed = train(part, resume=tmp_path / "part", progress=False)
    # Same losses step for step, logged once each, and bit-identical final weights: the raw
    # ones, their moving average (and its update count), and the same tuned score threshold.
    assert _step_losses(resumed.run_dir) == _step_losses(full.run_dir)
    full_state = load_checkpoint(tmp_path / "full" / "last.pt")
    resumed_state = load_checkpoint(tmp_path / "part" / "last.pt")
    for key in ("model", "ema"):
        weights = full_state[key] if key == "model" else full_state[key]["weights"]
        resumed_weights = resumed_state[key] if key == "model" else resumed_state[key]["weights"]
        for name, tensor in weights.items():
            assert torch.equal(tensor, resumed_weights[name]), (key, name)
    assert resumed_state["ema"]["updates"] == full_state["ema"]["updates"] == 9
    assert resumed_state["score_threshold"] == full_state["score_threshold"]
    assert [e["val_mean_iou"] for e in resumed.epochs] == [
        e["val_mean_iou"] for e in full.epochs[1:]
    ]


def test_non_finite_loss_stops_with_a_typed_error_and_keeps_the_last_checkpoint(
    tiny_config, monkeypatch
):
    steps_per_epoch = 3  # 24 training images / batch 8
    real_compute_loss = objective.compute_loss
    calls = {"n": 0}

    def poisoned(raw, targets, *args, **kwargs):
        calls["n"] += 1
        parts = real_compute_loss(raw, targets, *args, **kwargs)
        if calls["n"] > steps_per_epoch + 1:  # second step of epoch 2
            return type(parts)(**{**parts.__dict__, "total": parts.total * float("nan")})
        return parts

    monkeypatch.setattr(train_module, "compute_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 4"):
        train(tiny_config.replace(epochs=3), progress=False)
    state = load_checkpoint(f"{tiny_config.out}/last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_a_deferred_non_finite_loss_is_named_at_its_step_after_the_steps_before_it(
    tiny_config, monkeypatch
):
    """monitor_every 5: steps 3 and 4 are deferred, step 5 is monitored. A NaN from step 4 on
    must stop training naming step 4 (not the monitored step 5), with steps 0-4 logged."""
    real_compute_loss = objective.compute_loss
    calls = {"n": 0}

    def poisoned(raw, targets, *args, **kwargs):
        calls["n"] += 1
        parts = real_compute_loss(raw, targets, *args, **kwargs)
        if calls["n"] > 4:  # steps 4, 5, ...
            return type(parts)(**{**parts.__dict__, "total": parts.total * float("nan")})
        return parts

    monkeypatch.setattr(train_module, "compute_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 4 "):
        train(tiny_config.replace(epochs=3, monitor_every=5), progress=False)
    assert [r["step"] for r in read_records(tiny_config.out, "step")] == [0, 1, 2, 3, 4]


def test_a_checkpoint_resumes_only_with_the_process_count_that_wrote_it(tiny_config):
    from cxrbox.engine.checkpoint import save_checkpoint
    from cxrbox.errors import CheckpointError

    run_dir = train(tiny_config.replace(epochs=2), progress=False).run_dir
    state = load_checkpoint(run_dir / "last.pt")
    save_checkpoint({**state, "epoch": 1, "world_size": 2}, run_dir / "last.pt")
    with pytest.raises(CheckpointError, match=r"run of 2 process\(es\).*now 1"):
        train(tiny_config, resume=run_dir, progress=False)
