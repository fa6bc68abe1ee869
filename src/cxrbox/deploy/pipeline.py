"""From a checkpoint to deployable files: FP32 ONNX, int8 ONNX and their parity report.

`export_checkpoint` is what `cxrbox export` runs: export (`cxrbox.deploy.onnx_export`), quantize on
the run's training images through the one preprocessing path (`cxrbox.deploy.quantize`,
`cxrbox.deploy.parity.calibration_images`), then compare all models on the run's validation set
(`cxrbox.deploy.parity`). Each file is written atomically. Each phase is logged (logger
`cxrbox.deploy.pipeline`, INFO: `cxrbox export` shows it on stderr) with the progress of its
images or steps (`cxrbox.progress`), and the number of calibration images actually used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrbox.deploy import parity
from cxrbox.deploy.inference import load_trained_model
from cxrbox.deploy.onnx_export import export_onnx
from cxrbox.deploy.parity import (
    Int8Deployer,
    compare_models,
    format_report,
    top_box_agreement,
    write_report,
)
from cxrbox.deploy.quantize import DEFAULT_SETTINGS, QuantSettings, quantize_int8
from cxrbox.evaluation.evaluate import folder_loader

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    report_text: str = ""


def int8_path(fp32_path: Path) -> Path:
    """model.onnx -> model.int8.onnx"""
    return fp32_path.with_suffix(".int8.onnx")


def export_checkpoint(
    checkpoint: str | Path,
    out: Path,
    *,
    int8: bool = False,
    calibration_n: int = 256,
    calibration_images: str | Path | None = None,
    calibration_labels: str | Path | None = None,
    report: bool = True,
    settings: QuantSettings = DEFAULT_SETTINGS,
    probe: bool = True,
) -> ExportResult:
    """Write `out` (FP32), with `int8` also `out.int8.onnx`, and the parity report files."""
    from cxrbox.data.labels import read_rsna_labels
    from cxrbox.data.loaders import resolve_splits
    from cxrbox.deploy.onnx_model import OnnxModel
    from cxrbox.diagnostics.probes import check_position_sensitivity

    model, config, coding = load_trained_model(checkpoint)
    result = ExportResult()
    log.info("exporting %s to %s (FP32)", checkpoint, out)
    result.files.append(export_onnx(model, config, coding, out))
    models: dict[str, Any] = {"pytorch_fp32": model, "onnx_fp32": OnnxModel(out)}
    if int8:
        labels = read_rsna_labels(calibration_labels) if calibration_labels else None
        calibration = parity.calibration_images(
            config, calibration_n, calibration_images, labels, progress="calibration images"
        )
        log.info(calibration_note(len(calibration), calibration_n, calibration_labels))
        result.files.append(
            quantize_int8(out, int8_path(out), calibration, settings, progress="int8 calibration")
        )
        models["onnx_int8"] = OnnxModel(int8_path(out))
    if not report:
        return result
    splits = resolve_splits(config)
    loader = folder_loader(splits.val_images, splits.val_labels, config)
    log.info(
        "parity report: %d models on %d validation images", len(models), len(splits.val_labels)
    )
    report_data, predictions = compare_models(models, loader, config, coding, progress=True)
    report_data["n_images"] = len(splits.val_labels)
    report_data["checkpoint"] = str(checkpoint)
    if int8:
        report_data["quantization"] = {
            "settings": settings.name(),
            "calibration_images": len(calibration),
            "calibration_images_asked": calibration_n,
        }
        report_data["top_box_iou"] = top_box_agreement(
            predictions["onnx_fp32"], predictions["onnx_int8"]
        )
        if probe:
            log.info("int8 position probe: trains a small model, exports and quantizes it")
            check = check_position_sensitivity(
                config, deploy=Int8Deployer(settings), progress="int8 position probe"
            )
            report_data["position_probe_int8"] = check.as_dict()
    json_path, png_path = out.with_suffix(".report.json"), out.with_suffix(".report.png")
    write_report(report_data, json_path, png_path)
    result.files += [json_path, png_path]
    result.report, result.report_text = report_data, format_report(report_data)
    return result


def calibration_note(used: int, asked: int, labels: str | Path | None) -> str:
    """How many calibration images were used, and why fewer than asked."""
    note = f"int8 calibration on {used} image(s)"
    if used < asked:
        source = labels or "the run's training split"
        note += f" ({asked} asked; {source} has only {used})"
    return note
