"""Training plots (PNG) from a run directory: what a person looks at to trust a run.

`write_plots(run_dir)` reads `metrics.jsonl` (and `val_samples.npz` for the prediction grid) and
writes into `run_dir/plots/`:
- `lr.png`: LR per param group per step, with the warmup boundary;
- `losses.png`: each loss branch per step, and the validation metrics per epoch;
- `prediction_spread.png`: batch std of the top box's centre and size (collapse when ~0), the
  validation's centre spread per epoch and a red line at each collapse alarm;
- `gradients.png`: gradient norm before clipping (with the clip level) and update/weight ratio;
- `val_predictions.png`: validation images with truth (green) and top predictions (red) at
  several epochs: predictions vs ground truth over time (one epoch's column: `draw_val_epoch`,
  which also draws the TensorBoard sink's per-epoch image, `val_epoch_figure`);
- `threshold.png`: validation RSNA mAP, precision and recall against the score threshold at the
  epoch `best.pt` holds, with the threshold it stores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxrbox.engine.runlog import read_records
from cxrbox.figures import pyplot, save_figure

VAL_SAMPLES_NAME = "val_samples.npz"
PLOTS_DIR = "plots"


def _series(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pairs, strict=True)
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def plot_lr(steps: list[dict], config: dict, out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    groups = sorted(k for k in steps[0] if k.startswith("lr_group")) if steps else []
    for key in groups or ["lr"]:
        ax.plot(*_series(steps, key), label=key.replace("lr_group", "param group "))
    warmup = config.get("warmup_steps")
    if warmup:
        ax.axvline(warmup, color="grey", linestyle="--", label=f"end of warmup (step {warmup})")
    ax.set(title="Learning rate per step (linear warmup, then cosine)", xlabel="step", ylabel="LR")
    ax.legend()
    return save_figure(fig, out)


def plot_losses(steps: list[dict], epochs: list[dict], out: Path) -> Path:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for key in ("loss", "loss_objectness", "loss_iou", "loss_corner", "loss_center_size"):
        left.plot(
            *_series(steps, key), label=key.replace("loss_", "") if key != "loss" else "total"
        )
    left.set(title="Training loss per branch (unweighted)", xlabel="step", ylabel="loss")
    left.set_yscale("log")
    left.legend()
    ep = [r["epoch"] for r in epochs]
    for key, label in (("val_mean_iou", "mean IoU"), ("val_rsna_map", "RSNA mAP")):
        right.plot(ep, [r.get(key) for r in epochs], marker="o", label=label)
    right.set(title="Validation per epoch", xlabel="epoch", ylabel="score", ylim=(0, 1))
    right.legend()
    return save_figure(fig, out)


def plot_prediction_spread(
    steps: list[dict],
    collapse_std: float,
    out: Path,
    epochs: Sequence[dict] = (),
    alarms: Sequence[dict] = (),
) -> Path:
    """Training batches' spread per step, validation's centre spread at each epoch's last step,
    and a vertical red line at the step of each collapse alarm (`alarms`: event records)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for key in ("pred_cx_std", "pred_cy_std", "pred_w_std", "pred_h_std"):
        name = key.removeprefix("pred_").removesuffix("_std")
        ax.plot(*_series(steps, key), label=f"std of {name}")
    if epochs:
        ax.plot(
            [r["step"] for r in epochs],
            [max(r["val_std_cx"], r["val_std_cy"]) for r in epochs],
            "ko-",
            label="validation: std of the centre (larger of cx, cy)",
        )
    ax.axhline(collapse_std, color="red", linestyle="--", label=f"collapse alarm ({collapse_std})")
    for i, alarm in enumerate(a for a in alarms if a["name"] == "collapse"):
        label = "collapse alarm raised" if i == 0 else None
        ax.axvline(alarm["step"], color="red", linewidth=2, alpha=0.6, label=label)
    ax.set(
        title="In-batch spread of the top predicted box (0 = same box for every image)",
        xlabel="step",
        ylabel="std (normalized units)",
    )
    ax.legend()
    return save_figure(fig, out)


def plot_gradients(steps: list[dict], grad_clip: float, out: Path) -> Path:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.plot(*_series(steps, "grad_norm"), label="total gradient norm (before clipping)")
    left.axhline(grad_clip, color="red", linestyle="--", label=f"clip level ({grad_clip})")
    left.set(title="Gradient norm", xlabel="step", ylabel="L2 norm")
    left.set_yscale("log")
    left.legend()
    right.plot(*_series(steps, "update_ratio"), color="tab:purple")
    right.set(
        title="Update size: ||w_after - w_before|| / ||w_before||",
        xlabel="step",
        ylabel="relative update",
    )
    right.set_yscale("log")
    return save_figure(fig, out)


def draw_val_epoch(
    axes: Sequence[Any], images: np.ndarray, record: dict[str, Any], score_threshold: float
) -> None:
    """Draw one epoch's validation samples: `images[i]` ([S, S] uint8) on `axes[i]`, with the
    record's truth boxes (green) and top-k predictions (red, with their score).

    Boxes in the record are normalized xyxy, drawn in pixels. The records hold the top-k
    predictions whatever their score (mean IoU scores them that way); those under the
    record's score threshold (tuned at that epoch; `score_threshold` for older records), which
    `predict` would not output, are drawn dotted.
    """
    from matplotlib.patches import Rectangle

    score_threshold = record.get("score_threshold", score_threshold)
    size = images.shape[-1]
    for row, ax in enumerate(axes):
        ax.imshow(images[row], cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        for box in record["truth"][row]:
            x1, y1, x2, y2 = (v * size for v in box)
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=1.5))
        for box, score in zip(record["boxes"][row], record["scores"][row], strict=True):
            x1, y1, x2, y2 = (v * size for v in box)
            kept = score >= score_threshold
            style: dict[str, Any] = (
                {"lw": 1.2, "ls": "-"} if kept else {"lw": 0.8, "ls": ":", "alpha": 0.6}
            )
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="red", **style))
            if kept:
                ax.text(x1, y1, f"{score:.2f}", color="red", fontsize=6, va="bottom")


