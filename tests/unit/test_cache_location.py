"""Where image caches go: beside the image folder by default, or in a chosen cache folder.

The read-only data folder (fallback with a warning) is tested end to end in
tests/integration/test_read_only_data.py: it needs a real read-only mount.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.dicom_factory import write_random_dicoms

from cxrbox.data.cache import (
    ImageCache,
    build_cache,
    cache_location,
    cache_path_in,
    default_cache_path,
)
from cxrbox.data.loaders import open_or_build_cache
from cxrbox.errors import DataError

SHAPES = {"pa": (48, 48), "pb": (40, 64)}


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    return write_random_dicoms(tmp_path / "data" / "images", SHAPES)


def test_without_a_cache_dir_the_cache_sits_beside_a_writable_image_folder(images_dir: Path):
    assert cache_location(images_dir, 64) == default_cache_path(images_dir, 64)


def test_a_cache_dir_holds_one_cache_per_image_folder_and_size(tmp_path: Path):
    first = cache_path_in(tmp_path / "c", tmp_path / "a" / "stage_2_train_images", 256)
    other = cache_path_in(tmp_path / "c", tmp_path / "b" / "stage_2_train_images", 256)
    assert first.parent == other.parent == tmp_path / "c"
    assert first != other  # same folder name, different folders
    assert first.name.startswith("stage_2_train_images-") and first.name.endswith("-256px.npy")
    assert cache_path_in(tmp_path / "c", tmp_path / "a" / "stage_2_train_images", 128) != first


def test_trainer_builds_the_cache_in_cache_dir_and_writes_nothing_beside_the_data(
    images_dir: Path, tmp_path: Path
):
    before = sorted(p.name for p in images_dir.parent.iterdir())
    cache = open_or_build_cache(images_dir, list(SHAPES), 16, cache_dir=tmp_path / "caches")
    assert cache.path == cache_path_in(tmp_path / "caches", images_dir, 16)
    assert cache.path.is_file()
    assert sorted(p.name for p in images_dir.parent.iterdir()) == before


def test_trainer_reuses_a_cache_that_cxrbox_cache_built_in_cache_dir(
    images_dir: Path, tmp_path: Path
):
    path = build_cache(
        images_dir, list(SHAPES), 16, cache_location(images_dir, 16, tmp_path / "caches")
    )
    stamp = path.stat().st_mtime_ns
    cache = open_or_build_cache(images_dir, ["pa"], 16, cache_dir=tmp_path / "caches")
    assert cache.path == path and path.stat().st_mtime_ns == stamp
    assert isinstance(cache, ImageCache)


def test_an_unwritable_cache_place_is_an_error_naming_it_and_the_option(
    images_dir: Path, tmp_path: Path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match=r"cannot write the image cache .*a-file.*--cache-dir"):
        open_or_build_cache(images_dir, list(SHAPES), 16, cache_dir=blocker / "caches")
