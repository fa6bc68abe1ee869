"""What `train` tells: the collapse verdict read off validation, the ETA of the live epoch
line, and a summary that names what was written and never claims "no collapse" falsely."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.figure import Figure

import cxrbox.engine.plots
from cxrbox.commands.train import print_training_summary
from cxrbox.engine.monitor import validation_collapse
from cxrbox.engine.plots import plot_prediction_spread
from cxrbox.engine.train import TrainResult, format_eta
from cxrbox.figures import pyplot

WARMUP = 3


def epoch_record(epoch: int, step: int, std_cx: float, std_cy: float, n: int = 8) -> dict:
    return {"epoch": epoch, "step": step, "val_std_cx": std_cx, "val_std_cy": std_cy,
            "val_n_images": n, "train_loss": 1.0, "val_mean_iou": 0.1, "val_mae_px": 9.0,
            "val_rsna_map": 0.0, "val_score_threshold": 0.3, "seconds": 2.0}  # fmt: skip


def test_a_validation_spread_under_collapse_std_after_warmup_is_the_collapse_alarm():
    alarm = validation_collapse(epoch_record(2, 5, 0.001, 0.015), 0.02, WARMUP)
    assert alarm is not None
    assert (alarm.name, alarm.step, alarm.level) == ("collapse", 5, "error")
    assert "validation at epoch 2" in alarm.message and "0.0150 < 0.02" in alarm.message


@pytest.mark.parametrize(
    "record",
    [
        epoch_record(1, 2, 0.001, 0.001),  # the epoch ended inside the warmup
        epoch_record(2, 5, 0.001, 0.03),  # the centres spread in y
        epoch_record(2, 5, 0.0, 0.0, n=1),  # one image has no spread to judge
    ],
    ids=["warmup", "spread", "one-image"],
)
def test_no_validation_alarm_in_warmup_with_spread_or_on_one_image(record):
    assert validation_collapse(record, 0.02, WARMUP) is None


def test_the_spread_plot_draws_validation_and_a_red_line_at_each_collapse_alarm(
    tmp_path, monkeypatch
):
    figures: dict[str, Figure] = {}
    monkeypatch.setattr(
        cxrbox.engine.plots, "save_figure", lambda fig, path: figures.setdefault("f", fig)
    )
    steps = [{"step": s, "pred_cx_std": 0.1, "pred_cy_std": 0.1, "pred_w_std": 0.1,
              "pred_h_std": 0.1} for s in range(6)]  # fmt: skip
    epochs = [epoch_record(1, 2, 0.05, 0.04), epoch_record(2, 5, 0.001, 0.002)]
    alarms = [
        {"kind": "event", "step": 5, "name": "collapse", "level": "error", "message": ""},
        {"kind": "event", "step": 4, "name": "no_update", "level": "warning", "message": ""},
    ]
    plot_prediction_spread(steps, 0.02, tmp_path / "p.png", epochs, alarms)
    lines = [
        (list(ln.get_xdata()), list(ln.get_ydata())) for ln in figures["f"].axes[0].get_lines()
    ]
    pyplot().close(figures["f"])
    assert ([2, 5], [0.05, 0.002]) in lines  # validation's centre spread at each epoch's step
    assert ([5, 5], [0, 1]) in lines  # the collapse alarm; no line for the other alarm
    assert ([4, 4], [0, 1]) not in lines


def test_the_eta_is_the_mean_epoch_time_times_the_epochs_left():
    ran = [{"seconds": 50.0}, {"seconds": 70.0}]
    assert format_eta(ran, 3) == "  ETA 3 min 00 s (3 more epochs)"
    assert format_eta(ran[:1], 1) == "  ETA 0 min 50 s (1 more epoch)"
    assert format_eta([{"seconds": 1900.0}], 2) == "  ETA 1 h 03 min (2 more epochs)"
    assert format_eta(ran, 0) == ""  # the last epoch's line


def test_the_summary_names_the_last_collapse_alarm_and_never_claims_no_collapse(capsys):
    epochs = [epoch_record(1, 2, 0.05, 0.05), epoch_record(2, 5, 0.001, 0.001)]
    alarm = validation_collapse(epochs[-1], 0.02, WARMUP)
    print_training_summary(TrainResult(Path("runs/x"), epochs, [alarm]))
    out = capsys.readouterr().out
    assert "alarms raised: 1 (collapse)" in out
    assert f"last collapse alarm, step 5: {alarm.message}" in out
    assert "no collapse" not in out


@pytest.mark.parametrize("plots_dir", [None, Path("runs/x/plots")], ids=["no-plots", "plots"])
def test_the_summary_names_the_plots_folder_only_when_plots_were_drawn(plots_dir, capsys):
    print_training_summary(
        TrainResult(Path("runs/x"), [epoch_record(1, 2, 0.1, 0.1)], [], plots_dir)
    )
    out = capsys.readouterr().out
    assert "metrics: runs/x/metrics.csv" in out
    assert ("plots:" in out) == (plots_dir is not None)
    if plots_dir is not None:
        assert f"plots: {plots_dir}" in out
