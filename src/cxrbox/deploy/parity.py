"""Parity of deployed models: PyTorch FP32 vs ONNX FP32 vs ONNX int8 on the validation set.

Every model goes through the same `cxrbox.evaluation.evaluate.predict_batches` (one decode, one set
of metrics). The report holds, per model, mean IoU, corner MAE (px), RSNA mAP and precision /
recall at the score threshold; per exported model, the max |raw difference| and the cosine
similarity of its raw outputs to PyTorch's; the IoU between the FP32 and the int8 top box per
image (median, 5th percentile); and the position probe (`check_position_sensitivity`) run
through an int8 export, so quantization cannot bring the stall back unnoticed.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from cxrbox.atomic_write import atomic_path
from cxrbox.boxes import box_iou
from cxrbox.config import TrainConfig
from cxrbox.deploy.quantize import DEFAULT_SETTINGS, QuantSettings
from cxrbox.evaluation.evaluate import (
    ImagePrediction,
    evaluate_image_predictions,
    flat_metrics,
    folder_loader,
    predict_batches,
)
from cxrbox.modeling.decode import GridCoding
from cxrbox.progress import track

RawModel = Callable[[Tensor], Tensor]
MATCH_IOU = 0.5


@dataclass(frozen=True)
class Int8Deployer:
    """`deploy(model, config, coding, calibration)`: export to ONNX, quantize, open with ORT.

    The files live in a temporary folder; ORT holds the model in memory. `calibration`
    (Tensor[N, 1, S, S]) replaces the run's training images for tiny probe models.
    """

    settings: QuantSettings = DEFAULT_SETTINGS

    def __call__(
        self, model: nn.Module, config: TrainConfig, coding: GridCoding, calibration: Tensor
    ) -> RawModel:
        from cxrbox.deploy.onnx_export import export_onnx
        from cxrbox.deploy.onnx_model import OnnxModel
        from cxrbox.deploy.quantize import quantize_int8

        with tempfile.TemporaryDirectory(prefix="cxrbox-int8-") as folder:
            fp32 = export_onnx(model, config, coding, Path(folder) / "model.onnx")
            int8 = quantize_int8(
                fp32, Path(folder) / "model.int8.onnx", calibration.numpy(), self.settings
            )
            return OnnxModel(int8)


class _Recorder:
    """Wraps a model and keeps its raw outputs (for raw-difference statistics)."""

    def __init__(self, model: RawModel) -> None:
        self.model = model
        self.raw: list[Tensor] = []

    def __call__(self, images: Tensor) -> Tensor:
        out = self.model(images).float()
        self.raw.append(out.detach().cpu())
        return out


def calibration_images(
    config: TrainConfig,
    n: int,
    images: str | Path | None = None,
    labels: dict | None = None,
    progress: str | None = None,
) -> np.ndarray:
    """Up to `n` images [n, 1, S, S] float32 through the eval preprocessing: fewer when the
    source has fewer (the caller reports how many were used).

    From `images` / `labels` when given, else from the run's own training split. `progress`: a
    label to show the images read under on stderr (`cxrbox.progress`).
    """
    if images is None or labels is None:
        from cxrbox.data.loaders import resolve_splits

        splits = resolve_splits(config)
        images, labels = splits.source.images, splits.train_labels
    chosen = dict(list(labels.items())[:n])
    loader = folder_loader(images, chosen, config)
    batches: Iterable[Any] = loader
    if progress is not None:
        batches = track(loader, len(chosen), progress, "img", size=lambda b: len(b.patient_ids))
    return torch.cat([batch.images for batch in batches]).numpy()


def precision_recall(
    predictions: list[ImagePrediction], score_threshold: float
) -> tuple[float, float]:
    """Detections >= threshold matched greedily (by score) to truth boxes at IoU >= 0.5."""
    n_det = n_true = n_hit = 0
    for p in predictions:
        keep = p.detections.scores >= score_threshold
        boxes = p.detections.boxes[keep]
        n_det += len(boxes)
        n_true += len(p.truth)
        if len(boxes) == 0 or len(p.truth) == 0:
            continue
        iou = box_iou(boxes, p.truth)  # [D, T]
        used = torch.zeros(len(p.truth), dtype=torch.bool)
        for row in iou:
            row = row.masked_fill(used, -1.0)
            best = int(row.argmax())
            if float(row[best]) >= MATCH_IOU:
                used[best] = True
                n_hit += 1
    precision = n_hit / n_det if n_det else float("nan")
    recall = n_hit / n_true if n_true else float("nan")
    return precision, recall


def _raw_agreement(reference: list[Tensor], other: list[Tensor]) -> dict[str, float]:
    a, b = torch.cat(reference).flatten().double(), torch.cat(other).flatten().double()
    cosine = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    return {"max_abs_diff": float((a - b).abs().max()), "cosine": cosine}


def _top_box_iou(first: list[ImagePrediction], second: list[ImagePrediction]) -> np.ndarray:
    ious = []
    for p, q in zip(first, second, strict=True):
        if len(p.detections.boxes) and len(q.detections.boxes):
            ious.append(float(box_iou(p.detections.boxes[:1], q.detections.boxes[:1])[0, 0]))
        else:
            ious.append(0.0)
    return np.asarray(ious)


def compare_models(
    models: dict[str, RawModel],
    loader: DataLoader,
    config: TrainConfig,
    coding: GridCoding,
    reference: str = "pytorch_fp32",
    progress: bool = False,
) -> tuple[dict[str, Any], dict[str, list[ImagePrediction]]]:
    """Metrics of each model on `loader` and raw agreement with `reference`; with `progress`,
    the images done per model on stderr."""
    report: dict[str, Any] = {"models": {}, "raw_vs_" + reference: {}}
    raws: dict[str, list[Tensor]] = {}
    predictions: dict[str, list[ImagePrediction]] = {}
    for name, model in models.items():
        recorder = _Recorder(model)
        if isinstance(model, nn.Module):
            model.eval()
        label = f"parity {name}" if progress else None
        preds = list(
            predict_batches(recorder, loader, coding, config, torch.device("cpu"), progress=label)
        )
        result = evaluate_image_predictions(preds, config.score_threshold)
        precision, recall = precision_recall(preds, config.score_threshold)
        report["models"][name] = {
            **flat_metrics(result),
            "precision": precision,
            "recall": recall,
        }
        raws[name], predictions[name] = recorder.raw, preds
    for name in models:
        if name != reference and reference in raws:
            report["raw_vs_" + reference][name] = _raw_agreement(raws[reference], raws[name])
    return report, predictions


def top_box_agreement(fp32: list[ImagePrediction], int8: list[ImagePrediction]) -> dict[str, float]:
    """IoU of the FP32 and the int8 top box per image: median, 5th percentile, the values."""
    ious = _top_box_iou(fp32, int8)
    return {
        "median": float(np.median(ious)),
        "p5": float(np.percentile(ious, 5)),
        "per_image": ious.tolist(),
    }


def write_report(report: dict[str, Any], json_path: Path, png_path: Path) -> None:
    """The JSON report and a PNG: metrics per model and FP32-vs-int8 top-box IoU."""
    from cxrbox.figures import pyplot, save_figure

    text = json.dumps(report, indent=2, default=float) + "\n"
    with atomic_path(json_path, suffix=".json") as tmp:
        tmp.write_text(text)
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = list(report["models"])
    keys = ("mean_iou", "rsna_map", "precision", "recall")
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [report["models"][name][k] for k in keys]
        left.bar(np.arange(len(keys)) + i * width, values, width, label=name)
    left.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys)
    left.set_ylim(0, 1)
    left.legend(fontsize=8)
    left.set_title("validation metrics per model")
    ious = report.get("top_box_iou", {}).get("per_image")
    if ious:
        right.hist(ious, bins=20, range=(0, 1))
        right.set_title("IoU of FP32 vs int8 top box per image")
    else:
        right.set_axis_off()
    save_figure(fig, png_path)


def format_report(report: dict[str, Any]) -> str:
    """The report as a few printable lines (a table per model)."""
    lines = [f"{'model':14s} {'mean IoU':>9s} {'MAE px':>8s} {'RSNA mAP':>9s} {'prec':>6s} "
             f"{'recall':>6s}"]  # fmt: skip
    for name, m in report["models"].items():
        lines.append(
            f"{name:14s} {m['mean_iou']:9.4f} {m['mae_px']:8.2f} {m['rsna_map']:9.4f} "
            f"{m['precision']:6.3f} {m['recall']:6.3f}"
        )
    for name, agree in report.get("raw_vs_pytorch_fp32", {}).items():
        lines.append(
            f"raw {name} vs pytorch_fp32: max |diff| {agree['max_abs_diff']:.2e}, "
            f"cosine {agree['cosine']:.6f}"
        )
    if "quantization" in report:
        q = report["quantization"]
        asked = q.get("calibration_images_asked", q["calibration_images"])
        lines.append(
            f"int8 {q['settings']}: calibrated on {q['calibration_images']} images ({asked} asked)"
        )
    if "top_box_iou" in report:
        t = report["top_box_iou"]
        lines.append(f"FP32 vs int8 top-box IoU: median {t['median']:.4f}, p5 {t['p5']:.4f}")
    if "position_probe_int8" in report:
        p = report["position_probe_int8"]
        lines.append(f"position probe (int8): {p['status']}: {p['message']}")
    return "\n".join(lines)
