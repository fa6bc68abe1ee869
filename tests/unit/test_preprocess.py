"""cxrbox.data.preprocess: the one DICOM-to-input path, shared by the cache and the dataset."""

from __future__ import annotations

import numpy as np
import pytest
from tests.dicom_factory import make_dicom

from cxrbox.data.cache import ImageCache, build_cache
from cxrbox.data.preprocess import load_model_image, resize_to_uint8, to_uint8, to_unit_float
from cxrbox.errors import InputValueError


def test_load_model_image_resizes_rounds_and_reports_the_original_size(tmp_path):
    pixels = np.arange(40 * 64, dtype=np.uint8).reshape(40, 64)
    image, orig = load_model_image(make_dicom(tmp_path / "a.dcm", pixels), 32)
    assert image.dtype == np.uint8 and image.shape == (32, 32) and orig == (40, 64)


def test_an_image_of_the_target_size_comes_back_unchanged(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    image, _ = load_model_image(make_dicom(tmp_path / "a.dcm", pixels), 32)
    np.testing.assert_array_equal(image, pixels)


def test_the_cache_stores_exactly_the_model_images(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    folder.mkdir()
    for pid, shape in {"a": (48, 48), "b": (40, 64)}.items():
        make_dicom(folder / f"{pid}.dcm", rng.integers(0, 256, shape, dtype=np.uint8))
    cache = ImageCache.open(build_cache(folder, ["a", "b"], 32, tmp_path / "c.npy"))
    for pid in ("a", "b"):
        np.testing.assert_array_equal(
            cache.get(pid), load_model_image(folder / f"{pid}.dcm", 32)[0]
        )


def test_uint8_round_trip_is_value_over_255():
    image = np.array([[0, 128, 255]], np.uint8)
    np.testing.assert_array_equal(to_uint8(to_unit_float(image)), image)
    np.testing.assert_allclose(to_unit_float(image), image / 255.0, rtol=0, atol=1e-7)


@pytest.mark.parametrize("size", [4, 32.0, True])
def test_a_bad_size_is_refused(size):
    with pytest.raises(InputValueError, match="size must be an int"):
        resize_to_uint8(np.zeros((16, 16), np.float32), size)


def test_an_unknown_intensity_rule_is_refused(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", np.zeros((8, 8), np.uint8))
    with pytest.raises(InputValueError, match="intensity must be one of"):
        load_model_image(path, 8, intensity="minmax")
