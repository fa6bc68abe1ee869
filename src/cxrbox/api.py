"""The Python API: what `cxrbox train/eval/predict/export/synth` do, as functions that return
typed results. `import cxrbox` re-exports every name here, lazily (nothing heavy is imported
until one is used).

A whole round trip on a small synthetic set (the examples of the functions below continue it;
they run as doctests in the unit tests, tests/unit/test_api.py):

Examples:
    >>> import tempfile
    >>> import cxrbox
    >>> work = tempfile.mkdtemp()
    >>> data = cxrbox.synth(f"{work}/data", 24, image_size=128, positive_fraction=0.5)
    >>> config = cxrbox.TrainConfig(
    ...     images=str(data.images_dir), labels=str(data.labels_csv), out=f"{work}/run",
    ...     image_size=64, epochs=1, batch_size=8, width=0.5, plots=False,
    ... )
    >>> result = cxrbox.train(config, progress=False)
    >>> model = cxrbox.load_model(result.run_dir / "best.pt")
    >>> predictions = model.predict(data.images_dir)
    >>> len(predictions)
    24

Users of Ultralytics will find the same steps (`YOLO(...).train()`, `.val()`, `.predict()`,
`.export()`) as `train`, `evaluate`, `predict` and `export`; a model file, `.pt` or `.onnx`, is
opened with `load_model`. Errors are `cxrbox.errors.CxrboxError` subclasses whose message names
the file or field at fault.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrbox.config import TrainConfig, config_from_dict, load_config
from cxrbox.data.synthetic.kaggle_archive import KaggleArchiveSummary
from cxrbox.data.synthetic.rsna_like import SyntheticSummary
from cxrbox.deploy.inference import is_onnx, load_inference_model
from cxrbox.deploy.pipeline import ExportResult
from cxrbox.engine.train import TrainResult
from cxrbox.errors import ConfigError, DataError
from cxrbox.evaluation.metrics import EvalResult
from cxrbox.modeling.decode import GridCoding

__all__ = [
    "EvalResult",
    "ExportResult",
    "Model",
    "Prediction",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "export",
    "load_model",
    "predict",
    "synth",
    "train",
]


def synth(
    out: str | Path,
    n_images: int,
    *,
    seed: int = 0,
    image_size: int = 1024,
    positive_fraction: float = 1 / 3,
    layout: str = "train",
    n_test: int | None = None,
    overwrite: bool = False,
) -> SyntheticSummary | KaggleArchiveSummary:
    """Write a synthetic RSNA-format data set, as `cxrbox synth` does.

    layout "train": `out/stage_2_train_images/<patientId>.dcm` and
    `out/stage_2_train_labels.csv` (a SyntheticSummary; `images_dir`, `labels_csv`).
    layout "kaggle": the whole Kaggle archive, with `n_test` (default n_images // 9, at least
    1) unlabelled images in `stage_2_test_images/` and the sample submission
    (a KaggleArchiveSummary; its `train` is the SyntheticSummary of the labelled part).
    The same seed gives the same bytes.

    Examples:
        >>> archive = cxrbox.synth(f"{work}/kaggle", 9, image_size=64, layout="kaggle")
        >>> archive.n_test, archive.sample_submission_csv.name
        (1, 'stage_2_sample_submission.csv')
    """
    common: dict[str, Any] = dict(
        image_size=image_size, positive_fraction=positive_fraction, overwrite=overwrite
    )
    if layout == "kaggle":
        from cxrbox.data.synthetic.kaggle_archive import write_kaggle_archive

        n_test = max(1, n_images // 9) if n_test is None else n_test
        return write_kaggle_archive(out, n_images, n_test, seed, **common)
    if layout != "train":
        raise ConfigError(f"layout must be 'train' or 'kaggle', got {layout!r}")
    if n_test is not None:
        raise ConfigError("n_test is for layout='kaggle' (the train layout has no test images)")
    from cxrbox.data.synthetic.rsna_like import write_rsna_like

    return write_rsna_like(out, n_images, seed, **common)


def train(
    config: TrainConfig | str | Path | None = None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    **overrides: Any,
) -> TrainResult:
    """Train a box regressor, as `cxrbox train` does; returns the run's TrainResult.

    config: a TrainConfig, a TOML/JSON file of its fields, or None for the defaults (the
    built-in synthetic data set). `overrides` replace fields, e.g. `train(epochs=3)`; an
    unknown name is a ConfigError listing the known ones. resume: a run directory to continue
    exactly (its saved config is used). progress: a bar on a terminal.
    TrainResult: `run_dir` (holding best.pt, last.pt, metrics.jsonl, config.json), `epochs`
    (one dict of validation metrics per epoch: val_mean_iou, val_rsna_map, val_coco_map_50,
    val_score_threshold, ...) and `events` (the monitors' alarms).

    Examples:
        >>> result.run_dir.name, len(result.epochs)
        ('run', 1)
        >>> sorted(k for k in result.epochs[-1] if "map" in k)  # doctest: +NORMALIZE_WHITESPACE
        ['val_coco_map_50', 'val_coco_map_50_95', 'val_rsna_map', 'val_rsna_map_config_threshold']
        >>> cxrbox.train(config, epochs=0)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        cxrbox.errors.ConfigError: epochs must be >= 1, got 0
    """
    from cxrbox.engine.train import train as run_training

    if isinstance(config, str | Path):
        config = load_config(config, overrides)
    else:
        base = (config or TrainConfig()).to_dict()
        config = config_from_dict({**base, **overrides}, source="cxrbox.train()")
    return run_training(config, resume=resume, progress=progress)


@dataclass(frozen=True)
class Model:
    """A trained model opened for inference by `load_model`: a `.pt` checkpoint or an exported
    `.onnx`, both decoded by the same code. `network(images [B, 1, S, S]) -> raw [B, 5, Hg, Wg]`;
    `config` is the run's TrainConfig (its score_threshold the one tuned on validation, when
    it was); `coding` the box decoding.

    Examples:
        >>> model.kind, model.image_size, 0.0 <= model.score_threshold <= 1.0
        ('pytorch', 64, True)
    """

    path: Path
    network: Callable[[torch.Tensor], torch.Tensor]
    config: TrainConfig
    coding: GridCoding
    device: str = "cpu"

    @property
    def kind(self) -> str:
        """The model file's kind: "onnx" or "pytorch"."""
        return "onnx" if is_onnx(self.path) else "pytorch"

    @property
    def score_threshold(self) -> float:
        """The threshold `predict` keeps boxes at unless told otherwise."""
        return self.config.score_threshold

    @property
    def image_size(self) -> int:
        """The side, in pixels, images are resized to before the network."""
        return self.config.image_size

    def predict(
        self, images: str | Path, *, score_threshold: float | None = None
    ) -> list[Prediction]:
        """`predict(self, images, ...)`."""
        return predict(self, images, score_threshold=score_threshold)

    def evaluate(
        self,
        images: str | Path,
        labels: str | Path | Mapping[str, Any],
        *,
        score_threshold: float | None = None,
    ) -> EvalResult:
        """`evaluate(self, images, labels, ...)`."""
        return evaluate(self, images, labels, score_threshold=score_threshold)


