"""Open any model file for inference: a `.pt` checkpoint or an exported `.onnx` model.

The one home for opening a trained model: `eval`, `predict`, `export`, the parity report and
the inference benchmark all come through here.

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
from torch import Tensor, nn

from cxrbox.config import TrainConfig, config_from_saved
from cxrbox.engine.checkpoint import load_checkpoint
from cxrbox.evaluation.threshold import ScoreThreshold
from cxrbox.modeling.decode import GridCoding
from cxrbox.modeling.model import build_model

RawModel = Callable[[Tensor], Tensor]


def is_onnx(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def load_inference_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[RawModel, TrainConfig, GridCoding]:
    """(model in eval mode, its TrainConfig, its GridCoding) from a .pt or .onnx file."""
    if not is_onnx(path):
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


def load_trained_model(
    checkpoint_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, TrainConfig, GridCoding]:
    """Model (eval mode), its TrainConfig and decode coding from a `cxrbox train` checkpoint.

    The model holds the EMA weights when the run kept them (`cxrbox.engine.ema`), else the raw
    ones; the config's score_threshold is the checkpoint's (tuned on validation when it was).
    """
    state = load_checkpoint(checkpoint_path, map_location=device)
    config = config_from_saved(state["config"], source=str(checkpoint_path))
    model = build_model(config.head, config.norm, config.width, stride=config.stride).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.load_state_dict(state["ema"]["weights"] if "ema" in state else state["model"])
    model.eval()
    if "score_threshold" in state:
        threshold = ScoreThreshold.from_record(state["score_threshold"], str(checkpoint_path))
        config = config.replace(score_threshold=threshold.value)
    coding = GridCoding(prior_w=config.prior_size, prior_h=config.prior_size)
    return model, config, coding


def checkpoint_score_threshold(checkpoint_path: str | Path) -> ScoreThreshold:
    """A checkpoint's score threshold; checkpoints older than tuning carry their config's."""
    state = load_checkpoint(checkpoint_path)
    if "score_threshold" not in state:
        config = config_from_saved(state["config"], source=str(checkpoint_path))
        return ScoreThreshold.fixed(config.score_threshold)
    return ScoreThreshold.from_record(state["score_threshold"], str(checkpoint_path))


def score_threshold_source(path: str | Path, model: RawModel | None = None) -> str:
    """Where the score threshold of a .pt or .onnx model file came from, in words. `model`:
    the file's model if already open (an OnnxModel's metadata is then not read again)."""
    if not is_onnx(path):
        return checkpoint_score_threshold(path).source()
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
