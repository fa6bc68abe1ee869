"""cxrbox.data.dicom on DICOM files built in the test: every supported variant and every refusal."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000MC, JPEG2000Lossless, JPEGBaseline8Bit, RLELossless
from tests.dicom_factory import make_dataset, make_dicom, write_dataset

from cxrbox import errors
from cxrbox.data.dicom import DicomError, find_dicom_files, load_pixels, read_image_size

ALL_8BIT = np.arange(256, dtype=np.uint8).reshape(16, 16)


def gradient(rows: int = 64, cols: int = 48) -> np.ndarray:
    """A smooth uint8 image [rows, cols] (JPEG-friendly)."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    return (255 * (xx + yy) / (rows + cols - 2)).round().astype(np.uint8)


def assert_unit_image(out: np.ndarray, shape: tuple[int, int]) -> None:
    assert out.dtype == np.float32
    assert out.shape == shape
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_dicom_error_is_reexported_from_errors():
    assert DicomError is errors.DicomError


# --- stored values -> [0, 1] without a window --------------------------------------------


def test_8bit_unsigned_loads_exactly_as_value_over_255(tmp_path):
    out = load_pixels(make_dicom(tmp_path / "a.dcm", ALL_8BIT))
    assert_unit_image(out, (16, 16))
    np.testing.assert_array_equal(out, (ALL_8BIT / 255).astype(np.float32))


@pytest.mark.parametrize("transfer_syntax", ["explicit", "implicit", "big_endian", "deflated"])
def test_uncompressed_transfer_syntaxes_give_the_stored_values(tmp_path, transfer_syntax):
    pixels = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 37) % 4096
    path = make_dicom(tmp_path / "a.dcm", pixels, bits_stored=12, transfer_syntax=transfer_syntax)
    np.testing.assert_allclose(
        load_pixels(path, intensity="bit-range"), pixels / 4095, rtol=0, atol=1e-7
    )


def test_bit_range_rule_maps_16bit_unsigned_over_the_full_16_bit_range(tmp_path):
    pixels = np.array([[0, 1, 32768, 65535]], dtype=np.uint16)
    out = load_pixels(make_dicom(tmp_path / "a.dcm", pixels, bits_stored=16), intensity="bit-range")
    np.testing.assert_allclose(out, [[0, 1 / 65535, 32768 / 65535, 1]], rtol=0, atol=1e-7)


def test_12bit_stored_in_16_allocated_ignores_the_unused_high_bits(tmp_path):
    pixels = np.array([[0, 1, 2048, 4095]], dtype=np.uint16)
    ds = make_dataset(pixels, bits_stored=12)
    ds.PixelData = (pixels | 0xF000).astype("<u2").tobytes()  # garbage (e.g. overlay) bits
    out = load_pixels(write_dataset(tmp_path / "a.dcm", ds), intensity="bit-range")
    np.testing.assert_allclose(out, [[0, 1 / 4095, 2048 / 4095, 1]], rtol=0, atol=1e-7)


def test_bit_range_rule_maps_signed_16bit_minimum_to_0_and_maximum_to_1(tmp_path):
    pixels = np.array([[-32768, -1, 0, 32767]], dtype=np.int16)
    out = load_pixels(
        make_dicom(tmp_path / "a.dcm", pixels, bits_stored=16, signed=True), intensity="bit-range"
    )
    expected = [[0, 32767 / 65535, 32768 / 65535, 1]]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-7)


def test_signed_12bit_in_16_is_sign_extended(tmp_path):
    ds = make_dataset(np.zeros((1, 3), np.int16), bits_stored=12, signed=True)
    # -1, -2048 and 2047 as 12-bit two's complement with the 4 high bits left at zero
    ds.PixelData = np.array([0x0FFF, 0x0800, 0x07FF], dtype="<u2").tobytes()
    out = load_pixels(write_dataset(tmp_path / "a.dcm", ds), intensity="bit-range")
    np.testing.assert_allclose(out, [[2047 / 4095, 0, 1]], rtol=0, atol=1e-7)