def load_model(path: str | Path, device: str = "cpu") -> Model:
    """Open a `.pt` checkpoint (best.pt, last.pt) or an exported `.onnx` model for inference.

    The checkpoint's model holds its EMA weights when the run kept them. device: "cpu" or
    "cuda" (an .onnx model runs on ONNX Runtime's CPU provider).

    Examples:
        >>> model = cxrbox.load_model(result.run_dir / "best.pt")
        >>> model.kind
        'pytorch'
    """
    network, config, coding = load_inference_model(path, device)
    return Model(Path(path), network, config, coding, "cpu" if is_onnx(path) else device)


def _opened(model: str | Path | Model, device: str) -> Model:
    return model if isinstance(model, Model) else load_model(model, device)


def _with_threshold(model: Model, score_threshold: float | None) -> TrainConfig:
    if score_threshold is None:
        return model.config
    if not 0.0 <= score_threshold <= 1.0:
        raise ConfigError(f"score_threshold must be in [0, 1], got {score_threshold}")
    return model.config.replace(score_threshold=score_threshold)


@dataclass(frozen=True)
class Prediction:
    """One image's boxes, as `cxrbox predict` writes them.

    boxes (ndarray[N, 4] float64): xyxy in pixels of the original image, by descending score;
    scores (ndarray[N]): in [0, 1], each >= the score threshold used; image_size: the original
    (height, width); prediction_string: the RSNA submission's "conf x y w h ..." (rounded
    pixels; "" without boxes).
    """

    patient_id: str
    boxes: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]
    prediction_string: str


