"""Inference throughput: PyTorch eager FP32 vs ONNX Runtime FP32 vs ONNX Runtime int8.

`benchmark_inference(checkpoint)` exports the checkpoint's network at each image size (the
network is fully convolutional; an ONNX graph has a fixed S), quantizes it with each
`QuantSettings` given, and times `model(images)` (raw output only; decode is the same for all)
at each batch size in one process. Images/s is the median over `repeats` timed calls after
warmup. Measured on a shared machine these figures are only indicative.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from cxrbox.deploy.inference import load_trained_model
from cxrbox.deploy.onnx_export import export_onnx
from cxrbox.deploy.onnx_model import OnnxModel
from cxrbox.deploy.quantize import DEFAULT_SETTINGS, QuantSettings, quantize_int8


@dataclass(frozen=True)
class InferenceRow:
    backend: str
    image_size: int
    batch_size: int
    images_per_s: float

    def line(self) -> str:
        return (
            f"{self.backend:28s} {self.image_size:4d} px  batch {self.batch_size:3d}  "
            f"{self.images_per_s:9.1f} images/s"
        )


def _images_per_s(run: Callable[[], object], batch: int, repeats: int) -> float:
    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def benchmark_inference(
    checkpoint: str | Path,
    sizes: Sequence[int] = (256, 512),
    batches: Sequence[int] = (1, 16),
    settings: Sequence[QuantSettings] = (DEFAULT_SETTINGS,),
    repeats: int = 5,
    threads: int | None = None,
) -> list[InferenceRow]:
    """Rows of (backend, S, batch, images/s) for PyTorch eager, ORT FP32 and ORT int8."""
    model, config, coding = load_trained_model(checkpoint)
    # Contiguous, not the training config's channels_last: measured 4x faster for eager
    # inference of this 1-channel network on CPU, so PyTorch gets its best case.
    model = model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    rng = np.random.default_rng(0)
    rows: list[InferenceRow] = []
    with tempfile.TemporaryDirectory(prefix="cxrbox-bench-") as folder:
        for size in sizes:
            sized = config.replace(image_size=size)
            fp32 = export_onnx(model, sized, coding, Path(folder) / f"m{size}.onnx")
            calibration = rng.random((16, 1, size, size), dtype=np.float32)
            runners: dict[str, OnnxModel] = {"onnxruntime fp32": OnnxModel(fp32, threads)}
            for s in settings:
                path = quantize_int8(
                    fp32, Path(folder) / f"m{size}.{s.name()}.onnx", calibration, s
                )
                runners[f"onnxruntime int8 {s.name()}"] = OnnxModel(path, threads)
            for batch in batches:
                images = torch.from_numpy(rng.random((batch, 1, size, size), dtype=np.float32))
                with torch.inference_mode():
                    speed = _images_per_s(partial(model, images), batch, repeats)
                rows.append(InferenceRow("pytorch eager fp32", size, batch, speed))
                array = images.numpy()
                for name, runner in runners.items():
                    speed = _images_per_s(partial(runner.run_numpy, array), batch, repeats)
                    rows.append(InferenceRow(name, size, batch, speed))
    return rows