def test_number_of_frames_1_is_a_single_frame(tmp_path):
    ds = make_dataset(ALL_8BIT)
    ds.NumberOfFrames = 1
    out = load_pixels(write_dataset(tmp_path / "a.dcm", ds))
    np.testing.assert_array_equal(out, (ALL_8BIT / 255).astype(np.float32))


def test_monochrome1_is_the_mirror_of_monochrome2(tmp_path):
    mono2 = load_pixels(make_dicom(tmp_path / "m2.dcm", ALL_8BIT, photometric="MONOCHROME2"))
    mono1 = load_pixels(make_dicom(tmp_path / "m1.dcm", ALL_8BIT, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(mono1, 1 - mono2)
    assert mono1[0, 0] == 1.0  # stored 0 is white in MONOCHROME1: densest


def test_rescale_without_a_window_keeps_the_stored_range(tmp_path):
    pixels = np.array([[0, 1000, 4095]], dtype=np.uint16)
    path = make_dicom(tmp_path / "a.dcm", pixels, bits_stored=12, rescale=(2.0, -1024.0))
    np.testing.assert_allclose(
        load_pixels(path, intensity="bit-range"), [[0, 1000 / 4095, 1]], rtol=0, atol=1e-7
    )


def test_negative_rescale_slope_flips_the_stored_range(tmp_path):
    pixels = np.array([[0, 1000, 4095]], dtype=np.uint16)
    path = make_dicom(tmp_path / "a.dcm", pixels, bits_stored=12, rescale=(-1.0, 4095.0))
    np.testing.assert_allclose(
        load_pixels(path, intensity="bit-range"), [[1, 3095 / 4095, 0]], rtol=0, atol=1e-7
    )


def test_modality_lut_sequence_maps_through_its_table_range(tmp_path):
    # Decreasing and non-linear, so neither an identity table nor a linear one can imitate it:
    # stored 10..25 -> 1000 - 3 i**2 (i = stored - 10) = 1000..325; range [325, 1000].
    table = [1000 - 3 * i * i for i in range(16)]
    pixels = np.array([[0, 10, 11, 14, 25, 200]], dtype=np.uint8)
    path = make_dicom(tmp_path / "a.dcm", pixels, modality_lut=(10, table))
    # below/above the table: first/last entry
    expected = [[1, 1, 672 / 675, 627 / 675, 0, 0]]
    np.testing.assert_allclose(load_pixels(path), expected, rtol=0, atol=1e-6)


# --- windows and VOI LUTs -------------------------------------------------------------------


def test_linear_window_after_rescale_matches_hand_computed_values(tmp_path):
    # HU = stored - 1024; center 40, width 401: y = (HU + 160.5) / 400, clipped to [0, 1]
    hu = np.array([[-300, -160, 40, 239, 240, 1000]])
    path = make_dicom(
        tmp_path / "a.dcm",
        (hu + 1024).astype(np.uint16),
        bits_stored=12,
        rescale=(1.0, -1024.0),
        window=(40.0, 401.0),
    )
    expected = [[0, 0.00125, 0.50125, 0.99875, 1, 1]]
    np.testing.assert_allclose(load_pixels(path), expected, rtol=0, atol=1e-6)


def test_linear_exact_window_matches_hand_computed_values(tmp_path):
    pixels = np.array([[0, 50, 100, 150, 200, 250]], dtype=np.uint8)
    path = make_dicom(
        tmp_path / "a.dcm", pixels, window=(100.0, 200.0), voi_lut_function="LINEAR_EXACT"
    )
    expected = [[0, 0.25, 0.5, 0.75, 1, 1]]
    np.testing.assert_allclose(load_pixels(path), expected, rtol=0, atol=1e-6)


def test_sigmoid_window_matches_hand_computed_values(tmp_path):
    pixels = np.array([[50, 100, 150]], dtype=np.uint8)
    path = make_dicom(tmp_path / "a.dcm", pixels, window=(100.0, 200.0), voi_lut_function="SIGMOID")
    sig = 1 / (1 + math.exp(-1))  # 1 / (1 + exp(-4 (x - c) / w)) at x - c = 50
    expected = [[1 - sig, 0.5, sig]]
    np.testing.assert_allclose(load_pixels(path), expected, rtol=0, atol=1e-6)


def test_linear_window_of_width_1_is_a_step_at_center_minus_half(tmp_path):
    pixels = np.array([[0, 99, 100, 255]], dtype=np.uint8)
    path = make_dicom(tmp_path / "a.dcm", pixels, window=(100.0, 1.0))
    np.testing.assert_array_equal(load_pixels(path), [[0, 0, 1, 1]])


def test_window_is_applied_before_monochrome1_inversion(tmp_path):
    pixels = np.array([[0, 50, 100, 150, 200, 250]], dtype=np.uint8)
    window = {"window": (100.0, 200.0), "voi_lut_function": "LINEAR_EXACT"}
    mono1 = make_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1", **window)
    expected = [[1, 0.75, 0.5, 0.25, 0, 0]]
    np.testing.assert_allclose(load_pixels(mono1), expected, rtol=0, atol=1e-6)


def test_voi_lut_sequence_maps_its_output_range_to_unit(tmp_path):
    table = [v * v for v in range(256)]  # range [0, 65025]
    pixels = np.array([[0, 10, 128, 255]], dtype=np.uint8)
    path = make_dicom(tmp_path / "a.dcm", pixels, voi_lut=(0, table))
    expected = [[0, 100 / 65025, 16384 / 65025, 1]]
    np.testing.assert_allclose(load_pixels(path), expected, rtol=0, atol=1e-7)


def test_voi_lut_sequence_clamps_inputs_outside_the_table(tmp_path):
    table = [0, 10, 20, 40]  # first mapped value 10: stored 10..13
    pixels = np.array([[0, 10, 11, 12, 13, 200]], dtype=np.uint8)
    path = make_dicom(tmp_path / "a.dcm", pixels, voi_lut=(10, table))
    np.testing.assert_allclose(load_pixels(path), [[0, 0, 0.25, 0.5, 1, 1]], rtol=0, atol=1e-7)


def test_voi_lut_sequence_is_preferred_over_a_window(tmp_path):
    pixels = np.array([[0, 10, 11, 12, 13, 200]], dtype=np.uint8)
    path = make_dicom(tmp_path / "a.dcm", pixels, voi_lut=(10, [0, 10, 20, 40]), window=(5, 2))
    np.testing.assert_allclose(load_pixels(path), [[0, 0, 0.25, 0.5, 1, 1]], rtol=0, atol=1e-7)


def test_voi_lut_sequence_after_rescale_indexes_rescaled_values(tmp_path):
    pixels = np.array([[0, 1, 2, 3]], dtype=np.uint8)  # rescaled: 10, 12, 14, 16
    path = make_dicom(
        tmp_path / "a.dcm", pixels, rescale=(2.0, 10.0), voi_lut=(10, [0, 1, 2, 3, 4, 5, 6])
    )
    np.testing.assert_allclose(load_pixels(path), [[0, 1 / 3, 2 / 3, 1]], rtol=0, atol=1e-7)


# --- JPEG Baseline --------------------------------------------------------------------------


def test_jpeg_baseline_decodes_close_to_the_source(tmp_path):
    pixels = gradient()
    path = make_dicom(tmp_path / "j.dcm", pixels, transfer_syntax="jpeg_baseline")
    out = load_pixels(path)
    assert_unit_image(out, pixels.shape)
    error = np.abs(out - pixels / 255)
    assert error.max() < 4 / 255  # lossy: a few grey levels at most
    assert error.mean() < 1 / 255


def test_jpeg_baseline_is_decoded_by_the_pillow_plugin_even_if_another_comes_first(
    tmp_path, monkeypatch
):
    """pydicom tries plugins in order; a faster-registered one must not be picked silently."""
    decoder = get_decoder(JPEGBaseline8Bit)
    calls = []

    def impostor(src, runner):
        calls.append(src)
        return bytes(runner.frame_length(unit="bytes"))  # an all-black frame

    monkeypatch.setattr(decoder, "_available", {"impostor": impostor, **decoder._available})
    pixels = gradient()
    out = load_pixels(make_dicom(tmp_path / "j.dcm", pixels, transfer_syntax="jpeg_baseline"))
    assert calls == []
    assert np.abs(out - pixels / 255).max() < 4 / 255


def test_corrupt_jpeg_data_raises_dicom_error(tmp_path):
    ds = make_dataset(gradient(), transfer_syntax="jpeg_baseline")
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 this is not a JPEG stream"])
    path = write_dataset(tmp_path / "bad_jpeg.dcm", ds)
    with pytest.raises(DicomError, match=re.escape(str(path))):
        load_pixels(path)


# --- refusals -------------------------------------------------------------------------------


def build_colour(path: Path) -> Path:
    return make_dicom(path, gradient(), samples_per_pixel=3)


def build_colour_jpeg(path: Path) -> Path:
    return make_dicom(path, gradient(), samples_per_pixel=3, transfer_syntax="jpeg_baseline")


def build_palette(path: Path) -> Path:
    return make_dicom(path, gradient(), photometric="PALETTE COLOR")


def build_multi_frame(path: Path) -> Path:
    return make_dicom(path, gradient(), frames=2)


def build_no_pixel_data(path: Path) -> Path:
    ds = make_dataset(gradient())
    del ds.PixelData
    return write_dataset(path, ds)


def build_missing_rows(path: Path) -> Path:
    ds = make_dataset(gradient())
    del ds.Rows
    return write_dataset(path, ds)


def build_missing_columns(path: Path) -> Path:
    ds = make_dataset(gradient())
    del ds.Columns
    return write_dataset(path, ds)


def build_rle(path: Path) -> Path:
    ds = make_dataset(gradient())
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([b"\x00" * 64])
    return write_dataset(path, ds)


def build_jpeg2000(path: Path) -> Path:
    ds = make_dataset(gradient())
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\x00" * 64])
    return write_dataset(path, ds)


def build_jpeg2000_multicomponent(path: Path) -> Path:
    ds = make_dataset(gradient())
    ds.file_meta.TransferSyntaxUID = JPEG2000MC
    ds.PixelData = encapsulate([b"\x00" * 64])
    return write_dataset(path, ds)


def build_not_dicom(path: Path) -> Path:
    path.write_text("patientId,x,y,width,height,Target\n")
    return path


def build_empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def build_truncated_pixels(path: Path) -> Path:
    data = make_dicom(path, gradient(256, 256)).read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    return path


def build_truncated_header(path: Path) -> Path:
    data = make_dicom(path, gradient()).read_bytes()
    path.write_bytes(data[:200])  # preamble, "DICM" and part of the file meta
    return path


def build_missing_file(path: Path) -> Path:
    return path


def build_directory(path: Path) -> Path:
    path.mkdir()
    return path


BAD_FILES = {
    "colour": (build_colour, "SamplesPerPixel is 3"),
    "colour_jpeg": (build_colour_jpeg, "SamplesPerPixel is 3"),
    "palette": (build_palette, "PALETTE COLOR"),
    "multi_frame": (build_multi_frame, "NumberOfFrames is 2"),
    "no_pixel_data": (build_no_pixel_data, "no (7FE0,0010) Pixel Data"),
    "missing_rows": (build_missing_rows, "missing Rows"),
    "missing_columns": (build_missing_columns, "missing Columns"),
    "rle": (build_rle, "cannot read pixels"),
    "jpeg2000": (build_jpeg2000, "cannot read pixels"),
    "jpeg2000_mc": (build_jpeg2000_multicomponent, "unsupported transfer syntax 'JPEG 2000 Part"),
    "not_dicom": (build_not_dicom, "not a DICOM file"),
    "empty_file": (build_empty_file, "not a DICOM file"),
    "truncated_pixels": (build_truncated_pixels, "less than expected"),
    "truncated_header": (build_truncated_header, "no (0002,0010) Transfer Syntax UID"),
    "missing_file": (build_missing_file, "No such file"),
    "directory": (build_directory, "Is a directory"),
}


@pytest.mark.parametrize(("build", "reason"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_unreadable_file_raises_dicom_error_naming_file_and_reason(tmp_path, build, reason):
    path = build(tmp_path / "bad.dcm")
    with pytest.raises(DicomError) as excinfo:
        load_pixels(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert reason in message


def test_unexpected_failure_is_chained_to_its_cause(tmp_path):
    path = build_truncated_pixels(tmp_path / "bad.dcm")
    with pytest.raises(DicomError) as excinfo:
        load_pixels(path)
    assert isinstance(excinfo.value.__cause__, ValueError)


@pytest.mark.parametrize(
    ("window", "function", "reason"),
    [
        ((100.0, 0.5), "LINEAR", "expected >= 1 for LINEAR"),
        ((100.0, 0.0), "LINEAR_EXACT", "expected > 0 for LINEAR_EXACT"),
        ((100.0, -1.0), "SIGMOID", "expected > 0 for SIGMOID"),
        ((100.0, 10.0), "GAMMA", "VOILUTFunction 'GAMMA'"),
    ],
    ids=["linear_narrow", "linear_exact_zero", "sigmoid_negative", "unknown_function"],
)
def test_invalid_window_raises_dicom_error(tmp_path, window, function, reason):
    path = make_dicom(tmp_path / "w.dcm", ALL_8BIT, window=window, voi_lut_function=function)
    with pytest.raises(DicomError, match=re.escape(reason)):
        load_pixels(path)


def test_zero_rescale_slope_raises_dicom_error(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", ALL_8BIT, rescale=(0.0, 5.0))
    with pytest.raises(DicomError, match="RescaleSlope is 0"):
        load_pixels(path)


def test_constant_voi_lut_raises_dicom_error(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", ALL_8BIT, voi_lut=(0, [7] * 256))
    with pytest.raises(DicomError, match="constant"):
        load_pixels(path)


# --- read_image_size ------------------------------------------------------------------------


def test_read_image_size_returns_rows_then_columns(tmp_path):
    assert read_image_size(make_dicom(tmp_path / "a.dcm", gradient(30, 50))) == (30, 50)


def test_read_image_size_works_with_truncated_pixel_data(tmp_path):
    assert read_image_size(build_truncated_pixels(tmp_path / "t.dcm")) == (256, 256)


def test_read_image_size_stops_reading_before_the_pixels(tmp_path, monkeypatch):
    path = make_dicom(tmp_path / "a.dcm", gradient(30, 50))
    real_dcmread, reads = pydicom.dcmread, []

    def spy(*args, **kwargs):
        ds = real_dcmread(*args, **kwargs)
        reads.append(ds)
        return ds

    monkeypatch.setattr(pydicom, "dcmread", spy)
    read_image_size(path)
    assert len(reads) == 1 and "PixelData" not in reads[0]


@pytest.mark.parametrize(
    ("build", "reason"),
    [BAD_FILES[k] for k in ("colour", "multi_frame", "missing_rows", "jpeg2000_mc", "not_dicom")],
    ids=["colour", "multi_frame", "missing_rows", "jpeg2000_mc", "not_dicom"],
)
def test_read_image_size_refuses_what_load_pixels_refuses_from_the_header(tmp_path, build, reason):
    path = build(tmp_path / "bad.dcm")
    with pytest.raises(DicomError, match=re.escape(str(path))) as excinfo:
        read_image_size(path)
    assert reason in str(excinfo.value)


# --- find_dicom_files -----------------------------------------------------------------------


def test_find_dicom_files_maps_stem_to_path_for_dcm_files_only(tmp_path):
    for name in ("b.dcm", "a.dcm", "notes.txt", "c.dcm.bak"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.dcm").mkdir()
    found = find_dicom_files(tmp_path)
    assert found == {"a": tmp_path / "a.dcm", "b": tmp_path / "b.dcm"}
    assert list(found) == ["a", "b"]


def test_find_dicom_files_on_a_missing_folder_raises_data_error(tmp_path):
    with pytest.raises(errors.DataError, match=re.escape(str(tmp_path / "nope"))):
        find_dicom_files(tmp_path / "nope")