def _val_caption(score_threshold: float) -> str:
    return (
        "truth (green), predictions with their score (red);\n"
        f"dotted: top-k predictions scoring under the threshold {score_threshold}"
    )


def plot_val_predictions(
    run_dir: Path, samples: list[dict], score_threshold: float, out: Path, columns: int = 4
) -> Path:
    """Rows: validation images; columns: epochs spread over the run (`draw_val_epoch` each)."""
    plt = pyplot()
    data = np.load(run_dir / VAL_SAMPLES_NAME)
    images = data["images"]  # [n, S, S] uint8
    chosen = [
        samples[round(i)] for i in np.linspace(0, len(samples) - 1, min(columns, len(samples)))
    ]
    n_rows, n_cols = images.shape[0], len(chosen)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols, 2.6 * n_rows), squeeze=False)
    for col, record in enumerate(chosen):
        draw_val_epoch(axes[:, col], images, record, score_threshold)
        axes[0][col].set_title(f"epoch {record['epoch']}", fontsize=9)
    fig.suptitle(f"Validation images over epochs: {_val_caption(score_threshold)}")
    return save_figure(fig, out)


def val_epoch_figure(
    images: np.ndarray, record: dict[str, Any], score_threshold: float, columns: int = 3
):
    """One epoch's validation samples (`draw_val_epoch`) in a figure of `columns` images a row;
    `images`: [n, S, S] uint8. What the TensorBoard sink logs at each epoch."""
    plt = pyplot()
    n = images.shape[0]
    n_cols = max(1, min(columns, n))
    n_rows = max(1, -(-n // n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols, 2.6 * n_rows), squeeze=False)
    flat = axes.ravel()  # [n_rows * n_cols]
    draw_val_epoch(flat[:n], images, record, score_threshold)
    for ax in flat[n:]:
        ax.axis("off")
    fig.suptitle(f"Validation, epoch {record['epoch']}: {_val_caption(score_threshold)}")
    fig.tight_layout()
    return fig


def best_epoch(epochs: list[dict]) -> dict | None:
    """The epoch record `best.pt` holds: the first with the highest finite val mean IoU."""
    finite = [r for r in epochs if np.isfinite(r.get("val_mean_iou", np.nan))]
    return max(finite, key=lambda r: r["val_mean_iou"], default=None)


def plot_threshold_sweep(sweep: dict, config_threshold: float, out: Path) -> Path:
    """RSNA mAP, precision and recall against the score threshold of one validation."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("rsna_map", "RSNA mAP"), ("precision", "precision"), ("recall", "recall")):
        ax.plot(sweep["thresholds"], sweep[key], marker=".", label=label)
    best = sweep["best_threshold"]
    best_map = sweep["rsna_map"][sweep["thresholds"].index(best)]
    ax.axvline(best, color="black", label=f"chosen {best:g} (mAP {best_map:.3f})")
    ax.axvline(config_threshold, color="grey", linestyle="--",
               label=f"config score_threshold {config_threshold:g}")  # fmt: skip
    ax.set(
        title=f"Validation at epoch {sweep['epoch']} ({sweep['n_images']} images): boxes scoring "
        ">= threshold\n(precision and recall over boxes, mean over IoU 0.40-0.75)",
        xlabel="score threshold",
        ylim=(0, 1.02),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out)


def write_plots(run_dir: str | Path) -> list[Path]:
    """Write every plot the run's records allow; returns the PNG paths."""
    run_dir = Path(run_dir)
    out = run_dir / PLOTS_DIR
    out.mkdir(exist_ok=True)
    records = list(read_records(run_dir))
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    samples = [r for r in records if r["kind"] == "val_samples"]
    sweeps = {r["epoch"]: r for r in records if r["kind"] == "threshold_sweep"}
    alarms = [r for r in records if r["kind"] == "event"]
    config = json.loads((run_dir / "config.json").read_text())
    config.update(next((r for r in records if r["kind"] == "run"), {}))
    written = []
    if steps:
        written.append(plot_lr(steps, config, out / "lr.png"))
        written.append(plot_losses(steps, epochs, out / "losses.png"))
        written.append(
            plot_prediction_spread(
                steps, config["collapse_std"], out / "prediction_spread.png", epochs, alarms
            )
        )
        written.append(plot_gradients(steps, config["grad_clip"], out / "gradients.png"))
    best = best_epoch(epochs)
    if samples and (run_dir / VAL_SAMPLES_NAME).exists():
        threshold = (best or {}).get("val_score_threshold", config["score_threshold"])
        written.append(
            plot_val_predictions(run_dir, samples, threshold, out / "val_predictions.png")
        )
    if best is not None and best["epoch"] in sweeps:
        written.append(
            plot_threshold_sweep(
                sweeps[best["epoch"]], config["score_threshold"], out / "threshold.png"
            )
        )
    return written
