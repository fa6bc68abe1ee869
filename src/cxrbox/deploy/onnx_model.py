"""An exported cxrbox model run by ONNX Runtime: images in, the raw head output out.

The ONNX graph ends at the head's raw output `[B, 5, Hg, Wg]` (see `cxrbox.modeling.decode`); the
decode and post-processing stay outside it, so an exported model goes through exactly the decode the
trainer uses. Everything needed to preprocess and decode is stored in the file's
`metadata_props` under `METADATA_KEYS` (`ModelMetadata`), so a model describes itself.

This module needs onnxruntime and numpy only (plus torch tensors for the shared decode); it
never builds the PyTorch network.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cxrbox.errors import ModelFileError

__all__ = ["FORMAT_VERSION", "ModelMetadata", "OnnxModel", "read_metadata"]

FORMAT_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAME = "raw"
PREFIX = "cxrbox."


@dataclass(frozen=True)
class ModelMetadata:
    """What an exported model needs to be preprocessed and decoded, stored in the ONNX file.

    image_size: side S of the square input [B, 1, S, S] (float32 in [0, 1], see
    `cxrbox.data.preprocess`); prior_w, prior_h, log_clamp: the `GridCoding`; score_threshold,
    nms_iou, top_k: `cxrbox.modeling.decode.postprocess`; head: the model head; intensity: the DICOM
    intensity rule; precision: "fp32" or "int8"; config: the run's TrainConfig as JSON.
    """

    image_size: int
    channels: int
    prior_w: float
    prior_h: float
    log_clamp: float
    score_threshold: float
    nms_iou: float
    top_k: int
    head: str
    intensity: str
    precision: str
    cxrbox_version: str
    format_version: int
    config: str

    def to_props(self) -> dict[str, str]:
        """{"cxrbox.<field>": str(value)} for `onnx.helper.set_model_props`."""
        return {PREFIX + k: str(v) for k, v in asdict(self).items()}

    def config_dict(self) -> dict[str, Any]:
        return json.loads(self.config)


def _parse(path: Path, props: dict[str, str]) -> ModelMetadata:
    values: dict[str, Any] = {}
    missing = [f.name for f in fields(ModelMetadata) if PREFIX + f.name not in props]
    if missing:
        raise ModelFileError(
            f"{path}: not a cxrbox model: the ONNX metadata lacks "
            f"{', '.join(PREFIX + m for m in missing)} (export it with `cxrbox export`)"
        )
    for f in fields(ModelMetadata):
        text = props[PREFIX + f.name]
        kind = {"int": int, "float": float}.get(str(f.type), str)
        try:
            values[f.name] = kind(text)
        except ValueError:
            raise ModelFileError(
                f"{path}: metadata {PREFIX + f.name} must be {kind.__name__}, got {text!r}"
            ) from None
    meta = ModelMetadata(**values)
    if meta.format_version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: cxrbox model format {meta.format_version} is newer than this cxrbox "
            f"reads (<= {FORMAT_VERSION}); upgrade cxrbox"
        )
    return meta


def read_metadata(path: str | Path) -> ModelMetadata:
    """The cxrbox metadata of an ONNX file; ModelFileError naming the file when there is none."""
    session = _session(Path(path))
    return _parse(Path(path), dict(session.get_modelmeta().custom_metadata_map))


def _session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise ModelFileError(f"{path}: model file does not exist")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a damaged/foreign file
        raise ModelFileError(f"{path}: not a readable ONNX model ({exc})") from exc


class OnnxModel:
    """`model(images) -> raw`: images Tensor[B, 1, S, S] float32 -> raw Tensor[B, 5, Hg, Wg].

    Raises ModelFileError naming the file when it is not ONNX, has no cxrbox metadata, or its
    input is not [B, channels, image_size, image_size] as the metadata says.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = _session(self.path, threads)
        self.metadata = _parse(self.path, dict(self.session.get_modelmeta().custom_metadata_map))
        inputs = self.session.get_inputs()
        meta = self.metadata
        expected = ["batch", meta.channels, meta.image_size, meta.image_size]
        shape = list(inputs[0].shape) if len(inputs) == 1 else None
        if shape is None or len(shape) != 4 or shape[1:] != expected[1:]:
            raise ModelFileError(
                f"{self.path}: model input must be [B, {meta.channels}, {meta.image_size}, "
                f"{meta.image_size}] as its metadata says, got "
                f"{[i.shape for i in inputs] if shape is None else shape}"
            )
        self.input_name = inputs[0].name

    def eval(self) -> OnnxModel:
        """No-op, so the model can stand where an nn.Module in eval mode is expected."""
        return self

    def run_numpy(self, images: np.ndarray) -> np.ndarray:
        """images float32 [B, C, S, S] -> raw float32 [B, 5, Hg, Wg]."""
        meta = self.metadata
        want = (meta.channels, meta.image_size, meta.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise ModelFileError(
                f"{self.path}: expects images [B, {want[0]}, {want[1]}, {want[2]}], got "
                f"{tuple(images.shape)}"
            )
        feed = {self.input_name: np.ascontiguousarray(images, dtype=np.float32)}
        return self.session.run(None, feed)[0]

    def __call__(self, images: Tensor) -> Tensor:
        return torch.from_numpy(self.run_numpy(images.detach().cpu().float().numpy()))
