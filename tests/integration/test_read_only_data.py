"""Training on a read-only data folder (a mounted archive, Kaggle's /kaggle/input) without
--cache-dir: the image cache goes to ~/.cache/cxrbox/image-cache with a warning, never into the
data. (`tests.read_only` makes the folder read-only for the commands, also for root; the recipe
test, test_real_data_recipe.py, runs cache and train with --cache-dir on a read-only download.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.read_only import read_only

from cxrbox.data.cache import cache_path_in

TINY = "image_size = 64\nwidth = 0.5\nbatch_size = 8\nval_fraction = 0.25\nplots = false\n"


def _cxrbox(prefix: list[str], *args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "cxrbox", *args],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def data(tiny_rsna: Path, tmp_path: Path) -> Path:
    """A copy of the tiny set (chmod must not touch the session's fixture), without the image
    caches that earlier tests of the session wrote beside its images: this folder has none."""
    no_caches = shutil.ignore_patterns(".cxrbox-cache-*")
    return Path(shutil.copytree(tiny_rsna, tmp_path / "data", ignore=no_caches))


def _train_args(data: Path, tmp_path: Path) -> list[str]:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    return [
        "train", "--images", str(data / "stage_2_train_images"),
        "--labels", str(data / "stage_2_train_labels.csv"), "--out", str(tmp_path / "run"),
        "--epochs", "1", "--config", str(config), "--quiet",
    ]  # fmt: skip


def test_train_on_a_read_only_data_folder_caches_in_home_and_says_where(data, tmp_path):
    home, before = tmp_path / "home", _listing(data)
    with read_only(data) as prefix:
        result = _cxrbox(prefix, *_train_args(data, tmp_path), home=home)
    assert result.returncode == 0, result.stderr
    fallback = cache_path_in(
        home / ".cache" / "cxrbox" / "image-cache", data / "stage_2_train_images", 64
    )
    assert f"cannot write the image cache beside {data / 'stage_2_train_images'}" in result.stderr
    assert str(fallback) in result.stderr and "--cache-dir" in result.stderr
    assert fallback.is_file()
    assert _listing(data) == before
    assert (tmp_path / "run" / "best.pt").is_file()
