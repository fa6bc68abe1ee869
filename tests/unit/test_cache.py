"""cxrbox.data.cache: round trip, validation of stale or mismatched caches, atomic builds."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from tests.dicom_factory import write_random_dicoms

from cxrbox.data import cache as cache_module
from cxrbox.data.cache import (
    FORMAT_VERSION,
    ImageCache,
    build_cache,
    default_cache_path,
    sidecar_path,
)
from cxrbox.data.dicom import load_pixels
from cxrbox.errors import DataError

SHAPES = {"pa": (48, 48), "pb": (40, 64), "pc": (64, 32)}


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    return write_random_dicoms(tmp_path / "images", SHAPES)


@pytest.fixture
def built(images_dir: Path, tmp_path: Path) -> Path:
    return build_cache(images_dir, ["pb", "pa", "pc"], 32, tmp_path / "c.npy")


def resized_0_255(path: Path, size: int) -> np.ndarray:
    pixels = cv2.resize(load_pixels(path), (size, size), interpolation=cv2.INTER_AREA)
    return pixels.astype(np.float64) * 255


def test_round_trip_gives_resized_quantized_images(images_dir: Path, built: Path) -> None:
    cache = ImageCache.open(built)
    for pid in SHAPES:
        got = cache.get(pid)
        assert got.dtype == np.uint8
        assert got.shape == (32, 32)
        error = got - resized_0_255(images_dir / f"{pid}.dcm", 32)
        assert np.abs(error).max() <= 0.5 + 1e-3  # rounded to the nearest level


def test_round_trip_keeps_order_and_original_sizes(built: Path) -> None:
    cache = ImageCache.open(built)
    assert cache.patient_ids == ["pb", "pa", "pc"]
    assert cache.size == 32
    assert {pid: cache.orig_size(pid) for pid in SHAPES} == SHAPES


def test_sidecar_records_version_size_and_source(images_dir: Path, built: Path) -> None:
    meta = json.loads(sidecar_path(built).read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["size"] == 32
    assert Path(meta["source"]) == images_dir.resolve()


def test_duplicate_ids_are_stored_once(images_dir: Path, tmp_path: Path) -> None:
    path = build_cache(images_dir, ["pa", "pa", "pb"], 16, tmp_path / "d.npy")
    assert ImageCache.open(path).patient_ids == ["pa", "pb"]


def test_parallel_build_matches_serial(images_dir: Path, built: Path, tmp_path: Path) -> None:
    path = build_cache(images_dir, ["pb", "pa", "pc"], 32, tmp_path / "p.npy", workers=2)
    np.testing.assert_array_equal(np.load(path), np.load(built))


def test_default_cache_path_sits_beside_the_image_folder(tmp_path: Path) -> None:
    assert default_cache_path(tmp_path / "imgs", 256) == tmp_path / ".cxrbox-cache-256.npy"


def test_missing_dicoms_are_listed_before_any_decoding(images_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"2 of 3 patients.*nope1, nope2"):
        build_cache(images_dir, ["pa", "nope1", "nope2"], 16, tmp_path / "x.npy")
    assert not (tmp_path / "x.npy").exists()


def test_build_in_progress_or_interrupted_leaves_no_cache(
    images_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = cache_module.decode_resized
    out = tmp_path / "i.npy"
    visible_during_build = []

    def fail_on_second(path: str, size: int, intensity: str) -> tuple[np.ndarray, tuple[int, int]]:
        visible_during_build.append(out.exists() or sidecar_path(out).exists())
        if len(visible_during_build) == 2:
            raise KeyboardInterrupt
        return real(path, size, intensity)

    monkeypatch.setattr(cache_module, "decode_resized", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        build_cache(images_dir, list(SHAPES), 16, out)
    assert visible_during_build == [False, False]  # a killed build leaves no cache to open
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # and no temporary files


def test_a_rebuild_stopped_before_its_sidecar_leaves_no_cache_that_opens(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new array is in place, the sidecar not yet: the old sidecar (other row order, same
    shape) must not pair with it, or every patient would get another patient's image."""

    def stopped(*args: object, **kwargs: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module.json, "dumps", stopped)
    with pytest.raises(KeyboardInterrupt):
        build_cache(built.parent / "images", ["pc", "pb", "pa"], 32, built)
    monkeypatch.undo()
    with pytest.raises(DataError, match="missing"):
        ImageCache.open(built)


def test_wrong_size_is_a_data_error(built: Path) -> None:
    with pytest.raises(DataError, match="holds 32 px images, 64 px requested"):
        ImageCache.open(built, size=64)


def test_other_format_version_is_a_data_error(built: Path) -> None:
    sidecar = sidecar_path(built)
    meta = json.loads(sidecar.read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format version"):
        ImageCache.open(built)


def test_missing_sidecar_is_a_data_error(built: Path) -> None:
    sidecar_path(built).unlink()
    with pytest.raises(DataError, match=r"c\.json"):
        ImageCache.open(built)


def test_corrupt_sidecar_is_a_data_error(built: Path) -> None:
    sidecar_path(built).write_text("{not json")
    with pytest.raises(DataError, match="unreadable sidecar"):
        ImageCache.open(built)


def test_array_not_matching_sidecar_is_a_data_error(built: Path) -> None:
    np.save(built, np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"sidecar says uint8 \(3, 32, 32\)"):
        ImageCache.open(built)


def test_unknown_patient_is_a_data_error_naming_it(built: Path) -> None:
    with pytest.raises(DataError, match="'zz'"):
        ImageCache.open(built).get("zz")


def test_require_lists_missing_patients_with_count(built: Path) -> None:
    with pytest.raises(DataError, match=r"stale: 2 of 3 patients.*x1, x2"):
        ImageCache.open(built).require(["pa", "x1", "x2"])


def test_pickled_cache_carries_no_pixels_and_still_reads(built: Path) -> None:
    cache = ImageCache.open(built)
    blob = pickle.dumps(cache)
    assert len(blob) < 32 * 32  # smaller than a single cached image
    np.testing.assert_array_equal(pickle.loads(blob).get("pc"), cache.get("pc"))


def test_cache_records_its_intensity_rule_and_refuses_another(images_dir: Path, tmp_path: Path):
    out = build_cache(images_dir, list(SHAPES), 16, tmp_path / "i.npy", intensity="percentile")
    assert ImageCache.open(out, intensity="percentile").intensity == "percentile"
    with pytest.raises(DataError, match="built with intensity rule 'percentile', 'auto'"):
        ImageCache.open(out, intensity="auto")


def test_trainer_rebuilds_a_cache_built_with_another_rule(images_dir: Path):
    from cxrbox.data.loaders import open_or_build_cache

    build_cache(
        images_dir, list(SHAPES), 16, default_cache_path(images_dir, 16), intensity="bit-range"
    )
    assert open_or_build_cache(images_dir, list(SHAPES), 16, "auto").intensity == "auto"
