"""The one way from a DICOM file to a model input: every path that feeds a model goes here.

`load_model_image(path, size)` decodes the DICOM (`cxrbox.data.dicom.load_pixels`, float32 in
[0, 1]), resizes it to size x size (cv2.INTER_AREA; a non-square image is resized without
keeping its aspect ratio) and rounds it to uint8 (round(255 * pixels)). The image cache stores
exactly these bytes, the dataset without a cache loads them, and `to_unit_float` turns them into
the float32 the network sees (value / 255). So training-time validation (from the cache),
`cxrbox eval` / `cxrbox predict` (from the DICOMs), export calibration and the exported ONNX
models all see identical input tensors for the same file.

`intensity` names `load_pixels`' rule for DICOMs without a VOI LUT or window (one of
`cxrbox.options.INTENSITY_RULES`, see `cxrbox.data.dicom`). It is part of the run's config, recorded
in the cache's sidecar and in exported models, so every path preprocesses the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrbox.errors import InputValueError
from cxrbox.options import DEFAULT_INTENSITY

__all__ = [
    "DEFAULT_INTENSITY",
    "load_model_image",
    "resize_to_uint8",
    "to_uint8",
    "to_unit_float",
]

MIN_SIZE = 8


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8, rounded to nearest (the model input's quantization)."""
    return np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """uint8 [..] -> float32 [..] in [0, 1] (value / 255); float32 passes as a fresh copy."""
    pixels = image.astype(np.float32)  # always a fresh, writable, contiguous copy
    if image.dtype == np.uint8:
        np.divide(pixels, 255.0, out=pixels)
    return pixels


def resize_to_uint8(pixels: np.ndarray, size: int) -> np.ndarray:
    """float32 [H, W] in [0, 1] -> uint8 [size, size] (cv2.INTER_AREA, then `to_uint8`)."""
    import cv2

    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
        raise InputValueError(f"size must be an int >= {MIN_SIZE} px, got {size!r}")
    if pixels.ndim != 2:
        raise InputValueError(f"pixels must be a 2-D grayscale array [H, W], got {pixels.shape}")
    if pixels.shape != (size, size):
        pixels = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)
    return to_uint8(pixels)


def load_model_image(
    path: str | Path, size: int, *, intensity: str = DEFAULT_INTENSITY
) -> tuple[np.ndarray, tuple[int, int]]:
    """One DICOM -> (uint8 [size, size], original (H, W)): the only DICOM-to-input path.

    `intensity`: `load_pixels`' rule for files without a window (InputValueError if unknown).
    Raises DicomError (naming the file) when the DICOM cannot be decoded.
    """
    from cxrbox.data.dicom import load_pixels

    pixels = load_pixels(path, intensity=intensity)
    orig = (int(pixels.shape[0]), int(pixels.shape[1]))
    return resize_to_uint8(pixels, size), orig
