"""cxrbox.data.dicom against every file bundled in pydicom's `data/test_files` folder.

Whether a file should load is decided here from a header read, by a rule written independently
of cxrbox.data.dicom: DICOM file meta present, SamplesPerPixel 1, PhotometricInterpretation
MONOCHROME1/2, NumberOfFrames an integer <= 1 (or absent), Rows/Columns present, a Pixel Data
element at least as long as Rows x Columns x BitsAllocated / 8 (native syntaxes), and an
uncompressed transfer syntax or one of the compressed syntaxes below (12-bit JPEG Extended only
with pylibjpeg-libjpeg installed). Two files are damaged on purpose (pydicom's own tests expect
them to fail); everything else must raise DicomError.
(pydicom's `get_testdata_files()` is not used: it tries to download missing files.)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from cxrbox.data.dicom import DicomError, load_pixels, read_image_size

try:
    import libjpeg  # noqa: F401  (pylibjpeg-libjpeg, GPL-3.0: the optional 12-bit JPEG decoder)

    HAS_LIBJPEG = True
except ImportError:
    HAS_LIBJPEG = False

TEST_FILES_DIR = Path(pydicom.__file__).parent / "data" / "test_files"
FILES = sorted(p for p in TEST_FILES_DIR.rglob("*") if p.is_file())
IDS = [p.relative_to(TEST_FILES_DIR).as_posix() for p in FILES]
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
COMPRESSED = {
    JPEG_BASELINE,
    JPEG_EXTENDED,
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless P14
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
}
# Damaged on purpose in pydicom's test set: file -> the reason the decoder gives.
DAMAGED = {
    "JPEG-lossy.dcm": "misplaced marker",  # pydicom's tests expect every decoder to fail
    "JPEG2000-embedded-sequence-delimiter.dcm": "failed to read the header",
}
# 43 loaded before the compressed syntaxes; 10 more 2-D grayscale single-frame compressed files.
N_LOADABLE = 53 if HAS_LIBJPEG else 52

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd test files


def should_load(path: Path) -> bool:
    """The independent rule of the module docstring."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on the deliberately odd files
        return _should_load(path)


def _should_load(path: Path) -> bool:
    try:
        ds = pydicom.dcmread(path)
    except Exception:
        return False
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if not syntax or not (syntax in COMPRESSED or not UID(syntax).is_compressed):
        return False
    if path.name in DAMAGED:
        return False
    if syntax == JPEG_EXTENDED and ds.BitsStored > 8 and not HAS_LIBJPEG:
        return False
    if ds.get("SamplesPerPixel") != 1 or "PixelData" not in ds:
        return False
    if ds.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2"):
        return False
    if not ds.get("Rows") or not ds.get("Columns"):
        return False
    frames = ds.get("NumberOfFrames")
    if frames not in (None, ""):
        if not str(frames).strip().isdigit() or int(frames) > 1:
            return False
    if not UID(syntax).is_compressed:
        n_bits = ds.Rows * ds.Columns * ds.BitsAllocated
        if len(ds.PixelData) < (n_bits + 7) // 8:
            return False
    return True


EXPECTED = {path: should_load(path) for path in FILES}
LOADABLE = [p for p in FILES if EXPECTED[p]]


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_file_loads_to_unit_float32_or_raises_dicom_error(path):
    if EXPECTED[path]:
        out = load_pixels(path)
        header = pydicom.dcmread(path, stop_before_pixels=True)
        assert out.dtype == np.float32
        assert out.shape == (header.Rows, header.Columns)
        assert np.isfinite(out).all()
        assert out.min() >= 0.0 and out.max() <= 1.0
    else:
        with pytest.raises(DicomError) as excinfo:
            load_pixels(path)
        assert str(path) in str(excinfo.value)
        if path.name in DAMAGED:
            assert DAMAGED[path.name] in str(excinfo.value)


def test_every_2d_grayscale_single_frame_file_loads():
    assert len(LOADABLE) == N_LOADABLE


def by_name(name: str) -> np.ndarray:
    return load_pixels(TEST_FILES_DIR / name)


@pytest.mark.parametrize(
    ("compressed", "uncompressed"),
    [
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("rtdose_rle_1frame.dcm", "rtdose_1frame.dcm"),
    ],
)
def test_lossless_twins_decode_identically(compressed, uncompressed):
    np.testing.assert_array_equal(by_name(compressed), by_name(uncompressed))


@pytest.mark.parametrize(
    "path", LOADABLE, ids=[p.relative_to(TEST_FILES_DIR).as_posix() for p in LOADABLE]
)
def test_read_image_size_matches_the_loaded_shape(path):
    assert read_image_size(path) == load_pixels(path).shape


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_read_image_size_returns_a_size_or_raises_dicom_error(path):
    try:
        rows, cols = read_image_size(path)
    except DicomError as exc:
        assert str(path) in str(exc)
    else:
        assert rows > 0 and cols > 0


def test_the_test_data_has_both_loadable_and_refused_files():
    """Guards the rule above: if it drifted to all-True or all-False the tests would be weak."""
    n_load = len(LOADABLE)
    assert n_load >= 20
    assert sum(UID(pydicom.dcmread(p).file_meta.TransferSyntaxUID).is_compressed for p in LOADABLE)
    assert len(FILES) - n_load >= 50
