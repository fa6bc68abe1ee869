"""Fuzzing: byte-level mutations of valid DICOMs (native and every compressed family) and of
label CSVs reach only DicomError / LabelError, never another exception, never a hang.

Examples per test: 3 x the hypothesis profile's max_examples (`ci` 300, `nightly` 6000); each
example is bounded by a SIGALRM of EXAMPLE_LIMIT_S seconds.
"""

from __future__ import annotations

import contextlib
import signal
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless
from tests.dicom_factory import compress_dicom, make_dicom
from tests.strategies import label_csv_bytes, mutated_bytes

from cxrbox.data.dicom import load_pixels, read_image_size
from cxrbox.data.labels import read_rsna_labels
from cxrbox.errors import DicomError, LabelError

EXAMPLE_LIMIT_S = 10
FUZZ = settings(
    max_examples=3 * settings.default.max_examples,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` can swallow it."""


@contextlib.contextmanager
def time_limit(seconds: int):
    def hang(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


SYNTAXES = ["explicit", "jpeg_baseline", "rle", "jpeg_ls", "j2k"]


@pytest.fixture(scope="module")
def valid_dicoms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One small valid file per syntax family, as bytes."""
    folder = tmp_path_factory.mktemp("fuzz")
    yy, xx = np.mgrid[0:64, 0:48]
    pixels = ((xx * 97 + yy * 31) % 4096).astype(np.uint16)
    raw = make_dicom(folder / "raw.dcm", pixels, bits_stored=12, window=(2000.0, 3000.0))
    files = {"explicit": raw}
    files["jpeg_baseline"] = make_dicom(
        folder / "jpeg.dcm", (pixels >> 4).astype(np.uint8), transfer_syntax="jpeg_baseline"
    )
    for name, uid in [("rle", RLELossless), ("jpeg_ls", JPEGLSLossless), ("j2k", JPEG2000Lossless)]:
        files[name] = compress_dicom(raw, folder / f"{name}.dcm", uid)
    return {name: path.read_bytes() for name, path in files.items()}


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_mutated_dicom_raises_only_dicom_error(tmp_path, valid_dicoms, syntax):
    path = tmp_path / "f.dcm"

    @FUZZ
    @given(data=mutated_bytes(valid_dicoms[syntax]))
    def check(data: bytes) -> None:
        path.write_bytes(data)
        with time_limit(EXAMPLE_LIMIT_S), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for read in (load_pixels, read_image_size):
                try:
                    read(path)
                except DicomError as exc:
                    assert str(path) in str(exc)

    check()


def test_mutated_label_csv_raises_only_label_error(tmp_path):
    path = tmp_path / "labels.csv"

    @FUZZ
    @given(data=label_csv_bytes())
    def check(data: bytes) -> None:
        path.write_bytes(data)
        with time_limit(EXAMPLE_LIMIT_S):
            try:
                labels = read_rsna_labels(path)
            except LabelError as exc:
                assert str(path) in str(exc)
            else:
                for boxes in labels.values():
                    assert boxes.dtype == np.float32 and np.isfinite(boxes).all()

    check()
