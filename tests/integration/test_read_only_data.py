"""Training on a read-only data folder (a mounted archive, Kaggle's /kaggle/input): the image
cache goes to --cache-dir, or to ~/.cache/cxrbox/image-cache with a warning, never into the data.

Root writes through permission bits, so as root the commands run in a user and mount namespace
where the data folder is a read-only bind mount (a real EROFS); other users get chmod a-w.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxrbox.data.cache import cache_path_in

TINY = "image_size = 64\nwidth = 0.5\nbatch_size = 8\nval_fraction = 0.25\nplots = false\n"


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[list[str]]:
    """A command prefix under which `folder` (and all below it) cannot be written."""
    if os.geteuid() == 0:
        remount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        yield ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", remount, str(folder)]
        return
    paths = [folder, *folder.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        p.chmod(modes[p] & ~0o222)
    try:
        yield []
    finally:
        for p in reversed(paths):
            p.chmod(modes[p])


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
    """A copy of the tiny set (chmod must not touch the session's fixture)."""
    return Path(shutil.copytree(tiny_rsna, tmp_path / "data"))


def _train_args(data: Path, tmp_path: Path, *extra: str) -> list[str]:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    return [
        "train", "--images", str(data / "stage_2_train_images"),
        "--labels", str(data / "stage_2_train_labels.csv"), "--out", str(tmp_path / "run"),
        "--epochs", "1", "--config", str(config), "--quiet", *extra,
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


def test_cache_then_train_with_cache_dir_leave_a_read_only_data_folder_alone(data, tmp_path):
    home, caches, before = tmp_path / "home", tmp_path / "caches", _listing(data)
    images = data / "stage_2_train_images"
    with read_only(data) as prefix:
        built = _cxrbox(
            prefix, "cache", "--images", str(images), "--size", "64", "--cache-dir", str(caches),
            "--quiet", home=home,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
        path = cache_path_in(caches, images, 64)
        stamp = path.stat().st_mtime_ns
        trained = _cxrbox(prefix, *_train_args(data, tmp_path, "--cache-dir", str(caches)),
                          home=home)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "cannot write the image cache" not in built.stderr + trained.stderr
    assert path.stat().st_mtime_ns == stamp  # train opened the cache `cxrbox cache` built
    assert _listing(data) == before
    assert not (home / ".cache").exists()
