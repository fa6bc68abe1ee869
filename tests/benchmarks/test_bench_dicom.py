"""ms per 1024 x 1024 image for each transfer syntax cxrbox decodes (`load_pixels`, ONE core).

Run: `pytest tests/benchmarks/test_bench_dicom.py --benchmark-enable`. The image is a 12-bit
CR-like radiograph (smooth shading plus blurred noise); each compressed file is written from
the same uncompressed one, so the rows compare decoders on equal content.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pydicom.uid import JPEGLossless as JPEGLosslessP14
from tests.dicom_factory import compress_dicom, make_dicom

from cxrbox.data.dicom import load_pixels

pytestmark = pytest.mark.benchmark(group="dicom")

SIDE = 1024
SYNTAXES = {
    "explicit": (ExplicitVRLittleEndian, {}),
    "jpeg-baseline-8bit": (JPEGBaseline8Bit, {}),
    "rle": (RLELossless, {}),
    "jpeg-lossless-p14": (JPEGLosslessP14, {}),
    "jpeg-lossless-sv1": (JPEGLosslessSV1, {}),
    "jpeg-ls-lossless": (JPEGLSLossless, {}),
    "jpeg-ls-near-lossless": (JPEGLSNearLossless, {"jls_error": 2}),
    "jpeg2000-lossless": (JPEG2000Lossless, {}),
    "jpeg2000-lossy": (JPEG2000, {"j2k_cr": [20]}),
}


def cr_like_12bit(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    shading = 0.5 + 0.3 * np.sin(3 * xx + seed) * np.cos(2 * yy)
    noise = cv2.GaussianBlur(rng.normal(0, 0.05, (SIDE, SIDE)), (0, 0), 3)
    return np.clip((shading + noise) * 4095, 0, 4095).astype(np.uint16)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench_dicom")
    raw = make_dicom(root / "explicit.dcm", cr_like_12bit(), bits_stored=12)
    out = {"explicit": raw}
    eight_bit = (cr_like_12bit() >> 4).astype(np.uint8)
    out["jpeg-baseline-8bit"] = make_dicom(
        root / "baseline.dcm", eight_bit, transfer_syntax="jpeg_baseline"
    )
    for name, (uid, options) in SYNTAXES.items():
        if name not in out:
            out[name] = compress_dicom(raw, root / f"{name}.dcm", uid, **options)
    return out


@pytest.mark.parametrize("syntax", list(SYNTAXES))
def test_bench_load_pixels_per_syntax(benchmark, files: dict[str, Path], syntax: str) -> None:
    import torch

    threads = torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        image = benchmark(lambda: load_pixels(files[syntax]))
    finally:
        torch.set_num_threads(threads)
    assert image.shape == (SIDE, SIDE)