def predict(
    model: str | Path | Model,
    images: str | Path,
    *,
    score_threshold: float | None = None,
    device: str = "cpu",
) -> list[Prediction]:
    """Boxes for every `<patientId>.dcm` of a folder (sorted by name), or for one `.dcm` file.

    model: a model file or a `load_model` Model. score_threshold: keep boxes scoring at least
    this (default: the model's, tuned on validation when it was). Boxes are in pixels of each
    original image (see Prediction).

    Examples:
        >>> predictions = cxrbox.predict(model, data.images_dir, score_threshold=0.0)
        >>> first = predictions[0]
        >>> first.boxes.shape[1], first.image_size, len(first.scores) == len(first.boxes)
        (4, (128, 128), True)
        >>> bool(first.boxes.max() > 1.0 and (first.boxes <= 128).all())  # pixels, not [0, 1]
        True
    """
    from cxrbox.data.dicom import find_dicom_files
    from cxrbox.evaluation.evaluate import folder_loader, predict_batches
    from cxrbox.modeling.decode import to_rsna_prediction_string

    opened = _opened(model, device)
    config = _with_threshold(opened, score_threshold)
    path = Path(images)
    folder, ids = (path.parent, [path.stem]) if path.suffix == ".dcm" else (path, None)
    if ids is None:
        ids = list(find_dicom_files(folder))
        if not ids:
            raise DataError(f"{folder}: no *.dcm files to predict")
    elif not path.is_file():
        raise DataError(f"{path}: no such DICOM file")
    unlabelled = {pid: np.zeros((0, 4), np.float32) for pid in ids}
    loader = folder_loader(folder, unlabelled, config)
    results = []
    for pred in predict_batches(
        opened.network, loader, opened.coding, config, torch.device(opened.device),
        config.score_threshold,
    ):  # fmt: skip
        height, width = pred.orig_size
        scale = np.array([width, height, width, height], dtype=np.float64)
        results.append(
            Prediction(
                patient_id=pred.patient_id,
                boxes=pred.detections.boxes.numpy().astype(np.float64) * scale,
                scores=pred.detections.scores.numpy(),
                image_size=(height, width),
                prediction_string=to_rsna_prediction_string(pred.detections, width, height),
            )
        )
    return results


def evaluate(
    model: str | Path | Model,
    images: str | Path,
    labels: str | Path | Mapping[str, Any],
    *,
    score_threshold: float | None = None,
    device: str = "cpu",
) -> EvalResult:
    """Metrics of a model on labelled images, as `cxrbox eval` prints them.

    labels: an RSNA label CSV (patientId,x,y,width,height,Target) or {patientId: boxes
    [N, 4] xyxy pixels}. EvalResult: mean_iou, mae_px (corner error, original pixels),
    rsna_map (at score_threshold, default the model's), coco_map_50 and coco_map_50_95 (every
    detection, pycocotools), n_images, n_positive, n_missed, prediction_std (near 0: collapse).

    Examples:
        >>> metrics = cxrbox.evaluate(model, data.images_dir, data.labels_csv)
        >>> metrics.n_images, 0.0 <= metrics.coco_map_50_95 <= metrics.coco_map_50 <= 1.0
        (24, True)
        >>> cxrbox.evaluate(model, data.images_dir, data.labels_csv, score_threshold=1.0).rsna_map
        0.0
    """
    from cxrbox.data.labels import read_rsna_labels
    from cxrbox.evaluation.evaluate import evaluate as run_evaluation
    from cxrbox.evaluation.evaluate import folder_loader

    opened = _opened(model, device)
    config = _with_threshold(opened, score_threshold)
    truth = read_rsna_labels(labels) if isinstance(labels, str | Path) else dict(labels)
    loader = folder_loader(images, truth, config)
    return run_evaluation(
        opened.network, loader, opened.coding, config, torch.device(opened.device)
    )


def export(
    checkpoint: str | Path,
    out: str | Path,
    *,
    int8: bool = False,
    calibration_n: int = 256,
    report: bool = True,
    probe: bool = True,
) -> ExportResult:
    """Export a checkpoint to ONNX (and int8 with `int8`), as `cxrbox export` does.

    report: also compare PyTorch and ONNX on the run's validation set (out.report.json/.png;
    needs the run's data). probe: with int8, also train the int8 position probe (minutes).
    ExportResult: `files` written, `report` (dict) and `report_text`.

    Examples:
        >>> exported = cxrbox.export(result.run_dir / "best.pt", f"{work}/model.onnx", report=False)
        >>> [p.name for p in exported.files]
        ['model.onnx']
        >>> onnx_model = cxrbox.load_model(f"{work}/model.onnx")
        >>> onnx_model.kind, len(onnx_model.predict(data.images_dir)) == len(predictions)
        ('onnx', True)
    """
    from cxrbox.deploy.pipeline import export_checkpoint

    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"out must end in .onnx, got {out}")
    if calibration_n < 1:
        raise ConfigError(f"calibration_n must be >= 1, got {calibration_n}")
    return export_checkpoint(
        checkpoint, out, int8=int8, calibration_n=calibration_n, report=report, probe=probe
    )
