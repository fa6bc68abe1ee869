"""Training plots: a real tiny run writes every PNG with content; `cxrbox plot` rewrites them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

import cxrbox.engine.plots
from cxrbox.cli import main
from cxrbox.config import TrainConfig
from cxrbox.data.synthetic.rsna_like import write_rsna_like
from cxrbox.engine.plots import PLOTS_DIR, VAL_SAMPLES_NAME, write_plots
from cxrbox.engine.runlog import read_records
from cxrbox.engine.train import train

EXPECTED = (
    "lr.png", "losses.png", "prediction_spread.png", "gradients.png", "val_predictions.png",
    "threshold.png",
)  # fmt: skip
MIN_GRAY_VARIANCE = 100.0  # on 0-255: a blank or single-colour image has ~0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real 2-epoch training run on 16 synthetic images (64 px, width 0.25), plots on."""
    root = tmp_path_factory.mktemp("plots")
    write_rsna_like(root / "data", 16, seed=3, image_size=128)
    config = TrainConfig(
        images=str(root / "data" / "stage_2_train_images"),
        labels=str(root / "data" / "stage_2_train_labels.csv"),
        out=str(root / "run"),
        image_size=64,
        width=0.25,
        epochs=2,
        batch_size=4,  # 3 steps per epoch: every curve has several points
        plots=True,
    )
    return train(config, progress=False).run_dir


def assert_real_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0, path
    with Image.open(path) as image:
        assert image.format == "PNG"
        gray = np.asarray(image.convert("L"), dtype=float)
    assert gray.var() > MIN_GRAY_VARIANCE, f"{path.name}: grey variance {gray.var():.1f}"


@pytest.mark.parametrize("name", EXPECTED)
def test_training_writes_each_plot_with_content(run_dir, name):
    assert_real_png(run_dir / PLOTS_DIR / name)


@pytest.fixture(scope="module")
def drawn(run_dir) -> dict[str, Figure]:
    """The matplotlib figure behind each PNG that `write_plots(run_dir)` saves, by file name."""
    figures: dict[str, Figure] = {}
    save = cxrbox.engine.plots.save_figure

    def capture(fig: Figure, path: Path) -> Path:
        figures[Path(path).name] = fig
        return save(fig, path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cxrbox.engine.plots, "save_figure", capture)
        write_plots(run_dir)
    return figures


def logged_series(run_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x, y) of every numeric key of the step records (x = step) and epoch records (x = epoch)."""
    series = []
    for kind, x_key in (("step", "step"), ("epoch", "epoch")):
        records = list(read_records(run_dir, kind))
        for key, value in records[0].items():
            if type(value) in (int, float):
                x = np.array([r[x_key] for r in records], dtype=float)
                series.append((x, np.array([r[key] for r in records], dtype=float)))
    return series


@pytest.mark.parametrize("name", ["lr.png", "losses.png", "prediction_spread.png", "gradients.png"])
def test_each_panel_draws_a_logged_series(run_dir, drawn, name):
    series = logged_series(run_dir)
    for ax in drawn[name].axes:
        lines = [(np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
                 for ln in ax.get_lines()]  # fmt: skip
        assert any(
            lx.shape == sx.shape and np.allclose(lx, sx) and np.allclose(ly, sy, equal_nan=True)
            for lx, ly in lines
            for sx, sy in series
        ), f"{name}: panel {ax.get_title()!r} draws no logged series"


def test_validation_plot_draws_truth_and_predicted_boxes_in_pixels(run_dir, drawn):
    samples = list(read_records(run_dir, "val_samples"))
    size = np.load(run_dir / VAL_SAMPLES_NAME)["images"].shape[-1]
    axes = np.array(drawn["val_predictions.png"].axes).reshape(-1, len(samples))  # [rows, cols]
    n_boxes = 0
    for col, record in enumerate(samples):  # 2 epochs: every epoch gets a column
        for row, ax in enumerate(axes[:, col]):
            drawn_boxes = sorted(
                (p.get_x(), p.get_y(), p.get_x() + p.get_width(), p.get_y() + p.get_height())
                for p in ax.patches
                if isinstance(p, Rectangle)
            )
            expected = sorted(
                tuple(v * size for v in box) for box in record["truth"][row] + record["boxes"][row]
            )
            assert np.allclose(drawn_boxes, expected), f"row {row}, epoch {record['epoch']}"
            n_boxes += len(expected)
    assert n_boxes > 0  # the run's validation images have truth boxes to draw


def test_plot_command_rewrites_every_plot(run_dir, capsys):
    for name in EXPECTED:
        (run_dir / PLOTS_DIR / name).unlink()
    assert main(["plot", str(run_dir)]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in printed) == sorted(EXPECTED)
    for name in EXPECTED:
        assert_real_png(run_dir / PLOTS_DIR / name)


def test_plot_command_on_a_folder_without_metrics_exits_2_naming_the_file(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "metrics.jsonl" in err and str(tmp_path) in err


def test_plot_command_on_a_missing_folder_exits_2(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_threshold_plot_draws_the_best_epochs_sweep_and_its_chosen_threshold(run_dir, drawn):
    epochs = list(read_records(run_dir, "epoch"))
    best = max(epochs, key=lambda r: r["val_mean_iou"])
    sweep = next(r for r in read_records(run_dir, "threshold_sweep") if r["epoch"] == best["epoch"])
    ax = drawn["threshold.png"].axes[0]
    curves = {line.get_label(): line for line in ax.get_lines() if len(line.get_xdata()) > 2}
    for key, label in (("rsna_map", "RSNA mAP"), ("precision", "precision"), ("recall", "recall")):
        np.testing.assert_allclose(curves[label].get_xdata(), sweep["thresholds"])
        np.testing.assert_allclose(curves[label].get_ydata(), sweep[key], equal_nan=True)
    chosen = [line for line in ax.get_lines() if line.get_label().startswith("chosen")]
    assert chosen[0].get_xdata()[0] == best["val_score_threshold"] == sweep["best_threshold"]
