"""Open any model file for inference: a `.pt` checkpoint or an exported `.onnx` model.

`load_inference_model(path)` returns `(model, config, coding)` where `model(images) -> raw`
maps images Tensor[B, 1, S, S] to the raw head output Tensor[B, 5, Hg, Wg]. Both kinds then go
through the same `cxrbox.evaluation.evaluate.predict_batches`, i.e. the same
`cxrbox.modeling.decode` and
`cxrbox.evaluation.metrics`. The ONNX path builds no PyTorch network: its config and decode coding
come from the file's metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from cxrbox.config import TrainConfig, config_from_saved
from cxrbox.modeling.decode import GridCoding

RawModel = Callable[[Tensor], Tensor]


def is_onnx(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def load_inference_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[RawModel, TrainConfig, GridCoding]:
    """(model in eval mode, its TrainConfig, its GridCoding) from a .pt or .onnx file."""
    if not is_onnx(path):
        from cxrbox.evaluation.evaluate import load_trained_model

        return load_trained_model(path, device)
    from cxrbox.deploy.onnx_model import OnnxModel

    model = OnnxModel(path)
    meta = model.metadata
    config = config_from_saved(meta.config_dict(), source=str(path)).replace(
        channels_last=False,
        device="cpu",
        image_size=meta.image_size,
        score_threshold=meta.score_threshold,
        nms_iou=meta.nms_iou,
        top_k=meta.top_k,
    )
    coding = GridCoding(prior_w=meta.prior_w, prior_h=meta.prior_h, log_clamp=meta.log_clamp)
    return model, config, coding


def score_threshold_source(path: str | Path, model: RawModel | None = None) -> str:
    """Where the score threshold of a .pt or .onnx model file came from, in words. `model`:
    the file's model if already open (an OnnxModel's metadata is then not read again)."""
    if not is_onnx(path):
        from cxrbox.evaluation.evaluate import score_threshold_source as checkpoint_source

        return checkpoint_source(path)
    from cxrbox.deploy.onnx_model import OnnxModel, read_metadata

    meta = model.metadata if isinstance(model, OnnxModel) else read_metadata(path)
    # Exports of checkpoints older than threshold tuning have no such key: not tuned.
    if meta.config_dict().get("tune_score_threshold", False):
        return "tuned on validation before export (in the model's metadata)"
    return "the training config's (in the model's metadata; not tuned on validation)"


def describe_score_threshold(
    path: str | Path, value: float, override: float | None, model: RawModel | None = None
) -> str:
    """One line for `eval` and `predict`: the threshold used and why."""
    if override is not None:
        return f"score threshold {override:g} (--score-threshold; the model's is {value:g})"
    return f"score threshold {value:g} ({score_threshold_source(path, model)})"
