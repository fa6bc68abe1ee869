"""Compressed transfer syntaxes: each decodes to the same pixels as its uncompressed twin (lossy
ones correlate > 0.99), through the plugin cxrbox chose, or fails with a DicomError saying what
to install."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pydicom.uid import JPEGLossless as JPEGLosslessP14
from tests.dicom_factory import compress_dicom, make_dicom

from cxrbox.data import dicom
from cxrbox.data.dicom import DECODING_PLUGINS, DicomError, load_pixels


def cr_like(bits: int, signed: bool, seed: int = 0) -> np.ndarray:
    """Stored values [64, 48]: smooth anatomy-like shading plus noise over most of the range."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:48]
    shade = np.sin(xx / 9.0) * np.cos(yy / 13.0)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    values = (lo + hi) / 2 + (hi - lo) * (0.4 * shade + 0.02 * rng.standard_normal(shade.shape))
    return np.clip(values.round(), lo, hi).astype(np.int16 if signed else np.uint16)


@pytest.fixture(params=[(12, False), (16, True)], ids=["12-bit", "signed-16-bit"])
def twin(request, tmp_path):
    bits, signed = request.param
    return make_dicom(tmp_path / "raw.dcm", cr_like(bits, signed), bits_stored=bits, signed=signed)


@pytest.mark.parametrize(
    "uid",
    [RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessP14, JPEGLosslessSV1],
    ids=["rle", "jpeg-ls", "jpeg2000", "jpeg-lossless-p14", "jpeg-lossless-sv1"],
)
def test_lossless_syntax_decodes_identically_to_its_uncompressed_twin(twin, tmp_path, uid):
    compressed = compress_dicom(twin, tmp_path / "c.dcm", uid)
    np.testing.assert_array_equal(load_pixels(compressed), load_pixels(twin))


@pytest.mark.parametrize(
    ("uid", "options"),
    [(JPEGLSNearLossless, {"jls_error": 3}), (JPEG2000, {"j2k_cr": [20]})],
    ids=["jpeg-ls-near-lossless", "jpeg2000-lossy"],
)
def test_lossy_syntax_correlates_with_its_uncompressed_twin(twin, tmp_path, uid, options):
    compressed = compress_dicom(twin, tmp_path / "c.dcm", uid, **options)
    lossy, raw = load_pixels(compressed), load_pixels(twin)
    assert not np.array_equal(lossy, raw)  # really lossy
    assert np.corrcoef(lossy.ravel(), raw.ravel())[0, 1] > 0.99


@pytest.mark.parametrize(
    "uid",
    [RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessP14],
    ids=["rle", "jpeg-ls", "jpeg2000", "jpeg-lossless"],
)
def test_each_syntax_is_decoded_by_its_first_choice_plugin(tmp_path, monkeypatch, uid):
    raw = make_dicom(tmp_path / "raw.dcm", cr_like(12, False), bits_stored=12)
    compressed = compress_dicom(raw, tmp_path / "c.dcm", uid)
    used = []
    real = dicom.pixel_array

    def spy(ds, **kwargs):
        used.append(kwargs.get("decoding_plugin"))
        return real(ds, **kwargs)

    monkeypatch.setattr(dicom, "pixel_array", spy)
    load_pixels(compressed)
    assert used == [DECODING_PLUGINS[uid][0]]


def test_without_any_installed_decoder_the_error_says_what_to_install(tmp_path, monkeypatch):
    raw = make_dicom(tmp_path / "raw.dcm", cr_like(12, False), bits_stored=12)
    compressed = compress_dicom(raw, tmp_path / "c.dcm", JPEGLSLossless)
    monkeypatch.setattr(dicom, "get_decoder", lambda uid: SimpleNamespace(available_plugins=()))
    with pytest.raises(DicomError, match=r"c\.dcm: no decoder installed.*python-gdcm, pyjpegls"):
        load_pixels(compressed)


def test_12_bit_jpeg_extended_needs_the_optional_gpl_decoder(tmp_path, monkeypatch):
    raw = make_dicom(tmp_path / "raw.dcm", cr_like(12, False), bits_stored=12)
    ds_path = compress_dicom(raw, tmp_path / "c.dcm", JPEGLSLossless)
    import pydicom

    ds = pydicom.dcmread(ds_path)
    ds.file_meta.TransferSyntaxUID = JPEGExtended12Bit
    ds.save_as(ds_path, enforce_file_format=True)
    monkeypatch.setattr(
        dicom, "get_decoder", lambda uid: SimpleNamespace(available_plugins=("gdcm", "pillow"))
    )
    with pytest.raises(DicomError, match=r"pylibjpeg-libjpeg \(GPL-3.0: pip install cxrbox"):
        load_pixels(ds_path)
