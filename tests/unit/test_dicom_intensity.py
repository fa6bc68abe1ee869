"""The intensity rule for files without a VOI LUT or window (`load_pixels(intensity=...)`).

Each test fails when its step is skipped: the expected values are hand-computed from the
percentiles (the bit range gives other numbers), and the tables are non-linear or decreasing.
"""

from __future__ import annotations

import numpy as np
import pytest
from tests.dicom_factory import make_dicom

from cxrbox.data.dicom import DEFAULT_INTENSITY, load_pixels
from cxrbox.errors import InputValueError

# 201 values evenly from -2000 to 2000: percentiles 0.5 / 99.5 are -1980 / 1980 (linear
# interpolation between order statistics), so value v maps to (v + 1980) / 3960.
RAMP = np.linspace(-2000, 2000, 201).round().astype(np.int16).reshape(1, 201)


def test_default_rule_is_auto():
    assert DEFAULT_INTENSITY == "auto"


def test_percentile_rule_windows_a_signed_16bit_image_on_its_own_percentiles(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", RAMP, bits_stored=16, signed=True)
    out = load_pixels(path)  # auto: 16 bits -> percentile
    expected = np.clip((RAMP.astype(np.float64) + 1980) / 3960, 0, 1)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    assert out[0, 100] == pytest.approx(0.5)  # the bit range would put 0 at 32768 / 65535


def test_percentile_rule_of_monochrome1_is_the_mirror(tmp_path):
    options = {"bits_stored": 16, "signed": True}
    mono2 = load_pixels(make_dicom(tmp_path / "m2.dcm", RAMP, **options))
    mono1 = load_pixels(make_dicom(tmp_path / "m1.dcm", RAMP, photometric="MONOCHROME1", **options))
    np.testing.assert_allclose(mono1, 1 - mono2, rtol=0, atol=1e-6)


def test_percentile_rule_applies_after_the_modality_lut(tmp_path):
    # 12-bit stored 0..200 through a decreasing, non-linear table: t = 40000 - i**2.
    stored = np.arange(201, dtype=np.uint16).reshape(1, 201)
    table = [40000 - i * i for i in range(201)]
    path = make_dicom(tmp_path / "a.dcm", stored, bits_stored=12, modality_lut=(0, table))
    out = load_pixels(path, intensity="percentile")
    values = 40000.0 - stored.astype(np.float64) ** 2
    lo, hi = np.percentile(values, [0.5, 99.5])
    np.testing.assert_allclose(out, np.clip((values - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert out[0, 0] == 1.0 and out[0, -1] == 0.0  # decreasing: the identity would be rising


def test_auto_keeps_8bit_files_as_value_over_255(tmp_path):
    pixels = np.arange(100, 151, dtype=np.uint8).reshape(1, 51)  # a narrow range, unstretched
    out = load_pixels(make_dicom(tmp_path / "a.dcm", pixels))
    np.testing.assert_array_equal(out, (pixels / 255).astype(np.float32))


def test_percentile_rule_on_8bit_stretches_when_asked(tmp_path):
    pixels = np.linspace(100, 150, 201).round().astype(np.uint8).reshape(1, 201)
    out = load_pixels(make_dicom(tmp_path / "a.dcm", pixels), intensity="percentile")
    assert out.min() == 0.0 and out.max() == 1.0


def test_bit_range_rule_stays_available(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", RAMP, bits_stored=16, signed=True)
    out = load_pixels(path, intensity="bit-range")
    np.testing.assert_allclose(out, (RAMP.astype(np.float64) + 32768) / 65535, atol=1e-6)


def test_constant_image_under_percentile_is_black_not_an_error(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", np.full((4, 4), 700, np.uint16), bits_stored=12)
    np.testing.assert_array_equal(load_pixels(path), np.zeros((4, 4), np.float32))


def test_unknown_rule_is_an_input_value_error(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", RAMP, bits_stored=16, signed=True)
    with pytest.raises(InputValueError, match="intensity must be one of"):
        load_pixels(path, intensity="minmax")


# --- the measurement behind the default (figures quoted in cxrbox.data.dicom's docstring) ---------


def cr_like(lo: float, hi: float, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A CR-like float image [size, size] spanning [lo, hi] plus a burned-in label above hi and
    dead pixels below lo; and the anatomy mask [size, size] bool."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = np.exp(-((xx - 0.5) ** 2 / 0.08 + (yy - 0.55) ** 2 / 0.15))
    lungs = np.exp(-((np.abs(xx - 0.5) - 0.18) ** 2 / 0.01 + (yy - 0.45) ** 2 / 0.04))
    x = 0.15 + 0.6 * body - 0.35 * lungs + 0.02 * rng.standard_normal((size, size))
    x = (x - x.min()) / (x.max() - x.min())
    image = lo + (hi - lo) * x
    image[: size // 25, : size // 4] = hi + (hi - lo) * 0.5  # burned-in label
    image[rng.random((size, size)) < 0.0005] = lo - (hi - lo)  # dead pixels
    return image, body > 0.3


CR_CASES = {
    "12-bit": (12, False, 300, 2800),
    "16-bit": (16, False, 8000, 30000),
    "16-bit-signed": (16, True, -2000, 2000),
}


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("case", list(CR_CASES))
def test_default_rule_gives_cr_like_images_usable_contrast(tmp_path, case, photometric):
    bits, signed, lo, hi = CR_CASES[case]
    image, anatomy = cr_like(lo, hi)
    s_lo, s_hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    stored = np.clip(image.round(), s_lo, s_hi)
    if photometric == "MONOCHROME1":
        stored = s_lo + s_hi - stored
    pixels = stored.astype(np.int16 if signed else np.uint16)
    path = make_dicom(
        tmp_path / "a.dcm", pixels, bits_stored=bits, signed=signed, photometric=photometric
    )

    def contrast(out: np.ndarray) -> float:
        return float(np.percentile(out[anatomy], 95) - np.percentile(out[anatomy], 5))

    default = contrast(load_pixels(path))
    bit_range = contrast(load_pixels(path, intensity="bit-range"))
    assert default > 0.4
    assert default > bit_range


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8, np.uint32])
def test_histogram_percentiles_equal_numpy_percentiles(dtype):
    from cxrbox.data.dicom import PERCENTILES, _percentiles

    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    low, high = max(info.min, -30000), min(info.max, 60000)
    values = rng.integers(low, high, (37, 53)).astype(dtype)
    expected = np.percentile(values.astype(np.float64), PERCENTILES)
    np.testing.assert_allclose(_percentiles(values), expected, rtol=0, atol=1e-9)
