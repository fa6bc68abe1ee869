"""`--tensorboard` end to end: a tiny real run's event files, read back with TensorBoard's own
reader, hold the values of `metrics.jsonl` at the right steps; a resumed run shows each once."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.integration.conftest import crash_in_evaluation, tiny_config_for

from cxrbox.engine.checkpoint import load_checkpoint
from cxrbox.engine.runlog import read_records
from cxrbox.engine.tensorboard_sink import ALARMS_TAG, VAL_IMAGE_TAG
from cxrbox.engine.train import train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
tensor_util = pytest.importorskip("tensorboard.util.tensor_util")

STEPS_PER_EPOCH = 3  # 24 training images / batch 8


def read_events(run_dir: Path) -> event_accumulator.EventAccumulator:
    """Every event of every file in `run_dir`, none sampled away, purges applied."""
    kinds = (event_accumulator.SCALARS, event_accumulator.IMAGES, event_accumulator.TENSORS)
    keep_all = dict.fromkeys(kinds, 0)  # TENSORS: the text of alarms
    events = event_accumulator.EventAccumulator(str(run_dir), size_guidance=keep_all)
    return events.Reload()


def scalar_points(events, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def numeric_fields(record: dict) -> list[str]:
    return [
        k for k, v in record.items() if isinstance(v, int | float) and k not in ("step", "epoch")
    ]


@pytest.fixture(scope="module")
def run_dir(tiny_rsna, tmp_path_factory) -> Path:
    """2 epochs with --tensorboard; the collapse alarm fires at the first step after warmup
    (any spread is under collapse_std 1.0, patience 1) and at epoch 2's validation."""
    config = tiny_config_for(tiny_rsna, tmp_path_factory.mktemp("tensorboard") / "run")
    config = config.replace(tensorboard=True, collapse_std=1.0, collapse_patience=1)
    return train(config, progress=False).run_dir


def test_each_numeric_step_field_is_a_scalar_at_its_step(run_dir):
    steps = list(read_records(run_dir, "step"))
    assert [r["step"] for r in steps] == list(range(2 * STEPS_PER_EPOCH))
    events = read_events(run_dir)
    fields = numeric_fields(steps[0])
    assert {"loss", "lr", "grad_norm", "update_ratio", "pred_cx_std"} <= set(fields)
    for name in fields:
        expected = [(r["step"], pytest.approx(float(r[name]), rel=1e-6)) for r in steps]
        assert scalar_points(events, f"step/{name}") == expected, name


def test_epoch_scalars_sit_at_the_global_step_of_the_epochs_end(run_dir):
    epochs = list(read_records(run_dir, "epoch"))
    assert [r["step"] for r in epochs] == [STEPS_PER_EPOCH - 1, 2 * STEPS_PER_EPOCH - 1]
    events = read_events(run_dir)
    for name in numeric_fields(epochs[0]):
        expected = [(r["step"], pytest.approx(float(r[name]), rel=1e-6)) for r in epochs]
        assert scalar_points(events, f"epoch/{name}") == expected, name
    assert "epoch/val_mean_iou" in events.Tags()["scalars"]


def test_each_epoch_logs_one_validation_image_at_its_end_step(run_dir):
    samples = list(read_records(run_dir, "val_samples"))
    images = read_events(run_dir).Images(VAL_IMAGE_TAG)
    assert [i.step for i in images] == [r["step"] for r in samples] == [2, 5]
    for image in images:
        gray = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("L"))
        assert gray.shape == (image.height, image.width) and gray.var() > 100.0


def test_an_alarm_is_text_at_its_step(run_dir):
    alarms = list(read_records(run_dir, "event"))
    # the step monitor's alarm (first step after warmup), then epoch 2's validation's
    assert [(a["name"], a["step"]) for a in alarms] == [("collapse", 3), ("collapse", 5)]
    assert alarms[1]["message"].startswith("validation at epoch 2")
    logged = read_events(run_dir).Tensors(f"{ALARMS_TAG}/text_summary")
    assert [e.step for e in logged] == [a["step"] for a in alarms]
    for event, alarm in zip(logged, alarms, strict=True):
        text = tensor_util.make_ndarray(event.tensor_proto).item().decode()
        assert "collapse" in text and alarm["message"] in text


def test_a_resumed_run_shows_each_step_once(tiny_config, monkeypatch):
    """A crash while evaluating epoch 2 leaves steps 3-5 in the events; the resumed run trains
    them again and the purge hides the first copies."""
    config = tiny_config.replace(tensorboard=True)
    crash_in_evaluation(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    monkeypatch.undo()
    run_dir = Path(config.out)
    assert load_checkpoint(run_dir / "last.pt")["global_step"] == STEPS_PER_EPOCH
    assert [e.step for e in read_events(run_dir).Scalars("step/loss")] == list(range(6))

    train(config, resume=run_dir, progress=False)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2  # the crashed run's, the resumed's
    events = read_events(run_dir)
    expected = [
        (r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in read_records(run_dir, "step")
    ]
    assert scalar_points(events, "step/loss") == expected
    assert [s for s, _ in expected] == list(range(6))
    assert [e.step for e in events.Scalars("epoch/val_mean_iou")] == [2, 5]
    assert [e.step for e in events.Images(VAL_IMAGE_TAG)] == [2, 5]
