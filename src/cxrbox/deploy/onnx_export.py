"""Export a trained model to ONNX: the network up to the raw head output, nothing after it.

The graph maps `images [B, 1, S, S]` (float32 in [0, 1], `cxrbox.data.preprocess`) to
`raw [B, 5, Hg, Wg]` with a dynamic batch dimension; the decode (sigmoid, exp, clip, NMS) stays
in `cxrbox.modeling.decode`, so nothing in the file can drift from it. The metadata that decoding
and preprocessing need is written into the file (`cxrbox.deploy.onnx_model.ModelMetadata`).

Export uses `torch.onnx.export(..., dynamo=False)` (the TorchScript exporter, still in torch
2.13; it needs no onnxscript) at opset 17: ONNX Runtime's static int8 quantizer supports opsets
up to 20 (ultralytics caps its int8 export there for the same reason). Files are written to a
temporary name in the target folder and renamed when complete, like checkpoints.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from cxrbox import __version__
from cxrbox.atomic_write import atomic_path
from cxrbox.config import TrainConfig
from cxrbox.deploy.onnx_model import FORMAT_VERSION, INPUT_NAME, OUTPUT_NAME, ModelMetadata
from cxrbox.errors import ExportError
from cxrbox.modeling.decode import GridCoding

OPSET = 17


def model_metadata(config: TrainConfig, coding: GridCoding, precision: str) -> ModelMetadata:
    """The metadata of an exported model trained with `config`."""
    return ModelMetadata(
        image_size=config.image_size,
        channels=1,
        prior_w=coding.prior_w,
        prior_h=coding.prior_h,
        log_clamp=coding.log_clamp,
        score_threshold=config.score_threshold,
        nms_iou=config.nms_iou,
        top_k=config.top_k,
        head=config.head,
        intensity=config.intensity,
        precision=precision,
        cxrbox_version=__version__,
        format_version=FORMAT_VERSION,
        config=json.dumps(config.to_dict(), sort_keys=True),
    )


def set_metadata(onnx_path: Path, metadata: ModelMetadata) -> None:
    """Write `metadata` into the ONNX file at `onnx_path` (in place)."""
    import onnx

    model = onnx.load(str(onnx_path))
    onnx.helper.set_model_props(model, metadata.to_props())
    onnx.save(model, str(onnx_path))


def export_onnx(
    model: nn.Module, config: TrainConfig, coding: GridCoding, out_path: str | Path
) -> Path:
    """Export `model` (FP32, eval mode) to `out_path` with its metadata; returns the path."""
    out_path = Path(out_path)
    model = copy.deepcopy(model).float().eval().cpu()  # memory format does not reach the graph
    dummy = torch.zeros(2, 1, config.image_size, config.image_size)
    with atomic_path(out_path, suffix=".onnx") as tmp:
        try:
            with warnings.catch_warnings():
                # The tracer warns about BoxRegressor's input-shape check: the graph has a fixed
                # S, which OnnxModel checks against the metadata instead.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False is deliberate
                torch.onnx.export(
                    model,
                    (dummy,),
                    str(tmp),
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    opset_version=OPSET,
                    dynamo=False,
                )
        except Exception as exc:
            raise ExportError(f"{out_path}: torch.onnx.export failed: {exc}") from exc
        set_metadata(tmp, model_metadata(config, coding, "fp32"))
    return out_path
